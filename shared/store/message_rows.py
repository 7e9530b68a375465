"""A trip's messages: pages, and the turns that make a send idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import LiteralString

from pydantic import TypeAdapter

from shared.errors import Conflict
from shared.models import Message, Role, Trip
from shared.store.common import (
    DEFAULT_TITLE,
    MESSAGE_COLUMNS,
    Keyset,
    fetch_one,
    fetch_record,
    fetch_records,
    page_clause,
    take_slot,
)
from shared.store.db import Connection
from shared.store.reply_rows import PendingReply


@dataclass(frozen=True)
class TripMessages:
    owner_id: str | None  # None: no User row for this Clerk id (yet)
    trip_found: bool  # False: no such trip, or someone else's
    messages: list[Message]  # in conversation order
    pending: list[PendingReply] = field(default_factory=list)  # streamed replies unfinished


def list_trip_messages(
    conn: Connection,
    clerk_id: str,
    trip_id: str,
    *,
    limit: int,
    before: Keyset | None = None,
    after: Keyset | None = None,
) -> TripMessages:
    """A page of a trip's messages in conversation order (createdAt, then id), checked
    against the owner in the same statement: with `after`, the first `limit` messages after
    it; otherwise the last `limit` (before `before`, when given), the page a chat opens on."""
    order, condition, keys = page_clause(before, after)
    rows = fetch_records(
        conn,
        # pending: JSON text, repeated on each row, parsed once (not once per message).
        'SELECT u."id" AS "ownerId", s."id" AS "tripId", p.pending, m.* '
        'FROM "User" u '
        'LEFT JOIN "Session" s ON s."id" = %s AND s."userId" = u."id" '
        # A function (sql/0008) whose plan the server keeps, not a subquery planned each time.
        'LEFT JOIN LATERAL tripchat.pending_replies(s."id") p(pending) ON true '
        "LEFT JOIN LATERAL ("
        f' SELECT {MESSAGE_COLUMNS} FROM "Message" WHERE "sessionId" = s."id" {condition}'
        f' ORDER BY "createdAt" {order}, "id" {order} LIMIT %s'
        ') m ON true WHERE u."clerkId" = %s',
        (trip_id, *keys, limit, clerk_id),
    )
    if not rows:
        return TripMessages(None, False, [])
    # One validation call for the page, not one per row.
    messages = _MESSAGES.validate_python([row for row in rows if row["id"] is not None])
    pending = rows[0]["pending"]
    return TripMessages(
        str(rows[0]["ownerId"]),
        rows[0]["tripId"] is not None,
        messages if order == "ASC" else messages[::-1],
        _PENDING.validate_json(pending) if pending else [],
    )


_MESSAGES = TypeAdapter(list[Message])
_PENDING = TypeAdapter(list[PendingReply])


@dataclass(frozen=True)
class ExportRows:
    owner_id: str | None  # None: no User row for this Clerk id (yet)
    trip: Trip | None  # None: no such trip, or someone else's
    message_count: int  # in the whole trip
    offset: int  # messages up to and including `after`
    messages: list[Message]  # in conversation order


def export_rows_of(
    conn: Connection,
    clerk_id: str,
    trip_id: str,
    *,
    after: Keyset | None,
    max_bytes: int,
    max_rows: int,
) -> ExportRows:
    """The trip and its next messages after `after`, in conversation order, as many as fit in
    `max_bytes` of content (counted in UTF-8, as stored) plus the one that crosses it, at most
    `max_rows`; with the trip's message count and the count up to `after`. One statement,
    checked against the owner; the running sum stops the rows, so no more is read than sent."""
    _, condition, keys = page_clause(None, after)
    offset: LiteralString = (
        'count(*) FILTER (WHERE ("createdAt", "id") <= (%s, %s))' if after else "0"
    )
    rows = fetch_records(
        conn,
        'SELECT u."id" AS "ownerId", s."id" AS "tripId", s."title" AS "tripTitle",'
        ' s."userId" AS "tripUserId", s."threadId" AS "tripThreadId",'
        ' s."createdAt" AS "tripCreatedAt", c."messageCount", c."offset", m.*'
        ' FROM "User" u LEFT JOIN "Session" s ON s."id" = %s AND s."userId" = u."id"'
        # Once per trip (an index-only count), not once per message row.
        f' LEFT JOIN LATERAL (SELECT count(*) AS "messageCount", {offset} AS "offset"'
        '  FROM "Message" WHERE "sessionId" = s."id") c ON true'
        " LEFT JOIN LATERAL ("
        f" SELECT {MESSAGE_COLUMNS}, n FROM ("
        f'  SELECT {MESSAGE_COLUMNS}, sum(octet_length("content"))'
        '   OVER (ORDER BY "createdAt", "id") AS running,'
        '   row_number() OVER (ORDER BY "createdAt", "id") AS n FROM ('
        f'   SELECT {MESSAGE_COLUMNS} FROM "Message" WHERE "sessionId" = s."id" {condition}'
        '   ORDER BY "createdAt", "id" LIMIT %s) first_rows'
        ' ) w WHERE running - octet_length("content") < %s'
        # No ORDER BY here: sorting megabytes of rows spills to disk; `n` orders them below.
        ') m ON true WHERE u."clerkId" = %s',
        (trip_id, *keys, *keys, max_rows, max_bytes, clerk_id),
    )
    if not rows:
        return ExportRows(None, None, 0, 0, [])
    first = rows[0]
    if first["tripId"] is None:
        return ExportRows(str(first["ownerId"]), None, 0, 0, [])
    trip = Trip(
        id=first["tripId"],
        title=first["tripTitle"],
        user_id=first["tripUserId"],
        thread_id=first["tripThreadId"],
        created_at=first["tripCreatedAt"],
    )
    return ExportRows(
        str(first["ownerId"]),
        trip,
        int(first["messageCount"]),
        int(first["offset"]),
        [
            Message.model_validate(row)
            for row in sorted(rows, key=lambda row: row["n"] or 0)
            if row["id"] is not None
        ],
    )


@dataclass(frozen=True)
class NoTrip:
    """No such trip for this user (or no User row for the Clerk id yet: `user_id` None)."""

    user_id: str | None


@dataclass(frozen=True)
class Started:
    """A new turn: the user's message is stored; ask the assistant on `thread_id`."""

    user_id: str
    thread_id: str
    user_message: Message
    # The user's assistant, when the trip still waits for its automatic title: the default
    # title, never chosen by the traveller, and no reply yet (see shared.domain.titles).
    titling_assistant_id: str | None = None


