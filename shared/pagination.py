"""Opaque keyset cursors: a position in a ("createdAt", "id") order, base64url-encoded.

Clients pass them back unchanged; anything that does not decode is a 422, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from shared.errors import ValidationFailed
from shared.queries import Keyset

MAX_CURSOR_LENGTH = 200


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, name: str = "cursor") -> Keyset:
    invalid = ValidationFailed(f"{name} is not a cursor this API returned.")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise invalid from exc
    if not isinstance(row_id, str) or created_at.tzinfo is None:
        raise invalid
    return created_at, row_id
