"""Typed queries: parameterized SQL only, one function per statement, rows as models.

Every function takes the connection it runs on, so callers choose the transaction. The
request path knows the signed-in user by Clerk id only: its reads look the user up inside
the same statement (one round trip) and say when there is no such user yet. Pagination
is keyset-based on ("createdAt", "id"), which the indexes serve directly: a page costs the same
at the first trip as at the ten-thousandth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import LiteralString, TypeVar

from psycopg.rows import class_row, dict_row

from shared.models import Message, Role, Session, User
from shared.store.db import Connection

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


@dataclass(frozen=True)
class TripList:
    owner_id: str | None  # None: no User row for this Clerk id (yet)
    trips: list[Session]


def list_trips_of(
    conn: Connection, clerk_id: str, *, limit: int, after: Keyset | None = None
) -> TripList:
    """The user's trips, newest first, `after` the last trip of the previous page; the
    user's row is found in the same statement (an existing user with no trips yields one
    row of NULL trip columns)."""
    condition: LiteralString = 'AND ("createdAt", "id") < (%s, %s) ' if after else ""
    keys = (_db_timestamp(after[0]), after[1]) if after else ()
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            'SELECT u."id" AS "ownerId", s.* FROM "User" u LEFT JOIN LATERAL ('
            f' SELECT {_SESSION_COLUMNS} FROM "Session" WHERE "userId" = u."id" {condition}'
            ' ORDER BY "createdAt" DESC, "id" DESC LIMIT %s'
            ') s ON true WHERE u."clerkId" = %s',
            (*keys, limit, clerk_id),
        ).fetchall()
    if not rows:
        return TripList(None, [])
    trips = [Session.model_validate(row) for row in rows if row["id"] is not None]
    return TripList(str(rows[0]["ownerId"]), trips)


_OWNED_TRIP: LiteralString = (
    '"id" = %s AND "userId" = (SELECT "id" FROM "User" WHERE "clerkId" = %s)'
)


def get_trip_of(conn: Connection, clerk_id: str, session_id: str) -> Session | None:
    """The trip, only if it belongs to the user: someone else's trip reads as missing."""
    with conn.cursor(row_factory=class_row(Session)) as cur:
        cur.execute(
            f'SELECT {_SESSION_COLUMNS} FROM "Session" WHERE {_OWNED_TRIP}',
            (session_id, clerk_id),
        )
        return cur.fetchone()


# Messages


def insert_message(conn: Connection, *, session_id: str, role: Role, content: str) -> Message:
    with conn.cursor(row_factory=class_row(Message)) as cur:
        cur.execute(
            'INSERT INTO "Message" ("sessionId", "role", "content") '
            f"VALUES (%s, %s, %s) RETURNING {_MESSAGE_COLUMNS}",
            (session_id, role, content),
        )
        return _one(cur.fetchone())


def _page(
    before: Keyset | None, after: Keyset | None
) -> tuple[LiteralString, LiteralString, tuple[object, ...]]:
    """Order, keyset condition and its parameters for a page of messages: ascending after
    `after`; otherwise descending (then reversed by the caller) before `before` or from the
    newest."""
    if after is not None:
        return "ASC", 'AND ("createdAt", "id") > (%s, %s) ', (_db_timestamp(after[0]), after[1])
    if before is not None:
        return "DESC", 'AND ("createdAt", "id") < (%s, %s) ', (_db_timestamp(before[0]), before[1])
    return "DESC", "", ()


T = TypeVar("T")


def _one(row: T | None) -> T:
    if row is None:  # RETURNING always yields the row; None means a bug, not bad input.
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return row


# Clerk sync state and account erasure


