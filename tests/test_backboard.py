"""The Backboard gateway: the real backboard-sdk against the stand-in over loopback HTTP."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from shared import config
from shared.backboard import get_backboard, reset_backboard
from shared.errors import ConfigurationError, UpstreamError, UpstreamUnavailable
from tests.devstack.backboard_standin import REPLY_PREFIX, BackboardStandIn

REPO = Path(__file__).resolve().parent.parent


def test_assistants_threads_and_messages(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    assistant = gateway.create_assistant(
        name="Trip planner for u1", description="d", system_prompt="p"
    )
    assert backboard.assistants()[assistant]["system_prompt"] == "p"
    assert gateway.find_assistants("Trip planner for u1") == [assistant]
    assert gateway.find_assistants("Trip planner for nobody") == []
    thread = gateway.create_thread(assistant)
    assert backboard.threads() == {thread: assistant}
    reply = gateway.add_message(thread, "Where should we go in May?")
    assert reply.startswith(REPLY_PREFIX)
    assert "Where should we go in May?" in reply
    assert [m["memory"] for m in backboard.messages(thread) if m["role"] == "user"] == ["Auto"]
    gateway.delete_thread(thread)
    gateway.delete_thread(thread)  # already gone: still fine (deletes are retried)
    gateway.delete_assistant(assistant)
    gateway.delete_assistant(assistant)
    assert backboard.assistants() == {}


def test_one_gateway_serves_many_invocations_and_threads(backboard: BackboardStandIn) -> None:
    gateway = get_backboard()
    assistant = gateway.create_assistant(name="n", description="d", system_prompt="p")
    for _ in range(30):  # warm invocations: same loop, no "event loop is closed"
        assert get_backboard() is gateway
        gateway.create_thread(assistant)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            gateway.create_thread(assistant)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(backboard.threads()) == 50
    reset_backboard()
    fresh = get_backboard()
    assert fresh is not gateway
    fresh.create_thread(assistant)


@pytest.mark.parametrize(
    ("status", "delay", "error"),
    [
        (500, 0.0, UpstreamUnavailable),
        (503, 0.0, UpstreamUnavailable),
        (429, 0.0, UpstreamUnavailable),
        (None, 1.5, UpstreamUnavailable),
        (400, 0.0, UpstreamError),
        (404, 0.0, UpstreamError),
    ],
)
def test_failures_map_to_domain_errors_with_no_effect(
    backboard: BackboardStandIn, status: int | None, delay: float, error: type[Exception]
) -> None:
    backboard.inject("create_assistant", status=status, delay=delay, retry_after=3)
    with pytest.raises(error):
        get_backboard().create_assistant(name="n", description="d", system_prompt="p")
    if status is not None:
        assert backboard.assistants() == {}


def test_wrong_key_and_missing_key(
    backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKBOARD_API_KEY", "wrong")
    reset_backboard()
    with pytest.raises(UpstreamError):
        get_backboard().create_assistant(name="n", description="d", system_prompt="p")
    monkeypatch.delenv("BACKBOARD_API_KEY")
    reset_backboard()
    config.reset_caches()
    with pytest.raises(ConfigurationError, match="BACKBOARD_API_KEY"):
        get_backboard()


def test_standin_control_routes(backboard: BackboardStandIn) -> None:
    base = backboard.base_url
    assert (
        httpx.post(
            f"{base}/_standin/faults", json={"operation": "add_message", "status": 503, "times": 2}
        ).status_code
        == 200
    )
    assert httpx.post(f"{base}/_standin/faults", json={"operation": "nope"}).status_code == 400
    assistant = get_backboard().create_assistant(name="n", description="d", system_prompt="p")
    thread = get_backboard().create_thread(assistant)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            get_backboard().add_message(thread, "hi")
    assert get_backboard().add_message(thread, "hi").startswith(REPLY_PREFIX)
    state = httpx.get(f"{base}/_standin/state").json()
    assert state["threads"] == {thread: assistant}
    assert state["calls"]["add_message"] == 3
    assert httpx.post(f"{base}/_standin/reset").status_code == 200
    assert httpx.get(f"{base}/_standin/state").json()["assistants"] == {}
    assert httpx.get(f"{base}/assistants/{assistant}").status_code == 401  # no key


def test_token_cli_refuses_when_real_clerk_is_configured(tmp_path: Path) -> None:
    base_env = {"PATH": "/usr/bin:/bin", "TRIPCHAT_LOCAL_DIR": str(tmp_path)}
    ok = subprocess.run(
        [sys.executable, "-m", "tests.devstack.token_issuer", "--user", "bob"],
        cwd=REPO,
        env=base_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0
    assert ok.stdout.count(".") == 2  # a JWT
    refused = subprocess.run(
        [sys.executable, "-m", "tests.devstack.token_issuer"],
        cwd=REPO,
        env={**base_env, "CLERK_ISSUER": "https://real.clerk.accounts.dev"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "Refusing" in refused.stderr
    assert refused.stdout == ""