@dataclass(frozen=True)
class Refused:
    """No turn: the user sent their limit in the last 60 seconds (`rate_limited`), or a
    concurrent request took the key between this statement's read and its insert."""

    user_id: str
    rate_limited: bool
    retry_after_seconds: int


@dataclass(frozen=True)
class Earlier:
    """An earlier request used the key (possibly for another trip or other content)."""

    user_id: str
    thread_id: str
    trip_id: str
    request_sha256: str
    user_message: Message
    assistant_message: Message | None  # None: the reply is not stored (yet)
    lease_seconds_left: int  # > 0 while another request holds the turn
    titling_assistant_id: str | None = None  # as for Started (a resumed first turn)


TurnStart = NoTrip | Started | Refused | Earlier

_BEGIN_TURN: LiteralString = (
    """
WITH u AS (
    SELECT "id", "assistantId" FROM "User" WHERE "clerkId" = %(clerk)s
), s AS (
    SELECT s."id", s."threadId", s."userId",
           s."title" = %(default_title)s
           AND NOT EXISTS (SELECT 1 FROM tripchat.trip_title_chosen c WHERE c.session_id = s."id")
           AND NOT EXISTS (
               SELECT 1 FROM "Message" r WHERE r."sessionId" = s."id" AND r."role" = 'assistant'
           ) AS untitled
    FROM "Session" s JOIN u ON u."id" = s."userId"
    WHERE s."id" = %(session)s
), existing AS (
    SELECT t.request_sha256, t.session_id AS earlier_trip_id,
           ceil(extract(epoch FROM t.lease_until - now()))::int AS lease_left,
           um."id" AS u_id, um."content" AS u_content, um."createdAt" AS u_at,
           am."id" AS a_id, am."content" AS a_content, am."createdAt" AS a_at
    FROM tripchat.message_turn t
    JOIN "Message" um ON um."id" = t.user_message_id
    LEFT JOIN "Message" am ON am."id" = t.assistant_message_id
    WHERE t.user_id = (SELECT "id" FROM u) AND t.idempotency_key = %(key)s
), rate AS (
    """
    + take_slot("recent_messages", 's."userId"', "s WHERE NOT EXISTS (SELECT 1 FROM existing)")
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
       (SELECT "assistantId" FROM u WHERE (SELECT untitled FROM s)) AS titling_assistant_id,
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
    trip_id: str,
    idempotency_key: str,
    content: str,
    request_sha256: str,
    rate_limit: int,
    lease_seconds: float,
) -> TurnStart:
    """One statement: find the user and check the trip is theirs, find an earlier turn with
    this key, count the request against the rate limit, and store the user's message with
    its turn."""
    row = fetch_record(
        conn,
        _BEGIN_TURN,
        {
            "session": trip_id,
            "clerk": clerk_id,
            "key": idempotency_key,
            "sha": request_sha256,
            "content": content,
            "limit": rate_limit,
            "lease": lease_seconds,
            "default_title": DEFAULT_TITLE,
        },
    )
    if row is None or row["user_id"] is None or row["thread_id"] is None:
        return NoTrip(None if row is None or row["user_id"] is None else str(row["user_id"]))
    user_id, thread_id = str(row["user_id"]), str(row["thread_id"])
    if row["new_id"] is not None:
        new = Message(
            id=row["new_id"],
            role="user",
            content=content,
            trip_id=trip_id,
            created_at=row["new_at"],
        )
        return Started(user_id, thread_id, new, row["titling_assistant_id"])
    if row["request_sha256"] is None:
        retry_after = max(1, int(row["rate_retry_after"] or 1))
        return Refused(user_id, bool(row["rate_limited"]), retry_after)
    earlier = str(row["earlier_trip_id"])

    def stored(prefix: str, role: Role) -> Message:
        """The earlier turn's message whose columns carry this prefix."""
        return Message(
            id=row[f"{prefix}_id"],
            role=role,
            content=row[f"{prefix}_content"],
            trip_id=earlier,
            created_at=row[f"{prefix}_at"],
        )

    return Earlier(
        user_id,
        thread_id,
        earlier,
        str(row["request_sha256"]),
        stored("u", "user"),
        stored("a", "assistant") if row["a_id"] is not None else None,
        max(0, int(row["lease_left"] or 0)),
        row["titling_assistant_id"],
    )


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
    row = fetch_record(
        conn,
        "UPDATE tripchat.message_turn SET lease_until = now() + make_interval(secs => %s) "
        "WHERE user_id = %s AND idempotency_key = %s AND assistant_message_id IS NULL "
        "AND (lease_until IS NULL OR lease_until <= now() OR %s) RETURNING 1",
        (lease_seconds, user_id, idempotency_key, holder_gone),
    )
    return row is not None


