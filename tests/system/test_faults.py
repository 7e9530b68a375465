"""Faults are normal events: a database outage mid-stream, a flaky Backboard, forged and
replayed webhooks. The invariants must hold through all of them."""

from __future__ import annotations

import base64
import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import psycopg
import pytest
from svix.webhooks import Webhook

from dev.stack.apiclient import Client, Reply
from dev.stack.apigw import LambdaContext, http_event, response_json
from dev.stack.backboard_standin import BackboardStandIn
from functions.clerk_webhook.app import lambda_handler as webhook_handler
from tests.conftest import VIA_POOLER, DatabaseOutage

Conn = psycopg.Connection[tuple[object, ...]]
pytestmark = pytest.mark.fault


def test_database_outage_mid_stream(
    api: Callable[[str], Client], database_outage: DatabaseOutage, admin_conn: Conn
) -> None:
    alice = api("user_alice")
    trip = alice.call("POST", "/sessions").body["id"]
    acknowledged: list[str] = []
    outage_replies: list[tuple[Reply, float]] = []
    phase = "before"
    # Each send during the outage waits out the 1 s connect timeout: a few of them show it.
    for i in range(45):
        if i == 20:
            database_outage.start()
            phase = "outage"
        if i == 25:
            database_outage.end()
            phase = "after"
        started = time.monotonic()
        send = alice.prepare(
            "POST",
            f"/sessions/{trip}/messages",
            body={"content": f"message {i}"},
            headers={"Idempotency-Key": f"stream-{i}"},
        )
        reply = send()
        elapsed = time.monotonic() - started
        if phase == "after" and VIA_POOLER:
            # A pooler logs in to a database that is back only after its retry interval
            # (server_login_retry): until then a client retries on 503, with the same key.
            while reply.status == 503 and time.monotonic() - started < 10:
                time.sleep(0.2)
                reply = send()
        if reply.status == 201:
            acknowledged.append(f"message {i}")
        if phase == "outage":
            outage_replies.append((reply, elapsed))
        elif phase == "before":
            assert reply.status == 201, reply.body

    # During the outage: fast, clear 503s with Retry-After (the token check needs no database).
    assert outage_replies
    for reply, elapsed in outage_replies:
        assert reply.status == 503, reply.body
        assert reply.body["error"]["code"] == "database_unavailable"
        assert int(reply.headers["Retry-After"]) > 0
        assert elapsed < 5
    # Afterwards everything succeeds again, with the same pool (no redeploy).
    after = [f"message {i}" for i in range(25, 45)]
    assert set(after) <= set(acknowledged)
    rows = admin_conn.execute(
        'SELECT content, count(*) FROM "Message" WHERE "sessionId" = %s AND role = %s '
        "GROUP BY content",
        (trip, "user"),
    ).fetchall()
    counts = {str(content): int(str(count)) for content, count in rows}
    assert all(counts.get(content) == 1 for content in acknowledged)  # each exactly once
    assert all(count == 1 for count in counts.values())


