"""The AI SDK itself as the peer: its DefaultChatTransport and readUIMessageStream (Node, the
`ai` package pinned in dev/aisdk/package-lock.json, installed under build/aisdk by `npm ci`)
read our stream and resume it, and assemble exactly the reply GET messages returns."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dev.stack.apiclient import Client
from dev.stack.backboard_standin import BackboardStandIn
from dev.stack.template import REPO
from tests.system.test_stream import messages, new_trip, stream_url, wait_for

__all__ = ["stream_url"]  # the fixture, shared with test_stream

PEER = REPO / "dev" / "aisdk"
INSTALLED = REPO / "build" / "aisdk"


@pytest.fixture(scope="session")
def aisdk() -> Path:
    """The peer's directory, with `ai` installed from the committed lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the AI SDK tests: install Node.js 18+ and npm")
        pytest.skip("Node.js and npm are needed to run the AI SDK as the peer")
    INSTALLED.mkdir(parents=True, exist_ok=True)
    # One xdist worker installs, the others wait: `npm ci` first deletes node_modules, under
    # a peer another worker may be running (a fresh clone's first run has both at once).
    with (INSTALLED / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in ("package.json", "package-lock.json", "client.mjs"):
            shutil.copyfile(PEER / name, INSTALLED / name)
        wanted = json.loads((PEER / "package.json").read_text())["dependencies"]["ai"]
        marker = INSTALLED / "node_modules" / "ai" / "package.json"
        if not marker.is_file() or json.loads(marker.read_text())["version"] != wanted:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=INSTALLED,
                check=True,
                timeout=600,
            )
    return INSTALLED


def run_peer(peer: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "client.mjs", *args],
        cwd=peer,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def chat(stream_url: str, api: Callable[[str], Client]) -> tuple[Client, str, str, str]:
    """Alice, her new trip's id, its stream URL and her token."""
    alice = api("user_alice")
    trip = new_trip(alice)
    assert alice.token is not None
    return alice, trip, f"{stream_url}/sessions/{trip}/messages/stream", alice.token


def test_the_ai_sdk_reads_the_stream_and_its_text_is_the_stored_reply(
    aisdk: Path, chat: tuple[Client, str, str, str], backboard: BackboardStandIn
) -> None:
    alice, trip, url, token = chat
    got = run_peer(aisdk, "send", url, token, trip, "Lisbon, three days", "msg-1")
    assert got["error"] is None
    stored = messages(alice, trip)["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert got["role"] == "assistant"
    assert got["id"] == stored[1]["id"]
    assert got["text"] == stored[1]["content"]
    assert got["data"][-1] == {
        "tripId": trip,
        "userMessageId": stored[0]["id"],
        "assistantMessageId": stored[1]["id"],
        "status": "completed",
    }
    # Sent again (the SDK's retry keeps the message id): the same turn, replayed.
    again = run_peer(aisdk, "send", url, token, trip, "Lisbon, three days", "msg-1")
    assert again["text"] == got["text"]
    assert backboard.calls("add_message") == 1
    assert len(messages(alice, trip)["messages"]) == 2


def test_the_ai_sdk_resumes_a_reply_in_flight(
    aisdk: Path, chat: tuple[Client, str, str, str], backboard: BackboardStandIn
) -> None:
    alice, trip, url, token = chat
    assert run_peer(aisdk, "resume", url, token, trip) == {"nothingInFlight": True}
    backboard.stream_delay = 0.3  # long enough for node to start and reconnect mid-reply
    sender = threading.Thread(
        target=run_peer, args=(aisdk, "send", url, token, trip, "Porto after", "msg-2")
    )
    sender.start()
    wait_for(lambda: messages(alice, trip)["pendingReplies"])
    resumed = run_peer(aisdk, "resume", url, token, trip)
    sender.join(60)
    stored = messages(alice, trip)["messages"]
    assert resumed["error"] is None
    assert resumed["text"] == stored[1]["content"]
    assert len(stored) == 2
