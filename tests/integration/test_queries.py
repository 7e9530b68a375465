"""Typed queries: rows map to models, pagination is keyset-stable, timestamps are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from shared.models import Message, Trip, User
from shared.store import db, message_rows, trip_rows, user_rows

Conn = psycopg.Connection[tuple[object, ...]]


def _new_user(clerk_id: str = "user_q") -> User:
    with db.connection() as conn:
        return user_rows.insert_user(
            conn,
            clerk_id=clerk_id,
            assistant_id=f"asst-{clerk_id}",
            email="q@example.test",
            name=None,
        )


def test_insert_and_get_user(clean_db: str) -> None:
    user = _new_user()
    assert user.clerk_id == "user_q" and user.assistant_id == "asst-user_q" and user.name is None
    assert user.created_at.tzinfo is UTC
    with db.connection() as conn:
        assert user_rows.get_user_by_clerk_id(conn, "user_q") == user
        assert user_rows.get_user_by_clerk_id(conn, "user_other") is None
    assert user.model_dump(by_alias=True)["clerkId"] == "user_q"


def test_session_defaults_and_ownership(clean_db: str) -> None:
    owner, other = _new_user("user_owner"), _new_user("user_other")
    with db.connection() as conn:
        untitled = trip_rows.insert_trip(conn, user_id=owner.id, thread_id="t1")
        titled = trip_rows.insert_trip(conn, user_id=owner.id, thread_id="t2", title="Kyoto")
        assert untitled.title == "New Trip" and titled.title == "Kyoto"
        assert trip_rows.get_trip_of(conn, owner.clerk_id, untitled.id) == untitled
        assert trip_rows.get_trip_of(conn, other.clerk_id, untitled.id) is None
        assert trip_rows.get_trip_of(conn, "user_nobody", untitled.id) is None


def _sessions_with_equal_timestamps(admin_conn: Conn, user_id: str, n: int) -> None:
    # Half the trips share one timestamp: the id must break the tie, or pages overlap.
    base = datetime(2026, 1, 1, 12, 0, 0)
    for i in range(n):
        admin_conn.execute(
            'INSERT INTO "Session" ("userId", "threadId", "createdAt") VALUES (%s, %s, %s)',
            (user_id, f"thread-{i}", base if i % 2 else base + timedelta(seconds=i)),
        )


def test_session_pages_are_newest_first_and_never_overlap(clean_db: str, admin_conn: Conn) -> None:
    user = _new_user()
    _sessions_with_equal_timestamps(admin_conn, user.id, 25)
    seen: list[Trip] = []
    after = None
    with db.connection() as conn:
        while True:
            found = trip_rows.list_trips_of(conn, user.clerk_id, limit=7, after=after)
            assert found.owner_id == user.id
            page = found.trips
            seen += page
            if len(page) < 7:
                break
            after = (page[-1].created_at, page[-1].id)
    assert len(seen) == 25 and len({s.id for s in seen}) == 25
    keys = [(s.created_at, s.id) for s in seen]
    assert keys == sorted(keys, reverse=True)


def test_trip_list_tells_a_user_without_trips_from_no_user(clean_db: str) -> None:
    user = _new_user()
    with db.connection() as conn:
        assert trip_rows.list_trips_of(conn, user.clerk_id, limit=5) == trip_rows.TripList(
            user.id, []
        )
        assert trip_rows.list_trips_of(conn, "user_unknown", limit=5) == trip_rows.TripList(
            None, []
        )


CLERK_ID = "user_q"


@pytest.fixture
def conversation(clean_db: str, admin_conn: Conn) -> tuple[str, list[str]]:
    """A trip with 30 messages, many sharing timestamps, and their ids in conversation order."""
    user = _new_user()
    with db.connection() as conn:
        session = trip_rows.insert_trip(conn, user_id=user.id, thread_id="t")
    base = datetime(2026, 1, 1, 12, 0, 0)
    for i in range(30):
        admin_conn.execute(
            'INSERT INTO "Message" ("sessionId", "role", "content", "createdAt") '
            "VALUES (%s, %s, %s, %s)",
            (
                session.id,
                "user" if i % 2 else "assistant",
                f"m{i}",
                base + timedelta(seconds=i // 4),
            ),
        )
    rows = admin_conn.execute(
        'SELECT id FROM "Message" WHERE "sessionId" = %s ORDER BY "createdAt", id', (session.id,)
    ).fetchall()
    return session.id, [str(r[0]) for r in rows]


def _messages(conn: db.Connection, trip_id: str, **page: Any) -> list[Message]:
    found = message_rows.list_trip_messages(conn, CLERK_ID, trip_id, **page)
    assert found.trip_found
    return found.messages


def test_message_pages_walk_back_and_forth_in_order(conversation: tuple[str, list[str]]) -> None:
    trip_id, ordered = conversation
    with db.connection() as conn:
        latest = _messages(conn, trip_id, limit=8)
        assert [m.id for m in latest] == ordered[-8:]
        # Backwards to the start.
        collected = [m.id for m in latest]
        page = latest
        while True:
            page = _messages(conn, trip_id, limit=8, before=(page[0].created_at, page[0].id))
            if not page:
                break
            collected = [m.id for m in page] + collected
        assert collected == ordered
        # Forwards from the first message.
        first = _messages(conn, trip_id, limit=1, before=(latest[0].created_at, latest[0].id))
        forward = _messages(conn, trip_id, limit=100, after=(first[0].created_at, first[0].id))
        assert [m.id for m in forward] == ordered[ordered.index(first[0].id) + 1 :]


def test_message_page_tells_missing_user_trip_and_empty_trip_apart(clean_db: str) -> None:
    owner, other = _new_user("user_owner"), _new_user("user_other")
    with db.connection() as conn:
        trip = trip_rows.insert_trip(conn, user_id=owner.id, thread_id="t")
        assert message_rows.list_trip_messages(
            conn, owner.clerk_id, trip.id, limit=5
        ) == message_rows.TripMessages(owner.id, True, [])
        # Someone else's trip reads exactly like a missing one.
        assert message_rows.list_trip_messages(
            conn, other.clerk_id, trip.id, limit=5
        ) == message_rows.TripMessages(other.id, False, [])
        assert message_rows.list_trip_messages(
            conn, "user_nobody", trip.id, limit=5
        ) == message_rows.TripMessages(None, False, [])


def test_a_turn_stores_both_messages_as_utc_rows(clean_db: str) -> None:
    user = _new_user()
    turn = {"user_id": user.id, "idempotency_key": "k1"}
    with db.connection() as conn:
        trip = trip_rows.insert_trip(conn, user_id=user.id, thread_id="t")
        start = message_rows.begin_turn(
            conn,
            clerk_id=user.clerk_id,
            trip_id=trip.id,
            idempotency_key="k1",
            content="Hi",
            request_sha256="0" * 64,
            rate_limit=10,
            lease_seconds=30,
        )
        assert isinstance(start, message_rows.Started) and start.thread_id == "t"
        reply = message_rows.finish_turn(conn, **turn, trip_id=trip.id, reply="Hello")
        stored = message_rows.list_trip_messages(conn, user.clerk_id, trip.id, limit=10)
    sent = start.user_message
    assert (sent.role, sent.content, sent.trip_id) == ("user", "Hi", trip.id)
    assert (reply.role, reply.content, reply.trip_id) == ("assistant", "Hello", trip.id)
    assert stored.messages == [sent, reply]
    for message in (sent, reply):
        assert message.created_at.tzinfo is UTC
        assert abs(message.created_at - datetime.now(UTC)) < timedelta(seconds=30)
