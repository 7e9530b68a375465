"""Replies being streamed: tripchat.reply_stream, the text of a reply while it is written.

A streamed turn is a message turn (message_rows) whose reply grows here until it is complete,
then moves to "Message" in one statement. Every statement that reads a reply's state treats a
'streaming' row whose turn lease ran out as interrupted ('failed'): the request that wrote it
is gone (its container died), nothing will finish it but a retry with the same key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, LiteralString

from pydantic import BaseModel, ConfigDict

from shared.models import Message, UtcDatetime
from shared.store.common import MESSAGE_COLUMNS, fetch_one, fetch_record, fetch_records
from shared.store.db import Connection

ReplyStatus = Literal["streaming", "failed", "stopped", "completed"]

# The row's status as readers must see it: 'streaming' only while a live request holds the
# turn (its lease runs); an expired lease means the writer died mid-reply. The function
# tripchat.pending_replies (sql/0008) applies the same rule.
_SEEN_STATUS: LiteralString = (
    "CASE WHEN r.status = 'streaming' AND (t.lease_until IS NULL OR t.lease_until <= now()) "
    "THEN 'failed' ELSE r.status END"
)


def open_reply(
    conn: Connection,
    *,
    user_id: str,
    idempotency_key: str,
    trip_id: str,
    user_message_id: str,
    assistant_message_id: str,
) -> None:
    """Start (or, for a retried turn, restart from nothing) the turn's streamed reply."""
    conn.execute(
        "INSERT INTO tripchat.reply_stream (user_id, idempotency_key, session_id, "
        "user_message_id, assistant_message_id) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (user_id, idempotency_key) DO UPDATE SET status = 'streaming', "
        "content = '', run_id = NULL, writes = 0, started_at = now(), updated_at = now(), "
        "assistant_message_id = EXCLUDED.assistant_message_id",
        (user_id, idempotency_key, trip_id, user_message_id, assistant_message_id),
    )


def save_partial(
    conn: Connection,
    *,
    user_id: str,
    idempotency_key: str,
    content: str,
    run_id: str | None,
    lease_seconds: float,
) -> bool:
    """Write the reply so far and extend the turn's lease, in one statement; False when the
    reply is no longer this request's to write (stopped, or its trip deleted)."""
    row = fetch_record(
        conn,
        "WITH r AS ("
        " UPDATE tripchat.reply_stream SET content = %(content)s, "
        " run_id = coalesce(%(run)s, run_id), writes = writes + 1, updated_at = now() "
        " WHERE user_id = %(user)s AND idempotency_key = %(key)s AND status = 'streaming' "
        " RETURNING 1"
        ") UPDATE tripchat.message_turn SET lease_until = now() + make_interval(secs => %(lease)s) "
        "WHERE user_id = %(user)s AND idempotency_key = %(key)s AND EXISTS (SELECT 1 FROM r) "
        "RETURNING 1",
        {
            "content": content,
            "run": run_id,
            "user": user_id,
            "key": idempotency_key,
            "lease": lease_seconds,
        },
    )
    return row is not None


def finish_reply(
    conn: Connection, *, user_id: str, idempotency_key: str, reply: str
) -> Message | None:
    """Move the complete reply to "Message" (under the id the stream announced), close the
    turn and drop the row, in one statement; None when it was stopped meanwhile."""
    # The trip's row is locked (key share) before the reply's: a trip's deletion locks them
    # in that order, and the other order (the reply's, then "Message"'s key check on the
    # trip at the end of the statement) deadlocked with it.
    return fetch_one(
        conn,
        Message,
        "WITH s AS ("
        ' SELECT 1 FROM "Session" WHERE "id" = (SELECT session_id FROM tripchat.reply_stream '
        " WHERE user_id = %(user)s AND idempotency_key = %(key)s) FOR KEY SHARE"
        "), r AS ("
        " DELETE FROM tripchat.reply_stream WHERE user_id = %(user)s "
        " AND idempotency_key = %(key)s AND status = 'streaming' AND EXISTS (SELECT 1 FROM s)"
        " RETURNING assistant_message_id, session_id"
        "), msg AS ("
        ' INSERT INTO "Message" ("id", "sessionId", "role", "content") '
        " SELECT assistant_message_id, session_id, 'assistant', %(reply)s FROM r "
        f" RETURNING {MESSAGE_COLUMNS}"
        "), done AS ("
        " UPDATE tripchat.message_turn SET assistant_message_id = (SELECT id FROM msg), "
        " lease_until = NULL WHERE user_id = %(user)s AND idempotency_key = %(key)s "
        " AND EXISTS (SELECT 1 FROM msg)"
        f") SELECT {MESSAGE_COLUMNS} FROM msg",
        {"user": user_id, "key": idempotency_key, "reply": reply},
    )