def test_flaky_backboard_keeps_every_invariant(
    api: Callable[[str], Client],
    admin_conn: Conn,
    backboard: BackboardStandIn,
    short_backboard_timeout: float,
) -> None:
    rng = random.Random(7)
    failures: list[Reply] = []

    def with_retries(call: Callable[[], Reply]) -> Reply:
        for _ in range(30):
            reply = call()
            if reply.status < 500:
                return reply
            failures.append(reply)
        raise AssertionError("never succeeded")

    statuses = [500, 503, 429, None]  # None: a timeout
    for op in ("create_assistant", "create_thread", "add_message"):
        status = rng.choice(statuses)
        delay = short_backboard_timeout * 2 if status is None else 0.0
        backboard.inject(op, status=status, delay=delay, times=None, probability=0.3)
    users = [api(f"user_flaky{i}") for i in range(4)]
    for n, user in enumerate(users):
        trip = with_retries(partial(user.call, "POST", "/sessions", body={"title": "Flaky"}))
        assert trip.status == 201
        for m in range(5):
            key = {"Idempotency-Key": f"u{n}-m{m}"}
            body = {"content": f"user {n} message {m}"}
            path = f"/sessions/{trip.body['id']}/messages"
            sent = with_retries(partial(user.call, "POST", path, body=body, headers=key))
            assert sent.status == 201
    backboard.clear_faults()
    time.sleep(short_backboard_timeout * 2 + 0.1)  # let timed-out calls land at the stand-in
    assert failures, "the fault injection never hit"
    for reply in failures:
        assert reply.status in {502, 503}
        assert set(reply.body["error"]) == {"code", "message"}
    # Every assistant at Backboard belongs to exactly one User row, and every User row's
    # assistant exists: no orphan from a timed-out or retried creation, no dangling id.
    rows = admin_conn.execute('SELECT "clerkId", "assistantId" FROM "User"').fetchall()
    references = Counter(str(assistant_id) for _, assistant_id in rows)
    live = list(backboard.assistants())
    assert len(rows) == len(users)
    assert dict(references) == dict.fromkeys(live, 1), (rows, live)
    # Every message stored exactly once, each with exactly one reply.
    counts = admin_conn.execute(
        'SELECT role, content, count(*) FROM "Message" GROUP BY role, content'
    ).fetchall()
    user_counts = [int(str(c)) for role, _, c in counts if role == "user"]
    assert len(user_counts) == 20 and set(user_counts) == {1}
    assert sum(int(str(c)) for role, _, c in counts if role == "assistant") == 20


