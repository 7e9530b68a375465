"""`make dev` as a newcomer runs it: embedded PostgreSQL, stand-ins, the local API over real
HTTP; then Ctrl-C, and nothing it started is left running; then `make dev` again, and the data
is still there. Also its settings (.env, PORT, `make token`) and the stand-in's state file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from dev.stack.backboard_standin import REPLY_PREFIX, BackboardStandIn, StateFileBusyError
from dev.stack.env import load_env_file
from dev.stack.loopback import free_port
from dev.stack.token_issuer import LocalIssuer
from shared import config
from shared.gateways.backboard import get_backboard, reset_backboard

REPO = Path(__file__).resolve().parents[2]


def _postgres_processes(data_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "postgres" in line and str(data_dir) in line]


@pytest.fixture
def local() -> Iterator[Path]:
    """A directory for `make dev`'s state. Not under pytest's tmp_path: run as root, the
    embedded PostgreSQL runs as its own user and needs to traverse the path, and every other
    pytest session on the machine resets pytest's shared root directory to mode 0700."""
    path = Path(tempfile.mkdtemp(prefix="tripchat-dev-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _dev_env(local: Path, env_file: Path) -> dict[str, str]:
    """The developer's environment without real service settings, state under `local`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "POSTGRES_", "PRISMA_", "BACKBOARD_", "CLERK_", "PORT"))
    }
    env.update(
        {
            "TRIPCHAT_LOCAL_DIR": str(local),
            "TRIPCHAT_ENV_FILE": str(env_file),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by init, does not count)."""
    state = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(state) and not state.startswith("Z")


@dataclass
class DevRun:
    base: str
    token: str
    output: list[str]
    children: list[int] = field(default_factory=list)


@contextmanager
def make_dev(env: dict[str, str], port: int) -> Iterator[DevRun]:
    """`make dev` (its Python entry point) until ready; Ctrl-C afterwards, which must stop it
    cleanly: exit 0, every process it started gone, the port free again."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dev.stack.dev"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.strip() == "ready":
                break
        text = "".join(output)
        assert "ready" in text, text
        token = re.search(r"TOKEN=(\S+)", text)
        assert token is not None, text
        run = DevRun(f"http://127.0.0.1:{port}", token.group(1), output, _children(process.pid))
        yield run
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, "".join(output) + rest
    assert "stopped" in rest
    time.sleep(0.5)
    assert [pid for pid in run.children if _alive(pid)] == []  # functions, stand-ins
    assert _postgres_processes(Path(env["TRIPCHAT_LOCAL_DIR"])) == []
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_make_dev_serves_stops_cleanly_and_restarts_with_its_data(local: Path) -> None:
    port = free_port()
    env_file = local / "dotenv"
    env_file.write_text(f"# the port comes from .env\nPORT={port}\n", encoding="utf-8")
    env = _dev_env(local, env_file)

    with make_dev(env, port) as first:
        text = "".join(first.output)
        assert "LOCAL STAND-IN" in text  # the loud offline warning
        assert len(first.children) >= 3  # a process per function, at least
        auth = {"Authorization": f"Bearer {first.token}"}
        with httpx.Client(base_url=first.base, headers=auth, timeout=30) as client:
            trip = client.post("/sessions", json={"title": "Smoke test trip"})
            assert trip.status_code == 201, trip.text
            trip_id = trip.json()["id"]
            for content in ("Two days in Porto?", "Where is good for seafood?"):
                sent = client.post(f"/sessions/{trip_id}/messages", json={"content": content})
                assert sent.status_code == 201, sent.text
                assert sent.json()["assistantMessage"]["role"] == "assistant"
            listed = client.get(f"/sessions/{trip_id}/messages")
            assert listed.status_code == 200
            assert [m["role"] for m in listed.json()["messages"]] == ["user", "assistant"] * 2
            assert httpx.get(f"{first.base}/sessions").status_code == 401
        # `make token` mints for this server's origin, which make dev allows (an allowlist,
        # as in AWS); a token issued to another origin is refused.
        minted = subprocess.run(
            [sys.executable, "-m", "dev.stack.token_issuer", "--user", "bob"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        bob = httpx.get(f"{first.base}/sessions", headers={"Authorization": f"Bearer {minted}"})
        assert bob.status_code == 200, bob.text
        issuer = LocalIssuer.load_or_create(local / "dev-issuer-key.pem")
        foreign = issuer.mint("user_local_eve", azp="https://evil.example")
        eve = httpx.get(f"{first.base}/sessions", headers={"Authorization": f"Bearer {foreign}"})
        assert eve.status_code == 401, eve.text
        assert eve.json()["error"]["code"] == "unauthorized"

    # Ctrl-C, then `make dev` again: the user's assistant and the trip's thread, which the
    # embedded database still points at, must still exist in the stand-in.
    with make_dev(env, port) as second:
        auth = {"Authorization": f"Bearer {second.token}"}
        with httpx.Client(base_url=second.base, headers=auth, timeout=30) as client:
            sent = client.post(f"/sessions/{trip_id}/messages", json={"content": "And Lisbon?"})
            assert sent.status_code == 201, sent.text
            assert "Reply #3" in sent.json()["assistantMessage"]["content"]
            another = client.post("/sessions", json={"title": "Second trip"})
            assert another.status_code == 201, another.text
            assert client.delete(f"/sessions/{trip_id}").status_code == 204
            assert client.get(f"/sessions/{trip_id}").status_code == 404


@pytest.mark.slow
def test_a_busy_port_is_one_clear_line_and_a_failure(local: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "dev.stack.dev", "--port", str(port)],
            cwd=REPO,
            env=_dev_env(local, local / "no-dotenv"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0] and "in use" in lines[0]
    assert "PORT=" in lines[0]  # and how to pick another


def test_env_example_copied_to_env_sets_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^# ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    # Still documented, every one (PORT too), as a commented line.
    assert {"DATABASE_URL", "BACKBOARD_API_KEY", "CLERK_ISSUER", "PORT"} <= documented
    for name in documented:
        monkeypatch.delenv(name, raising=False)
    dotenv = tmp_path / ".env"
    shutil.copy(REPO / ".env.example", dotenv)
    added = load_env_file(dotenv)
    for name in added:
        monkeypatch.delenv(name)  # no leak into other tests, whatever happens below
    assert added == {}, "a copy of .env.example must not activate placeholder settings"


def test_env_file_is_read_but_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        'export PORT=9001\nTRIPCHAT_TEST_A="quoted # not a comment"  # a comment\n'
        "TRIPCHAT_TEST_B=${PORT}0\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PORT", "9100")
    monkeypatch.delenv("TRIPCHAT_TEST_A", raising=False)
    monkeypatch.delenv("TRIPCHAT_TEST_B", raising=False)
    added = load_env_file(dotenv)
    for name in added:
        monkeypatch.setenv(name, added[name])  # restored after the test
    assert added == {"TRIPCHAT_TEST_A": "quoted # not a comment", "TRIPCHAT_TEST_B": "91000"}
    assert os.environ["PORT"] == "9100"


def _token_command(*args: str, **env: str) -> str:
    """The command `make token` runs, without running it (make -n)."""
    result = subprocess.run(
        ["make", "-n", "token", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if "token_issuer" in line]
    assert len(lines) == 1, result.stdout
    return lines[0]


def test_make_token_is_for_alice_unless_told_otherwise() -> None:
    # make imports the environment: neither the shell's USER nor a cross-compiler's AS counts.
    assert _token_command(USER="root", AS="aarch64-linux-gnu-as").endswith("--user alice")
    assert _token_command("AS=bob", USER="root").endswith("--user bob")


def _use_standin(standin: BackboardStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKBOARD_API_KEY_SECRET_ARN", raising=False)
    monkeypatch.setenv("BACKBOARD_API_KEY", standin.api_key)
    monkeypatch.setenv("BACKBOARD_BASE_URL", standin.base_url)
    config.reset_caches()
    reset_backboard()


def test_backboard_standin_restarted_on_its_state_file_remembers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_file = tmp_path / "standin.json"
    try:
        with BackboardStandIn(api_key="dev-key", state_file=state_file) as first:
            _use_standin(first, monkeypatch)
            gateway = get_backboard()
            assistant = gateway.create_assistant(
                name="Trip planner", description="d", system_prompt="p"
            )
            thread = gateway.create_thread(assistant)
            gone = gateway.create_thread(assistant)
            gateway.add_message(thread, "Three days in Porto?")
            gateway.delete_thread(gone)
        # A second stand-in on the same file, as after Ctrl-C and `make dev` again.
        with BackboardStandIn(api_key="dev-key", state_file=state_file) as second:
            _use_standin(second, monkeypatch)
            assert second.threads() == {thread: assistant}
            assert list(second.assistants()) == [assistant]
            gateway = get_backboard()
            reply = gateway.add_message(thread, "And Lisbon?")
            assert reply == f"{REPLY_PREFIX} Reply #2 to: And Lisbon?"
            assert second.messages(thread)[0]["content"] == "Three days in Porto?"
            assert gateway.create_thread(assistant)  # the assistant still takes new trips
            # What it remembers survives too (memory "Auto": one memory per message).
            assert [m.content for m in gateway.list_memories(assistant)] == [
                "The traveller said: Three days in Porto?",
                "The traveller said: And Lisbon?",
            ]
    finally:
        reset_backboard()
        config.reset_caches()
    # Nothing but the state and its lock file; no temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["standin.json", "standin.json.lock"]


def test_one_standin_at_a_time_per_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "standin.json"
    with BackboardStandIn(state_file=state_file), pytest.raises(StateFileBusyError):
        BackboardStandIn(state_file=state_file).start()
    with BackboardStandIn(state_file=state_file):  # free again once the first stopped
        pass


def test_a_damaged_state_file_is_refused_with_its_name(tmp_path: Path) -> None:
    state_file = tmp_path / "standin.json"
    state_file.write_text('{"assistants": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"standin\.json is not a Backboard stand-in state"):
        BackboardStandIn(state_file=state_file).start()
    with BackboardStandIn(state_file=state_file.with_name("other.json")):
        pass  # and the failed one released its lock
