"""Clerk: reading a Clerk user object, and fetching one from Clerk's Backend API.

The webhook's `data` for user.created/user.updated and the Backend API's user have the same
shape, so one function reads both. The lookup uses the official SDK (clerk_backend_api), one
client per container, with CLERK_SECRET_KEY (or the secret CLERK_SECRET_KEY_SECRET_ARN names)
and CLERK_API_URL when set (Clerk's default is https://api.clerk.com/v1). Without a secret key
the lookup is skipped: the user is stored with an empty email, as one without any address is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from shared.config import get_settings, secret
from shared.container import PerContainer
from shared.errors import (
    AppError,
    ConfigurationError,
    Unauthorized,
    UpstreamError,
    UpstreamUnavailable,
)

if TYPE_CHECKING:
    from clerk_backend_api import Clerk, models

logger = Logger(child=True)

# One attempt, bounded: the SDK's default retries 5xx for up to an hour and sleeps for any
# Retry-After a 5xx sends, uncapped; a request waiting on Clerk cannot afford either.
TIMEOUT_MS = 3_000
MAX_RETRY_AFTER_SECONDS = 60
# The SDK puts path parameters into the URL unescaped (and httpx resolves "..").
CLERK_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")

USER_GONE = "This Clerk user no longer exists."
CLERK_DOWN = "Clerk is unavailable; try again shortly."
CLERK_REFUSED = "Clerk rejected the user lookup."


@dataclass(frozen=True)
class ClerkProfile:
    """What we keep of a Clerk user: the primary email and a display name."""

    email: str | None
    name: str | None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def profile_from_clerk_user(data: Mapping[str, Any]) -> ClerkProfile:
    """The primary email (the address whose id is primary_email_address_id, else the first
    one, else None) and the display name ("first last", else username, else None). Odd or
    missing fields never raise: a Clerk user may have no email at all."""
    if not isinstance(data, Mapping):
        return ClerkProfile(None, None)
    addresses = data.get("email_addresses")
    usable = [
        entry
        for entry in (addresses if isinstance(addresses, list) else [])
        if isinstance(entry, Mapping) and _text(entry.get("email_address"))
    ]
    primary_id = data.get("primary_email_address_id")
    primary = next(
        (e for e in usable if isinstance(primary_id, str) and e.get("id") == primary_id), None
    )
    chosen = primary or (usable[0] if usable else None)
    email = _text(chosen.get("email_address")) if chosen else None
    parts = (_text(data.get("first_name")), _text(data.get("last_name")))
    full = " ".join(part for part in parts if part)
    return ClerkProfile(email=email, name=full or _text(data.get("username")))


def fetch_clerk_profile(clerk_id: str) -> ClerkProfile:
    """The user's profile from Clerk's Backend API (a new user whose token has no email).

    Unauthorized when Clerk does not know the user; UpstreamUnavailable on timeouts,
    connection errors, 429 and 5xx; UpstreamError on other refusals; ConfigurationError when
    the configured secret key cannot be read. With no secret key configured at all, an empty
    profile: the new user is stored with an empty email (README, Users) instead of failing."""
    if not isinstance(clerk_id, str) or not CLERK_ID.fullmatch(clerk_id):
        raise Unauthorized(USER_GONE)
    try:
        client = _client.get()
    except _NoSecretKey:
        _warn_no_secret_key()
        return ClerkProfile(None, None)
    # After the client: without a key, the SDK is never loaded at all.
    import httpx
    from clerk_backend_api import models

    try:
        user = client.users.get(user_id=clerk_id)
    except models.ResponseValidationError as exc:
        if exc.status_code != 200:
            raise _error_for(exc, client) from exc
        # A user the SDK's model no longer matches (Clerk added or changed a field): the
        # fields we read are still in the raw JSON.
        logger.warning("clerk user did not match the SDK model", extra={"cause": str(exc)[:300]})
        return _profile_from_body(exc.body)
    except models.ClerkBaseError as exc:
        raise _error_for(exc, client) from exc
    except (httpx.HTTPError, models.NoResponseError) as exc:  # timeouts, connection errors
        logger.warning("clerk unreachable", extra={"error": type(exc).__name__})
        raise UpstreamUnavailable(CLERK_DOWN) from exc
    return profile_from_clerk_user(
        {
            "primary_email_address_id": user.primary_email_address_id,
            "email_addresses": [
                {"id": address.id, "email_address": address.email_address}
                for address in user.email_addresses
            ],
            "first_name": user.first_name,
            "last_name": user.last_name,
            "username": user.username,
        }
    )


def reset_clerk() -> None:
    """Forget the SDK client (tests, and a rotated secret key)."""
    _client.reset()
    _warn_no_secret_key.cache_clear()


class _NoSecretKey(ConfigurationError):
    """Neither CLERK_SECRET_KEY nor CLERK_SECRET_KEY_SECRET_ARN is set: lookups are off."""


@functools.cache
def _warn_no_secret_key() -> None:
    # Once per container: every new user without an email claim would repeat it.
    logger.warning(
        "CLERK_SECRET_KEY is not configured: new users whose session token has no email "
        "claim are stored with an empty email until a Clerk webhook fills it in"
    )


def _open_client() -> Clerk:
    key = secret("CLERK_SECRET_KEY")
    if not key:
        raise _NoSecretKey(
            "Set CLERK_SECRET_KEY (or CLERK_SECRET_KEY_SECRET_ARN) to look up Clerk users."
        )
    # Imported on first use: the SDK costs ~0.1 s of cold start, and only a new user whose
    # token carries no email needs it.
    from clerk_backend_api import Clerk
    from clerk_backend_api.utils import BackoffStrategy, RetryConfig

    return Clerk(
        bearer_auth=key,
        server_url=get_settings().clerk_api_url or None,
        timeout_ms=TIMEOUT_MS,
        retry_config=RetryConfig("none", BackoffStrategy(0, 0, 1, 0), False),
    )


def _close_client(client: Clerk) -> None:
    client.__exit__(None, None, None)  # type: ignore[no-untyped-call]  # closes its httpx client


_client: PerContainer[Clerk] = PerContainer(_open_client, _close_client)


def _error_for(exc: models.ClerkBaseError, client: Clerk) -> AppError:
    """The domain error for Clerk's answer. The SDK's message holds Clerk's response body,
    so only the status is logged."""
    status = exc.status_code
    if status == 404:
        return Unauthorized(USER_GONE)
    if status in (401, 403):
        # The key is wrong or was revoked: the next request builds a client with the secret
        # as it is then (a rotated secret is picked up without a redeploy).
        logger.error("clerk rejected CLERK_SECRET_KEY", extra={"status": status})
        _client.reset(only=client)
        return UpstreamError(CLERK_REFUSED)
    logger.warning("clerk lookup failed", extra={"status": status})
    if status == 429:
        return UpstreamUnavailable(CLERK_DOWN, retry_after=_retry_after(exc.headers))
    if status >= 500:
        return UpstreamUnavailable(CLERK_DOWN)
    return UpstreamError(CLERK_REFUSED)


def _retry_after(headers: Mapping[str, str]) -> int:
    try:
        seconds = int(float(headers.get("retry-after") or ""))
    except (ValueError, OverflowError):  # absent, an HTTP date, or not finite
        return 5
    return max(1, min(seconds, MAX_RETRY_AFTER_SECONDS))


def _profile_from_body(body: str) -> ClerkProfile:
    import json

    try:
        data = json.loads(body)
    except ValueError as exc:
        raise UpstreamError("Clerk returned an unreadable user.") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
        raise UpstreamError("Clerk returned an unreadable user.")
    return profile_from_clerk_user(data)
