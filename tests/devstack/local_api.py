"""A local HTTP front for the functions: each request becomes the API Gateway HTTP API v2 event
that AWS would send, for the handler that template.yaml routes it to. No Docker needed."""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.devstack.apigw import LambdaContext, http_event
from tests.devstack.loopback import LoopbackServer
from tests.devstack.template import HttpRoute, http_routes


class LocalApi:
    """Serves the template's routes on host:port until stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 3000) -> None:
        self.routes = http_routes()
        self._server = LoopbackServer((host, port), self._request_handler())

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalApi:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def invoke(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, Any]:
        """Route one request like API Gateway would, and return the handler's response."""
        url = urlsplit(target)
        route, params = self._route(method, url.path)
        if route is None:
            return {
                "statusCode": 404,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"error": {"code": "not_found", "message": "No such route."}}),
            }
        try:
            text: str | bytes | None = body.decode() if body is not None else None
        except UnicodeDecodeError:
            text = body  # sent base64-encoded, as API Gateway does for binary bodies
        event = http_event(
            method,
            url.path,
            body=text,
            headers=headers,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            route_key=route.route_key,
            path_parameters=params,
        )
        if "content-type" not in {k.lower() for k in headers}:
            event["headers"].pop("content-type", None)
        return route.handler()(event, LambdaContext(function_name=route.function))

    def _route(self, method: str, path: str) -> tuple[HttpRoute | None, dict[str, str]]:
        for route in self.routes:
            params = route.match(method, path)
            if params is not None:
                return route, params
        # The path exists with other methods: its function answers 405 itself.
        for route in self.routes:
            params = route.match(route.method, path)
            if params is not None:
                return route, params
        return None, {}

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms stalls between header and body writes

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                response = api.invoke(self.command, self.path, headers, body)
                payload = response.get("body") or ""
                data = (
                    base64.b64decode(payload)
                    if response.get("isBase64Encoded")
                    else payload.encode()
                )
                self.send_response(int(response["statusCode"]))
                for name, value in (response.get("headers") or {}).items():
                    self.send_header(name, str(value))
                for cookie in response.get("cookies") or []:
                    self.send_header("Set-Cookie", cookie)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                # One line per request, without headers or bodies (tokens, messages).
                status = args[1] if len(args) > 1 else ""
                print(f"{self.command} {self.path.split('?')[0]} -> {status}", flush=True)

        return Handler
