"""ensure_user_exists and the Clerk sync: one User row and one assistant per Clerk user."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time

import psycopg
import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from dev.stack.backboard_standin import BackboardStandIn
from shared.domain import users
from shared.errors import AccountDeleted, ServiceInitializationError
from shared.gateways.clerk import ClerkProfile
from shared.models import User

Conn = psycopg.Connection[tuple[object, ...]]


def _user_rows(conn: Conn, clerk_id: str) -> list[tuple[object, ...]]:
    return conn.execute(
        'SELECT id, "assistantId", email, name FROM "User" WHERE "clerkId" = %s', (clerk_id,)
    ).fetchall()


def test_new_user_gets_one_assistant_and_a_row(
    clean_db: str, admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    user = users.ensure_user_exists("user_new", "new@example.test", "New Person")
    assert user.clerk_id == "user_new"
    assert user.email == "new@example.test"
    assert user.name == "New Person"
    assistants = backboard.assistants()
    assert list(assistants) == [user.assistant_id]
    assert "user_new" in assistants[user.assistant_id]["name"]
    assert "trip" in str(assistants[user.assistant_id]["system_prompt"]).lower()
    assert _user_rows(admin_conn, "user_new") == [
        (user.id, user.assistant_id, "new@example.test", "New Person")
    ]


def test_existing_user_is_returned_unchanged_without_backboard(
    clean_db: str, backboard: BackboardStandIn
) -> None:
    first = users.ensure_user_exists("user_same", "a@example.test", "A")
    calls = backboard.calls("create_assistant")
    again = users.ensure_user_exists("user_same", "other@example.test", "Other Name")
    assert again == first  # the stored row, not the new arguments
    assert backboard.calls("create_assistant") == calls


@pytest.mark.parametrize(
    ("status", "delay", "retryable"),
    # The timeout: a 0.3 s bound (short_backboard_timeout) against a 1 s answer.
    [(500, 0.0, True), (503, 0.0, True), (429, 0.0, True), (None, 1.0, True), (400, 0.0, False)],
    ids=["500", "503", "429", "timeout", "400"],
)
def test_failed_assistant_creation_writes_nothing_and_a_retry_succeeds(
    clean_db: str,
    admin_conn: Conn,
    backboard: BackboardStandIn,
    short_backboard_timeout: float,
    status: int | None,
    delay: float,
    retryable: bool,
) -> None:
    backboard.inject("create_assistant", status=status, delay=delay, times=1)
    with pytest.raises(ServiceInitializationError) as caught:
        users.ensure_user_exists("user_fail", "f@example.test", None)
    assert caught.value.code == "service_initialization_failed"
    assert "could not be initialized" in caught.value.message
    assert caught.value.status == (503 if retryable else 502)
    assert (caught.value.retry_after is not None) is retryable
    assert _user_rows(admin_conn, "user_fail") == []
    if status is not None:
        assert backboard.assistants() == {}
    else:  # the timed-out creation lands at Backboard after we gave up on it
        deadline = time.monotonic() + delay + 5
        while not backboard.assistants() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(backboard.assistants()) == 1
    user = users.ensure_user_exists("user_fail", "f@example.test", None)
    assert _user_rows(admin_conn, "user_fail")[0][1] == user.assistant_id
    # Exactly one assistant in the end: a late one is adopted, not orphaned.
    assert list(backboard.assistants()) == [user.assistant_id]


def test_insert_failing_after_creation_deletes_the_assistant(
    clean_db: str, admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    # A trigger makes the database refuse this one user, after the assistant was created.
    admin_conn.execute(
        "CREATE FUNCTION refuse_user() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.\"clerkId\" = 'user_refused' THEN RAISE EXCEPTION 'refused by test'; END IF; "
        "RETURN NEW; END $$"
    )
    admin_conn.execute(
        'CREATE TRIGGER refuse_user BEFORE INSERT ON "User" '
        "FOR EACH ROW EXECUTE FUNCTION refuse_user()"
    )
    try:
        with pytest.raises(psycopg.Error, match="refused by test"):
            users.ensure_user_exists("user_refused", "r@example.test", None)
        assert backboard.calls("create_assistant") == 1
        assert backboard.calls("delete_assistant") == 1
        assert backboard.assistants() == {}
        assert _user_rows(admin_conn, "user_refused") == []
    finally:
        admin_conn.execute('DROP TRIGGER refuse_user ON "User"')
        admin_conn.execute("DROP FUNCTION refuse_user()")


def test_concurrent_first_calls_in_threads_make_one_user(
    clean_db: str, admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    backboard.inject("create_assistant", delay=0.3, times=None)  # widen the race window
    barrier = threading.Barrier(24)
    results: list[User | str] = []
    failures: list[BaseException] = []

    def first_request(i: int) -> None:
        barrier.wait()
        try:
            if i % 3 == 0:  # the webhook, racing the API requests
                profile = ClerkProfile("race@example.test", "Racer")
                results.append(users.apply_clerk_profile("user_race", profile, 1000 + i).value)
            else:
                results.append(users.ensure_user_exists("user_race", "race@example.test", None))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=first_request, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    rows = _user_rows(admin_conn, "user_race")
    assert len(rows) == 1
    assert list(backboard.assistants()) == [rows[0][1]]
    assert backboard.calls("create_assistant") == 1
    returned = {r.id for r in results if isinstance(r, User)}
    assert returned == {rows[0][0]}


def _process_first_request(args: tuple[str, str, str, int]) -> str:
    database_url, base_url, api_key, i = args
    os.environ.update(
        {"DATABASE_URL": database_url, "BACKBOARD_BASE_URL": base_url, "BACKBOARD_API_KEY": api_key}
    )
    if i % 2:
        profile = ClerkProfile("proc@example.test", None)
        return users.apply_clerk_profile("user_proc", profile, 5000 + i).value
    return users.ensure_user_exists("user_proc", "proc@example.test", None).id


@pytest.mark.slow
def test_concurrent_first_calls_in_processes_make_one_user(
    clean_db: str, admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    backboard.inject("create_assistant", delay=0.3, times=None)
    args = [(clean_db, backboard.base_url, backboard.api_key, i) for i in range(20)]
    # Separate processes, each with its own pool and gateway (made on first use, after the
    # fork). forkserver: the imports are paid once, in the server, not in each of the 8.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(8) as pool:
        results = pool.map(_process_first_request, args)
    rows = _user_rows(admin_conn, "user_proc")
    assert len(rows) == 1
    assert list(backboard.assistants()) == [rows[0][1]], (backboard.assistants(), results)
    ids = {r for r in results if r not in {o.value for o in users.SyncOutcome}}
    assert ids == {rows[0][0]}


@pytest.fixture
def two_users_with_trips(
    clean_db: str, admin_conn: Conn, backboard: BackboardStandIn
) -> tuple[User, User]:
    from shared.gateways.backboard import get_backboard
    from shared.store import db, message_rows, trip_rows

    pair = []
    for clerk_id in ("user_keep", "user_gone"):
        user = users.ensure_user_exists(clerk_id, f"{clerk_id}@example.test", None)
        with db.connection() as conn:
            for _ in range(2):
                thread_id = get_backboard().create_thread(user.assistant_id)
                trip = trip_rows.insert_trip(conn, user_id=user.id, thread_id=thread_id)
                key = f"k-{trip.id}"
                message_rows.begin_turn(
                    conn,
                    clerk_id=clerk_id,
                    trip_id=trip.id,
                    idempotency_key=key,
                    content="hi",
                    request_sha256="0" * 64,
                    rate_limit=10,
                    lease_seconds=30,
                )
                message_rows.finish_turn(
                    conn, user_id=user.id, idempotency_key=key, trip_id=trip.id, reply="yo"
                )
        pair.append(user)
    return pair[0], pair[1]


def test_erase_user_removes_exactly_that_users_data(
    two_users_with_trips: tuple[User, User], admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    keep, _ = two_users_with_trips
    assert users.erase_user("user_gone") is True
    assert _user_rows(admin_conn, "user_gone") == []
    counts = admin_conn.execute(
        'SELECT (SELECT count(*) FROM "Session"), (SELECT count(*) FROM "Message"), '
        '(SELECT count(*) FROM "Session" WHERE "userId" = %s)',
        (keep.id,),
    ).fetchone()
    assert counts == (2, 4, 2)
    assert list(backboard.assistants()) == [keep.assistant_id]
    assert set(backboard.threads().values()) == {keep.assistant_id}
    # A repeat is a no-op, and the deleted user cannot come back.
    assert users.erase_user("user_gone") is False
    with pytest.raises(AccountDeleted):
        users.ensure_user_exists("user_gone", "again@example.test", None)
    outcome = users.apply_clerk_profile("user_gone", ClerkProfile("x@example.test", None), 10**13)
    assert outcome is users.SyncOutcome.IGNORED_DELETED
    assert list(backboard.assistants()) == [keep.assistant_id]


def test_erase_survives_backboard_failures_and_logs_them(
    two_users_with_trips: tuple[User, User],
    admin_conn: Conn,
    backboard: BackboardStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, gone = two_users_with_trips
    threads = {t for t, assistant in backboard.threads().items() if assistant == gone.assistant_id}
    assert len(threads) == 2
    backboard.inject("delete_assistant", status=500, times=None)
    backboard.inject("delete_thread", status=500, times=None)
    caplog.set_level(logging.WARNING)
    assert users.erase_user("user_gone") is True  # the database erasure is what must hold
    assert _user_rows(admin_conn, "user_gone") == []
    assert gone.assistant_id in backboard.assistants()  # left for the operator, and logged
    assert threads <= set(backboard.threads())

    # Each object left behind is logged at ERROR with its id, as the Powertools formatter
    # writes it to CloudWatch: what an operator needs to delete it by hand.
    formatter = LambdaPowertoolsFormatter()
    logged = [json.loads(formatter.format(r)) for r in caplog.records if r.levelno >= logging.ERROR]
    thread_logs = [r for r in logged if "thread_id" in r]
    assistant_logs = [r for r in logged if "assistant_id" in r]
    assert {r["thread_id"] for r in thread_logs} == threads
    assert len(thread_logs) == len(threads)
    assert {r["assistant_id"] for r in assistant_logs} == {gone.assistant_id}
    for record in thread_logs:
        assert record["message"] == "could not delete Backboard thread; delete it by hand"
    for record in assistant_logs:
        assert record["message"] == "could not delete Backboard assistant; delete it by hand"
    for record in logged:
        assert record["level"] == "ERROR"
        assert record["error"] == "upstream_unavailable"
    assert len(logged) == len(thread_logs) + len(assistant_logs)


def test_profile_updates_apply_in_event_order(clean_db: str, backboard: BackboardStandIn) -> None:
    from shared.store import db, user_rows

    assert (
        users.apply_clerk_profile("user_order", ClerkProfile("v2@example.test", "V2"), 200)
        is users.SyncOutcome.CREATED
    )
    stale = users.apply_clerk_profile("user_order", ClerkProfile("v1@example.test", "V1"), 100)
    assert stale is users.SyncOutcome.IGNORED_STALE
    newer = users.apply_clerk_profile("user_order", ClerkProfile(None, "V3"), 300)
    assert newer is users.SyncOutcome.UPDATED
    with db.connection() as conn:
        user = user_rows.get_user_by_clerk_id(conn, "user_order")
    assert user is not None
    assert (user.email, user.name) == ("", "V3")
    assert backboard.calls("create_assistant") == 1


def test_a_retry_before_a_late_assistant_lands_waits_instead_of_making_a_second(
    clean_db: str, admin_conn: Conn, short_backboard_timeout: float, backboard: BackboardStandIn
) -> None:
    """Our creation timed out but Backboard is still making the assistant: a retry at once
    must not ask for another (two assistants, one orphaned); it is told when to come back,
    and then adopts the late one."""
    backboard.inject("create_assistant", delay=short_backboard_timeout * 3, times=1)
    with pytest.raises(ServiceInitializationError):
        users.ensure_user_exists("user_late", "l@example.test", None)
    with pytest.raises(ServiceInitializationError) as waiting:
        users.ensure_user_exists("user_late", "l@example.test", None)
    assert waiting.value.status == 503
    assert waiting.value.retry_after is not None and waiting.value.retry_after >= 1
    assert backboard.calls("create_assistant") == 1
    time.sleep(short_backboard_timeout * 3)  # the late creation lands, the wait runs out
    user = users.ensure_user_exists("user_late", "l@example.test", None)
    assert list(backboard.assistants()) == [user.assistant_id]
    assert backboard.calls("create_assistant") == 1
    assert _user_rows(admin_conn, "user_late")[0][1] == user.assistant_id