def lock_clerk_id(conn: Connection, clerk_id: str, *, wait_ms: int) -> None:
    """Serialize everything that creates, updates or erases one Clerk user, across containers,
    until the transaction ends. Waiters give up after `wait_ms` (then the caller answers 503)."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        (f"{wait_ms}ms", f"{wait_ms}ms"),
    )
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"tripchat:user:{clerk_id}",)
    )


@dataclass(frozen=True)
class ClerkState:
    last_event_at: int  # Clerk's updated_at (ms) of the newest event applied; 0: none
    deleted: bool  # erased by a user.deleted event: never recreated
    assistant_wait_seconds: int  # > 0: an assistant creation timed out that recently


def get_clerk_state(conn: Connection, clerk_id: str) -> ClerkState | None:
    """What is known of the Clerk user beyond their row, or None when nothing is."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT last_event_at, deleted_at IS NOT NULL AS deleted, "
            "greatest(0, ceil(extract(epoch FROM assistant_wait_until - now())))::int AS wait "
            "FROM tripchat.clerk_user_state WHERE clerk_id = %s",
            (clerk_id,),
        ).fetchone()
    if row is None:
        return None
    return ClerkState(int(row["last_event_at"]), bool(row["deleted"]), int(row["wait"] or 0))


def wait_for_late_assistant(conn: Connection, clerk_id: str, *, seconds: float) -> None:
    """An assistant creation timed out: request no other for `seconds` (a late one may land)."""
    conn.execute(
        "INSERT INTO tripchat.clerk_user_state (clerk_id, assistant_wait_until) "
        "VALUES (%s, now() + make_interval(secs => %s)) ON CONFLICT (clerk_id) DO UPDATE "
        "SET assistant_wait_until = EXCLUDED.assistant_wait_until",
        (clerk_id, seconds),
    )


def record_clerk_event(conn: Connection, clerk_id: str, event_at: int) -> None:
    conn.execute(
        "INSERT INTO tripchat.clerk_user_state (clerk_id, last_event_at) VALUES (%s, %s) "
        "ON CONFLICT (clerk_id) DO UPDATE SET last_event_at = "
        "GREATEST(tripchat.clerk_user_state.last_event_at, EXCLUDED.last_event_at)",
        (clerk_id, event_at),
    )


def mark_clerk_deleted(conn: Connection, clerk_id: str) -> None:
    conn.execute(
        "INSERT INTO tripchat.clerk_user_state (clerk_id, deleted_at) VALUES (%s, now()) "
        "ON CONFLICT (clerk_id) DO UPDATE SET deleted_at = "
        "COALESCE(tripchat.clerk_user_state.deleted_at, now())",
        (clerk_id,),
    )


def set_assistant(conn: Connection, user_id: str, assistant_id: str) -> User:
    with conn.cursor(row_factory=class_row(User)) as cur:
        cur.execute(
            f'UPDATE "User" SET "assistantId" = %s WHERE "id" = %s RETURNING {_USER_COLUMNS}',
            (assistant_id, user_id),
        )
        return _one(cur.fetchone())


def replace_thread(conn: Connection, session_id: str, old: str, new: str) -> str:
    """Point the trip at a new Backboard thread, unless another request did first; returns
    the thread the trip now has (None-safe: a deleted trip keeps nothing)."""
    row = conn.execute(
        'UPDATE "Session" SET "threadId" = %s WHERE "id" = %s AND "threadId" = %s '
        'RETURNING "threadId"',
        (new, session_id, old),
    ).fetchone()
    if row is not None:
        return str(row[0])
    current = conn.execute('SELECT "threadId" FROM "Session" WHERE "id" = %s', (session_id,))
    found = current.fetchone()
    return str(found[0]) if found else ""


def update_user_profile(conn: Connection, user_id: str, *, email: str, name: str | None) -> User:
    with conn.cursor(row_factory=class_row(User)) as cur:
        cur.execute(
            'UPDATE "User" SET "email" = %s, "name" = %s WHERE "id" = %s '
            f"RETURNING {_USER_COLUMNS}",
            (email, name, user_id),
        )
        return _one(cur.fetchone())


def delete_user_rows(conn: Connection, user_id: str) -> list[str]:
    """Delete everything the user owns, children first (the foreign keys never cascade), and
    return the Backboard thread ids of their trips. Run inside a transaction."""
    threads = conn.execute(
        'SELECT "threadId" FROM "Session" WHERE "userId" = %s ORDER BY "createdAt"', (user_id,)
    ).fetchall()
    conn.execute("DELETE FROM tripchat.message_turn WHERE user_id = %s", (user_id,))
    conn.execute("DELETE FROM tripchat.rate_limit WHERE user_id = %s", (user_id,))
    conn.execute(
        'DELETE FROM "Message" WHERE "sessionId" IN '
        '(SELECT "id" FROM "Session" WHERE "userId" = %s)',
        (user_id,),
    )
    conn.execute('DELETE FROM "Session" WHERE "userId" = %s', (user_id,))
    conn.execute('DELETE FROM "User" WHERE "id" = %s', (user_id,))
    return [str(thread_id) for (thread_id,) in threads]


