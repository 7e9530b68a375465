"""Domain errors. Each carries the HTTP status and short code it maps to, so handlers map
every error in one place and never leak internals: the message is written for the client."""

from __future__ import annotations


class AppError(Exception):
    """Base of every error a handler turns into a JSON error response."""

    status: int = 500
    code: str = "internal_error"
    default_message: str = "Something went wrong on our side."

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)


class BadRequest(AppError):
    status = 400
    code = "bad_request"
    default_message = "The request could not be read."


class MalformedJson(BadRequest):
    """The body cannot be read as JSON at all: not UTF-8 (RFC 8259 requires it), not valid
    base64 when API Gateway encoded it, or nested too deeply to parse safely."""

    code = "malformed_json"
    default_message = "The request body is not valid JSON."


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    default_message = "A valid session token is required."


class AccountDeleted(Unauthorized):
    """The Clerk user was deleted: their still-unexpired tokens must not recreate them."""

    code = "account_deleted"
    default_message = "This account has been deleted."


class NotFound(AppError):
    status = 404
    code = "not_found"
    default_message = "Not found."


class Conflict(AppError):
    status = 409
    code = "conflict"
    default_message = "The request conflicts with the current state."


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    default_message = "The request body is too large."


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"
    default_message = "Send the body as application/json."


class ValidationFailed(AppError):
    status = 422
    code = "validation_error"
    default_message = "The request is not valid."


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
    default_message = "Too many requests; try again later."


class ConfigurationError(AppError):
    """A required setting is missing or malformed. Raised loudly at use, never at import.

    The detail names settings, secret ARNs (with the account id) and AWS's own error text: it
    is for the operator only (the ERROR log, the migrate function's result), so `message`, the
    client's part, is the bare 500 every unexpected failure gets. `str(exc)` is the detail."""

    status = 500
    code = "internal_error"
    default_message = "Something went wrong on our side."

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail
        self.args = (detail,)


class DatabaseUnavailable(AppError):
    """PostgreSQL could not be reached or dropped the connection: retrying shortly can help."""

    status = 503
    code = "database_unavailable"
    default_message = "The database is temporarily unavailable; try again shortly."

    def __init__(self, message: str | None = None, *, retry_after: int | None = 2) -> None:
        super().__init__(message, retry_after=retry_after)


class UpstreamError(AppError):
    """Backboard (or Clerk) answered with an error that retrying will not fix."""

    status = 502
    code = "upstream_error"
    default_message = "The assistant service returned an error."


class BackboardObjectMissing(UpstreamError):
    """Backboard no longer knows the assistant or thread we named (deleted outside this
    backend): the caller may recreate it and carry on."""


class UpstreamUnavailable(AppError):
    """Backboard (or Clerk) timed out, rate-limited us or failed with 5xx: retrying can help."""

    status = 503
    code = "upstream_unavailable"
    default_message = "The assistant service is temporarily unavailable; try again shortly."

    def __init__(
        self, message: str | None = None, *, retry_after: int | None = 5, unanswered: bool = False
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        # No answer at all (a timeout): the call may still take effect after we gave up.
        self.unanswered = unanswered


class ServiceInitializationError(AppError):
    """The user's Backboard assistant could not be created, so the user was not created."""

    status = 503
    code = "service_initialization_failed"
    default_message = (
        "The service could not be initialized for this user: the assistant could not be "
        "created. No account data was stored; try again shortly."
    )

    def __init__(
        self, message: str | None = None, *, retryable: bool = True, retry_after: int = 5
    ) -> None:
        # A 4xx from Backboard (bad key, bad request) will not heal by retrying: 502, no hint.
        self.status = 503 if retryable else 502
        super().__init__(message, retry_after=retry_after if retryable else None)
