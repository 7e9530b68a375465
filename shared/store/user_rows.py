"""Users and their Clerk state: rows, the per-user lock, account erasure."""

from __future__ import annotations

from dataclasses import dataclass

from shared.models import User
from shared.store.common import USER_COLUMNS, fetch_one, fetch_record, fetch_records, returning
from shared.store.db import Connection


def get_user_by_clerk_id(conn: Connection, clerk_id: str) -> User | None:
    return fetch_one(
        conn, User, f'SELECT {USER_COLUMNS} FROM "User" WHERE "clerkId" = %s', (clerk_id,)
    )


@dataclass(frozen=True)
class UserTotals:
    user: User
    trips: int
    messages: int


def get_user_totals(conn: Connection, clerk_id: str) -> UserTotals | None:
    """The user's row with how many trips and messages they have (one statement; the counts
    walk the keyset indexes of "Session" and "Message")."""
    row = fetch_record(
        conn,
        f'SELECT {USER_COLUMNS}, (SELECT count(*) FROM "Session" s WHERE s."userId" = u."id") '
        'AS trips, (SELECT count(*) FROM "Session" s JOIN "Message" m ON m."sessionId" = s."id" '
        'WHERE s."userId" = u."id") AS messages FROM "User" u WHERE u."clerkId" = %s',
        (clerk_id,),
    )
    if row is None:
        return None
    return UserTotals(User.model_validate(row), int(row["trips"]), int(row["messages"]))


def insert_user(
    conn: Connection, *, clerk_id: str, assistant_id: str, email: str, name: str | None
) -> User:
    return returning(
        conn,
        User,
        'INSERT INTO "User" ("clerkId", "assistantId", "email", "name") '
        f"VALUES (%s, %s, %s, %s) RETURNING {USER_COLUMNS}",
        (clerk_id, assistant_id, email, name),
    )


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
    row = fetch_record(
        conn,
        "SELECT last_event_at, deleted_at IS NOT NULL AS deleted, "
        "greatest(0, ceil(extract(epoch FROM assistant_wait_until - now())))::int AS wait "
        "FROM tripchat.clerk_user_state WHERE clerk_id = %s",
        (clerk_id,),
    )
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
    return returning(
        conn,
        User,
        f'UPDATE "User" SET "assistantId" = %s WHERE "id" = %s RETURNING {USER_COLUMNS}',
        (assistant_id, user_id),
    )


def update_user_profile(conn: Connection, user_id: str, *, email: str, name: str | None) -> User:
    return returning(
        conn,
        User,
        f'UPDATE "User" SET "email" = %s, "name" = %s WHERE "id" = %s RETURNING {USER_COLUMNS}',
        (email, name, user_id),
    )


def delete_user_rows(conn: Connection, user_id: str) -> list[str]:
    """Delete everything the user owns, children first (the foreign keys never cascade), and
    return the Backboard thread ids of their trips. Run inside a transaction."""
    # The trips are locked first, as a trip's deletion does and as a reply's completion or
    # stop does (key share): one order, so none of them deadlocks with another.
    trips = fetch_records(
        conn,
        'SELECT "threadId" FROM "Session" WHERE "userId" = %s ORDER BY "createdAt" FOR UPDATE',
        (user_id,),
    )
    conn.execute("DELETE FROM tripchat.reply_stream WHERE user_id = %s", (user_id,))
    conn.execute("DELETE FROM tripchat.message_turn WHERE user_id = %s", (user_id,))
    conn.execute("DELETE FROM tripchat.rate_limit WHERE user_id = %s", (user_id,))
    conn.execute(
        "DELETE FROM tripchat.trip_title_chosen WHERE session_id IN "
        '(SELECT "id" FROM "Session" WHERE "userId" = %s)',
        (user_id,),
    )
    conn.execute(
        'DELETE FROM "Message" WHERE "sessionId" IN '
        '(SELECT "id" FROM "Session" WHERE "userId" = %s)',
        (user_id,),
    )
    conn.execute('DELETE FROM "Session" WHERE "userId" = %s', (user_id,))
    conn.execute('DELETE FROM "User" WHERE "id" = %s', (user_id,))
    return [str(trip["threadId"]) for trip in trips]