# Trips: rename, delete, and a message page checked against the owner in one statement


def rename_trip_of(conn: Connection, clerk_id: str, session_id: str, title: str) -> Session | None:
    with conn.cursor(row_factory=class_row(Session)) as cur:
        cur.execute(
            f'UPDATE "Session" SET "title" = %s WHERE {_OWNED_TRIP} RETURNING {_SESSION_COLUMNS}',
            (title, session_id, clerk_id),
        )
        return cur.fetchone()


def delete_trip_rows_of(conn: Connection, clerk_id: str, session_id: str) -> str | None:
    """Delete the user's trip with its messages and turns, children first; returns its
    Backboard thread id, or None when the user has no such trip. Run inside a transaction."""
    row = conn.execute(
        f'SELECT "threadId" FROM "Session" WHERE {_OWNED_TRIP} FOR UPDATE',
        (session_id, clerk_id),
    ).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM tripchat.message_turn WHERE session_id = %s", (session_id,))
    conn.execute('DELETE FROM "Message" WHERE "sessionId" = %s', (session_id,))
    conn.execute('DELETE FROM "Session" WHERE "id" = %s', (session_id,))
    return str(row[0])


@dataclass(frozen=True)
class TripMessages:
    owner_id: str | None  # None: no User row for this Clerk id (yet)
    trip_found: bool  # False: no such trip, or someone else's
    messages: list[Message]  # in conversation order


def list_trip_messages(
    conn: Connection,
    clerk_id: str,
    session_id: str,
    *,
    limit: int,
    before: Keyset | None = None,
    after: Keyset | None = None,
) -> TripMessages:
    """A page of a trip's messages in conversation order (createdAt, then id), checked
    against the owner in the same statement: with `after`, the first `limit` messages after
    it; otherwise the last `limit` (before `before`, when given), the page a chat opens on."""
    order, condition, keys = _page(before, after)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            'SELECT u."id" AS "ownerId", s."id" AS "tripId", m.* FROM "User" u '
            'LEFT JOIN "Session" s ON s."id" = %s AND s."userId" = u."id" '
            "LEFT JOIN LATERAL ("
            f' SELECT {_MESSAGE_COLUMNS} FROM "Message" WHERE "sessionId" = s."id" {condition}'
            f' ORDER BY "createdAt" {order}, "id" {order} LIMIT %s'
            ') m ON true WHERE u."clerkId" = %s',
            (session_id, *keys, limit, clerk_id),
        ).fetchall()
    if not rows:
        return TripMessages(None, False, [])
    messages = [Message.model_validate(row) for row in rows if row["id"] is not None]
    return TripMessages(
        str(rows[0]["ownerId"]),
        rows[0]["tripId"] is not None,
        messages if order == "ASC" else messages[::-1],
    )


# Message turns: idempotent sends with a per-user rate limit


def _take_slot(column: LiteralString, user: LiteralString, source: LiteralString) -> LiteralString:
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


@dataclass(frozen=True)
class TripSlot:
    user: User | None  # None: no User row for this Clerk id (yet); nothing was counted
    accepted: bool
    retry_after_seconds: int  # when refused: until the oldest of the last minute's trips ages out
    # Set after a thread creation timed out: from then on, look for a thread no trip knows.
    threads_check_at: datetime | None = None


_TAKE_TRIP_SLOT: LiteralString = (
    f'WITH u AS (SELECT {_USER_COLUMNS} FROM "User" WHERE "clerkId" = %(clerk)s), '
    "rate AS (" + _take_slot("recent_trips", 'u."id"', "u") + ") "
    "SELECT u.*, rate.accepted, rate.retry_after, "
    # The value before this statement (a CTE's changes are not visible here): unchanged by it.
    ' (SELECT threads_check_at FROM tripchat.rate_limit WHERE user_id = u."id") AS threads_check_at'
    " FROM u, rate"
)


