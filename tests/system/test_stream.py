"""The stream function end to end: a real uvicorn server on loopback serving functions/stream,
the real backboard-sdk streaming from the Backboard stand-in's SSE, the real PostgreSQL.

What the AI SDK reads (chunk types and order, our ids), persistence while streaming and after
the client leaves, a failure mid-stream and the same-key retry that resumes the turn, the
resume GET (204 and replay) and stop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from dev.stack.apiclient import Client
from dev.stack.backboard_standin import REPLY_PREFIX, BackboardStandIn
from dev.stack.stream_process import InThreadStreamServer
from dev.stack.token_issuer import LocalIssuer
from shared import config
from shared.errors import Conflict
from shared.gateways.backboard import reset_backboard
from shared.store import message_rows, reply_rows, trip_rows, user_rows
from tests.conftest import VIA_POOLER, DatabaseOutage

Chunks = list[Any]


@pytest.fixture
def stream_url(api: Callable[[str], Client], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # Several requests at once in one process (a stream and its stop, or its resume).
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "4")
    config.reset_caches()
    with InThreadStreamServer() as url:
        yield url


@pytest.fixture
def alice_trip(api: Callable[[str], Client]) -> tuple[Client, str]:
    """Alice, and a new trip of hers."""
    alice = api("user_alice")
    return alice, new_trip(alice)


def new_trip(client: Client) -> str:
    reply = client.call("POST", "/sessions", body={"title": "Lisbon"})
    assert reply.status == 201
    return str(reply.body["id"])


def headers(client: Client, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {client.token}", **extra}


def parse(body: str) -> Chunks:
    chunks: Chunks = []
    for event in body.split("\n\n"):
        if event.startswith("data: "):
            data = event[len("data: ") :]
            chunks.append(data if data == "[DONE]" else json.loads(data))
    return chunks


def text_of(chunks: Chunks) -> str:
    return "".join(c["delta"] for c in chunks if isinstance(c, dict) and c["type"] == "text-delta")


def types(chunks: Chunks) -> list[str]:
    return [c if isinstance(c, str) else c["type"] for c in chunks]


def post_stream(url: str, client: Client, trip_id: str, body: Any, **extra: str) -> httpx.Response:
    return httpx.post(
        f"{url}/sessions/{trip_id}/messages/stream",
        json=body,
        headers=headers(client, **extra),
        timeout=30,
    )


def send_in_background(
    url: str, client: Client, trip_id: str, content: str, **extra: str
) -> tuple[threading.Thread, dict[str, Chunks]]:
    """A streamed send in a thread, started; its chunks land in the dict under "chunks"."""
    sent: dict[str, Chunks] = {}
    sender = threading.Thread(
        target=lambda: sent.update(
            chunks=parse(post_stream(url, client, trip_id, {"content": content}, **extra).text)
        )
    )
    sender.start()
    return sender, sent


def messages(client: Client, trip_id: str) -> dict[str, Any]:
    reply = client.call("GET", f"/sessions/{trip_id}/messages")
    assert reply.status == 200
    body: dict[str, Any] = reply.body
    return body


def wait_for(condition: Callable[[], Any], seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_reply_streams_as_ui_message_chunks_and_is_stored(
    stream_url: str, alice_trip: tuple[Client, str], backboard: BackboardStandIn
) -> None:
    alice, trip = alice_trip
    response = post_stream(stream_url, alice, trip, {"content": "Three days of food markets"})
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = parse(response.text)
    kinds = types(chunks)
    assert kinds[:3] == ["start", "data-turn", "text-start"]
    assert kinds[-4:] == ["text-end", "data-turn", "finish", "[DONE]"]
    assert kinds.count("text-delta") > 3  # piece by piece, as the stand-in streams it
    stored = messages(alice, trip)["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert text_of(chunks) == stored[1]["content"]
    assert stored[1]["content"].startswith(REPLY_PREFIX)
    ids = chunks[-3]["data"]
    assert ids == {
        "tripId": trip,
        "userMessageId": stored[0]["id"],
        "assistantMessageId": stored[1]["id"],
        "status": "completed",
    }
    assert chunks[0]["messageId"] == stored[1]["id"]
    assert messages(alice, trip)["pendingReplies"] == []


def test_default_chat_transport_body_and_its_retry_replays(
    stream_url: str, alice_trip: tuple[Client, str], backboard: BackboardStandIn
) -> None:
    alice, trip = alice_trip
    body = {
        "id": trip,
        "trigger": "submit-message",
        "messageId": None,
        "messages": [
            {"id": "m0", "role": "user", "parts": [{"type": "text", "text": "Earlier"}]},
            {"id": "m0a", "role": "assistant", "parts": [{"type": "text", "text": "Hi"}]},
            {
                "id": "m1",
                "role": "user",
                "parts": [{"type": "text", "text": "Porto "}, {"type": "text", "text": "too?"}],
            },
        ],
    }
    first = parse(post_stream(stream_url, alice, trip, body).text)
    again = post_stream(stream_url, alice, trip, body)
    assert again.headers["idempotent-replayed"] == "true"
    assert text_of(parse(again.text)) == text_of(first)
    stored = messages(alice, trip)["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == ["Porto too?"]
    assert backboard.calls("add_message") == 1


@pytest.mark.parametrize(
    ("body", "extra", "status", "code"),
    [
        ({"content": "   "}, {}, 422, "validation_error"),
        ({"messages": []}, {}, 422, "validation_error"),
        ({"messages": [{"role": "assistant", "parts": []}]}, {}, 422, "validation_error"),
        ({"content": "x"}, {"idempotency-key": "has space"}, 422, "validation_error"),
        ({"content": "x"}, {"idempotency-key": ""}, 422, "validation_error"),
    ],
)
def test_bad_input_is_answered_before_the_stream(
    stream_url: str,
    alice_trip: tuple[Client, str],
    backboard: BackboardStandIn,
    body: Any,
    extra: dict[str, str],
    status: int,
    code: str,
) -> None:
    alice, trip = alice_trip
    response = post_stream(stream_url, alice, trip, body, **extra)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert messages(alice, trip)["messages"] == []
    assert backboard.calls("add_message") == 0


def test_auth_tenancy_and_rate_limit_before_the_stream(
    stream_url: str,
    api: Callable[[str], Client],
    backboard: BackboardStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob = api("user_alice"), api("user_bob")
    trip = new_trip(alice)
    anonymous = httpx.post(f"{stream_url}/sessions/{trip}/messages/stream", json={"content": "x"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    bobs = post_stream(stream_url, bob, trip, {"content": "x"})
    assert bobs.status_code == 404
    assert bobs.json()["error"]["code"] == "session_not_found"
    not_json = httpx.post(
        f"{stream_url}/sessions/{trip}/messages/stream",
        content=b"x",
        headers=headers(alice, **{"content-type": "text/plain"}),
    )
    assert not_json.status_code == 415
    monkeypatch.setenv("MESSAGE_RATE_LIMIT_PER_MINUTE", "1")
    config.reset_caches()
    assert post_stream(stream_url, alice, trip, {"content": "one"}).status_code == 200
    limited = post_stream(stream_url, alice, trip, {"content": "two"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert backboard.calls("add_message") == 1


def test_a_client_that_leaves_does_not_stop_the_turn(
    stream_url: str, api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    backboard.stream_delay = 0.2  # room for the test to act mid-reply on a busy machine
    alice = api("user_alice")
    trip = new_trip(alice)
    url = f"{stream_url}/sessions/{trip}/messages/stream"
    with httpx.stream(
        "POST", url, json={"content": "Leaving early"}, headers=headers(alice), timeout=30
    ) as response:
        for line in response.iter_lines():
            if '"text-delta"' in line:
                break  # one piece of text, then hang up
    # Meanwhile the partial reply is visible, marked as in progress...
    pending = wait_for(lambda: messages(alice, trip)["pendingReplies"])
    assert pending[0]["status"] == "streaming"
    # ...the client comes back and resumes it to its end...
    resumed = parse(httpx.get(url, headers=headers(alice), timeout=30).text)
    assert types(resumed)[-2:] == ["finish", "[DONE]"]
    # ...and the turn is stored once.
    stored = [m for m in messages(alice, trip)["messages"] if m["role"] == "assistant"]
    assert len(stored) == 1
    assert stored[0]["content"].startswith(pending[0]["content"])
    assert stored[0]["content"] == text_of(resumed)
    assert stored[0]["content"] == backboard.messages(backboard_thread(backboard))[-1]["content"]
    assert messages(alice, trip)["pendingReplies"] == []


def backboard_thread(backboard: BackboardStandIn) -> str:
    (thread,) = backboard.threads()
    return thread


def test_failure_mid_stream_keeps_the_partial_and_a_retry_resumes(
    stream_url: str, alice_trip: tuple[Client, str], backboard: BackboardStandIn
) -> None:
    alice, trip = alice_trip
    backboard.inject("add_message", after_chunks=3)
    key = {"idempotency-key": "k1"}
    broken = parse(post_stream(stream_url, alice, trip, {"content": "Go"}, **key).text)
    assert types(broken)[-2:] == ["error", "[DONE]"]
    assert len(text_of(broken)) > 0
    page = messages(alice, trip)
    assert [m["role"] for m in page["messages"]] == ["user"]
    (pending,) = page["pendingReplies"]
    assert pending["status"] == "failed"
    assert pending["content"] == text_of(broken)
    retried = parse(post_stream(stream_url, alice, trip, {"content": "Go"}, **key).text)
    assert types(retried)[-2:] == ["finish", "[DONE]"]
    page = messages(alice, trip)
    assert [m["role"] for m in page["messages"]] == ["user", "assistant"]
    assert page["messages"][1]["content"] == text_of(retried)
    assert page["pendingReplies"] == []
    assert backboard.calls("add_message") == 2


def test_a_stream_that_ends_without_run_ended_is_not_stored_as_complete(
    stream_url: str, alice_trip: tuple[Client, str], backboard: BackboardStandIn
) -> None:
    # Backboard's stream closing mid-reply without an error (nor run_ended): half a reply,
    # which must not reach "Message" as if complete; the turn is failed and resumable.
    alice, trip = alice_trip
    backboard.inject("add_message", after_chunks=3, cut=True)
    key = {"idempotency-key": "k-cut"}
    cut = parse(post_stream(stream_url, alice, trip, {"content": "Go"}, **key).text)
    assert types(cut)[-2:] == ["error", "[DONE]"]
    page = messages(alice, trip)
    assert [m["role"] for m in page["messages"]] == ["user"]
    (pending,) = page["pendingReplies"]
    assert pending["status"] == "failed"
    assert pending["content"] == text_of(cut)
    retried = parse(post_stream(stream_url, alice, trip, {"content": "Go"}, **key).text)
    assert types(retried)[-2:] == ["finish", "[DONE]"]
    assert messages(alice, trip)["messages"][1]["content"] == text_of(retried)


def test_resume_is_204_without_a_reply_in_flight_and_replays_one(
    stream_url: str, api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice = api("user_alice")
    trip = new_trip(alice)
    resume_url = f"{stream_url}/sessions/{trip}/messages/stream"
    assert httpx.get(resume_url, headers=headers(alice)).status_code == 204
    assert httpx.get(resume_url, headers=headers(api("user_bob"))).status_code == 404
    backboard.stream_delay = 0.2  # room for the test to act mid-reply on a busy machine
    sender, sent = send_in_background(stream_url, alice, trip, "Resume me")
    wait_for(lambda: messages(alice, trip)["pendingReplies"])
    resumed = httpx.get(resume_url, headers=headers(alice), timeout=30)
    sender.join(30)
    assert resumed.status_code == 200
    chunks = parse(resumed.text)
    assert types(chunks)[-2:] == ["finish", "[DONE]"]
    stored = messages(alice, trip)["messages"]
    assert text_of(chunks) == stored[1]["content"] == text_of(sent["chunks"])
    assert chunks[0]["messageId"] == stored[1]["id"]
    assert httpx.get(resume_url, headers=headers(alice)).status_code == 204


def test_stop_keeps_the_partial_and_ends_the_stream(
    stream_url: str, api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice = api("user_alice")
    trip = new_trip(alice)
    stop_url = f"{stream_url}/sessions/{trip}/messages/stream/stop"
    assert httpx.post(stop_url, headers=headers(api("user_bob"))).status_code == 404
    backboard.stream_delay = 0.2  # room for the test to act mid-reply on a busy machine
    sender, sent = send_in_background(
        stream_url, alice, trip, "Stop me", **{"idempotency-key": "s1"}
    )
    wait_for(lambda: [p for p in messages(alice, trip)["pendingReplies"] if p["content"]])
    assert httpx.post(stop_url, headers=headers(alice)).status_code == 204
    sender.join(30)
    chunks = sent["chunks"]
    assert types(chunks)[-2:] == ["finish", "[DONE]"]
    assert chunks[-2]["finishReason"] == "other"
    assert chunks[-3]["data"]["status"] == "stopped"
    page = messages(alice, trip)
    assert [m["role"] for m in page["messages"]] == ["user", "assistant"]
    partial = page["messages"][1]["content"]
    assert partial and text_of(chunks).startswith(partial)
    full = f"{REPLY_PREFIX} Reply #1 to: Stop me"
    assert partial != full
    assert backboard.calls("cancel_run") == 1
    assert page["pendingReplies"] == []
    # The same request again: the stopped reply, replayed and marked stopped.
    again = post_stream(
        stream_url, alice, trip, {"content": "Stop me"}, **{"idempotency-key": "s1"}
    )
    assert again.headers["idempotent-replayed"] == "true"
    replayed = parse(again.text)
    assert text_of(replayed) == partial
    assert replayed[-3]["data"]["status"] == "stopped"
    assert backboard.calls("add_message") == 1
    assert httpx.post(stop_url, headers=headers(alice)).status_code == 204


def test_make_dev_serves_the_stream_routes_on_its_own_port(
    api_env: LocalIssuer, backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dev.stack.local_api import LocalApi

    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "http://localhost:3000")
    config.reset_caches()
    alice = Client(api_env.mint("user_alice", email="a@example.test", azp="http://localhost:3000"))
    trip = new_trip(alice)
    server = LocalApi("127.0.0.1", 0).start()
    try:
        path = f"{server.base_url}/sessions/{trip}/messages/stream"
        origin = {"origin": "http://localhost:3000"}
        assert httpx.get(path, headers=headers(alice, **origin)).status_code == 204
        with httpx.stream(
            "POST", path, json={"content": "Via make dev"}, headers=headers(alice, **origin)
        ) as response:
            assert response.headers["transfer-encoding"] == "chunked"
            assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            chunks = parse(response.read().decode())
        assert types(chunks)[-2:] == ["finish", "[DONE]"]
        assert text_of(chunks) == messages(alice, trip)["messages"][1]["content"]
        preflight = httpx.options(
            path,
            headers={
                **origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["access-control-allow-methods"]
    finally:
        server.stop()


def test_a_trip_deleted_mid_reply_goes_with_its_streamed_reply(
    stream_url: str,
    alice_trip: tuple[Client, str],
    backboard: BackboardStandIn,
    admin_conn: Any,
) -> None:
    alice, trip = alice_trip
    backboard.stream_delay = 0.2  # room for the test to act mid-reply on a busy machine
    sender, sent = send_in_background(stream_url, alice, trip, "Delete me")
    wait_for(lambda: [p for p in messages(alice, trip)["pendingReplies"] if p["content"]])
    assert alice.call("DELETE", f"/sessions/{trip}").status == 204
    sender.join(30)
    assert types(sent["chunks"])[-1] == "[DONE]"  # the stream ended, it did not hang
    rows = admin_conn.execute("SELECT count(*) FROM tripchat.reply_stream").fetchone()
    assert rows == (0,)


def test_the_request_id_is_the_function_urls(
    stream_url: str, alice_trip: tuple[Client, str], backboard: BackboardStandIn
) -> None:
    alice, trip = alice_trip
    context = json.dumps({"requestId": "req-from-lambda", "http": {"method": "GET"}})
    resumed = httpx.get(
        f"{stream_url}/sessions/{trip}/messages/stream",
        headers=headers(alice, **{"x-amzn-request-context": context}),
    )
    assert resumed.status_code == 204
    assert resumed.headers["x-request-id"] == "req-from-lambda"
    unknown = httpx.get(f"{stream_url}/sessions/{trip}/messages/streams", headers=headers(alice))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    wrong = httpx.put(f"{stream_url}/sessions/{trip}/messages/stream", headers=headers(alice))
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, POST"


def test_stopped_before_any_text_the_run_is_cancelled_and_the_turn_stays_open(
    stream_url: str,
    alice_trip: tuple[Client, str],
    backboard: BackboardStandIn,
    admin_conn: Any,
) -> None:
    alice, trip = alice_trip
    backboard.stream_delay = 1.0  # the first piece comes a second after the run starts
    key = {"idempotency-key": "early"}
    sender, sent = send_in_background(stream_url, alice, trip, "Too soon", **key)
    query = "SELECT run_id FROM tripchat.reply_stream WHERE run_id IS NOT NULL"
    wait_for(lambda: admin_conn.execute(query).fetchone())
    stop_url = f"{stream_url}/sessions/{trip}/messages/stream/stop"
    assert httpx.post(stop_url, headers=headers(alice)).status_code == 204
    sender.join(30)
    assert sent["chunks"][-3]["data"]["status"] == "stopped"
    assert backboard.calls("cancel_run") == 1
    assert [m["role"] for m in messages(alice, trip)["messages"]] == ["user"]
    # Nothing was said: the same request asks again, and this time gets its answer.
    backboard.stream_delay = 0.0
    again = parse(post_stream(stream_url, alice, trip, {"content": "Too soon"}, **key).text)
    assert types(again)[-2:] == ["finish", "[DONE]"]
    stored = messages(alice, trip)["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == text_of(again)


def test_a_database_outage_mid_reply_ends_the_resumed_stream_with_an_error(
    stream_url: str,
    api: Callable[[str], Client],
    backboard: BackboardStandIn,
    database_outage: DatabaseOutage,
) -> None:
    # Once a stream is open, a failure arrives as its `error` chunk, for a follower too: not
    # a connection cut without the stream's end.
    alice = api("user_alice")
    trip = new_trip(alice)
    backboard.stream_delay = 0.3
    sender, sent = send_in_background(stream_url, alice, trip, "word " * 30)
    wait_for(lambda: messages(alice, trip)["pendingReplies"])
    followed: dict[str, Any] = {}

    def follow() -> None:
        url = f"{stream_url}/sessions/{trip}/messages/stream"
        try:
            followed["chunks"] = parse(httpx.get(url, headers=headers(alice), timeout=30).text)
        except httpx.HTTPError as exc:
            followed["error"] = exc

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.5)
    database_outage.start()
    try:
        follower.join(15)
    finally:
        database_outage.end()
    sender.join(30)
    assert "error" not in followed, followed
    assert types(followed["chunks"])[-1] == "[DONE]"
    if not VIA_POOLER:  # a pooler may hold the statements through a short outage instead
        assert types(followed["chunks"])[-2:] == ["error", "[DONE]"]
        assert types(sent["chunks"])[-2:] == ["error", "[DONE]"]


@dataclass(frozen=True)
class TurnInFlight:
    trip: str
    user_id: str
    key: str


@pytest.fixture
def turn_in_flight(
    stream_url: str,
    alice_trip: tuple[Client, str],
    backboard: BackboardStandIn,
    direct_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TurnInFlight]:
    """Alice's streamed reply, being written, whose own next write is far off: a test ends
    it from outside (reply_rows, message_rows) while deleting what it belongs to."""
    alice, trip = alice_trip
    # Pieces 3 s apart, within Backboard's timeout: the turn neither writes nor fails meanwhile.
    monkeypatch.setenv("BACKBOARD_TIMEOUT_SECONDS", "10")
    config.reset_caches()
    reset_backboard()
    backboard.stream_delay = 3
    sender, _ = send_in_background(stream_url, alice, trip, "Finish me")
    wait_for(lambda: messages(alice, trip)["pendingReplies"])
    with psycopg.connect(direct_url, autocommit=True) as conn:
        row = conn.execute("SELECT user_id, idempotency_key FROM tripchat.reply_stream").fetchone()
    assert row is not None
    yield TurnInFlight(trip, str(row[0]), str(row[1]))
    sender.join(30)


def attempt(
    outcome: dict[str, Any], name: str, conn: psycopg.Connection[Any], work: Callable[[], object]
) -> threading.Thread:
    """`work` in a transaction of `conn`, in a thread, started: its result (or its error,
    under "<name> error") lands in `outcome`."""

    def run() -> None:
        try:
            outcome[name] = work()
            conn.commit()
        except (psycopg.Error, Conflict) as exc:
            outcome[f"{name} error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("ending", ["finish", "stop"])
def test_a_trip_deleted_as_its_reply_ends_does_not_deadlock(
    ending: str, turn_in_flight: TurnInFlight, direct_url: str
) -> None:
    # The trip's deletion (its "Session" row locked first, then its streamed replies) and
    # the reply's completion or stop (its row, then "Message", whose key checks the trip):
    # neither may fail for the other.
    turn = turn_in_flight
    outcome: dict[str, Any] = {}
    with psycopg.connect(direct_url) as deleting, psycopg.connect(direct_url) as finishing:
        deleting.execute('SELECT 1 FROM "Session" WHERE "id" = %s FOR UPDATE', (turn.trip,))

        def end() -> object:
            if ending == "finish":
                return reply_rows.finish_reply(
                    finishing, user_id=turn.user_id, idempotency_key=turn.key, reply="Done."
                )
            stopped = reply_rows.stop_reply(finishing, "user_alice", turn.trip)
            return None if not stopped.trip_found else stopped

        finisher = attempt(outcome, "finished", finishing, end)
        time.sleep(0.5)  # the completion is under way, waiting for the trip's lock
        assert trip_rows.delete_trip_rows_of(deleting, "user_alice", turn.trip) is not None
        deleting.commit()
        finisher.join(10)
    assert outcome == {"finished": None}  # the trip went first: nothing of it is left


@pytest.mark.parametrize("finish", ["streamed", "sent"])
def test_a_user_erased_as_their_reply_completes_does_not_deadlock(
    finish: str, turn_in_flight: TurnInFlight, direct_url: str
) -> None:
    # The account's erasure (all its rows, children first) and a reply's completion at once,
    # streamed (reply_rows) or not (message_rows, on the same turn).
    turn = turn_in_flight
    outcome: dict[str, Any] = {}
    with (
        psycopg.connect(direct_url) as holding,
        psycopg.connect(direct_url) as erasing,
        psycopg.connect(direct_url) as finishing,
    ):
        # Holds the erasure midway, as a slow statement would: at the trip's messages, or
        # (for a sent reply, which locks its turn) at the streamed replies, before the turns.
        if finish == "streamed":
            holding.execute(
                'SELECT 1 FROM "Message" WHERE "sessionId" = %s FOR UPDATE', (turn.trip,)
            )
        else:
            holding.execute("SELECT 1 FROM tripchat.reply_stream FOR UPDATE")

        def complete() -> object:
            if finish == "streamed":
                return reply_rows.finish_reply(
                    finishing, user_id=turn.user_id, idempotency_key=turn.key, reply="Done."
                )
            return message_rows.finish_turn(
                finishing,
                user_id=turn.user_id,
                idempotency_key=turn.key,
                trip_id=turn.trip,
                reply="Done.",
            )

        eraser = attempt(
            outcome, "erased", erasing, lambda: user_rows.delete_user_rows(erasing, turn.user_id)
        )
        time.sleep(0.5)
        finisher = attempt(outcome, "finished", finishing, complete)
        time.sleep(0.5)
        holding.commit()
        eraser.join(10)
        finisher.join(10)
    # The erasure went first (the finisher waited for the trip): the reply finds nothing.
    assert outcome.pop("erased")
    if finish == "streamed":
        assert outcome == {"finished": None}
    else:
        assert isinstance(outcome.get("finished error"), Conflict), outcome


def test_a_follower_whose_client_left_stops_following(
    api: Callable[[str], Client], backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resume only listens: once its client is gone it has no reason to poll the reply to
    # its end (a reloading page would leave one such follower per reload). The send itself
    # goes on (test_a_client_that_leaves_does_not_stop_the_turn).
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "4")
    config.reset_caches()
    alice = api("user_alice")
    trip = new_trip(alice)
    backboard.stream_delay = 0.3
    follower = InThreadStreamServer()  # the resume's container
    with InThreadStreamServer() as url, follower as follower_url:
        sender, sent = send_in_background(url, alice, trip, "word " * 30)
        wait_for(lambda: messages(alice, trip)["pendingReplies"])
        resume = f"{follower_url}/sessions/{trip}/messages/stream"
        with httpx.stream("GET", resume, headers=headers(alice), timeout=30) as response:
            for line in response.iter_lines():
                if '"text-delta"' in line:
                    break  # one piece of text, then hang up
        wait_for(lambda: follower.requests_running == 0, seconds=3)
        assert messages(alice, trip)["pendingReplies"]  # the reply still streams meanwhile
        sender.join(30)
    assert types(sent["chunks"])[-2:] == ["finish", "[DONE]"]


def test_a_streamed_first_reply_titles_a_new_trip_and_a_broken_one_does_not(
    stream_url: str, api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice = api("user_alice")
    trip = alice.call("POST", "/sessions").body["id"]  # untitled: "New Trip"
    backboard.inject("add_message", after_chunks=2)
    broken = parse(post_stream(stream_url, alice, trip, {"content": "Kyoto in autumn"}).text)
    assert types(broken)[-2:] == ["error", "[DONE]"]
    assert alice.call("GET", f"/sessions/{trip}").body["title"] == "New Trip"  # abandoned
    done = parse(post_stream(stream_url, alice, trip, {"content": "Kyoto in autumn, temples"}).text)
    assert types(done)[-2:] == ["finish", "[DONE]"]
    # Set before the turn ended, from the message, with memory off (the memories are the
    # two sends', memory "Auto").
    assert alice.call("GET", f"/sessions/{trip}").body["title"] == "Kyoto in autumn, temples"
    assert len(backboard.memories()) == 2
    assert len(backboard.threads()) == 1  # the titling threads are gone
