"""The sessions and messages functions end to end, through their handlers, with API Gateway
HTTP API v2 events, Clerk tokens from a local issuer, and the Backboard stand-in."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from dev.stack.apiclient import Client, Reply
from dev.stack.apigw import LambdaContext, http_event
from dev.stack.backboard_standin import BackboardStandIn
from dev.stack.token_issuer import LocalIssuer
from functions.messages.app import lambda_handler as messages_handler
from shared import config

Conn = psycopg.Connection[tuple[object, ...]]


def _count(conn: Conn, sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_full_trip_flow(
    api: Callable[[str], Client], admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    alice = api("user_alice")
    created = alice.call("POST", "/sessions", body={"title": "  Lisbon in May  "})
    assert created.status == 201
    trip = created.body
    assert trip["title"] == "Lisbon in May"
    assert set(trip) == {"id", "title", "createdAt"}
    assert created.headers["Location"] == f"/sessions/{trip['id']}"
    # The user was provisioned by this first request: one row, one assistant, one thread.
    assert _count(admin_conn, 'SELECT count(*) FROM "User" WHERE "clerkId" = %s', "user_alice") == 1
    assert len(backboard.assistants()) == 1
    thread_id = admin_conn.execute(
        'SELECT "threadId" FROM "Session" WHERE id = %s', (trip["id"],)
    ).fetchone()
    assert thread_id is not None
    assert backboard.threads() == {thread_id[0]: next(iter(backboard.assistants()))}

    untitled = alice.call("POST", "/sessions")
    assert (untitled.status, untitled.body["title"]) == (201, "New Trip")

    listed = alice.call("GET", "/sessions")
    assert listed.status == 200
    assert [s["id"] for s in listed.body["sessions"]] == [untitled.body["id"], trip["id"]]
    assert listed.body["nextCursor"] is None

    renamed = alice.call("PATCH", f"/sessions/{trip['id']}", body={"title": "Lisbon & Porto"})
    assert (renamed.status, renamed.body["title"]) == (200, "Lisbon & Porto")
    assert alice.call("GET", f"/sessions/{trip['id']}").body["title"] == "Lisbon & Porto"

    sent = []
    for i in range(5):
        reply = alice.call(
            "POST", f"/sessions/{trip['id']}/messages", body={"content": f" question {i} "}
        )
        assert reply.status == 201
        assert reply.body["userMessage"]["content"] == f"question {i}"
        assert reply.body["userMessage"]["role"] == "user"
        assert reply.body["assistantMessage"]["role"] == "assistant"
        assert f"question {i}" in reply.body["assistantMessage"]["content"]
        sent += [reply.body["userMessage"]["id"], reply.body["assistantMessage"]["id"]]
    # Backboard saw every message on the trip's thread, with memory on.
    seen = backboard.messages(str(thread_id[0]))
    assert [m["content"] for m in seen if m["role"] == "user"] == [
        f"question {i}" for i in range(5)
    ]
    assert {m.get("memory") for m in seen if m["role"] == "user"} == {"Auto"}

    # Page backwards from the latest, then forwards from the start.
    page = alice.call("GET", f"/sessions/{trip['id']}/messages", query={"limit": "4"})
    assert [m["id"] for m in page.body["messages"]] == sent[-4:]
    # The API's fields only: a stored message's trip (shared.models.Message) is not sent.
    assert all(set(m) == {"id", "role", "content", "createdAt"} for m in page.body["messages"])
    collected = [m["id"] for m in page.body["messages"]]
    while page.body["olderCursor"]:
        page = alice.call(
            "GET",
            f"/sessions/{trip['id']}/messages",
            query={"limit": "4", "before": page.body["olderCursor"]},
        )
        collected = [m["id"] for m in page.body["messages"]] + collected
    assert collected == sent
    forward = [m["id"] for m in page.body["messages"]]
    cursor = page.body["newerCursor"]
    while True:
        nxt = alice.call(
            "GET", f"/sessions/{trip['id']}/messages", query={"limit": "3", "after": cursor}
        )
        if not nxt.body["messages"]:
            break
        forward += [m["id"] for m in nxt.body["messages"]]
        cursor = nxt.body["newerCursor"]
    assert forward == sent

    deleted = alice.call("DELETE", f"/sessions/{trip['id']}")
    assert (deleted.status, deleted.body) == (204, None)
    assert (
        _count(admin_conn, 'SELECT count(*) FROM "Message" WHERE "sessionId" = %s', trip["id"]) == 0
    )
    assert thread_id[0] not in backboard.threads()
    assert alice.call("GET", f"/sessions/{trip['id']}").status == 404
    assert [s["id"] for s in alice.call("GET", "/sessions").body["sessions"]] == [
        untitled.body["id"]
    ]


@pytest.fixture
def alice_trip(api: Callable[[str], Client]) -> tuple[Client, str]:
    alice = api("user_alice")
    trip = alice.call("POST", "/sessions", body={"title": "Kyoto"})
    assert trip.status == 201
    first = alice.call("POST", f"/sessions/{trip.body['id']}/messages", body={"content": "hello"})
    assert first.status == 201
    return alice, str(trip.body["id"])


def _snapshot(conn: Conn) -> list[Any]:
    return [
        conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        for table in ('"User"', '"Session"', '"Message"', "tripchat.message_turn")
    ]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"title": "Mine now"}),
        ("DELETE", "", None),
        ("GET", "/messages", None),
        ("POST", "/messages", {"content": "let me in"}),
    ],
)
def test_another_users_trip_is_a_404_and_nothing_changes(
    alice_trip: tuple[Client, str],
    api: Callable[[str], Client],
    admin_conn: Conn,
    backboard: BackboardStandIn,
    method: str,
    suffix: str,
    body: Any,
) -> None:
    _, trip_id = alice_trip
    bob = api("user_bob")
    bob.call("GET", "/sessions")  # provision Bob first, so the snapshot includes him
    before, calls = _snapshot(admin_conn), backboard.calls("add_message")
    reply = bob.call(method, f"/sessions/{trip_id}{suffix}", body=body)
    assert reply.status == 404
    assert reply.body["error"]["code"] == "session_not_found"
    assert _snapshot(admin_conn) == before
    assert backboard.calls("add_message") == calls
    missing = bob.call(method, f"/sessions/no-such-trip{suffix}", body=body)
    assert (missing.status, missing.body) == (reply.status, reply.body)  # indistinguishable


def test_idempotent_send_replays_without_a_second_backboard_call(
    alice_trip: tuple[Client, str], admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    alice, trip_id = alice_trip
    key = {"Idempotency-Key": "send-1"}
    first = alice.call(
        "POST", f"/sessions/{trip_id}/messages", body={"content": "Day 1?"}, headers=key
    )
    calls = backboard.calls("add_message")
    again = alice.call(
        "POST", f"/sessions/{trip_id}/messages", body={"content": "Day 1?"}, headers=key
    )
    assert (first.status, again.status) == (201, 201)
    assert again.body == first.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert backboard.calls("add_message") == calls
    count = _count(admin_conn, 'SELECT count(*) FROM "Message" WHERE "sessionId" = %s', trip_id)
    assert count == 4  # hello + reply, Day 1? + reply
    reused = alice.call(
        "POST", f"/sessions/{trip_id}/messages", body={"content": "Other"}, headers=key
    )
    assert (reused.status, reused.body["error"]["code"]) == (409, "idempotency_key_reused")


@pytest.mark.parametrize(
    ("status", "delay", "expected"),
    [(500, 0.0, 503), (429, 0.0, 503), (None, 3.0, 503), (400, 0.0, 502)],
)
def test_backboard_failure_keeps_the_user_message_and_a_retry_completes_it(
    alice_trip: tuple[Client, str],
    admin_conn: Conn,
    backboard: BackboardStandIn,
    status: int | None,
    delay: float,
    expected: int,
) -> None:
    alice, trip_id = alice_trip
    backboard.inject("add_message", status=status, delay=delay, times=1)
    key = {"Idempotency-Key": f"fail-{status}"}
    failed = alice.call(
        "POST", f"/sessions/{trip_id}/messages", body={"content": "Where to eat?"}, headers=key
    )
    assert failed.status == expected
    assert failed.body["error"]["code"] in {"upstream_unavailable", "upstream_error"}
    rows = admin_conn.execute(
        'SELECT role, content FROM "Message" WHERE "sessionId" = %s ORDER BY "createdAt", id',
        (trip_id,),
    ).fetchall()
    assert rows[-1] == ("user", "Where to eat?")  # kept
    retry = alice.call(
        "POST", f"/sessions/{trip_id}/messages", body={"content": "Where to eat?"}, headers=key
    )
    assert retry.status == 201
    rows = admin_conn.execute(
        'SELECT role, content FROM "Message" WHERE "sessionId" = %s ORDER BY "createdAt", id',
        (trip_id,),
    ).fetchall()
    assert [r for r in rows if r == ("user", "Where to eat?")] == [
        ("user", "Where to eat?")
    ]  # not duplicated
    assert rows[-1][0] == "assistant"
    assert retry.body["userMessage"]["id"] == failed_user_id(admin_conn, trip_id)


def failed_user_id(conn: Conn, trip_id: str) -> str:
    row = conn.execute(
        'SELECT id FROM "Message" WHERE "sessionId" = %s AND content = %s',
        (trip_id, "Where to eat?"),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_concurrent_retries_with_one_key_store_one_turn(
    alice_trip: tuple[Client, str], admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    alice, trip_id = alice_trip
    backboard.inject("add_message", delay=0.5, times=1)
    results: list[Reply] = []
    barrier = threading.Barrier(5)

    def send() -> None:
        barrier.wait()
        results.append(
            alice.call(
                "POST",
                f"/sessions/{trip_id}/messages",
                body={"content": "same"},
                headers={"Idempotency-Key": "k"},
            )
        )

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status for r in results)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    assert _count(admin_conn, 'SELECT count(*) FROM "Message" WHERE content = %s', "same") == 1
    calls = backboard.calls("add_message")
    assert calls == 2  # hello, and exactly one for "same"


@pytest.mark.parametrize("thread_deleted", [True, False], ids=["thread-gone", "thread-kept"])
def test_trip_deleted_while_the_assistant_answers(
    alice_trip: tuple[Client, str],
    admin_conn: Conn,
    backboard: BackboardStandIn,
    thread_deleted: bool,
) -> None:
    """Either Backboard no longer knows the thread, or it answers and the reply has no trip
    to go to: a 409 either way, and nothing of the trip is left behind."""
    alice, trip_id = alice_trip
    backboard.inject("add_message", delay=0.6, times=1)
    if not thread_deleted:
        backboard.inject("delete_thread", status=500, times=1)
    replies: list[Reply] = []
    sender = threading.Thread(
        target=lambda: replies.append(
            alice.call("POST", f"/sessions/{trip_id}/messages", body={"content": "late"})
        )
    )
    sender.start()
    time.sleep(0.2)  # the user's message is stored; the reply is pending
    assert alice.call("DELETE", f"/sessions/{trip_id}").status == 204
    sender.join()
    assert replies[0].status == 409
    assert replies[0].body["error"]["code"] == "conflict"
    for table, column in (('"Message"', '"sessionId"'), ("tripchat.message_turn", "session_id")):
        assert _count(admin_conn, f"SELECT count(*) FROM {table} WHERE {column} = %s", trip_id) == 0


def test_rate_limit_is_per_user_and_answers_429(
    alice_trip: tuple[Client, str],
    api: Callable[[str], Client],
    admin_conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, trip_id = alice_trip
    monkeypatch.setenv("MESSAGE_RATE_LIMIT_PER_MINUTE", "3")
    config.reset_caches()
    statuses = [
        alice.call("POST", f"/sessions/{trip_id}/messages", body={"content": f"m{i}"}).status
        for i in range(4)
    ]
    # "hello" in the fixture counted too: 3 allowed in this minute, then 429.
    assert statuses in ([201, 201, 429, 429], [201, 201, 201, 429])
    limited = alice.call("POST", f"/sessions/{trip_id}/messages", body={"content": "again"})
    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert _count(admin_conn, 'SELECT count(*) FROM "Message" WHERE content = %s', "again") == 0
    bob = api("user_bob")
    bob_trip = bob.call("POST", "/sessions").body["id"]
    assert bob.call("POST", f"/sessions/{bob_trip}/messages", body={"content": "hi"}).status == 201


def test_session_list_paginates_with_an_opaque_cursor(api: Callable[[str], Client]) -> None:
    alice = api("user_alice")
    ids = [alice.call("POST", "/sessions", body={"title": f"t{i}"}).body["id"] for i in range(5)]
    page = alice.call("GET", "/sessions", query={"limit": "2"})
    got = [s["id"] for s in page.body["sessions"]]
    while page.body["nextCursor"]:
        page = alice.call(
            "GET", "/sessions", query={"limit": "2", "cursor": page.body["nextCursor"]}
        )
        got += [s["id"] for s in page.body["sessions"]]
    assert got == ids[::-1]


BAD_TOKENS = ["", "Bearer", "Bearer not.a.jwt", "Basic dXNlcjpwYXNz"]


@pytest.mark.parametrize("header", BAD_TOKENS)
def test_requests_without_a_valid_token_are_401(
    api: Callable[[str], Client], admin_conn: Conn, header: str
) -> None:
    client = Client(token=None)
    reply = client.call("GET", "/sessions", headers={"authorization": header} if header else None)
    assert reply.status == 401
    assert reply.body["error"]["code"] == "unauthorized"
    assert _count(admin_conn, 'SELECT count(*) FROM "User"') == 0


def test_expired_token_is_401(api: Callable[[str], Client], issuer: LocalIssuer) -> None:
    reply = Client(issuer.mint("user_alice", expires_in=-120)).call("GET", "/sessions")
    assert reply.status == 401


def test_a_pending_session_is_401_and_provisions_nothing(
    api: Callable[[str], Client],
    issuer: LocalIssuer,
    admin_conn: Conn,
    backboard: BackboardStandIn,
) -> None:
    """Clerk treats a pending session (sign-in tasks left) as signed out: no user, no
    assistant, no trip."""
    pending = issuer.mint("user_pending", email="p@example.test", extra={"v": 2, "sts": "pending"})
    reply = Client(pending).call("POST", "/sessions", body={"title": "x"})
    assert (reply.status, reply.body["error"]["code"]) == (401, "unauthorized")
    assert _count(admin_conn, 'SELECT count(*) FROM "User"') == 0
    assert _count(admin_conn, 'SELECT count(*) FROM "Session"') == 0
    assert backboard.assistants() == {}
    active = issuer.mint("user_active", email="a@example.test", extra={"v": 2, "sts": "active"})
    assert Client(active).call("GET", "/sessions").status == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "status", "code"),
    [
        ("POST", "/sessions", "{not json", None, 400, "malformed_json"),
        ("POST", "/sessions", {"title": 42}, None, 422, "validation_error"),
        ("POST", "/sessions", {"title": "   "}, None, 422, "validation_error"),
        ("POST", "/sessions", {"title": "x" * 201}, None, 422, "validation_error"),
        ("POST", "/sessions", {"title": "ok", "extra": 1}, None, 422, "validation_error"),
        ("POST", "/sessions", [1, 2], None, 422, "validation_error"),
        ("GET", "/sessions", None, {"limit": "0"}, 422, "validation_error"),
        ("GET", "/sessions", None, {"limit": "101"}, 422, "validation_error"),
        ("GET", "/sessions", None, {"limit": "ten"}, 422, "validation_error"),
        ("GET", "/sessions", None, {"cursor": "garbage!"}, 422, "validation_error"),
        ("PUT", "/sessions", {}, None, 405, "method_not_allowed"),
        ("GET", "/nowhere", None, None, 404, "not_found"),
    ],
)
def test_bad_requests_get_precise_4xx(
    api: Callable[[str], Client],
    method: str,
    path: str,
    body: Any,
    query: dict[str, str] | None,
    status: int,
    code: str,
) -> None:
    reply = api("user_alice").call(method, path, body=body, query=query)
    assert (reply.status, reply.body["error"]["code"]) == (status, code)
    assert "Traceback" not in json.dumps(reply.body)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content": ""}, 422, "validation_error"),
        ({"content": "   \n "}, 422, "validation_error"),
        ({"content": "x" * 8001}, 422, "validation_error"),
        ({"content": "nul \u0000 inside"}, 422, "validation_error"),
        ({"content": ["list"]}, 422, "validation_error"),
        ({}, 422, "validation_error"),
        ("{", 400, "malformed_json"),
        ({"content": "x" * 70_000}, 413, "payload_too_large"),
    ],
)
def test_bad_message_bodies_store_nothing(
    alice_trip: tuple[Client, str], admin_conn: Conn, body: Any, status: int, code: str
) -> None:
    alice, trip_id = alice_trip
    before = _count(admin_conn, 'SELECT count(*) FROM "Message"')
    reply = alice.call("POST", f"/sessions/{trip_id}/messages", body=body)
    assert (reply.status, reply.body["error"]["code"]) == (status, code)
    assert _count(admin_conn, 'SELECT count(*) FROM "Message"') == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_non_json_bodies_are_415(api: Callable[[str], Client], content_type: str) -> None:
    reply = api("user_alice").call(
        "POST", "/sessions", body="title=x", headers={"content-type": content_type}
    )
    assert (reply.status, reply.body["error"]["code"]) == (415, "unsupported_media_type")


def test_json_with_charset_is_accepted(api: Callable[[str], Client]) -> None:
    reply = api("user_alice").call(
        "POST",
        "/sessions",
        body='{"title": "ok"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert reply.status == 201


def test_exactly_8000_characters_are_accepted(alice_trip: tuple[Client, str]) -> None:
    alice, trip_id = alice_trip
    reply = alice.call("POST", f"/sessions/{trip_id}/messages", body={"content": "é" * 8000})
    assert reply.status == 201


def test_backboard_down_when_creating_a_trip_writes_no_row(
    api: Callable[[str], Client], admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    alice = api("user_alice")
    alice.call("GET", "/sessions")
    backboard.inject("create_thread", status=503, times=1)
    reply = alice.call("POST", "/sessions", body={"title": "Nope"})
    assert reply.status == 503
    assert int(reply.headers["Retry-After"]) > 0
    assert _count(admin_conn, 'SELECT count(*) FROM "Session"') == 0


def test_base64_bodies_are_decoded(alice_trip: tuple[Client, str]) -> None:
    alice, trip_id = alice_trip
    event = http_event(
        "POST",
        f"/sessions/{trip_id}/messages",
        body=json.dumps({"content": "encoded"}).encode(),
        headers={"authorization": f"Bearer {alice.token}"},
    )
    assert event["isBase64Encoded"] is True
    response = messages_handler(event, LambdaContext())
    assert response["statusCode"] == 201
    assert base64.b64decode(event["body"])  # sanity: it really was encoded


def test_first_request_without_email_claim_looks_the_user_up_in_clerk(
    api: Callable[[str], Client],
    issuer: LocalIssuer,
    admin_conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dev.stack.clerk_standin import ClerkStandIn
    from shared.gateways import clerk

    with ClerkStandIn([issuer]) as clerk_api:
        monkeypatch.setenv("CLERK_API_URL", clerk_api.api_url)
        monkeypatch.setenv("CLERK_SECRET_KEY", clerk_api.secret_key)
        config.reset_caches()
        clerk.reset_clerk()
        clerk_api.add_user("user_plain", email="plain@example.test")
        reply = Client(issuer.mint("user_plain")).call("GET", "/sessions")
        assert reply.status == 200
        row = admin_conn.execute(
            'SELECT email, name FROM "User" WHERE "clerkId" = %s', ("user_plain",)
        ).fetchone()
        assert row == ("plain@example.test", "Ada Lovelace")
        # Known users are never looked up again.
        Client(issuer.mint("user_plain")).call("GET", "/sessions")
        assert clerk_api.user_fetches == 1
        # Clerk down for a new user: 503, and nothing is created.
        clerk_api.fault_status = 503
        down = Client(issuer.mint("user_new")).call("GET", "/sessions")
        assert down.status == 503
        assert admin_conn.execute(
            'SELECT count(*) FROM "User" WHERE "clerkId" = %s', ("user_new",)
        ).fetchone() == (0,)
    clerk.reset_clerk()


def test_first_request_without_email_claim_and_without_a_secret_key_stores_an_empty_email(
    api: Callable[[str], Client],
    issuer: LocalIssuer,
    admin_conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Backend API lookup is optional: without CLERK_SECRET_KEY a new user whose token has
    no email claim is stored with an empty email (as one without any address is), and the
    missing key is logged once as a warning, not answered with a 500."""
    from shared.gateways import clerk

    for name in ("CLERK_SECRET_KEY", "CLERK_SECRET_KEY_SECRET_ARN", "CLERK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    config.reset_caches()
    clerk.reset_clerk()
    caplog.set_level(logging.WARNING)
    for clerk_id in ("user_phone_1", "user_phone_2"):
        reply = Client(issuer.mint(clerk_id, name="Pat")).call("GET", "/sessions")
        assert reply.status == 200, reply.body
    rows = admin_conn.execute(
        'SELECT "clerkId", email, name FROM "User" ORDER BY "clerkId"'
    ).fetchall()
    assert rows == [("user_phone_1", "", "Pat"), ("user_phone_2", "", "Pat")]
    warnings = [r for r in caplog.records if "CLERK_SECRET_KEY" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]  # once, not once per user
    clerk.reset_clerk()


def test_the_message_limit_holds_over_any_60_seconds(
    alice_trip: tuple[Client, str], admin_conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a per-minute counter (which let twice the limit through across a minute's end):
    the last 60 seconds, wherever they start."""
    alice, trip_id = alice_trip
    monkeypatch.setenv("MESSAGE_RATE_LIMIT_PER_MINUTE", "3")
    config.reset_caches()

    def send(content: str) -> Reply:
        return alice.call("POST", f"/sessions/{trip_id}/messages", body={"content": content})

    def age_recent_messages(seconds: int) -> None:
        admin_conn.execute(
            "UPDATE tripchat.rate_limit SET recent_messages = ARRAY("
            "SELECT t - make_interval(secs => %s) FROM unnest(recent_messages) t)",
            (seconds,),
        )

    assert [send(f"m{i}").status for i in range(2)] == [201, 201]  # with "hello": 3
    refused = send("fourth")
    assert refused.status == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    age_recent_messages(50)  # all three were 50 s ago: still inside the window
    refused = send("fourth")
    assert refused.status == 429 and 1 <= int(refused.headers["Retry-After"]) <= 10
    age_recent_messages(11)  # now 61 s ago: outside
    assert send("fourth").status == 201
    assert _count(admin_conn, 'SELECT count(*) FROM "Message" WHERE content = %s', "fourth") == 1


def test_trip_creation_is_limited_before_backboard_is_asked(
    api: Callable[[str], Client],
    backboard: BackboardStandIn,
    admin_conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIP_RATE_LIMIT_PER_MINUTE", "2")
    config.reset_caches()
    alice = api("user_alice")
    assert [alice.call("POST", "/sessions").status for _ in range(2)] == [201, 201]
    threads = backboard.calls("create_thread")
    refused = alice.call("POST", "/sessions", body={"title": "Third"})
    assert refused.status == 429, refused.body
    assert refused.body["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert backboard.calls("create_thread") == threads  # no thread made for nothing
    assert _count(admin_conn, 'SELECT count(*) FROM "Session" WHERE title = %s', "Third") == 0
    # Someone else is not affected.
    assert api("user_bob").call("POST", "/sessions").status == 201


def test_a_constraint_violation_that_is_no_known_race_is_a_500_not_a_409(
    api: Callable[[str], Client], backboard: BackboardStandIn, admin_conn: Conn
) -> None:
    """Only the foreign-key races the code expects are "the data changed, retry" (409): a
    duplicate assistant id is a bug somewhere, and a retry cannot fix it."""
    alice = api("user_alice")
    assert alice.call("GET", "/sessions").status == 200
    taken = _count(admin_conn, 'SELECT count(*) FROM "User" WHERE "assistantId" IS NOT NULL')
    assert taken == 1
    row = admin_conn.execute('SELECT "assistantId" FROM "User"').fetchone()
    assert row is not None
    backboard.inject(
        "create_assistant",
        payload={
            "assistant_id": row[0],
            "name": "Trip planner for user_bob",
            "created_at": "2026-01-01T00:00:00Z",
        },
        times=1,
    )
    reply = api("user_bob").call("GET", "/sessions")
    assert reply.status == 500, reply.body
    assert reply.body == {
        "error": {"code": "internal_error", "message": "Something went wrong on our side."}
    }
    assert _count(admin_conn, 'SELECT count(*) FROM "User" WHERE "clerkId" = %s', "user_bob") == 0


def test_an_assistant_gone_at_backboard_is_replaced_and_trips_carry_on(
    api: Callable[[str], Client], backboard: BackboardStandIn, admin_conn: Conn
) -> None:
    """Backboard forgot the user's assistant (and so its threads): the next new trip gets a
    new assistant, once, and an old trip continues in a new thread; nothing is a 502."""
    from shared.gateways.backboard import get_backboard

    alice = api("user_alice")
    old_trip = alice.call("POST", "/sessions", body={"title": "Before"}).body["id"]
    row = admin_conn.execute('SELECT "assistantId" FROM "User"').fetchone()
    assert row is not None
    get_backboard().delete_assistant(str(row[0]))  # deleted outside this backend
    assert backboard.assistants() == {} and backboard.threads() == {}

    created = alice.call("POST", "/sessions", body={"title": "After"})
    assert created.status == 201, created.body
    sent = alice.call("POST", f"/sessions/{old_trip}/messages", body={"content": "Still on?"})
    assert sent.status == 201, sent.body

    row = admin_conn.execute('SELECT "assistantId" FROM "User"').fetchone()
    assert row is not None and list(backboard.assistants()) == [row[0]]
    trips = admin_conn.execute('SELECT "threadId" FROM "Session"').fetchall()
    assert backboard.threads() == {str(thread): row[0] for (thread,) in trips}
    assert backboard.calls("create_assistant") == 2
    listed = alice.call("GET", f"/sessions/{old_trip}/messages")
    assert [m["role"] for m in listed.body["messages"]] == ["user", "assistant"]


@pytest.mark.parametrize("key", ["has space", "é-accented", "x" * 256])
def test_a_malformed_idempotency_key_is_422_and_stores_nothing(
    alice_trip: tuple[Client, str], admin_conn: Conn, key: str
) -> None:
    alice, trip_id = alice_trip
    reply = alice.call(
        "POST",
        f"/sessions/{trip_id}/messages",
        body={"content": "keyed"},
        headers={"Idempotency-Key": key},
    )
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "validation_error"
    assert _count(admin_conn, 'SELECT count(*) FROM "Message" WHERE content = %s', "keyed") == 0
