"""The Backboard gateway: the real backboard-sdk against the stand-in over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from backboard import BackboardClient
from moto import mock_aws

from dev.stack.backboard_standin import REPLY_PREFIX, BackboardStandIn
from shared import config
from shared.errors import (
    BackboardObjectMissing,
    ConfigurationError,
    UpstreamError,
    UpstreamUnavailable,
)
from shared.gateways.backboard import (
    BackboardGateway,
    UnsafeId,
    get_backboard,
    reset_backboard,
)

REPO = Path(__file__).resolve().parents[2]


def sdk(standin: BackboardStandIn, call: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run one call on a throwaway SDK client of our own (to read back what the gateway did)."""

    async def run() -> Any:
        async with BackboardClient(api_key=standin.api_key, base_url=standin.base_url) as c:
            return await call(c)

    return asyncio.run(run())


def new_assistant(gateway: BackboardGateway, name: str = "Trip planner for u1") -> str:
    return gateway.create_assistant(name=name, description="d", system_prompt="p")


def backboard_loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "backboard-loop" and t.is_alive())


# The happy paths


def test_assistant_is_created_read_back_and_deleted(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    assistant_id = gateway.create_assistant(
        name="Trip planner for u1", description="Plans trips", system_prompt="Be brief."
    )
    stored = backboard.assistants()[assistant_id]
    assert (stored["name"], stored["description"], stored["system_prompt"]) == (
        "Trip planner for u1",
        "Plans trips",
        "Be brief.",
    )
    # The stand-in's shapes parse with the SDK's own models.
    fetched = sdk(backboard, lambda c: c.get_assistant(assistant_id))
    assert str(fetched.assistant_id) == assistant_id
    assert fetched.system_prompt == "Be brief."
    assert gateway.find_assistants("Trip planner for u1") == [assistant_id]
    assert gateway.find_assistants("Trip planner for nobody") == []
    gateway.delete_assistant(assistant_id)
    assert backboard.assistants() == {}
    gateway.delete_assistant(assistant_id)  # already gone: still success (deletes are retried)
    assert backboard.calls("delete_assistant") == 2


def test_threads_belong_to_their_assistant_and_go_with_it(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    first, second = gateway.create_thread(assistant_id), gateway.create_thread(assistant_id)
    assert first != second
    assert backboard.threads() == {first: assistant_id, second: assistant_id}
    fetched = sdk(backboard, lambda c: c.get_thread(first))
    assert str(fetched.thread_id) == first and fetched.messages == []
    gateway.delete_thread(first)
    gateway.delete_thread(first)  # already gone: success
    assert backboard.threads() == {second: assistant_id}
    gateway.delete_assistant(assistant_id)  # Backboard deletes an assistant's threads too
    assert backboard.threads() == {}
    gateway.delete_thread(second)  # gone with its assistant: still success


def test_thread_of_an_unknown_assistant_is_an_upstream_error(backboard: BackboardStandIn) -> None:
    with pytest.raises(UpstreamError):
        get_backboard().create_thread("00000000-0000-0000-0000-000000000000")
    assert backboard.threads() == {}


def test_add_message_returns_the_reply_and_sends_memory_auto(
    backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKBOARD_LLM_PROVIDER", "openai")
    monkeypatch.setenv("BACKBOARD_MODEL_NAME", "gpt-4o-mini")
    config.reset_caches()
    gateway = get_backboard()
    thread_id = gateway.create_thread(new_assistant(gateway))
    question = "Where should we go in May? " + "x" * 100
    first = gateway.add_message(thread_id, question)
    assert first == f"{REPLY_PREFIX} Reply #1 to: {question[:80]}"
    assert gateway.add_message(thread_id, "And in June?") == (
        f"{REPLY_PREFIX} Reply #2 to: And in June?"
    )
    seen = backboard.messages(thread_id)
    assert [(m["role"], m["content"]) for m in seen] == [
        ("user", question),
        ("assistant", first),
        ("user", "And in June?"),
        ("assistant", f"{REPLY_PREFIX} Reply #2 to: And in June?"),
    ]
    sent = [m for m in seen if m["role"] == "user"]
    assert {(m["memory"], m["llm_provider"], m["model_name"]) for m in sent} == {
        ("Auto", "openai", "gpt-4o-mini")
    }
    history = sdk(backboard, lambda c: c.get_thread(thread_id)).messages
    assert [m.content for m in history] == [m["content"] for m in seen]


def test_memories_are_listed_counted_and_deleted_per_assistant(
    backboard: BackboardStandIn,
) -> None:
    gateway = get_backboard()
    mine, theirs = new_assistant(gateway), new_assistant(gateway, "Trip planner for u2")
    thread_id = gateway.create_thread(mine)
    gateway.add_message(thread_id, "We travel with a toddler")  # memory "Auto": remembered
    backboard.add_memory(mine, "Prefers trains to planes")
    other = backboard.add_memory(theirs, "Allergic to peanuts")
    listed = gateway.list_memories(mine)
    assert [m.content for m in listed] == [
        "The traveller said: We travel with a toddler",
        "Prefers trains to planes",
    ]
    assert all(m.created_at is not None and m.created_at.tzinfo is not None for m in listed)
    assert gateway.memory_count(mine) == 2
    # Another assistant's memory is not this assistant's to delete.
    assert gateway.delete_memory(mine, other) is False
    assert [m["id"] for m in backboard.memories(theirs)] == [other]
    assert gateway.delete_memory(mine, listed[0].id) is True
    assert gateway.delete_memory(mine, listed[0].id) is False  # gone already
    assert [m.id for m in gateway.list_memories(mine)] == [listed[1].id]
    gateway.delete_memories(mine)
    assert gateway.list_memories(mine) == [] and gateway.memory_count(mine) == 0
    assert len(backboard.memories(theirs)) == 1
    gateway.delete_assistant(theirs)  # an assistant's memories go with it
    assert backboard.memories() == []
    gateway.delete_memories(theirs)  # nothing left to forget: success
    with pytest.raises(BackboardObjectMissing):
        gateway.list_memories(theirs)


def test_memories_answered_in_part_are_read_by_page(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    ids = [backboard.add_memory(assistant_id, f"fact {i}") for i in range(230)]
    # A first answer that holds less than its total (a server paging by default) ...
    first = sdk(backboard, lambda c: c.get_memories(assistant_id, page=1, page_size=25))
    backboard.inject("list_memories", payload=first.model_dump())
    # ... is completed page by page.
    assert [m.id for m in gateway.list_memories(assistant_id)] == ids
    assert backboard.calls("list_memories") == 1 + 1 + 3


@pytest.mark.parametrize("memory_id", ["..", "../..", ".", "a/b", "%2e%2e", "", "x" * 101])
def test_a_memory_id_that_could_walk_the_url_path_never_reaches_backboard(
    backboard: BackboardStandIn, memory_id: str
) -> None:
    # httpx resolves dot segments: /assistants/A/memories/.. would delete the assistant.
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    with pytest.raises(UnsafeId):
        gateway.delete_memory(assistant_id, memory_id)
    assert backboard.calls("delete_memory") == backboard.calls("delete_assistant") == 0
    assert assistant_id in backboard.assistants()


def test_an_aside_runs_with_memory_off_in_a_thread_it_deletes(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    trip_thread = gateway.create_thread(assistant_id)
    pending = gateway.start_aside(
        assistant_id, "Ten days in Japan in April, cherry blossoms", "Title"
    )
    assert pending.result(5) == '"Ten days in Japan in April,"'
    assert backboard.calls("send_message") == 1
    assert backboard.threads() == {trip_thread: assistant_id}  # its own thread is gone
    assert backboard.memories() == []  # memory off: nothing remembered
    # Errors come out of result() as domain errors, like the blocking calls'.
    backboard.inject("send_message", status=500)
    with pytest.raises(UpstreamUnavailable):
        gateway.start_aside(assistant_id, "x", "Title").result(5)
    with pytest.raises(BackboardObjectMissing):
        gateway.start_aside("00000000-0000-0000-0000-000000000000", "x", "Title").result(5)


def test_an_aside_not_answered_in_time_is_unavailable_and_cancelled(
    backboard: BackboardStandIn,
) -> None:
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    backboard.inject("send_message", delay=0.5)
    pending = gateway.start_aside(assistant_id, "Somewhere warm", "Title")
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as raised:
        pending.result(0.05)
    assert raised.value.unanswered
    assert time.monotonic() - started < 0.4
    # Given up on, but it still lands at Backboard (as a real timeout may): its thread stays.
    deadline = time.monotonic() + 5
    while not backboard.threads():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_model_settings_are_optional(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    thread_id = gateway.create_thread(new_assistant(gateway))
    gateway.add_message(thread_id, "hi")
    [sent] = [m for m in backboard.messages(thread_id) if m["role"] == "user"]
    assert (sent["memory"], sent["llm_provider"], sent["model_name"]) == ("Auto", None, None)


def test_message_on_an_unknown_thread_is_an_upstream_error(backboard: BackboardStandIn) -> None:
    with pytest.raises(UpstreamError):
        get_backboard().add_message("00000000-0000-0000-0000-000000000000", "hi")


# Failures


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, UpstreamUnavailable),
        (502, UpstreamUnavailable),
        (503, UpstreamUnavailable),
        (429, UpstreamUnavailable),
        (400, UpstreamError),
        (403, UpstreamError),
        (404, BackboardObjectMissing),  # an UpstreamError the caller can recover from
        (422, UpstreamError),
    ],
)
def test_error_answers_map_to_domain_errors_and_change_nothing(
    backboard: BackboardStandIn, status: int, error: type[Exception]
) -> None:
    backboard.inject("create_assistant", status=status)
    with pytest.raises(error) as caught:
        new_assistant(get_backboard())
    assert type(caught.value) is error
    assert backboard.assistants() == {}
    assert backboard.calls("create_assistant") == 1  # the SDK does not retry by itself
    new_assistant(get_backboard())  # the fault was for one call only
    assert len(backboard.assistants()) == 1


def test_rate_limit_passes_retry_after_on(backboard: BackboardStandIn) -> None:
    backboard.inject("create_assistant", status=429, retry_after=7)
    with pytest.raises(UpstreamUnavailable) as caught:
        new_assistant(get_backboard())
    assert caught.value.retry_after == 7
    backboard.inject("create_assistant", status=503)  # no Retry-After: the default hint
    with pytest.raises(UpstreamUnavailable) as caught:
        new_assistant(get_backboard())
    assert caught.value.retry_after == UpstreamUnavailable().retry_after


@pytest.mark.parametrize(
    ("operation", "status"),
    [("create_thread", 500), ("add_message", 503), ("add_message", 429), ("delete_thread", 500)],
)
def test_failed_calls_on_threads_change_nothing(
    backboard: BackboardStandIn, operation: str, status: int
) -> None:
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    thread_id = gateway.create_thread(assistant_id)
    before = (backboard.threads(), backboard.messages(thread_id))
    backboard.inject(operation, status=status)
    call: Callable[[], object] = {
        "create_thread": lambda: gateway.create_thread(assistant_id),
        "add_message": lambda: gateway.add_message(thread_id, "hi"),
        "delete_thread": lambda: gateway.delete_thread(thread_id),
    }[operation]
    with pytest.raises(UpstreamUnavailable):
        call()
    assert (backboard.threads(), backboard.messages(thread_id)) == before


def test_delete_failures_other_than_404_are_raised(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    backboard.inject("delete_assistant", status=400)
    with pytest.raises(UpstreamError):
        gateway.delete_assistant(assistant_id)
    backboard.inject("delete_assistant", status=503)
    with pytest.raises(UpstreamUnavailable):
        gateway.delete_assistant(assistant_id)
    assert list(backboard.assistants()) == [assistant_id]


def test_delete_answered_without_a_json_body_is_success(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    thread_id = gateway.create_thread(new_assistant(gateway))
    backboard.inject("delete_thread", status=204)  # the SDK would choke parsing the body
    gateway.delete_thread(thread_id)
    assert backboard.calls("delete_thread") == 1


def test_timeout_is_unavailable_within_the_bound_and_the_gateway_recovers(
    backboard: BackboardStandIn, short_backboard_timeout: float
) -> None:
    gateway = get_backboard()
    # The stand-in gives up too (504) after the client did: nothing may be created, ever.
    backboard.inject("create_assistant", status=504, delay=short_backboard_timeout + 0.5)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        new_assistant(gateway)
    # Well before the stand-in would have answered: the configured timeout was applied.
    assert time.monotonic() - started < short_backboard_timeout + 0.35
    time.sleep(0.55)  # let the stand-in finish the slow request
    assert backboard.assistants() == {}
    new_assistant(gateway)  # the loop and the client survived the cancelled call
    assert len(backboard.assistants()) == 1


def test_a_timed_out_call_can_still_land_later(
    backboard: BackboardStandIn, short_backboard_timeout: float
) -> None:
    # How a real timeout looks: the caller saw an error, yet the assistant exists (the users
    # module adopts it by name). A delay-only fault models exactly that.
    backboard.inject("create_assistant", delay=short_backboard_timeout + 0.2)
    with pytest.raises(UpstreamUnavailable):
        new_assistant(get_backboard(), name="late")
    time.sleep(0.3)
    assert [a["name"] for a in backboard.assistants().values()] == ["late"]


def test_a_late_call_never_lands_after_a_reset(
    backboard: BackboardStandIn, short_backboard_timeout: float
) -> None:
    backboard.inject("create_assistant", delay=short_backboard_timeout + 0.2)
    with pytest.raises(UpstreamUnavailable):
        new_assistant(get_backboard())
    backboard.reset()  # the next test starts here: the late creation must not reach it
    time.sleep(0.3)
    assert backboard.assistants() == {}


def test_unreachable_backboard_is_unavailable(
    backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BACKBOARD_BASE_URL", f"http://127.0.0.1:{port}")
    config.reset_caches()
    reset_backboard()
    with pytest.raises(UpstreamUnavailable) as caught:
        new_assistant(get_backboard())
    assert str(port) not in caught.value.message  # no internals for the client


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (
            {"messages": [{"role": "assistant", "content": "", "status": "COMPLETED"}]},
            UpstreamError,
        ),
        (
            {"messages": [{"role": "assistant", "content": "x", "status": "FAILED"}]},
            UpstreamUnavailable,
        ),
        ({"messages": "not a list"}, UpstreamError),
    ],
    ids=["empty-reply", "failed-run", "unparseable"],
)
def test_unusable_replies_are_errors(
    backboard: BackboardStandIn, payload: dict[str, Any], error: type[Exception]
) -> None:
    gateway = get_backboard()
    thread_id = gateway.create_thread(new_assistant(gateway))
    backboard.inject("add_message", payload=payload)
    with pytest.raises(error) as caught:
        gateway.add_message(thread_id, "hi")
    assert type(caught.value) is error


def test_unparseable_assistant_is_an_upstream_error(backboard: BackboardStandIn) -> None:
    backboard.inject("create_assistant", payload={"assistant_id": "not-a-uuid"})
    with pytest.raises(UpstreamError):
        new_assistant(get_backboard())


def test_wrong_key_is_an_upstream_error_and_logged_without_the_key(
    backboard: BackboardStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("BACKBOARD_API_KEY", "wrong-key-123")
    reset_backboard()
    with caplog.at_level(logging.INFO), pytest.raises(UpstreamError):
        new_assistant(get_backboard())
    assert backboard.assistants() == {}
    [record] = [r for r in caplog.records if r.getMessage() == "backboard call failed"]
    assert record.levelno == logging.ERROR  # a bad key needs an operator
    assert (record.__dict__["operation"], record.__dict__["status"]) == ("create_assistant", 401)
    assert "wrong-key-123" not in caplog.text


def test_failures_are_logged_with_ids_but_never_the_message(
    backboard: BackboardStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = get_backboard()
    thread_id = gateway.create_thread(new_assistant(gateway))
    backboard.inject("add_message", status=400)
    with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamError):
        gateway.add_message(thread_id, "my passport number is X123")
    [record] = [r for r in caplog.records if r.getMessage() == "backboard call failed"]
    assert (record.__dict__["thread_id"], record.__dict__["status"]) == (thread_id, 400)
    assert "X123" not in caplog.text
    assert backboard.api_key not in caplog.text


def test_missing_key_is_a_configuration_error(
    backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BACKBOARD_API_KEY")
    config.reset_caches()
    reset_backboard()
    threads_before = backboard_loop_threads()
    with pytest.raises(ConfigurationError) as caught:
        get_backboard()
    assert "BACKBOARD_API_KEY " in caught.value.detail
    assert "BACKBOARD_API_KEY_SECRET_ARN" in caught.value.detail
    assert backboard_loop_threads() == threads_before  # nothing started for a failed build


def test_key_from_secrets_manager(
    backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BACKBOARD_API_KEY")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="tripchat/backboard", SecretString=backboard.api_key
        )["ARN"]
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("BACKBOARD_API_KEY_SECRET_ARN", arn)
        config.reset_caches()
        reset_backboard()
        assert new_assistant(get_backboard()) in backboard.assistants()


# One loop per container


def test_one_gateway_serves_many_invocations(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    loops = backboard_loop_threads()
    assistant_id = new_assistant(gateway)
    for i in range(25):  # warm invocations: same gateway, same loop, no "event loop is closed"
        assert get_backboard() is gateway
        thread_id = gateway.create_thread(assistant_id)
        assert gateway.add_message(thread_id, f"q{i}").endswith(f"Reply #1 to: q{i}")
    assert len(backboard.threads()) == 25
    assert backboard_loop_threads() == loops  # no loop per invocation


def test_callers_running_their_own_event_loops_share_the_gateway(
    backboard: BackboardStandIn,
) -> None:
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)

    async def handler_using_asyncio() -> str:
        # A blocking call from inside another loop: the gateway's loop is a different one.
        return gateway.create_thread(assistant_id)

    first = asyncio.run(handler_using_asyncio())
    second = asyncio.run(handler_using_asyncio())  # a new caller loop: still fine
    assert backboard.threads() == {first: assistant_id, second: assistant_id}


def test_twenty_threads_at_once(backboard: BackboardStandIn) -> None:
    reset_backboard()
    loops = backboard_loop_threads()
    # The gateway is built once even when the first calls race.
    with ThreadPoolExecutor(20) as pool:
        gateways = list(pool.map(lambda _: get_backboard(), range(20)))
    assert len({id(g) for g in gateways}) == 1
    assert backboard_loop_threads() == loops + 1
    gateway = gateways[0]
    assistant_id = new_assistant(gateway)

    def conversation(i: int) -> tuple[str, str]:
        thread_id = gateway.create_thread(assistant_id)
        return thread_id, gateway.add_message(thread_id, f"question {i}")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(conversation, range(20)))
    assert [reply for _, reply in results] == [
        f"{REPLY_PREFIX} Reply #1 to: question {i}" for i in range(20)
    ]
    assert set(backboard.threads()) == {thread_id for thread_id, _ in results}
    for i, (thread_id, _) in enumerate(results):
        assert backboard.messages(thread_id)[0]["content"] == f"question {i}"


def test_reset_closes_the_gateway_and_the_next_one_works(backboard: BackboardStandIn) -> None:
    old = get_backboard()
    loops = backboard_loop_threads()
    assistant_id = new_assistant(old)
    reset_backboard()
    assert backboard_loop_threads() == loops - 1  # the old loop stopped
    fresh = get_backboard()
    assert fresh is not old
    assert backboard_loop_threads() == loops
    thread_id = fresh.create_thread(assistant_id)
    assert fresh.add_message(thread_id, "hi").startswith(REPLY_PREFIX)
    with pytest.raises(UpstreamUnavailable):  # a stale reference fails cleanly, without hanging
        old.create_thread(assistant_id)
    reset_backboard()
    reset_backboard()  # idempotent


# The stand-in itself


def test_random_faults_repeat_after_a_reset(backboard: BackboardStandIn) -> None:
    def outcomes() -> list[bool]:
        gateway = get_backboard()
        thread_id = gateway.create_thread(new_assistant(gateway))
        backboard.inject("add_message", status=503, times=None, probability=0.5)
        results = []
        for _ in range(16):
            try:
                gateway.add_message(thread_id, "hi")
                results.append(True)
            except UpstreamUnavailable:
                results.append(False)
        return results

    first = outcomes()
    assert True in first and False in first
    backboard.reset()
    assert outcomes() == first
    backboard.reset(seed=99)
    assert outcomes() != first


def test_inject_rejects_mistakes(backboard: BackboardStandIn) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        backboard.inject("create_asistant", status=500)
    with pytest.raises(ValueError, match="unknown operation"):
        backboard.calls("add_messages")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"status": 99}, "status"),
        ({"probability": 1.5}, "probability"),
        ({"times": 0}, "times"),
        ({"delay": -1}, "delay"),
    ]
    for arguments, problem in bad:
        with pytest.raises(ValueError, match=problem):
            backboard.inject("add_message", **arguments)


def test_times_none_fails_until_cleared(backboard: BackboardStandIn) -> None:
    backboard.inject("create_assistant", status=500, times=None)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            new_assistant(get_backboard())
    backboard.clear_faults()
    new_assistant(get_backboard())
    assert backboard.calls("create_assistant") == 4


def test_control_routes_over_http(backboard: BackboardStandIn) -> None:
    base = backboard.base_url
    fault = {"operation": "add_message", "status": 503, "times": 2, "retry_after": 9}
    assert httpx.post(f"{base}/_standin/faults", json=fault).status_code == 200
    assert httpx.post(f"{base}/_standin/faults", json={"operation": "nope"}).status_code == 400
    assert (
        httpx.post(f"{base}/_standin/faults", json={"operation": "add_message", "status": "x"})
    ).status_code == 400
    gateway = get_backboard()
    assistant_id = new_assistant(gateway)
    thread_id = gateway.create_thread(assistant_id)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable) as caught:
            gateway.add_message(thread_id, "hi")
        assert caught.value.retry_after == 9
    assert gateway.add_message(thread_id, "hi").startswith(REPLY_PREFIX)
    state = httpx.get(f"{base}/_standin/state").json()
    assert state["assistants"][assistant_id]["name"] == "Trip planner for u1"
    assert state["threads"] == {thread_id: assistant_id}
    assert state["message_counts"] == {thread_id: 2}
    assert state["calls"]["add_message"] == 3
    httpx.post(f"{base}/_standin/faults", json={"operation": "create_thread", "times": None})
    assert httpx.get(f"{base}/_standin/state").json()["faults"] == ["create_thread"]
    assert httpx.delete(f"{base}/_standin/faults").status_code == 200
    assert httpx.get(f"{base}/_standin/state").json()["faults"] == []
    assert httpx.post(f"{base}/_standin/reset", json={"seed": 5}).status_code == 200
    assert httpx.get(f"{base}/_standin/state").json()["assistants"] == {}
    assert httpx.get(f"{base}/_standin/nope").status_code == 404


def test_the_api_needs_the_key_but_the_controls_do_not(backboard: BackboardStandIn) -> None:
    base = backboard.base_url
    assert httpx.get(f"{base}/assistants").status_code == 401
    assert httpx.get(f"{base}/assistants", headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(f"{base}/assistants", headers={"X-API-Key": backboard.api_key}).json() == []
    assert httpx.get(f"{base}/_standin/state").status_code == 200
    assert backboard.calls("list_assistants") == 1  # refused requests are not calls


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}
    module = "dev.stack.backboard_standin"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--api-key", "cli-key"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        assert any("OFFLINE PLACEHOLDERS" in line for line in lines)
        url = lines[-1].split(" on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        headers = {"X-API-Key": "cli-key"}
        created = httpx.post(f"{url}/assistants", json={"name": "n"}, headers=headers)
        assert created.status_code == 200
        assert list(httpx.get(f"{url}/_standin/state").json()["assistants"]) == [
            created.json()["assistant_id"]
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_token_cli_refuses_when_real_clerk_is_configured(tmp_path: Path) -> None:
    base_env = {"PATH": "/usr/bin:/bin", "TRIPCHAT_LOCAL_DIR": str(tmp_path)}
    ok = subprocess.run(
        [sys.executable, "-m", "dev.stack.token_issuer", "--user", "bob"],
        cwd=REPO,
        env=base_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0
    assert ok.stdout.count(".") == 2  # a JWT
    refused = subprocess.run(
        [sys.executable, "-m", "dev.stack.token_issuer"],
        cwd=REPO,
        env={**base_env, "CLERK_ISSUER": "https://real.clerk.accounts.dev"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "Refusing" in refused.stderr
    assert refused.stdout == ""
