"""Stream function: replies as they are written, in the AI SDK's UI message stream.

POST /sessions/{id}/messages/stream   send a message; the reply streams (useChat's transport)
GET  /sessions/{id}/messages/stream   resume: the reply in flight, replayed then live; 204 if none
POST /sessions/{id}/messages/stream/stop   stop the reply in flight (204)

An ASGI app (Starlette on uvicorn). In AWS the Lambda Web Adapter runs it behind a Function URL
in RESPONSE_STREAM mode: Python's managed runtime cannot stream a response by itself. Every
check (token, body, trip, rate limit, Idempotency-Key) runs before the stream opens and fails
with the API's one JSON error shape; once a stream is open, failures arrive as its `error`.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from aws_lambda_powertools import Logger
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import shared.gateways.auth  # noqa: F401  (every request verifies a token: load it at start)
from shared.domain import streaming
from shared.domain.users import Viewer
from shared.errors import AppError, ValidationFailed
from shared.http import ui_stream
from shared.http.api import (
    IDEMPOTENCY_KEY_PATTERN,
    check_body,
    describe_errors,
    error_headers,
    viewer_from_headers,
)
from shared.http.ui_stream import STOP_PATH, STREAM_PATH
from shared.models import StreamMessageRequest

logger = Logger(service="stream")

TRIP_ID_MAX = 100


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _app_error(exc: AppError) -> Response:
    return _error(exc.status, exc.code, exc.message, error_headers(exc) or None)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Sign-in first, then the handler; every error becomes the one JSON error shape."""

    async def guarded(request: Request) -> Response:
        correlation = _request_id(request)
        logger.set_correlation_id(correlation)
        try:
            _check_trip_id(request.path_params["id"])
            response = await handler(request)
        except AppError as exc:
            response = _app_error(exc)
        except Exception:
            logger.exception("unhandled error")
            response = _error(500, "internal_error", "Something went wrong on our side.")
        response.headers["x-request-id"] = correlation
        return response

    return guarded


def _request_id(request: Request) -> str:
    """The Function URL's request id, which the Web Adapter forwards in x-amzn-request-context
    (the other functions log API Gateway's the same way); a fresh one elsewhere."""
    try:
        context = json.loads(request.headers.get("x-amzn-request-context") or "{}")
        return str(context.get("requestId") or uuid.uuid4())
    except (ValueError, AttributeError):
        return str(uuid.uuid4())


def _check_trip_id(trip_id: str) -> None:
    if not 1 <= len(trip_id) <= TRIP_ID_MAX:
        raise ValidationFailed(f"id: 1 to {TRIP_ID_MAX} characters")


async def _viewer(request: Request) -> Viewer:
    headers = dict(request.headers)
    # Token checks may fetch Clerk's keys (blocking I/O): off the event loop.
    return await anyio.to_thread.run_sync(viewer_from_headers, headers)


async def send(request: Request) -> Response:
    raw = await request.body()
    text = raw.decode("utf-8", "surrogateescape")  # check_body refuses what is not UTF-8
    check_body({"body": text, "headers": dict(request.headers)})  # 413, 415, 400 first
    viewer = await _viewer(request)
    trip_id = request.path_params["id"]
    try:
        body = json.loads(text) if text else None
    except ValueError:
        return _error(400, "malformed_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    try:
        message = StreamMessageRequest.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(describe_errors(list(exc.errors()))) from exc
    key = request.headers.get("idempotency-key")  # present but empty is invalid, not absent
    if key is not None and not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise ValidationFailed("idempotency-key: 1-255 printable ASCII characters, no spaces")
    key = key or message.ui_message_key()
    content = message.text()
    started = await anyio.to_thread.run_sync(streaming.begin, viewer, trip_id, content, key)
    if isinstance(started, streaming.Replayed):
        return _Stream(ui_stream.replay(started), {"Idempotent-Replayed": "true"})
    ids, launch = await anyio.to_thread.run_sync(streaming.start, viewer, started)
    live = launch()
    return _Stream(ui_stream.encode(ids, live.events))


async def resume(request: Request) -> Response:
    viewer = await _viewer(request)
    trip_id = request.path_params["id"]
    reply = await anyio.to_thread.run_sync(streaming.in_flight, viewer, trip_id)
    if reply is None:
        return Response(status_code=204)  # the AI SDK's resumeStream(): nothing in flight
    following = streaming.follow(reply, trip_id)
    return _Stream(ui_stream.encode(following.ids, following.events), outlives_client=False)


async def stop(request: Request) -> Response:
    viewer = await _viewer(request)
    await anyio.to_thread.run_sync(streaming.stop, viewer, request.path_params["id"])
    return Response(status_code=204)


async def health(_: Request) -> Response:
    # The Lambda Web Adapter's readiness check (AWS_LWA_READINESS_CHECK_PATH).
    return Response(status_code=204)


class _Stream(Response):
    """An SSE response that outlives its client: when the client goes away the remaining
    chunks are still drawn (and dropped), so the turn behind them runs to its end within
    this invocation, which a Lambda container would otherwise freeze. A follower (resume)
    only listens: `outlives_client=False` ends it when its client disconnects."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
        *,
        outlives_client: bool = True,
    ):
        # As StreamingResponse does: no `body` attribute, so no Content-Length.
        self.status_code = 200
        self.background = None
        self.init_headers({**ui_stream.HEADERS, **(headers or {})})
        self._body = body
        self._outlives_client = outlives_client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._outlives_client:
            await self._relay(send)
            return
        async with anyio.create_task_group() as group:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(until_disconnect)
            await self._relay(send)
            group.cancel_scope.cancel()

    async def _relay(self, send: Send) -> None:
        # uvicorn drops writes to a client that left (no OSError): the body is drawn to its end.
        connected = True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        except OSError:
            connected = False
        async for part in self._body:
            if connected:
                try:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                except OSError:
                    connected = False  # the client left; the turn goes on
        if connected:
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        allowed = "POST" if request.url.path.endswith("/stop") else "GET, POST"
        return _error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here; use {allowed}.",
            {"Allow": allowed},
        )
    return _error(404, "not_found", "No such route.")


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route(STREAM_PATH, _guarded(send), methods=["POST"]),
            Route(STREAM_PATH, _guarded(resume), methods=["GET"]),
            Route(STOP_PATH, _guarded(stop), methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )


app = create_app()
