"""The HTTP layer every API function shares: one resolver setup, one error shape.

Every error response is `{"error": {"code": ..., "message": ...}}` with a precise status;
domain errors map through their own status and code, validation errors become 400 (unreadable
JSON) or 422 (well-formed but invalid), and anything unexpected is logged with its traceback
and answered with a bare 500 that reveals nothing. A configuration error gets that same bare
500; its detail (setting names, secret ARNs) goes to the log at ERROR, never to the client.
Bodies that no parser should see (not UTF-8, absurdly nested) are refused before routing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import warnings
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from shared.config import get_settings
from shared.domain import users
from shared.errors import (
    AppError,
    ConfigurationError,
    MalformedJson,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

logger = Logger(child=True)

# Reads emit no metric, and Powertools warns on every such invocation: noise in the logs.
warnings.filterwarnings("ignore", message="No application metrics to publish")


# An Idempotency-Key header: 1-255 printable ASCII characters, no spaces.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def _error(description: str) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"model": ErrorBody}}}


# Documented on every API route, so the OpenAPI document states the error contract.
ERROR_RESPONSES: dict[int, OpenAPIResponse] = {
    400: _error("Malformed JSON or request"),
    401: _error("Missing or invalid Clerk session token"),
    404: _error("No such trip (or it is someone else's)"),
    409: _error("Idempotency-Key in use or reused for a different message"),
    413: _error("Request body too large"),
    422: _error("Validation failed"),
    429: _error("Rate limit exceeded (see Retry-After)"),
    502: _error("The assistant service returned an error"),
    503: _error("Database or assistant service unavailable (see Retry-After)"),
}


def _error_body(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=_error_body(code, message),
        headers=headers,
    )


def error_headers(exc: AppError) -> dict[str, str]:
    if isinstance(exc, ConfigurationError):
        # The client's body names nothing (see ConfigurationError); the operator needs it all.
        logger.error("configuration error", extra={"detail": exc.detail, "status": exc.status})
    elif exc.status >= 500:
        logger.warning("request failed", extra={"code": exc.code, "status": exc.status})
    return {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}


def _app_error_response(exc: AppError) -> Response[str]:
    headers = error_headers(exc)
    return error_response(exc.status, exc.code, exc.message, headers=headers or None)


def create_app() -> APIGatewayHttpResolver:
    """A resolver with pydantic validation and the error mapping; run it with `resolve`."""
    app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=_json_object)

    @app.exception_handler(AppError)  # type: ignore[untyped-decorator]
    def _app_error(exc: AppError) -> Response[str]:
        return _app_error_response(exc)

    @app.exception_handler(RequestUnsupportedContentType)  # type: ignore[untyped-decorator]
    def _unsupported(_: RequestUnsupportedContentType) -> Response[str]:
        return _app_error_response(UnsupportedMediaType())

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
    def _invalid(exc: RequestValidationError) -> Response[str]:
        errors = list(exc.errors())
        kinds = {str(e.get("type")) for e in errors}
        if "json_invalid" in kinds:
            return error_response(400, "malformed_json", "The request body is not valid JSON.")
        return error_response(422, "validation_error", describe_errors(errors))

    @app.not_found
    def _not_found(_: NotFoundError) -> Response[str]:
        allowed = _allowed_methods(app, app.current_event.path)
        if allowed:
            return error_response(
                405,
                "method_not_allowed",
                f"{app.current_event.http_method} is not allowed here; use {', '.join(allowed)}.",
                headers={"Allow": ", ".join(allowed)},
            )
        return error_response(404, "not_found", "No such route.")

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def _unexpected(exc: Exception) -> Response[str]:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side.")

    return app


def resolve(
    app: APIGatewayHttpResolver,
    event: dict[str, Any],
    context: LambdaContext,
    *,
    authenticated: bool = True,
) -> dict[str, Any]:
    """Run the request through `app`, after what must come before parsing and validation:
    the body-size limit (413 without reading the body as JSON) and, for the user-facing API,
    the token check (401 before anything else is revealed). The token names the viewer; the
    routes' own statements find (or, on first sight, create) their row."""
    try:
        check_body(event)
        if authenticated:
            viewer = viewer_from_headers(event.get("headers") or {})
            app.append_context(viewer=viewer)  # type: ignore[no-untyped-call]
    except AppError as exc:
        return _early_response(exc.status, exc.code, exc.message, error_headers(exc))
    except Exception:
        logger.exception("unhandled error before routing")
        return _early_response(500, "internal_error", "Something went wrong on our side.", {})
    return app.resolve(event, context)


