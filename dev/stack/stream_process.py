"""The stream function under `make dev`: its ASGI app on uvicorn, in a process of its own (as
the Lambda Web Adapter runs it in its own container), on a free loopback port. The local API
forwards the stream routes to it, so they are served on the same port as the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import uvicorn

from dev.stack.loopback import free_port
from dev.stack.template import REPO

READY_TIMEOUT_SECONDS = 60.0
APP = "functions.stream.app:app"


class StreamProcess:
    """uvicorn serving functions/stream, from start() until stop()."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StreamProcess:
        # Its environment is the server's, as prepared by make dev; like the template sets it.
        env = {**os.environ, "POWERTOOLS_SERVICE_NAME": "stream"}
        env.setdefault("DB_POOL_MAX_SIZE", "2")
        self._process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1"),
                *("--port", str(self.port), "--no-access-log", "--log-level", "warning"),
            ],
            cwd=REPO,
            env=env,
        )
        return self

    def wait_ready(self) -> None:
        """Wait until it answers its readiness check, as the adapter does."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError("the stream function's server exited while starting")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 204:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the stream function's server did not become ready")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
            self._process = None


class InThreadStreamServer:
    """functions/stream's app on uvicorn in a thread of this process (tests and benchmarks:
    it shares their settings, pool and Backboard gateway); `with` yields its base URL."""

    def __init__(self) -> None:
        from functions.stream.app import create_app

        self._server = uvicorn.Server(
            uvicorn.Config(
                create_app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    @property
    def requests_running(self) -> int:
        """How many requests the app is still serving (a stream until it ends)."""
        return len(self._server.server_state.tasks)