def fail_reply(
    conn: Connection, *, user_id: str, idempotency_key: str, content: str
) -> ReplyStatus | None:
    """Keep what was received, mark it failed and give the turn's lease back (a same-key
    retry may resume at once). Returns the reply's status afterwards: 'failed', or what
    another request made of it first ('stopped'); None when it is gone (trip deleted)."""
    row = fetch_record(
        conn,
        "WITH r AS ("
        " UPDATE tripchat.reply_stream SET status = 'failed', content = %(content)s, "
        " updated_at = now() WHERE user_id = %(user)s AND idempotency_key = %(key)s "
        " AND status = 'streaming' RETURNING 1"
        "), t AS ("
        " UPDATE tripchat.message_turn SET lease_until = NULL WHERE user_id = %(user)s "
        " AND idempotency_key = %(key)s AND assistant_message_id IS NULL "
        " AND EXISTS (SELECT 1 FROM r)"
        ") SELECT CASE WHEN EXISTS (SELECT 1 FROM r) THEN 'failed' ELSE status END AS status "
        "FROM (SELECT 1) one LEFT JOIN tripchat.reply_stream "
        "ON user_id = %(user)s AND idempotency_key = %(key)s",
        {"user": user_id, "key": idempotency_key, "content": content},
    )
    status: ReplyStatus | None = None if row is None else row["status"]
    return status


class PendingReply(BaseModel):
    """An unfinished reply as tripchat.pending_replies (sql/0008) lists it, with _SEEN_STATUS's
    rule: a change of that rule goes into the function too, by a new migration."""

    model_config = ConfigDict(frozen=True)
    user_message_id: str
    assistant_message_id: str
    status: Literal["streaming", "failed"]
    content: str
    updated_at: UtcDatetime


@dataclass(frozen=True)
class ReplyInFlight:
    """A trip's reply being streamed, as the resume route and GET messages see it."""

    user_id: str
    idempotency_key: str
    user_message_id: str
    assistant_message_id: str
    status: ReplyStatus
    content: str
    updated_at: datetime


@dataclass(frozen=True)
class TripReplies:
    trip_found: bool  # False: no such trip, or someone else's
    replies: list[ReplyInFlight]  # newest first: unfinished ('streaming' or 'failed')


def unfinished_replies(conn: Connection, clerk_id: str, trip_id: str) -> TripReplies:
    """The trip's replies not yet in "Message" (being written, or broken off), newest first,
    checked against the owner in the same statement."""
    rows = fetch_records(
        conn,
        'SELECT s."id" AS trip_id, r.user_id, r.idempotency_key, r.user_message_id, '
        f"r.assistant_message_id, {_SEEN_STATUS} AS status, r.content, r.updated_at "
        'FROM "User" u JOIN "Session" s ON s."userId" = u."id" AND s."id" = %s '
        "LEFT JOIN tripchat.reply_stream r ON r.session_id = s.\"id\" AND r.status <> 'stopped' "
        "LEFT JOIN tripchat.message_turn t ON t.user_id = r.user_id "
        "AND t.idempotency_key = r.idempotency_key "
        'WHERE u."clerkId" = %s ORDER BY r.started_at DESC NULLS LAST',
        (trip_id, clerk_id),
    )
    return TripReplies(
        trip_found=bool(rows),
        replies=[
            ReplyInFlight(
                user_id=str(row["user_id"]),
                idempotency_key=str(row["idempotency_key"]),
                user_message_id=str(row["user_message_id"]),
                assistant_message_id=str(row["assistant_message_id"]),
                status=row["status"],
                content=str(row["content"]),
                updated_at=row["updated_at"],
            )
            for row in rows
            if row["user_id"] is not None
        ],
    )


