"""Trips (the "Session" table): rows owned by a Clerk user, their limit, their threads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import LiteralString

from shared.models import Trip, User
from shared.store.common import (
    DEFAULT_TITLE,
    TRIP_COLUMNS,
    USER_COLUMNS,
    Keyset,
    db_timestamp,
    fetch_one,
    fetch_record,
    fetch_records,
    returning,
    take_slot,
)
from shared.store.db import Connection

# A title the traveller chose (at creation or by renaming), recorded with the statement that
# sets it: the automatic title never replaces it (sql/0006).
_CHOSEN: LiteralString = (
    "chosen AS (INSERT INTO tripchat.trip_title_chosen (session_id) SELECT id FROM t "
    "ON CONFLICT (session_id) DO UPDATE SET chosen_at = now()) "
)


def insert_trip(
    conn: Connection, *, user_id: str, thread_id: str, title: str | None = None
) -> Trip:
    # Without a title the column default ('New Trip') applies, as with Prisma.
    if title is None:
        return returning(
            conn,
            Trip,
            'INSERT INTO "Session" ("userId", "threadId") '
            f"VALUES (%s, %s) RETURNING {TRIP_COLUMNS}",
            (user_id, thread_id),
        )
    return returning(
        conn,
        Trip,
        'WITH t AS (INSERT INTO "Session" ("userId", "threadId", "title") '
        f"VALUES (%s, %s, %s) RETURNING {TRIP_COLUMNS}), {_CHOSEN}SELECT * FROM t",
        (user_id, thread_id, title),
    )


@dataclass(frozen=True)
class TripList:
    owner_id: str | None  # None: no User row for this Clerk id (yet)
    trips: list[Trip]


def list_trips_of(
    conn: Connection, clerk_id: str, *, limit: int, after: Keyset | None = None
) -> TripList:
    """The user's trips, newest first, `after` the last trip of the previous page; the
    user's row is found in the same statement (an existing user with no trips yields one
    row of NULL trip columns)."""
    condition: LiteralString = 'AND ("createdAt", "id") < (%s, %s) ' if after else ""
    keys = (db_timestamp(after[0]), after[1]) if after else ()
    rows = fetch_records(
        conn,
        'SELECT u."id" AS "ownerId", s.* FROM "User" u LEFT JOIN LATERAL ('
        f' SELECT {TRIP_COLUMNS} FROM "Session" WHERE "userId" = u."id" {condition}'
        ' ORDER BY "createdAt" DESC, "id" DESC LIMIT %s'
        ') s ON true WHERE u."clerkId" = %s',
        (*keys, limit, clerk_id),
    )
    if not rows:
        return TripList(None, [])
    trips = [Trip.model_validate(row) for row in rows if row["id"] is not None]
    return TripList(str(rows[0]["ownerId"]), trips)


_OWNED_TRIP: LiteralString = (
    '"id" = %s AND "userId" = (SELECT "id" FROM "User" WHERE "clerkId" = %s)'
)


def get_trip_of(conn: Connection, clerk_id: str, trip_id: str) -> Trip | None:
    """The trip, only if it belongs to the user: someone else's trip reads as missing."""
    return fetch_one(
        conn, Trip, f'SELECT {TRIP_COLUMNS} FROM "Session" WHERE {_OWNED_TRIP}', (trip_id, clerk_id)
    )


def replace_thread(conn: Connection, trip_id: str, old: str, new: str) -> str:
    """Point the trip at a new Backboard thread, unless another request did first; returns
    the thread the trip now has (None-safe: a deleted trip keeps nothing)."""
    row = fetch_record(
        conn,
        'UPDATE "Session" SET "threadId" = %s WHERE "id" = %s AND "threadId" = %s '
        'RETURNING "threadId"',
        (new, trip_id, old),
    ) or fetch_record(conn, 'SELECT "threadId" FROM "Session" WHERE "id" = %s', (trip_id,))
    return str(row["threadId"]) if row else ""


def rename_trip_of(conn: Connection, clerk_id: str, trip_id: str, title: str) -> Trip | None:
    """Rename the user's trip, and record that its title is theirs (one statement)."""
    return fetch_one(
        conn,
        Trip,
        f'WITH t AS (UPDATE "Session" SET "title" = %s WHERE {_OWNED_TRIP} '
        f"RETURNING {TRIP_COLUMNS}), {_CHOSEN}SELECT * FROM t",
        (title, trip_id, clerk_id),
    )


