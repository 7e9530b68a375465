"""Automatic trip titles, through the handlers, with the Backboard stand-in (whose answer to a
titling request is the first six words of the traveller's message, quoted)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from dev.stack.apiclient import Client
from dev.stack.backboard_standin import BackboardStandIn
from shared import config
from shared.store import db, trip_rows

Conn = psycopg.Connection[tuple[object, ...]]
FIRST = "Three days in Lisbon, we love food markets and old trams"
TITLE = "Three days in Lisbon, we love"  # the stand-in's title for FIRST


@pytest.fixture
def alice(api: Callable[[str], Client], monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("AUTO_TITLE_WAIT_SECONDS", "2")
    config.reset_caches()
    return api("user_alice")


def _new_trip(client: Client, title: str | None = None) -> str:
    created = client.call("POST", "/sessions", body={"title": title} if title else None)
    assert created.status == 201
    return str(created.body["id"])


def _send(client: Client, trip_id: str, content: str = FIRST, key: str | None = None) -> int:
    headers = {"Idempotency-Key": key} if key else None
    return client.call(
        "POST", f"/sessions/{trip_id}/messages", body={"content": content}, headers=headers
    ).status


def _title(client: Client, trip_id: str) -> str:
    return str(client.call("GET", f"/sessions/{trip_id}").body["title"])


def _wait_for_calls(backboard: BackboardStandIn, operation: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while backboard.calls(operation) < count:
        assert time.monotonic() < deadline, f"no {operation} call arrived"
        time.sleep(0.01)


def test_a_new_trip_is_titled_after_its_first_reply_and_only_then(
    alice: Client, backboard: BackboardStandIn
) -> None:
    trip_id = _new_trip(alice)
    assert _title(alice, trip_id) == "New Trip"
    assert _send(alice, trip_id) == 201
    assert _title(alice, trip_id) == TITLE
    assert backboard.calls("send_message") == 1
    # The titling thread is gone again: only the trip's own thread is left.
    assert len(backboard.threads()) == 1
    # Memory off: the one memory is the reply's (memory "Auto"), none comes from titling.
    assert [m["content"] for m in backboard.memories()] == [f"The traveller said: {FIRST}"]

    # Later replies never ask again, whatever the title is.
    assert _send(alice, trip_id, "And a day trip to Sintra?") == 201
    assert backboard.calls("send_message") == 1
    assert _title(alice, trip_id) == TITLE


@pytest.mark.parametrize("title", ["Lisbon with the kids", "New Trip"])
def test_a_title_given_at_creation_is_never_replaced(
    alice: Client, backboard: BackboardStandIn, title: str
) -> None:
    trip_id = _new_trip(alice, title)
    assert _send(alice, trip_id) == 201
    assert _title(alice, trip_id) == title
    assert backboard.calls("send_message") == 0  # not even asked


@pytest.mark.parametrize("title", ["Porto instead", "New Trip"])
def test_a_renamed_trip_is_never_retitled(
    alice: Client, backboard: BackboardStandIn, title: str
) -> None:
    trip_id = _new_trip(alice)
    assert alice.call("PATCH", f"/sessions/{trip_id}", body={"title": title}).status == 200
    assert _send(alice, trip_id) == 201
    assert _title(alice, trip_id) == title
    assert backboard.calls("send_message") == 0


@pytest.mark.parametrize("title", ["Porto instead", "New Trip"])
def test_a_rename_while_the_title_is_on_its_way_wins(
    alice: Client, backboard: BackboardStandIn, title: str
) -> None:
    trip_id = _new_trip(alice)
    backboard.inject("send_message", delay=0.5)
    sender = threading.Thread(target=_send, args=(alice, trip_id))
    sender.start()
    _wait_for_calls(backboard, "send_message", 1)  # the title is being asked for ...
    renamed = alice.call("PATCH", f"/sessions/{trip_id}", body={"title": title})
    assert renamed.status == 200  # ... and the rename lands before it arrives
    sender.join()
    assert _title(alice, trip_id) == title  # a rename to "New Trip" counts too


@pytest.fixture
def pool_of_four(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Room for the racing requests: with one connection they would queue for the pool instead
    of meeting in PostgreSQL."""
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "4")
    config.reset_caches()
    db.close_pool()
    yield
    db.close_pool()


def _wait_for_a_lock_wait(admin_conn: Conn) -> None:
    """Until a session of this test's database waits for a lock (a row lock, here)."""
    deadline = time.monotonic() + 5
    while True:
        row = admin_conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None and row[0] == 1:
            return
        assert time.monotonic() < deadline, "nobody waits for the row lock"
        time.sleep(0.01)


def test_a_rename_waiting_on_the_titles_row_lock_still_wins(
    alice: Client, pool_of_four: None, admin_conn: Conn
) -> None:
    # Titling holds the trip's row (as the send does it: db.pipeline), the rename waits for
    # it, then lands.
    trip_id = _new_trip(alice)
    outcome: list[int] = []
    rename = threading.Thread(
        target=lambda: outcome.append(
            alice.call("PATCH", f"/sessions/{trip_id}", body={"title": "Mine"}).status
        )
    )
    with db.pipeline() as conn:
        assert trip_rows.set_automatic_title(conn, trip_id, "Automatic")
        rename.start()
        _wait_for_a_lock_wait(admin_conn)
        assert outcome == []
    rename.join()
    assert outcome == [200]
    assert _title(alice, trip_id) == "Mine"
    with db.pipeline() as conn:  # and titling never takes it back
        assert not trip_rows.set_automatic_title(conn, trip_id, "Automatic")
    assert _title(alice, trip_id) == "Mine"


