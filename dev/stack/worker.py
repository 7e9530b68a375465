"""A local stand-in for one Lambda container: a process that runs one function, one event at a
time, as Lambda does.

Why a process per function, not threads in the server: a Powertools resolver keeps the current
request in the app object (route, arguments, appended context), and Lambda never runs two events
at once in one container; threads sharing one app mixed up requests (500s, one user's trip in
another user's answer). A process also gives each function its own POWERTOOLS_SERVICE_NAME
before anything is imported, so the child loggers in shared/ attach to that function's Logger
and carry its service name and correlation id, as in Lambda.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from dev.stack.apigw import LambdaContext
from dev.stack.template import FunctionSpec

READY_TIMEOUT_SECONDS = 60.0
# What API Gateway answers when the function raised or its container died.
LAMBDA_FAILURE: dict[str, Any] = {
    "statusCode": 500,
    "headers": {"Content-Type": "application/json"},
    "body": '{"message":"Internal Server Error"}',
}


class WorkerStartError(RuntimeError):
    """The function's module could not be imported (the traceback is in the message)."""


class FunctionWorker:
    """One function's container, started with start(); invoke() runs one event in it."""

    def __init__(self, spec: FunctionSpec, *, swagger_path: str | None = None) -> None:
        self.spec = spec
        self._swagger_path = swagger_path
        self._lock = threading.Lock()  # one event at a time, like one Lambda container
        self._stopping = False
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The container's process id (None when stopped)."""
        return None if self._process is None else self._process.pid

    def start(self) -> FunctionWorker:
        """Launch the process; wait_ready() waits for its cold start."""
        # spawn, not fork: the server has threads running, and a fresh interpreter is what a
        # cold start is.
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._stopping = False
        process = context.Process(
            target=_serve,
            args=(self.spec, self._swagger_path, child),
            name=f"tripchat-{self.spec.service}",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._connection = process, parent
        return self

    def wait_ready(self) -> None:
        connection = self._connection
        assert connection is not None, "start() the worker first"
        if not connection.poll(READY_TIMEOUT_SECONDS):
            self._close()
            raise WorkerStartError(f"{self.spec.logical_id} did not start in time")
        try:
            status, detail = connection.recv()
        except EOFError:
            status, detail = "failed", "the process exited during its cold start"
        if status != "ready":
            self._close()
            raise WorkerStartError(f"{self.spec.logical_id} failed to start:\n{detail}")

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """The function's response to `event`; API Gateway's 500 if it raised or crashed."""
        with self._lock:
            connection = self._connection
            assert connection is not None, "start() the worker first"
            try:
                connection.send(event)
                status, response = connection.recv()
            except (EOFError, OSError):
                # The container died (os._exit, a segfault, killed): Lambda would start a new
                # one for the next event, so do the same, unless we are shutting down.
                if not self._stopping:
                    self._close()
                    self.start().wait_ready()
                return dict(LAMBDA_FAILURE)
            if status != "ok" or not isinstance(response, dict):
                return dict(LAMBDA_FAILURE)
            return response

    def stop(self) -> None:
        """Let the event in flight finish (a few seconds at most), then end the process."""
        self._stopping = True
        acquired = self._lock.acquire(timeout=5)
        try:
            self._close()
        finally:
            if acquired:
                self._lock.release()

    def _close(self) -> None:
        connection, process = self._connection, self._process
        self._connection = self._process = None
        if connection is not None:
            connection.close()  # the worker sees end-of-file and exits
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)


def _serve(spec: FunctionSpec, swagger_path: str | None, connection: Connection) -> None:
    """The container's main loop (in the child process)."""
    # Ctrl-C reaches every process of the terminal; the server stops its workers itself, after
    # the requests in flight are answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Set before any import, as Lambda sets it from the template before the runtime starts.
    os.environ["POWERTOOLS_SERVICE_NAME"] = spec.service
    try:
        module = importlib.import_module(spec.module)
        if swagger_path is not None:
            from dev.stack.swagger import enable_swagger

            enable_swagger(module.app, swagger_path)
    except Exception:
        connection.send(("failed", traceback.format_exc()))
        return
    connection.send(("ready", None))
    while True:
        try:
            event = connection.recv()
        except (EOFError, OSError):
            break
        context = LambdaContext(
            function_name=spec.logical_id, log_group_name=f"/aws/lambda/{spec.logical_id}"
        )
        try:
            response = module.lambda_handler(event, context)
        except Exception:
            # Lambda logs the error and API Gateway answers 500; the handler's own error
            # mapping should have made this impossible, so show it loudly.
            traceback.print_exc()
            connection.send(("error", None))
            continue
        connection.send(("ok", response))
    from shared.store.db import close_pool

    close_pool()
