"""Typed queries: parameterized SQL only, one function per statement, rows as models.

Every function takes the connection it runs on, so callers choose the transaction. Pagination
is keyset-based on ("createdAt", "id"), which the indexes serve directly: a page costs the same
at the first trip as at the ten-thousandth.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import LiteralString, TypeVar

from psycopg.rows import class_row

from shared.db import Connection
from shared.models import Message, Role, Session, User

# A position in a ("createdAt", "id") order.
Keyset = tuple[datetime, str]

_USER_COLUMNS = '"id", "clerkId", "assistantId", "email", "name", "createdAt"'
_SESSION_COLUMNS = '"id", "title", "userId", "threadId", "createdAt"'
_MESSAGE_COLUMNS = '"id", "role", "content", "sessionId", "createdAt"'


def _db_timestamp(value: datetime) -> datetime:
    """Naive UTC, the type of the TIMESTAMP(3) columns, so comparisons use the indexes as is."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


# Users


def get_user_by_clerk_id(conn: Connection, clerk_id: str) -> User | None:
    with conn.cursor(row_factory=class_row(User)) as cur:
        cur.execute(f'SELECT {_USER_COLUMNS} FROM "User" WHERE "clerkId" = %s', (clerk_id,))
        return cur.fetchone()


def insert_user(
    conn: Connection, *, clerk_id: str, assistant_id: str, email: str, name: str | None
) -> User:
    with conn.cursor(row_factory=class_row(User)) as cur:
        cur.execute(
            'INSERT INTO "User" ("clerkId", "assistantId", "email", "name") '
            f"VALUES (%s, %s, %s, %s) RETURNING {_USER_COLUMNS}",
            (clerk_id, assistant_id, email, name),
        )
        return _one(cur.fetchone())


# Sessions (trips)


def insert_session(
    conn: Connection, *, user_id: str, thread_id: str, title: str | None = None
) -> Session:
    # Without a title the column default ('New Trip') applies, as with Prisma.
    with conn.cursor(row_factory=class_row(Session)) as cur:
        if title is None:
            cur.execute(
                'INSERT INTO "Session" ("userId", "threadId") '
                f"VALUES (%s, %s) RETURNING {_SESSION_COLUMNS}",
                (user_id, thread_id),
            )
        else:
            cur.execute(
                'INSERT INTO "Session" ("userId", "threadId", "title") '
                f"VALUES (%s, %s, %s) RETURNING {_SESSION_COLUMNS}",
                (user_id, thread_id, title),
            )
        return _one(cur.fetchone())


def get_session_for_user(conn: Connection, session_id: str, user_id: str) -> Session | None:
    """The trip, only if it belongs to the user: someone else's trip reads as missing."""
    with conn.cursor(row_factory=class_row(Session)) as cur:
        cur.execute(
            f'SELECT {_SESSION_COLUMNS} FROM "Session" WHERE "id" = %s AND "userId" = %s',
            (session_id, user_id),
        )
        return cur.fetchone()


def list_sessions_for_user(
    conn: Connection, user_id: str, *, limit: int, after: Keyset | None = None
) -> list[Session]:
    """The user's trips, newest first; `after` is the last trip of the previous page."""
    with conn.cursor(row_factory=class_row(Session)) as cur:
        if after is None:
            cur.execute(
                f'SELECT {_SESSION_COLUMNS} FROM "Session" WHERE "userId" = %s '
                'ORDER BY "createdAt" DESC, "id" DESC LIMIT %s',
                (user_id, limit),
            )
        else:
            cur.execute(
                f'SELECT {_SESSION_COLUMNS} FROM "Session" WHERE "userId" = %s '
                'AND ("createdAt", "id") < (%s, %s) '
                'ORDER BY "createdAt" DESC, "id" DESC LIMIT %s',
                (user_id, _db_timestamp(after[0]), after[1], limit),
            )
        return cur.fetchall()


# Messages


def insert_message(conn: Connection, *, session_id: str, role: Role, content: str) -> Message:
    with conn.cursor(row_factory=class_row(Message)) as cur:
        cur.execute(
            'INSERT INTO "Message" ("sessionId", "role", "content") '
            f"VALUES (%s, %s, %s) RETURNING {_MESSAGE_COLUMNS}",
            (session_id, role, content),
        )
        return _one(cur.fetchone())


def list_messages(
    conn: Connection,
    session_id: str,
    *,
    limit: int,
    before: Keyset | None = None,
    after: Keyset | None = None,
) -> list[Message]:
    """A page of a trip's messages, always returned in conversation order (createdAt, then id).

    With `after`: the first `limit` messages after that position. Otherwise the last `limit`
    messages (before `before`, when given): the latest page, which is what a chat opens on.
    """
    if after is not None:
        order: LiteralString = "ASC"
        condition: LiteralString = 'AND ("createdAt", "id") > (%s, %s) '
        params: tuple[object, ...] = (session_id, _db_timestamp(after[0]), after[1], limit)
    elif before is not None:
        order, condition = "DESC", 'AND ("createdAt", "id") < (%s, %s) '
        params = (session_id, _db_timestamp(before[0]), before[1], limit)
    else:
        order, condition, params = "DESC", "", (session_id, limit)
    with conn.cursor(row_factory=class_row(Message)) as cur:
        cur.execute(
            f'SELECT {_MESSAGE_COLUMNS} FROM "Message" WHERE "sessionId" = %s {condition}'
            f'ORDER BY "createdAt" {order}, "id" {order} LIMIT %s',
            params,
        )
        rows = cur.fetchall()
    return rows if order == "ASC" else rows[::-1]


T = TypeVar("T")


def _one(row: T | None) -> T:
    if row is None:  # RETURNING always yields the row; None means a bug, not bad input.
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return row
