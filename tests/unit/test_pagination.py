"""decode_cursor against forged cursors: unsigned base64 JSON that a client can write by hand.
Whatever it holds, decoding gives a position the queries can use or a 422, never an
OverflowError, a PostgreSQL DataError or a UnicodeEncodeError later on."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.errors import ValidationFailed
from shared.http.cursors import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor

STAMP = "2024-05-01T10:00:00.123000+00:00"


def forge(value: Any) -> str:
    """A cursor holding any JSON value, encoded as encode_cursor encodes."""
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def refused(cursor: str, name: str = "cursor") -> None:
    with pytest.raises(ValidationFailed) as caught:
        decode_cursor(cursor, name=name)
    assert caught.value.status == 422
    assert caught.value.message == f"{name} is not a cursor this API returned."


FORGED = {
    # Timestamps that overflow Python's datetime when converted to UTC.
    "year 1, east of UTC": forge(["0001-01-01T00:00:00+05:00", "id"]),
    "year 9999, west of UTC": forge(["9999-12-31T23:00:00-05:00", "id"]),
    # Valid datetimes, but no row this API wrote is stamped there.
    "year 1, UTC": forge(["0001-01-01T00:00:00+00:00", "id"]),
    "before 1970": forge(["1969-12-31T23:59:59.999+00:00", "id"]),
    "year 2200": forge(["2200-01-01T00:00:00+00:00", "id"]),
    "year 9999, UTC": forge(["9999-12-31T23:59:59.999+00:00", "id"]),
    # Ids PostgreSQL or UTF-8 cannot take, or no id could be.
    "NUL in the id": forge([STAMP, "a\x00b"]),
    "control character in the id": forge([STAMP, "a\x1bb"]),
    "lone surrogate in the id": forge([STAMP, "\ud800"]),
    "empty id": forge([STAMP, ""]),
    "101-character id": forge([STAMP, "x" * 101]),
}


@pytest.mark.parametrize("kind", list(FORGED))
def test_forged_cursors_are_422(kind: str) -> None:
    refused(FORGED[kind])
    refused(FORGED[kind], name="before")


def test_the_window_and_the_id_length_are_exact_bounds() -> None:
    """Every cursor encode_cursor makes from a storable row decodes to its position (in UTC,
    what the queries compare); one step past the window or the id length does not."""
    edges = [
        (datetime(1970, 1, 1, tzinfo=UTC), "x"),
        (datetime(2199, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC), "c" * 100),
        (datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), "clx1y2z3a0000"),
        (datetime(2024, 5, 1, tzinfo=UTC), "ünïcödé id"),
    ]
    for created_at, row_id in edges:
        decoded = decode_cursor(encode_cursor(created_at, row_id))
        assert decoded == (created_at, row_id)
        assert decoded[0].tzinfo == UTC
    refused(encode_cursor(datetime(1970, 1, 1, tzinfo=UTC) - timedelta(milliseconds=1), "x"))
    refused(encode_cursor(datetime(2200, 1, 1, tzinfo=UTC), "x"))
    refused(encode_cursor(datetime(2024, 5, 1, tzinfo=UTC), "c" * 101))
    # And what was refused before stays refused: other shapes, other encodings.
    for value in [
        [STAMP],
        [STAMP, "id", "extra"],
        {"a": STAMP, "b": "id"},  # two keys unpack like two items
        [STAMP, 42],
        [1714557600, "id"],
        ["2024-05-01T10:00:00", "id"],  # no offset: refused, not read as local time
        ["not a date", "id"],
        None,
    ]:
        refused(forge(value))
    for cursor in ["", "garbage!", "%%%", "x" * (MAX_CURSOR_LENGTH + 1), "\ud800"]:
        refused(cursor)
    refused(base64.urlsafe_b64encode(b'["2024-05-01T10:00:00+00:00","\xff"]').decode())