def take_trip_slot(conn: Connection, clerk_id: str, *, limit: int) -> TripSlot:
    """One statement: the user's row, and one of their `limit` new trips in any 60 seconds."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_TAKE_TRIP_SLOT, {"clerk": clerk_id, "limit": limit}).fetchone()
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
    rows = conn.execute(
        'SELECT "threadId" FROM "Session" WHERE "userId" = %s AND "threadId" = ANY(%s)',
        (user_id, thread_ids),
    ).fetchall()
    return {str(thread_id) for (thread_id,) in rows}


def clear_threads_check(conn: Connection, user_id: str, checked_at: datetime) -> None:
    """Done looking, unless another timeout asked for a later look meanwhile."""
    conn.execute(
        "UPDATE tripchat.rate_limit SET threads_check_at = NULL "
        "WHERE user_id = %s AND threads_check_at <= %s",
        (user_id, checked_at),
    )


@dataclass(frozen=True)
class TurnStart:
    """What beginning a turn found or did; exactly one of the outcomes applies."""

    user_id: str | None  # None: no User row for this Clerk id (yet)
    session_found: bool
    thread_id: str = ""
    rate_limited: bool = False  # the user sent their limit in the last 60 seconds
    retry_after_seconds: int = 0
    new_user_message: Message | None = None
    # An earlier request with the same key (possibly for another trip):
    existing_session_id: str | None = None
    existing_sha256: str | None = None
    existing_user_message: Message | None = None
    existing_assistant_message: Message | None = None
    existing_lease_seconds_left: int = 0  # > 0 while another request holds the turn


_BEGIN_TURN: LiteralString = (
    """
WITH u AS (
    SELECT "id" FROM "User" WHERE "clerkId" = %(clerk)s
), s AS (
    SELECT s."id", s."threadId", s."userId" FROM "Session" s JOIN u ON u."id" = s."userId"
    WHERE s."id" = %(session)s
), existing AS (
    SELECT t.request_sha256, t.session_id,
           ceil(extract(epoch FROM t.lease_until - now()))::int AS lease_left,
           um."id" AS u_id, um."content" AS u_content, um."createdAt" AS u_at,
           am."id" AS a_id, am."content" AS a_content, am."createdAt" AS a_at
    FROM tripchat.message_turn t
    JOIN "Message" um ON um."id" = t.user_message_id
    LEFT JOIN "Message" am ON am."id" = t.assistant_message_id
    WHERE t.user_id = (SELECT "id" FROM u) AND t.idempotency_key = %(key)s
), rate AS (
    """
    + _take_slot("recent_messages", 's."userId"', "s WHERE NOT EXISTS (SELECT 1 FROM existing)")
    + """
), turn AS (
    INSERT INTO tripchat.message_turn
        (user_id, idempotency_key, session_id, request_sha256, user_message_id, lease_until)
    SELECT s."userId", %(key)s, s."id", %(sha)s, gen_random_uuid()::text,
           now() + make_interval(secs => %(lease)s)
    FROM s, rate WHERE rate.accepted
    ON CONFLICT (user_id, idempotency_key) DO NOTHING
    RETURNING session_id, user_message_id
), msg AS (
    INSERT INTO "Message" ("id", "sessionId", "role", "content")
    SELECT user_message_id, session_id, 'user', %(content)s FROM turn
    RETURNING "id", "createdAt"
)
SELECT (SELECT "id" FROM u) AS user_id,
       (SELECT "threadId" FROM s) AS thread_id,
       (SELECT NOT accepted FROM rate) AS rate_limited,
       (SELECT retry_after FROM rate) AS rate_retry_after,
       msg."id" AS new_id, msg."createdAt" AS new_at, e.*