def test_titling_waiting_on_a_renames_row_lock_sees_the_rename(
    alice: Client, pool_of_four: None, admin_conn: Conn, direct_url: str
) -> None:
    # A rename to the default title itself, uncommitted while titling runs: only the record of
    # the traveller's choice can tell it from the default, and titling must see it.
    trip_id = _new_trip(alice)
    outcome: list[bool] = []

    def titling() -> None:
        with db.pipeline() as conn:
            outcome.append(trip_rows.set_automatic_title(conn, trip_id, "Automatic"))

    with psycopg.connect(direct_url) as renaming:  # a transaction, left open
        assert trip_rows.rename_trip_of(renaming, "user_alice", trip_id, "New Trip") is not None
        worker = threading.Thread(target=titling)
        worker.start()
        _wait_for_a_lock_wait(admin_conn)
        assert outcome == []
        renaming.commit()
    worker.join()
    assert outcome == [False]
    assert _title(alice, trip_id) == "New Trip"


def test_renames_racing_first_replies_always_win(alice: Client, pool_of_four: None) -> None:
    for i in range(8):
        trip_id = _new_trip(alice)
        sender = threading.Thread(target=_send, args=(alice, trip_id))
        sender.start()
        time.sleep(0.002 * i)  # land the rename at different points of the send
        renamed = alice.call("PATCH", f"/sessions/{trip_id}", body={"title": f"Mine {i}"})
        assert renamed.status == 200
        sender.join()
        assert _title(alice, trip_id) == f"Mine {i}"


def test_titling_failure_leaves_the_default_and_logs_no_content(
    alice: Client, backboard: BackboardStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    trip_id = _new_trip(alice)
    backboard.inject("send_message", status=500)
    caplog.set_level(logging.DEBUG)
    assert _send(alice, trip_id) == 201  # the send itself succeeds
    assert _title(alice, trip_id) == "New Trip"
    formatter = LambdaPowertoolsFormatter()
    logged = [json.loads(formatter.format(r)) for r in caplog.records]
    failed = [r for r in logged if r["message"] == "automatic title failed"]
    assert len(failed) == 1
    assert failed[0]["level"] == "WARNING"
    assert failed[0]["trip_id"] == trip_id
    assert failed[0]["error"] == "upstream_unavailable"
    # Nothing of the conversation at INFO and above, nor in our own logs at any level.
    ours = [r for r in caplog.records if r.levelno >= logging.INFO or ".shared." in r.name]
    assert ours and not [r for r in ours if "Lisbon" in r.getMessage() + str(r.__dict__)]


def test_an_unusable_title_leaves_the_default(alice: Client, backboard: BackboardStandIn) -> None:
    trip_id = _new_trip(alice)
    answer = {"messages": [{"role": "assistant", "content": '""', "status": "COMPLETED"}]}
    backboard.inject("send_message", payload=answer)
    assert _send(alice, trip_id) == 201
    assert _title(alice, trip_id) == "New Trip"


def test_the_title_is_asked_alongside_the_reply_not_after(
    alice: Client, backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both calls take 0.6 s and the send waits at most 0.4 s for the title once the reply is
    # stored: only a title asked for at the same time as the reply can make it.
    monkeypatch.setenv("AUTO_TITLE_WAIT_SECONDS", "0.4")
    config.reset_caches()
    trip_id = _new_trip(alice)
    backboard.inject("add_message", delay=0.6)
    backboard.inject("send_message", delay=0.6)
    assert _send(alice, trip_id) == 201
    assert _title(alice, trip_id) == TITLE


def test_a_slow_title_is_not_waited_for_and_its_thread_is_reclaimed(
    alice: Client, backboard: BackboardStandIn, admin_conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTO_TITLE_WAIT_SECONDS", "0.1")
    config.reset_caches()
    trip_id = _new_trip(alice)
    backboard.inject("send_message", delay=0.8)
    assert _send(alice, trip_id) == 201
    assert _title(alice, trip_id) == "New Trip"
    # The titling call lands after the send gave up on it: its thread stays at Backboard ...
    deadline = time.monotonic() + 5
    while len(backboard.threads()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # ... until the user's next new trip after the check time deletes threads no trip knows.
    row = admin_conn.execute("SELECT threads_check_at FROM tripchat.rate_limit").fetchone()
    assert row is not None and row[0] is not None
    admin_conn.execute("UPDATE tripchat.rate_limit SET threads_check_at = now()")
    second = _new_trip(alice)
    known = admin_conn.execute(
        'SELECT "threadId" FROM "Session" WHERE id IN (%s, %s)', (trip_id, second)
    )
    assert set(backboard.threads()) == {str(r[0]) for r in known.fetchall()}


def test_a_failed_first_reply_is_titled_when_its_retry_succeeds(
    alice: Client, backboard: BackboardStandIn
) -> None:
    trip_id = _new_trip(alice)
    backboard.inject("add_message", status=503)
    assert _send(alice, trip_id, key="first-try") == 503
    assert _title(alice, trip_id) == "New Trip"
    assert _send(alice, trip_id, key="first-try") == 201  # the same turn, resumed
    assert _title(alice, trip_id) == TITLE
