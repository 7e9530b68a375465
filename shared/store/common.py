"""What the statement modules (user_rows, trip_rows, message_rows) share.

Parameterized SQL only, one function per statement, rows as models; every function takes the
connection it runs on, so callers choose the transaction. The request path knows the signed-in
user by Clerk id only: its reads look the user up inside the same statement (one round trip)
and say when there is no such user yet. Pagination is keyset-based on ("createdAt", "id"),
which the indexes serve directly: a page costs the same at the first trip as at the
ten-thousandth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, LiteralString, TypeVar

from psycopg.rows import class_row, dict_row

from shared.store.db import Connection

# A position in a ("createdAt", "id") order.
Keyset = tuple[datetime, str]


USER_COLUMNS = '"id", "clerkId", "assistantId", "email", "name", "createdAt"'
TRIP_COLUMNS = '"id", "title", "userId", "threadId", "createdAt"'
MESSAGE_COLUMNS = '"id", "role", "content", "sessionId", "createdAt"'
DEFAULT_TITLE = "New Trip"  # the "title" column's default (sql/0001), as in the Prisma model


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


R = TypeVar("R")
Params = Sequence[object] | Mapping[str, object]
Record = dict[str, Any]  # a row by column name


def fetch_one(
    conn: Connection, row: type[R], query: LiteralString, params: Params = ()
) -> R | None:
    """The statement's first row as `row` (a model, or a dataclass), or None."""
    with conn.cursor(row_factory=class_row(row)) as cur:
        return cur.execute(query, params).fetchone()


def returning(conn: Connection, row: type[R], query: LiteralString, params: Params = ()) -> R:
    """The row of an INSERT/UPDATE ... RETURNING that always yields one."""
    found = fetch_one(conn, row, query, params)
    if found is None:  # a bug, not bad input
        raise RuntimeError("a statement that always returns a row returned none")
    return found


def fetch_record(conn: Connection, query: LiteralString, params: Params = ()) -> Record | None:
    """The first row by column name, for results that are not one model."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def fetch_records(conn: Connection, query: LiteralString, params: Params = ()) -> list[Record]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


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