def set_automatic_title(conn: Connection, trip_id: str, title: str) -> bool:
    """Give the trip `title` if it still has the default one and the traveller never chose one;
    False when it does not. Run inside a transaction (or db.pipeline): the row lock is taken
    first, so a rename in flight commits before the check, which then runs on a fresh snapshot
    (read committed) and sees its choice, even a rename to the default title itself."""
    conn.execute('SELECT 1 FROM "Session" WHERE "id" = %s FOR UPDATE', (trip_id,))
    return (
        fetch_record(
            conn,
            'UPDATE "Session" SET "title" = %s WHERE "id" = %s AND "title" = %s AND NOT EXISTS '
            "(SELECT 1 FROM tripchat.trip_title_chosen WHERE session_id = %s) RETURNING 1",
            (title, trip_id, DEFAULT_TITLE, trip_id),
        )
        is not None
    )


def delete_trip_rows_of(conn: Connection, clerk_id: str, trip_id: str) -> str | None:
    """Delete the user's trip with its messages and turns, children first; returns its
    Backboard thread id, or None when the user has no such trip. Run inside a transaction."""
    row = fetch_record(
        conn,
        f'SELECT "threadId" FROM "Session" WHERE {_OWNED_TRIP} FOR UPDATE',
        (trip_id, clerk_id),
    )
    if row is None:
        return None
    conn.execute("DELETE FROM tripchat.reply_stream WHERE session_id = %s", (trip_id,))
    conn.execute("DELETE FROM tripchat.message_turn WHERE session_id = %s", (trip_id,))
    conn.execute("DELETE FROM tripchat.trip_title_chosen WHERE session_id = %s", (trip_id,))
    conn.execute('DELETE FROM "Message" WHERE "sessionId" = %s', (trip_id,))
    conn.execute('DELETE FROM "Session" WHERE "id" = %s', (trip_id,))
    return str(row["threadId"])


@dataclass(frozen=True)
class TripSlot:
    user: User | None  # None: no User row for this Clerk id (yet); nothing was counted
    accepted: bool
    retry_after_seconds: int  # when refused: until the oldest of the last minute's trips ages out
    # Set after a thread creation timed out: from then on, look for a thread no trip knows.
    threads_check_at: datetime | None = None


_TAKE_TRIP_SLOT: LiteralString = (
    f'WITH u AS (SELECT {USER_COLUMNS} FROM "User" WHERE "clerkId" = %(clerk)s), '
    "rate AS (" + take_slot("recent_trips", 'u."id"', "u") + ") "
    "SELECT u.*, rate.accepted, rate.retry_after, "
    # The value before this statement (a CTE's changes are not visible here): unchanged by it.
    ' (SELECT threads_check_at FROM tripchat.rate_limit WHERE user_id = u."id") AS threads_check_at'
    " FROM u, rate"
)


def take_trip_slot(conn: Connection, clerk_id: str, *, limit: int) -> TripSlot:
    """One statement: the user's row, and one of their `limit` new trips in any 60 seconds."""
    row = fetch_record(conn, _TAKE_TRIP_SLOT, {"clerk": clerk_id, "limit": limit})
    if row is None:
        return TripSlot(None, False, 0)
    return TripSlot(
        User.model_validate(row),
        bool(row["accepted"]),
        max(1, int(row["retry_after"] or 1)),
        row["threads_check_at"],
    )


def mark_threads_unsure(conn: Connection, user_id: str, *, after_seconds: float) -> None:
    """A thread creation for this user timed out: look for a stray thread after this long."""
    conn.execute(
        "UPDATE tripchat.rate_limit SET threads_check_at = "
        "GREATEST(threads_check_at, now() + make_interval(secs => %s)) WHERE user_id = %s",
        (after_seconds, user_id),
    )


def known_threads(conn: Connection, user_id: str, thread_ids: list[str]) -> set[str]:
    """Which of these Backboard threads belong to one of the user's trips."""
    rows = fetch_records(
        conn,
        'SELECT "threadId" FROM "Session" WHERE "userId" = %s AND "threadId" = ANY(%s)',
        (user_id, thread_ids),
    )
    return {str(row["threadId"]) for row in rows}


def clear_threads_check(conn: Connection, user_id: str, checked_at: datetime) -> None:
    """Done looking, unless another timeout asked for a later look meanwhile."""
    conn.execute(
        "UPDATE tripchat.rate_limit SET threads_check_at = NULL "
        "WHERE user_id = %s AND threads_check_at <= %s",
        (user_id, checked_at),
    )