def release_turn(conn: Connection, *, user_id: str, idempotency_key: str) -> bool:
    """Give up the lease after a failed Backboard call, so a retry may proceed at once;
    False when the turn is gone (its trip was deleted meanwhile)."""
    row = fetch_record(
        conn,
        "UPDATE tripchat.message_turn SET lease_until = NULL "
        "WHERE user_id = %s AND idempotency_key = %s AND assistant_message_id IS NULL "
        "RETURNING 1",
        (user_id, idempotency_key),
    )
    return row is not None


def finish_turn(
    conn: Connection, *, user_id: str, idempotency_key: str, trip_id: str, reply: str
) -> Message:
    """Store the assistant's reply and close the turn, in one statement. The trip is locked
    first (key share), as every statement that deletes or ends a turn does: one lock order,
    no deadlock with a trip's or an account's deletion. Conflict when the trip is gone."""
    stored = fetch_one(
        conn,
        Message,
        'WITH s AS (SELECT "id" FROM "Session" WHERE "id" = %s FOR KEY SHARE), msg AS ('
        ' INSERT INTO "Message" ("sessionId", "role", "content") '
        f" SELECT \"id\", 'assistant', %s FROM s RETURNING {MESSAGE_COLUMNS}"
        "), done AS ("
        " UPDATE tripchat.message_turn SET assistant_message_id = (SELECT id FROM msg), "
        " lease_until = NULL WHERE user_id = %s AND idempotency_key = %s "
        " AND EXISTS (SELECT 1 FROM msg)"
        f") SELECT {MESSAGE_COLUMNS} FROM msg",
        (trip_id, reply, user_id, idempotency_key),
    )
    if stored is None:  # the trip was deleted while the assistant answered
        raise Conflict("The data changed while the request ran; reload and retry.")
    return stored
