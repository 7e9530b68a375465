"""Clerk webhooks: verify the Svix signature, then apply the event to our users.

Svix delivers at least once and in no guaranteed order. Verification comes first and alone:
a delivery that fails it writes nothing and calls nothing. Applying an event is idempotent and
order-independent (see shared.domain.users), so duplicates and reordering end in the same state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from shared.config import secret
from shared.domain import users
from shared.errors import BadRequest, ConfigurationError, Unauthorized, ValidationFailed
from shared.gateways.clerk import profile_from_clerk_user

logger = Logger(child=True)

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


class InvalidSignature(Unauthorized):
    code = "invalid_signature"
    default_message = "The webhook signature could not be verified."


def verify_delivery(body: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The verified event payload. Missing Svix headers: 400; a signature that does not
    match this body and secret, or a timestamp outside Svix's tolerance: 401."""
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [name for name in SVIX_HEADERS if not lowered.get(name)]
    if missing:
        raise BadRequest(f"Missing webhook headers: {', '.join(missing)}.")
    signing_secret = secret("CLERK_WEBHOOK_SIGNING_SECRET")
    if not signing_secret:
        raise ConfigurationError(
            "Set CLERK_WEBHOOK_SIGNING_SECRET or CLERK_WEBHOOK_SIGNING_SECRET_SECRET_ARN."
        )
    try:
        verifier = Webhook(signing_secret)
    except (ValueError, EmptyWebhookSecretError) as exc:  # not base64 after its whsec_ prefix
        raise ConfigurationError(
            "CLERK_WEBHOOK_SIGNING_SECRET is not a signing secret (whsec_ followed by base64)."
        ) from exc
    # Svix signs with the Standard Webhooks scheme; only the header names differ.
    standard = {f"webhook-{name.removeprefix('svix-')}": lowered[name] for name in SVIX_HEADERS}
    try:
        verifier.verify(body, standard, json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:
        # ValueError: malformed signature or timestamp headers, or a body that is not UTF-8.
        logger.warning("webhook rejected", extra={"svix_id": lowered["svix-id"], "why": str(exc)})
        raise InvalidSignature() from exc
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # RecursionError: absurd nesting; shared.http.api refuses it first, this is a backstop.
        raise BadRequest("The webhook body is not valid JSON.") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise ValidationFailed("The webhook body has no event type.")
    return payload


def apply_event(payload: Mapping[str, Any]) -> str:
    """Apply a verified Clerk event; returns what happened, for the response and the logs."""
    event_type = str(payload["type"])
    data = payload.get("data")
    if event_type not in ("user.created", "user.updated", "user.deleted"):
        logger.info("webhook event type ignored", extra={"type": event_type})
        return "ignored"
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValidationFailed(f"The {event_type} event has no user id.")
    clerk_id: str = data["id"]
    if event_type == "user.deleted":
        outcome = "erased" if users.erase_user(clerk_id) else "already_absent"
    else:
        result = users.apply_clerk_profile(
            clerk_id, profile_from_clerk_user(data), _event_time(payload, data)
        )
        outcome = result.value
    logger.info("webhook applied", extra={"type": event_type, "outcome": outcome})
    return outcome


def _event_time(payload: Mapping[str, Any], data: Mapping[str, Any]) -> int:
    """When Clerk last changed the user (ms): orders user.created/updated deliveries."""
    for value in (data.get("updated_at"), data.get("created_at"), payload.get("timestamp")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0
