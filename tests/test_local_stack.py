"""`make dev` as a newcomer runs it: embedded PostgreSQL, stand-ins, the local API over real
HTTP; then Ctrl-C, and nothing it started is left running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.devstack.token_issuer import LocalIssuer

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_processes(data_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "postgres" in line and str(data_dir) in line]


@pytest.mark.slow
def test_make_dev_serves_the_api_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "POSTGRES_", "PRISMA_", "BACKBOARD_", "CLERK_"))
    }
    env.update({"TRIPCHAT_LOCAL_DIR": str(tmp_path / "local"), "PYTHONUNBUFFERED": "1"})
    (tmp_path / "local").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.devstack.dev", "--port", str(port)],
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
        assert "LOCAL STAND-IN" in text  # the loud offline warning
        token = re.search(r"TOKEN=(\S+)", text)
        assert token is not None, text
        auth = {"Authorization": f"Bearer {token.group(1)}"}
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
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
            assert client.delete(f"/sessions/{trip_id}").status_code == 204
            assert client.get(f"/sessions/{trip_id}").status_code == 404
            assert httpx.get(f"{base}/sessions").status_code == 401
        # `make token` mints for this server's origin, which make dev allows (an allowlist,
        # as in AWS); a token issued to another origin is refused.
        minted = subprocess.run(
            [sys.executable, "-m", "tests.devstack.token_issuer", "--user", "bob"],
            cwd=REPO,
            env={**env, "PORT": str(port)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        bob = httpx.get(f"{base}/sessions", headers={"Authorization": f"Bearer {minted}"})
        assert bob.status_code == 200, bob.text
        issuer = LocalIssuer.load_or_create(tmp_path / "local" / "dev-issuer-key.pem")
        foreign = issuer.mint("user_local_eve", azp="https://evil.example")
        eve = httpx.get(f"{base}/sessions", headers={"Authorization": f"Bearer {foreign}"})
        assert eve.status_code == 401, eve.text
        assert eve.json()["error"]["code"] == "unauthorized"
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
    assert _postgres_processes(tmp_path / "local") == []
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
