"""Opaque keyset cursors: a position in a ("createdAt", "id") order, base64url-encoded.

Clients pass them back unchanged; anything that does not decode is a 422, never a 500. They
are not signed, so a client can forge one: decoding validates everything the queries rely on,
so a forged cursor is refused here rather than failing in datetime arithmetic or PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Query

from shared.errors import ValidationFailed
from shared.store.common import Keyset

MAX_CURSOR_LENGTH = 200
# Ids are uuids by default (a Prisma client may use cuids); the path parameter allows 100.
MAX_ID_LENGTH = 100
# Rows are stamped by the database clock, so every cursor this API issues falls in this
# window. Far outside it, converting to UTC overflows Python's datetime (year 1 east of UTC,
# year 9999 west of it); within it, the value is well inside PostgreSQL's TIMESTAMP(3) range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


# The query parameters of the newest-first lists (trips, memories).
ListLimit = Annotated[int, Query(ge=1, le=100, description="Page size")]
NextCursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="nextCursor of the previous page"),
]


def position_after(cursor: str | None) -> Keyset | None:
    """Where a newest-first list resumes: the position `cursor` (a nextCursor) names."""
    return decode_cursor(cursor) if cursor else None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, name: str = "cursor") -> Keyset:
    """The (createdAt in UTC, id) position `cursor` names; ValidationFailed (422) for anything
    encode_cursor cannot have produced."""
    invalid = ValidationFailed(f"{name} is not a cursor this API returned.")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(decoded, list) or len(decoded) != 2:
            raise invalid
        stamp, row_id = decoded
        if not isinstance(stamp, str) or not isinstance(row_id, str):
            raise invalid
        parsed = datetime.fromisoformat(stamp)
        if parsed.tzinfo is None:  # astimezone would take it as the container's local time
            raise invalid
        created_at = parsed.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        raise invalid from exc
    if not EARLIEST <= created_at < LATEST:
        raise invalid
    # isprintable() is False for NUL and other controls (PostgreSQL text refuses NUL) and for
    # lone surrogates (not encodable as UTF-8).
    if not 1 <= len(row_id) <= MAX_ID_LENGTH or not row_id.isprintable():
        raise invalid
    return created_at, row_id
