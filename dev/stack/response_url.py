"""A stand-in for the presigned S3 URL CloudFormation gives a custom resource: it records
every answer PUT to it, so tests see what the migrate function told CloudFormation."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from dev.stack.loopback import LoopbackServer


class ResponseUrl:
    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                answers.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = LoopbackServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/presigned"

    def __enter__(self) -> ResponseUrl:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
