"""A local HTTP front for the functions: each request becomes the API Gateway HTTP API v2 event
that AWS would send, for the function that template.yaml routes it to. No Docker needed.

Like API Gateway and Lambda:
- each function runs in its own worker process, one event at a time (dev/stack/worker.py);
- the HttpApi's CorsConfiguration is applied here, before any function: preflights are answered
  directly, and responses to an allowed origin carry the CORS headers;
- every response carries its request id in `apigw-requestid` (the functions' correlation id).
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import re
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dev.stack.apigw import http_event
from dev.stack.loopback import LoopbackServer
from dev.stack.stream_process import StreamProcess
from dev.stack.template import CorsRules, HttpRoute, cors_rules, http_functions, http_routes
from dev.stack.worker import FunctionWorker

DEFAULT_PORT = 8787  # not 3000: that is where a Next.js front end runs by default
SWAGGER_PATH = "/swagger"
# A minimal chat page (make dev only, never deployed) to watch replies stream.
CHAT_PATH = "/dev/chat"
CHAT_PAGE = Path(__file__).with_name("chat.html")
# The function that serves Swagger UI under `make dev`: the webhook function is the one whose
# handler asks for no token, and a browser opening the page has none.
SWAGGER_FUNCTION = "ClerkWebhookFunction"
# The stream function's routes (its own Function URL in AWS): forwarded to its server, their
# responses streamed through as they come.
STREAM_ROUTE = re.compile(r"/sessions/[^/]+/messages/stream(/stop)?")
# Hop-by-hop headers, never forwarded (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)
CORS_RESPONSE_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
)


class PortInUseError(OSError):
    """The address is taken (another `make dev`, or anything else listening there)."""


class LocalApi:
    """Serves the template's routes on host:port from start() until stop().

    `swagger` adds Swagger UI at /swagger (make dev only; the template has no such route).
    CORS follows template.yaml with its parameters read from the environment when the server
    is created (the CLERK_AUTHORIZED_PARTIES origins; unset: none)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        swagger: bool = False,
        stream: bool = True,
        chat_page: bool = False,
    ) -> None:
        self.routes = http_routes()
        specs = http_functions()
        if swagger:
            self.routes.append(
                HttpRoute("GET", SWAGGER_PATH, SWAGGER_FUNCTION, specs[SWAGGER_FUNCTION].module)
            )
        self.cors: CorsRules | None = cors_rules()
        self.workers = {
            logical_id: FunctionWorker(
                spec,
                swagger_path=SWAGGER_PATH if swagger and logical_id == SWAGGER_FUNCTION else None,
            )
            for logical_id, spec in specs.items()
        }
        self.stream = StreamProcess() if stream else None
        self.chat_page = chat_page
        self._serving = False
        try:
            self._server = LoopbackServer((host, port), self._request_handler())
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(exc.errno, f"port {port} on {host} is already in use") from exc
            raise

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalApi:
        """Cold-start every function (in parallel; they inherit the environment as it is now),
        then serve."""
        try:
            for worker in self.workers.values():
                worker.start()
            if self.stream is not None:
                self.stream.start()
            with ThreadPoolExecutor(max_workers=len(self.workers) or 1) as pool:
                list(pool.map(FunctionWorker.wait_ready, self.workers.values()))
            if self.stream is not None:
                self.stream.wait_ready()
        except BaseException:
            self._stop_workers()
            self._server.server_close()
            raise
        self._server.start()
        self._serving = True
        return self

    def stop(self) -> None:
        """Stop serving and end the functions' processes (or just free the port if start()
        was never called); safe to call twice."""
        if self._serving:
            self._serving = False
            self._server.stop()  # no new requests; each worker finishes its event, then exits
        else:
            self._server.server_close()
        self._stop_workers()

    def _stop_workers(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        if self.stream is not None:
            self.stream.stop()

    def forward_stream(
        self, handler: BaseHTTPRequestHandler, body: bytes | None
    ) -> tuple[int, dict[str, str], http.client.HTTPResponse]:
        """Send a stream route's request to the stream function's server; its status, its
        headers as the client gets them (CORS as the Function URL applies it) and the body to
        read as it comes."""
        assert self.stream is not None
        upstream = http.client.HTTPConnection("127.0.0.1", self.stream.port, timeout=600)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream.request(handler.command, handler.path, body=body, headers=headers)
        answer = upstream.getresponse()
        out = {
            k: v
            for k, v in answer.getheaders()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
        }
        if self.cors is not None:
            out = _with_cors({"headers": out}, self.cors, handler.headers.get("origin"))["headers"]
        return answer.status, out, answer

    def invoke(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, Any]:
        """Answer one request like API Gateway would (CORS, routing, the function's response)."""
        headers = {k.lower(): v for k, v in headers.items()}
        origin = headers.get("origin")
        event = self._event(method, target, headers, body)
        if self.cors is not None and method.upper() == "OPTIONS":
            # API Gateway answers preflights itself, whatever the routes and their auth.
            response: dict[str, Any] = {"statusCode": 204, "headers": {}}
            if origin and self.cors.allows(origin):
                response["headers"].update(_preflight_headers(self.cors, origin))
        else:
            route, params = self._route(method, event["rawPath"])
            if route is None:
                response = {
                    "statusCode": 404,
                    "headers": {"Content-Type": "application/json"},
                    "body": json.dumps(
                        {"error": {"code": "not_found", "message": "No such route."}}
                    ),
                }
            else:
                event["routeKey"] = event["requestContext"]["routeKey"] = route.route_key
                if params:
                    event["pathParameters"] = params
                response = self.workers[route.function].invoke(event)
            if self.cors is not None:
                response = _with_cors(response, self.cors, origin)
        response.setdefault("headers", {})["apigw-requestid"] = event["requestContext"]["requestId"]
        return response

    def _event(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, Any]:
        url = urlsplit(target)
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
        )
        if "content-type" not in headers:
            event["headers"].pop("content-type", None)
        return event

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
                if api.chat_page and (self.command, self.path) == ("GET", CHAT_PATH):
                    page = CHAT_PAGE.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                streamed = api.stream is not None and self.command != "OPTIONS"
                if streamed and STREAM_ROUTE.fullmatch(self.path.split("?")[0]):
                    self._forward(body)
                    return
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

            def _forward(self, body: bytes | None) -> None:
                status, headers, answer = api.forward_stream(self, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if status in (204, 304):
                    self.end_headers()
                    answer.close()
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while data := answer.read1(65536):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client left; the turn goes on upstream
                finally:
                    answer.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                # One line per request, without headers or bodies (tokens, messages).
                status = args[1] if len(args) > 1 else ""
                print(f"{self.command} {self.path.split('?')[0]} -> {status}", flush=True)

        return Handler


def _preflight_headers(cors: CorsRules, origin: str) -> dict[str, str]:
    headers = _origin_headers(cors, origin)
    headers["access-control-allow-methods"] = ",".join(cors.allow_methods)
    if cors.allow_headers:
        headers["access-control-allow-headers"] = ",".join(h.lower() for h in cors.allow_headers)
    if cors.max_age is not None:
        headers["access-control-max-age"] = str(cors.max_age)
    return headers


def _origin_headers(cors: CorsRules, origin: str) -> dict[str, str]:
    allowed = "*" if "*" in cors.allow_origins and not cors.allow_credentials else origin
    headers = {"access-control-allow-origin": allowed}
    if allowed != "*":
        headers["vary"] = "Origin"
    if cors.allow_credentials:
        headers["access-control-allow-credentials"] = "true"
    return headers


def _with_cors(response: dict[str, Any], cors: CorsRules, origin: str | None) -> dict[str, Any]:
    """The function's response as API Gateway returns it with CORS configured: the function's
    own CORS headers dropped, the configured ones added for an allowed origin."""
    headers = {
        k: v
        for k, v in (response.get("headers") or {}).items()
        if k.lower() not in CORS_RESPONSE_HEADERS
    }
    if origin and cors.allows(origin):
        headers.update(_origin_headers(cors, origin))
        if cors.expose_headers:
            headers["access-control-expose-headers"] = ",".join(cors.expose_headers)
    return {**response, "headers": headers}
