"""Opaque keyset cursors: a position in a ("createdAt", "id") order, base64url-encoded; for
search, a position in the hits' (rank, createdAt, id) order, tied to its query.

Clients pass them back unchanged; anything that does not decode is a 422, never a 500. They
are not signed, so a client can forge one: decoding validates everything the queries rely on,
so a forged cursor is refused here rather than failing in datetime arithmetic or PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import struct
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query

from shared.errors import ValidationFailed
from shared.store.common import Keyset
from shared.store.search_rows import SearchKeyset

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


def _encode(parts: list[Any]) -> str:
    raw = json.dumps(parts, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return _encode([created_at.astimezone(UTC).isoformat(), row_id])


def decode_cursor(cursor: str, *, name: str = "cursor") -> Keyset:
    """The (createdAt in UTC, id) position `cursor` names; ValidationFailed (422) for anything
    encode_cursor cannot have produced."""
    invalid = ValidationFailed(f"{name} is not a cursor this API returned.")
    stamp, row_id = _decode(cursor, 2, invalid)
    return _position(stamp, row_id, invalid)


def query_key(query: str) -> str:
    """A short digest of a search query: a search cursor is valid for its own query only (a
    rank means nothing under another one)."""
    return hashlib.sha256(query.encode()).hexdigest()[:12]


def encode_search_cursor(position: SearchKeyset, query: str) -> str:
    rank, created_at, hit_id = position
    return _encode([rank, created_at.astimezone(UTC).isoformat(), hit_id, query_key(query)])


def decode_search_cursor(cursor: str, query: str) -> SearchKeyset:
    """The (rank, createdAt in UTC, id) position of a search cursor issued for `query`; 422
    for anything encode_search_cursor cannot have produced for it."""
    invalid = ValidationFailed("cursor is not a cursor this API returned for this q.")
    rank, stamp, hit_id, key = _decode(cursor, 4, invalid)
    # Ranks are non-negative float4 values (a bool, an int or a float4 overflow is refused):
    # one that float4 cannot hold exactly would fail the cast in PostgreSQL.
    if type(rank) is not float or not 0 <= rank < math.inf or not _is_float4(rank):
        raise invalid
    if key != query_key(query.strip()):
        raise invalid
    created_at, row_id = _position(stamp, hit_id, invalid)
    return float(rank), created_at, row_id


def _is_float4(value: float) -> bool:
    try:
        return bool(struct.unpack("f", struct.pack("f", value))[0] == value)
    except OverflowError:
        return False


def _decode(cursor: str, size: int, invalid: ValidationFailed) -> list[Any]:
    """The JSON list of `size` items a cursor holds."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise invalid from exc
    if not isinstance(decoded, list) or len(decoded) != size:
        raise invalid
    return decoded


def _position(stamp: Any, row_id: Any, invalid: ValidationFailed) -> Keyset:
    if not isinstance(stamp, str) or not isinstance(row_id, str):
        raise invalid
    try:
        parsed = datetime.fromisoformat(stamp)
        if parsed.tzinfo is None:  # astimezone would take it as the container's local time
            raise invalid
        created_at = parsed.astimezone(UTC)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid from exc
    if not EARLIEST <= created_at < LATEST:
        raise invalid
    # isprintable() is False for NUL and other controls (PostgreSQL text refuses NUL) and for
    # lone surrogates (not encodable as UTF-8).
    if not 1 <= len(row_id) <= MAX_ID_LENGTH or not row_id.isprintable():
        raise invalid
    return created_at, row_id
