"""Clerk: reading a Clerk user object, and fetching one from Clerk's Backend API.

The webhook's `data` for user.created/user.updated and the Backend API's user have the same
shape, so one function reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from shared.config import get_settings, secret
from shared.container import PerContainer
from shared.errors import ConfigurationError, Unauthorized, UpstreamError, UpstreamUnavailable

logger = Logger(child=True)


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
    addresses = data.get("email_addresses")
    entries = (
        [a for a in addresses if isinstance(a, Mapping)] if isinstance(addresses, list) else []
    )
    primary_id = data.get("primary_email_address_id")
    chosen = next((a for a in entries if a.get("id") == primary_id and primary_id), None)
    chosen = chosen or next((a for a in entries if _text(a.get("email_address"))), None)
    email = _text(chosen.get("email_address")) if chosen else None
    full = " ".join(p for p in (_text(data.get("first_name")), _text(data.get("last_name"))) if p)
    return ClerkProfile(email=email, name=full or _text(data.get("username")))


def _open_client() -> Any:
    key = secret("CLERK_SECRET_KEY")
    if not key:
        raise ConfigurationError(
            "Set CLERK_SECRET_KEY or CLERK_SECRET_KEY_SECRET_ARN to look up users."
        )
    # Imported on first use: the SDK costs ~0.1 s of cold start, and only a new user whose
    # token carries no email needs it.
    from clerk_backend_api import Clerk
    from clerk_backend_api.utils import BackoffStrategy, RetryConfig

    return Clerk(
        bearer_auth=key,
        server_url=get_settings().clerk_api_url,
        timeout_ms=5_000,
        # The SDK's default retries 5xx for up to an hour; a request cannot wait that long.
        retry_config=RetryConfig("backoff", BackoffStrategy(100, 500, 2, 1_000), False),
    )


_client: PerContainer[Any] = PerContainer(_open_client)


def reset_clerk() -> None:
    _client.reset()


def fetch_clerk_profile(clerk_id: str) -> ClerkProfile:
    """The user's profile from Clerk's Backend API (a new user whose token has no email)."""
    import httpx
    from clerk_backend_api import models

    try:
        user = _client.get().users.get(user_id=clerk_id)
    except models.ClerkErrors as exc:
        if exc.status_code == 404:
            raise Unauthorized("This Clerk user no longer exists.") from exc
        logger.warning("clerk lookup failed", extra={"status": exc.status_code})
        raise UpstreamError("Clerk rejected the user lookup.") from exc
    except models.SDKError as exc:
        logger.warning("clerk lookup failed", extra={"status": exc.status_code})
        if exc.status_code == 429 or exc.status_code >= 500:
            raise UpstreamUnavailable("Clerk is unavailable; try again shortly.") from exc
        raise UpstreamError("Clerk rejected the user lookup.") from exc
    except httpx.HTTPError as exc:  # timeouts and connection errors
        logger.warning("clerk unreachable", extra={"error": type(exc).__name__})
        raise UpstreamUnavailable("Clerk is unavailable; try again shortly.") from exc
    return profile_from_clerk_user(user.model_dump())
