"""A stand-in for AWS's Parameters and Secrets Lambda Extension: its localhost HTTP API
(`GET /secretsmanager/get?secretId=...`, the invocation's session token in
X-Aws-Parameters-Secrets-Token), answering as the extension does with the GetSecretValue
response it gets from Secrets Manager through boto3 (moto in tests, a loopback stand-in in the
bench). It records each request, so tests see what reached it."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.exceptions import ClientError

from dev.stack.loopback import LoopbackServer

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"


class SecretsExtension:
    def __init__(self, session_token: str, client: Any = None) -> None:
        """client: the Secrets Manager client to ask (default: a new boto3 one per request,
        so moto's mock sees it)."""
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                requests.append(self.path)
                if self.headers.get(TOKEN_HEADER) != session_token:
                    self._answer(401, {"message": "missing or invalid session token"})
                    return
                secret_id = parse_qs(url.query).get("secretId", [""])[0]
                if url.path != "/secretsmanager/get" or not secret_id:
                    self._answer(400, {"message": "GET /secretsmanager/get?secretId=..."})
                    return
                try:
                    secrets = client or boto3.client("secretsmanager")
                    found = secrets.get_secret_value(SecretId=secret_id)
                except ClientError as exc:
                    self._answer(400, dict(exc.response.get("Error", {})))
                    return
                self._answer(200, {k: v for k, v in found.items() if k != "ResponseMetadata"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = LoopbackServer(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> SecretsExtension:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> SecretsExtension:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