def _early_response(
    status: int, code: str, message: str, headers: dict[str, str]
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON, **headers},
        "body": _error_body(code, message),
        "isBase64Encoded": False,
    }


def request_viewer(app: APIGatewayHttpResolver) -> users.Viewer:
    """The signed-in traveller of the current request (set by `resolve`)."""
    viewer: users.Viewer = app.context["viewer"]
    return viewer


def viewer_from_headers(headers: dict[str, str]) -> users.Viewer:
    # Imported here so the webhook function, which has no tokens, does not load PyJWT; the
    # API functions import shared.gateways.auth themselves, at cold start.
    from shared.gateways.auth import authenticate
    from shared.gateways.clerk import fetch_clerk_profile

    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    identity = authenticate(authorization)
    return users.Viewer(
        identity.clerk_id,
        identity.email,
        identity.name,
        fetch_profile=lambda: fetch_clerk_profile(identity.clerk_id),
    )


# Our bodies are flat objects and Clerk's payloads nest a few levels: far deeper is an attack
# on the parser (json.loads recurses, and a 10 KB body of brackets exhausts the stack).
MAX_JSON_DEPTH = 64
# A JSON string (escapes included, possibly unterminated) or one bracket outside strings.
_JSON_NESTING_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def check_body(event: dict[str, Any]) -> None:
    """Bodies are bounded, readable JSON: anything else is refused before it is parsed (or,
    for the webhook, verified), so no parser and no route ever sees it."""
    body = event.get("body") or ""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if (
        body
        and media_type
        and media_type != "application/json"
        and not media_type.endswith("+json")
    ):
        raise UnsupportedMediaType()
    limit = get_settings().max_body_bytes
    too_large = PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    if event.get("isBase64Encoded"):
        if len(body) * 3 // 4 > limit:  # before decoding anything
            raise too_large
        text = _decoded_text(body)
    else:
        try:
            # Strict: a str with surrogate escapes stands for bytes that were not UTF-8.
            size = len(body.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise MalformedJson("The request body is not UTF-8.") from exc
        if size > limit:
            raise too_large
        text = body
    if _nested_deeper_than(text, MAX_JSON_DEPTH):
        raise MalformedJson(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")


def _decoded_text(body: str) -> str:
    """A base64 body (API Gateway encodes any body that is not valid UTF-8) as text, decoded
    as Powertools will decode it; 400 when it is not base64 or its bytes are not UTF-8."""
    try:
        return base64.b64decode(body).decode("utf-8")
    except binascii.Error as exc:
        raise MalformedJson("The request body is not valid base64.") from exc
    except UnicodeDecodeError as exc:
        raise MalformedJson("The request body is not UTF-8.") from exc


def _nested_deeper_than(text: str, limit: int) -> bool:
    # A body cannot nest deeper than it has openers: almost every body stops here, at C speed.
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for token in _JSON_NESTING_TOKENS.findall(text):
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _json_object(text: str) -> dict[str, Any]:
    """The JSON body deserializer: every JSON body this API takes is an object. Powertools
    would validate the first item of a top-level array as the body (so `[{"title": "x"}]`
    created a trip) and `null` as no body at all."""
    value = json.loads(text)  # JSONDecodeError: Powertools answers 400 malformed_json
    if not isinstance(value, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    return value


def describe_errors(errors: list[Any]) -> str:
    """Which fields are wrong and why, without echoing the values (they may be private)."""
    parts = []
    for error in errors[:5]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "The request is not valid."


def _allowed_methods(app: APIGatewayHttpResolver, path: str) -> list[str]:
    # Powertools keeps its routes in these lists; it has no public "methods for a path".
    routes = [*getattr(app, "_static_routes", []), *getattr(app, "_dynamic_routes", [])]
    return sorted({route.method for route in routes if route.rule.match(path)})