def test_forged_and_replayed_webhooks_among_duplicates(
    clean_db: str, admin_conn: Conn, backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "whsec_" + base64.b64encode(b"fault-test-signing-secret-32byte").decode()
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", secret)
    rng = random.Random(11)

    def event(body: str, headers: dict[str, str]) -> dict[str, object]:
        return http_event("POST", "/webhooks/clerk", body=body, headers=headers)

    def user_created(clerk_id: str) -> str:
        data = {
            "id": clerk_id,
            "email_addresses": [{"id": "e1", "email_address": f"{clerk_id}@example.test"}],
            "primary_email_address_id": "e1",
            "first_name": "Dup",
            "updated_at": 1_000,
        }
        return json.dumps({"type": "user.created", "data": data})

    def signed(body: str, *, key: str = secret, at: datetime | None = None) -> dict[str, str]:
        at = at or datetime.now(UTC)
        msg_id = f"msg_{secrets.token_hex(6)}"
        return {
            "svix-id": msg_id,
            "svix-timestamp": str(int(at.timestamp())),
            "svix-signature": Webhook(key).sign(msg_id, at, body),
        }

    valid_body = user_created("user_real")
    valid_headers = signed(valid_body)
    other_key = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    deliveries: list[tuple[str, dict[str, object]]] = [
        ("valid", event(valid_body, valid_headers)) for _ in range(20)
    ]
    for i in range(200):
        kind = i % 5
        body = user_created(f"user_forged_{i}")
        if kind == 0:  # signed with someone else's secret
            headers = signed(body, key=other_key)
        elif kind == 1:  # a real signature replayed onto another body
            headers = valid_headers
        elif kind == 2:  # an old delivery replayed after Svix's tolerance
            headers = signed(body, at=datetime.now(UTC) - timedelta(minutes=6 + i % 50))
        elif kind == 3:  # random bytes as the signature
            sig = base64.b64encode(secrets.token_bytes(32)).decode()
            headers = {**signed(body), "svix-signature": f"v1,{sig}"}
        else:  # a header missing
            complete = signed(body)
            missing = rng.choice(sorted(complete))
            headers = {k: v for k, v in complete.items() if k != missing}
        deliveries.append((f"forged{kind}", event(body, headers)))
    rng.shuffle(deliveries)
    accepted_forgeries = 0
    for label, delivery in deliveries:
        response = webhook_handler(delivery, LambdaContext())
        status = response["statusCode"]
        if label.startswith("forged"):
            accepted_forgeries += int(status < 400)
            assert status in {400, 401}, (label, response_json(response))
        else:
            assert status == 200
    assert accepted_forgeries == 0
    users = admin_conn.execute('SELECT "clerkId" FROM "User"').fetchall()
    assert users == [("user_real",)]
    assert len(backboard.assistants()) == 1


def test_concurrent_sends_and_reads_under_load(
    api: Callable[[str], Client], admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    """Several users' requests at once through one process: no errors, nothing lost."""
    clients = [api(f"user_load{i}") for i in range(4)]
    trips = [c.call("POST", "/sessions").body["id"] for c in clients]
    errors: list[Reply] = []

    def work(client: Client, trip: str, n: int) -> None:
        for m in range(8):
            reply = client.call("POST", f"/sessions/{trip}/messages", body={"content": f"{n}:{m}"})
            if reply.status != 201:
                errors.append(reply)
            page = client.call("GET", f"/sessions/{trip}/messages")
            if page.status != 200:
                errors.append(page)

    threads = [
        threading.Thread(target=work, args=(c, t, n))
        for n, (c, t) in enumerate(zip(clients, trips, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    row = admin_conn.execute('SELECT count(*) FROM "Message"').fetchone()
    assert row == (4 * 8 * 2,)


def test_database_lost_after_the_reply_asks_backboard_once(
    api: Callable[[str], Client],
    database_outage: DatabaseOutage,
    admin_conn: Conn,
    backboard: BackboardStandIn,
) -> None:
    """PostgreSQL goes away while Backboard answers: the send is a 503, and a retry with the
    same key once it is back stores that reply at once (no 409 for the rest of the lease) and
    never asks Backboard a second time."""
    alice = api("user_alice")
    trip = alice.call("POST", "/sessions").body["id"]
    send = alice.prepare(
        "POST",
        f"/sessions/{trip}/messages",
        body={"content": "Where to eat in Porto?"},
        headers={"Idempotency-Key": "lost-reply"},
    )
    asked_before = backboard.calls("add_message")
    backboard.inject("add_message", delay=0.6, times=1)
    replies: list[Reply] = []
    sender = threading.Thread(target=lambda: replies.append(send()))
    sender.start()
    time.sleep(0.2)  # the user's message is stored, Backboard is answering
    database_outage.start()
    sender.join()
    database_outage.end()
    assert replies[0].status == 503, replies[0].body
    retry = send()
    deadline = time.monotonic() + 10
    while retry.status == 503 and time.monotonic() < deadline:  # a pooler logs in again
        time.sleep(0.2)
        retry = send()
    assert retry.status == 201, retry.body
    assert backboard.calls("add_message") == asked_before + 1
    rows = admin_conn.execute(
        'SELECT role, count(*) FROM "Message" WHERE "sessionId" = %s GROUP BY role ORDER BY role',
        (trip,),
    ).fetchall()
    assert rows == [("assistant", 1), ("user", 1)]


def test_a_thread_backboard_creates_after_our_timeout_is_reclaimed(
    api: Callable[[str], Client],
    backboard: BackboardStandIn,
    short_backboard_timeout: float,
    admin_conn: Conn,
) -> None:
    """Our call gave up (503) but Backboard made the thread anyway: no trip points at it. The
    user's next new trip deletes it, and only it."""
    alice = api("user_alice")
    kept = alice.call("POST", "/sessions", body={"title": "Kept"})
    assert kept.status == 201
    backboard.inject("create_thread", delay=short_backboard_timeout * 2, times=1)
    slow = alice.call("POST", "/sessions", body={"title": "Slow"})
    assert slow.status == 503, slow.body
    deadline = time.monotonic() + 10
    while len(backboard.threads()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the late creation lands at the stand-in
    assert len(backboard.threads()) == 2
    time.sleep(short_backboard_timeout * 2 + 0.2)  # the look-again time has come
    fresh = alice.call("POST", "/sessions", body={"title": "Fresh"})
    assert fresh.status == 201, fresh.body
    rows = admin_conn.execute('SELECT "threadId" FROM "Session"').fetchall()
    assert set(backboard.threads()) == {str(thread_id) for (thread_id,) in rows}
    assert len(rows) == 2
