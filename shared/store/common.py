"""What the statement modules (user_rows, trip_rows, message_rows) share.

Parameterized SQL only, one function per statement, rows as models; every function takes the
connection it runs on, so callers choose the transaction. The request path knows the signed-in
user by Clerk id only: its reads look the user up inside the same statement (one round trip)
and say when there is no such user yet. Pagination is keyset-based on ("createdAt", "id"),
which the indexes serve directly: a page costs the same at the first trip as at the
ten-thousandth."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import LiteralString, TypeVar

# A position in a ("createdAt", "id") order.
Keyset = tuple[datetime, str]


USER_COLUMNS = '"id", "clerkId", "assistantId", "email", "name", "createdAt"'
SESSION_COLUMNS = '"id", "title", "userId", "threadId", "createdAt"'
MESSAGE_COLUMNS = '"id", "role", "content", "sessionId", "createdAt"'


def db_timestamp(value: datetime) -> datetime:
    """Naive UTC, the type of the TIMESTAMP(3) columns, so comparisons use the indexes as is."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def page_clause(
    before: Keyset | None, after: Keyset | None
) -> tuple[LiteralString, LiteralString, tuple[object, ...]]:
    """Order, keyset condition and its parameters for a page of messages: ascending after
    `after`; otherwise descending (then reversed by the caller) before `before` or from the
    newest."""
    if after is not None:
        return "ASC", 'AND ("createdAt", "id") > (%s, %s) ', (db_timestamp(after[0]), after[1])
    if before is not None:
        return "DESC", 'AND ("createdAt", "id") < (%s, %s) ', (db_timestamp(before[0]), before[1])
    return "DESC", "", ()


T = TypeVar("T")


def one(row: T | None) -> T:
    if row is None:  # RETURNING always yields the row; None means a bug, not bad input.
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return row


def take_slot(column: LiteralString, user: LiteralString, source: LiteralString) -> LiteralString:
    """A data-modifying statement that takes one of the user's `%(limit)s` slots in any 60
    seconds, kept as the times of recent requests in tripchat.rate_limit.`column`; it returns
    `accepted` and, when refused, `retry_after` (seconds until the oldest slot frees up). The
    row lock of ON CONFLICT serializes a user's concurrent requests."""
    return (
        f"INSERT INTO tripchat.rate_limit AS r (user_id, {column}) "
        f"SELECT {user}, ARRAY[now()] FROM {source} "
        f"ON CONFLICT (user_id) DO UPDATE SET {column} = ("
        " SELECT CASE WHEN cardinality(w) < %(limit)s THEN w || now() ELSE w END FROM ("
        f"  SELECT ARRAY(SELECT t FROM unnest(r.{column}) t"
        "   WHERE t > now() - interval '60 seconds' ORDER BY t) AS w) recent) "
        f"RETURNING {column}[cardinality({column})] = now() AS accepted, "
        f"ceil(extract(epoch FROM {column}[1] + interval '60 seconds' - now()))::int "
        "AS retry_after"
    )