@dataclass(frozen=True)
class ReplyState:
    status: ReplyStatus | None  # None: the turn is gone (its trip was deleted)
    content: str  # the text so far; the stored reply once 'completed' or 'stopped'


def reply_state(conn: Connection, *, user_id: str, idempotency_key: str) -> ReplyState:
    """Where a streamed reply stands, for a reader following it from another request."""
    row = fetch_record(
        conn,
        f'SELECT {_SEEN_STATUS} AS status, r.content, am."content" AS final '
        "FROM tripchat.message_turn t "
        "LEFT JOIN tripchat.reply_stream r ON r.user_id = t.user_id "
        "AND r.idempotency_key = t.idempotency_key "
        'LEFT JOIN "Message" am ON am."id" = t.assistant_message_id '
        "WHERE t.user_id = %s AND t.idempotency_key = %s",
        (user_id, idempotency_key),
    )
    if row is None:
        return ReplyState(None, "")
    if row["final"] is not None:
        stopped = row["status"] == "stopped"
        return ReplyState("stopped" if stopped else "completed", str(row["final"]))
    if row["status"] is None:  # a retry has not reopened it yet, or it never streamed
        return ReplyState("failed", "")
    return ReplyState(row["status"], str(row["content"]))


def was_stopped(conn: Connection, assistant_message_id: str) -> bool:
    """Whether this stored reply is one a traveller stopped (its text is partial)."""
    row = fetch_record(
        conn,
        "SELECT 1 FROM tripchat.reply_stream WHERE assistant_message_id = %s "
        "AND status = 'stopped'",
        (assistant_message_id,),
    )
    return row is not None


@dataclass(frozen=True)
class Stopped:
    trip_found: bool
    stopped: bool  # False: nothing was being written
    thread_id: str | None = None
    run_id: str | None = None  # Backboard's run, when the stream named it


def stop_reply(conn: Connection, clerk_id: str, trip_id: str) -> Stopped:
    """Stop the trip's reply in flight: what was written becomes the assistant's message
    (marked stopped here), the turn is closed, in one statement. A reply stopped before any
    text leaves the turn open and empty, as if Backboard had never answered."""
    row = fetch_record(
        conn,
        "WITH s AS ("  # the trip locked before its reply, as finish_reply does
        ' SELECT s."id", s."threadId" FROM "Session" s JOIN "User" u ON u."id" = s."userId" '
        ' WHERE s."id" = %(trip)s AND u."clerkId" = %(clerk)s FOR KEY SHARE OF s'
        "), target AS ("
        " SELECT r.user_id, r.idempotency_key FROM tripchat.reply_stream r "
        " JOIN s ON s.\"id\" = r.session_id WHERE r.status = 'streaming' "
        " ORDER BY r.started_at DESC LIMIT 1 FOR UPDATE OF r"
        "), r AS ("
        " UPDATE tripchat.reply_stream r SET status = 'stopped', updated_at = now() "
        " FROM target WHERE r.user_id = target.user_id "
        " AND r.idempotency_key = target.idempotency_key "
        " RETURNING r.user_id, r.idempotency_key, r.assistant_message_id, r.session_id, "
        " r.content, r.run_id"
        "), msg AS ("
        ' INSERT INTO "Message" ("id", "sessionId", "role", "content") '
        " SELECT assistant_message_id, session_id, 'assistant', content FROM r "
        " WHERE content <> '' RETURNING \"id\""
        "), t AS ("
        " UPDATE tripchat.message_turn t SET lease_until = NULL, "
        ' assistant_message_id = (SELECT "id" FROM msg) FROM r '
        " WHERE t.user_id = r.user_id AND t.idempotency_key = r.idempotency_key"
        ') SELECT (SELECT "id" FROM s) AS trip_id, (SELECT "threadId" FROM s) AS thread_id, '
        "(SELECT run_id FROM r) AS run_id, EXISTS (SELECT 1 FROM r) AS stopped",
        {"trip": trip_id, "clerk": clerk_id},
    )
    if row is None or row["trip_id"] is None:
        return Stopped(trip_found=False, stopped=False)
    return Stopped(
        trip_found=True,
        stopped=bool(row["stopped"]),
        thread_id=str(row["thread_id"]),
        run_id=None if row["run_id"] is None else str(row["run_id"]),
    )