FROM (SELECT 1) one
LEFT JOIN msg ON true
LEFT JOIN existing e ON true
"""
)


def begin_turn(
    conn: Connection,
    *,
    clerk_id: str,
    session_id: str,
    idempotency_key: str,
    content: str,
    request_sha256: str,
    rate_limit: int,
    lease_seconds: float,
) -> TurnStart:
    """One statement: find the user and check the trip is theirs, find an earlier turn with
    this key, count the request against the rate limit, and store the user's message with
    its turn."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            _BEGIN_TURN,
            {
                "session": session_id,
                "clerk": clerk_id,
                "key": idempotency_key,
                "sha": request_sha256,
                "content": content,
                "limit": rate_limit,
                "lease": lease_seconds,
            },
        ).fetchone()
    user_id = None if row is None or row["user_id"] is None else str(row["user_id"])
    if row is None or row["thread_id"] is None:
        return TurnStart(user_id=user_id, session_found=False)
    start = TurnStart(
        user_id=user_id,
        session_found=True,
        thread_id=str(row["thread_id"]),
        rate_limited=bool(row["rate_limited"]),
        retry_after_seconds=max(1, int(row["rate_retry_after"] or 1)),
    )
    if row["new_id"] is not None:
        new = Message(
            id=row["new_id"],
            role="user",
            content=content,
            session_id=session_id,
            created_at=row["new_at"],
        )
        return replace(start, new_user_message=new)
    if row["request_sha256"] is not None:
        trip = str(row["session_id"])
        existing_user = Message(
            id=row["u_id"],
            role="user",
            content=row["u_content"],
            session_id=trip,
            created_at=row["u_at"],
        )
        existing_reply = (
            Message(
                id=row["a_id"],
                role="assistant",
                content=row["a_content"],
                session_id=trip,
                created_at=row["a_at"],
            )
            if row["a_id"] is not None
            else None
        )
        return replace(
            start,
            existing_session_id=trip,
            existing_sha256=str(row["request_sha256"]),
            existing_lease_seconds_left=max(0, int(row["lease_left"] or 0)),
            existing_user_message=existing_user,
            existing_assistant_message=existing_reply,
        )
    return start


def reclaim_turn(
    conn: Connection,
    *,
    user_id: str,
    idempotency_key: str,
    lease_seconds: float,
    holder_gone: bool = False,
) -> bool:
    """Take over a turn whose reply is missing and whose lease ran out (its request failed
    or died), or is still running but `holder_gone` (the caller knows its holder gave up);
    False when another request holds it."""
    row = conn.execute(
        "UPDATE tripchat.message_turn SET lease_until = now() + make_interval(secs => %s) "
        "WHERE user_id = %s AND idempotency_key = %s AND assistant_message_id IS NULL "
        "AND (lease_until IS NULL OR lease_until <= now() OR %s) RETURNING 1",
        (lease_seconds, user_id, idempotency_key, holder_gone),
    ).fetchone()
    return row is not None


def release_turn(conn: Connection, *, user_id: str, idempotency_key: str) -> bool:
    """Give up the lease after a failed Backboard call, so a retry may proceed at once;
    False when the turn is gone (its trip was deleted meanwhile)."""
    row = conn.execute(
        "UPDATE tripchat.message_turn SET lease_until = NULL "
        "WHERE user_id = %s AND idempotency_key = %s AND assistant_message_id IS NULL "
        "RETURNING 1",
        (user_id, idempotency_key),
    ).fetchone()
    return row is not None


def finish_turn(
    conn: Connection, *, user_id: str, idempotency_key: str, session_id: str, reply: str
) -> Message:
    """Store the assistant's reply and close the turn, in one statement."""
    with conn.cursor(row_factory=class_row(Message)) as cur:
        cur.execute(
            "WITH msg AS ("
            ' INSERT INTO "Message" ("sessionId", "role", "content") '
            f" VALUES (%s, 'assistant', %s) RETURNING {_MESSAGE_COLUMNS}"
            "), done AS ("
            " UPDATE tripchat.message_turn SET assistant_message_id = (SELECT id FROM msg), "
            " lease_until = NULL WHERE user_id = %s AND idempotency_key = %s"
            f") SELECT {_MESSAGE_COLUMNS} FROM msg",
            (session_id, reply, user_id, idempotency_key),
        )
        return _one(cur.fetchone())
