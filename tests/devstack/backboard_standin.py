"""A Backboard stand-in: the part of Backboard's REST API this backend uses, over loopback HTTP.

For tests and local development only, never used in AWS. It answers the real `backboard-sdk`
with the JSON shapes its models parse (assistants, threads, messages with a deterministic,
clearly labelled offline reply), checks the API key, injects faults (status codes, latency,
timeouts, 429 with Retry-After, random failures from a seeded generator) and lets tests
inspect what exists. Out-of-process users drive the same controls over HTTP under /_standin/.
A failed call has no effect on the state.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.devstack.loopback import LoopbackServer

OPERATIONS = (
    "create_assistant",
    "list_assistants",
    "get_assistant",
    "delete_assistant",
    "create_thread",
    "get_thread",
    "delete_thread",
    "add_message",
)
REPLY_PREFIX = "[offline Backboard stand-in]"


@dataclass
class Fault:
    status: int | None = None
    delay: float = 0.0
    times: int | None = 1  # None: until cleared
    probability: float = 1.0
    retry_after: int | None = None


@dataclass
class _State:
    assistants: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[str, str] = field(default_factory=dict)  # thread id -> assistant id
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class BackboardStandIn:
    def __init__(self, api_key: str = "standin-key", port: int = 0, seed: int = 1234) -> None:
        self.api_key = api_key
        self._port = port
        self._lock = threading.Lock()
        self._state = _State()
        self._random = random.Random(seed)
        self._server: LoopbackServer | None = None

    # Lifecycle

    def start(self) -> BackboardStandIn:
        self._server = LoopbackServer(("127.0.0.1", self._port), self._handler_class())
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> BackboardStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.port}"

    # Inspection

    def assistants(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._state.assistants.items()}

    def threads(self) -> dict[str, str]:
        with self._lock:
            return dict(self._state.threads)

    def messages(self, thread_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._state.messages.get(thread_id, [])]

    def calls(self, operation: str) -> int:
        with self._lock:
            return self._state.calls.get(operation, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "assistants": {k: dict(v) for k, v in self._state.assistants.items()},
                "threads": dict(self._state.threads),
                "message_counts": {k: len(v) for k, v in self._state.messages.items()},
                "calls": dict(self._state.calls),
            }

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    # Faults

    def inject(
        self,
        operation: str,
        *,
        status: int | None = None,
        delay: float = 0.0,
        times: int | None = 1,
        probability: float = 1.0,
        retry_after: int | None = None,
    ) -> None:
        """Make the next `times` calls of `operation` (None: all, until cleared) wait `delay`
        seconds and then, if `status` is set, fail with it; with `probability` < 1 each call
        is hit at random (seeded, so runs repeat)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {OPERATIONS}")
        with self._lock:
            self._state.faults[operation] = Fault(status, delay, times, probability, retry_after)

    def clear_faults(self) -> None:
        with self._lock:
            self._state.faults.clear()

    def _take_fault(self, operation: str) -> Fault | None:
        with self._lock:
            self._state.calls[operation] = self._state.calls.get(operation, 0) + 1
            fault = self._state.faults.get(operation)
            if fault is None or self._random.random() >= fault.probability:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._state.faults[operation]
            return fault

    # The API

    def _dispatch(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        parts = [p for p in path.split("/") if p]
        route = (method, *parts[:1], *(["{id}"] if len(parts) > 1 else []), *parts[2:])
        handlers = {
            ("POST", "assistants"): ("create_assistant", self._create_assistant),
            ("GET", "assistants"): ("list_assistants", self._list_assistants),
            ("GET", "assistants", "{id}"): ("get_assistant", self._get_assistant),
            ("DELETE", "assistants", "{id}"): ("delete_assistant", self._delete_assistant),
            ("POST", "assistants", "{id}", "threads"): ("create_thread", self._create_thread),
            ("GET", "threads", "{id}"): ("get_thread", self._get_thread),
            ("DELETE", "threads", "{id}"): ("delete_thread", self._delete_thread),
        }
        action: Callable[[str, dict[str, Any]], tuple[int, Any]]
        if (method, *parts) == ("POST", "threads", "messages"):
            operation, action = "add_message", self._add_message
            ident = ""
        elif route in handlers:
            operation, action = handlers[route]
            ident = parts[1] if len(parts) > 1 else ""
        else:
            return 404, {"detail": "Not Found"}, {}
        fault = self._take_fault(operation)
        if fault is not None:
            time.sleep(fault.delay)
            if fault.status is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                return fault.status, {"detail": f"injected fault ({fault.status})"}, headers
        status, payload = action(ident, body)
        return status, payload, {}

    def _create_assistant(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        if not body.get("name"):
            return 400, {"detail": "name is required"}
        assistant_id = str(uuid.uuid4())
        record = {
            "assistant_id": assistant_id,
            "name": body["name"],
            "description": body.get("description"),
            "system_prompt": body.get("system_prompt"),
            "created_at": _now(),
        }
        with self._lock:
            self._state.assistants[assistant_id] = record
        return 200, record

    def _list_assistants(self, _: str, query: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            found = [
                dict(a)
                for a in self._state.assistants.values()
                if "name" not in query or a["name"] == query["name"]
            ]
        skip, limit = int(query.get("skip", 0)), int(query.get("limit", 100))
        return 200, found[skip : skip + limit]

    def _get_assistant(self, assistant_id: str, _: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            record = self._state.assistants.get(assistant_id)
        return (200, record) if record else (404, {"detail": "Assistant not found"})

    def _delete_assistant(self, assistant_id: str, _: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if self._state.assistants.pop(assistant_id, None) is None:
                return 404, {"detail": "Assistant not found"}
            # Like Backboard, an assistant's threads go with it.
            for thread_id in [t for t, a in self._state.threads.items() if a == assistant_id]:
                del self._state.threads[thread_id]
                self._state.messages.pop(thread_id, None)
        return 200, {"message": "Assistant deleted successfully"}

    def _create_thread(self, assistant_id: str, _: dict[str, Any]) -> tuple[int, Any]:
        thread_id = str(uuid.uuid4())
        with self._lock:
            if assistant_id not in self._state.assistants:
                return 404, {"detail": "Assistant not found"}
            self._state.threads[thread_id] = assistant_id
            self._state.messages[thread_id] = []
        return 200, {"thread_id": thread_id, "created_at": _now(), "messages": []}

    def _get_thread(self, thread_id: str, _: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if thread_id not in self._state.threads:
                return 404, {"detail": "Thread not found"}
            messages = list(self._state.messages.get(thread_id, []))
        return 200, {
            "thread_id": thread_id,
            "created_at": _now(),
            "messages": [
                {
                    "message_id": m["message_id"],
                    "role": m["role"],
                    "content": m["content"],
                    "created_at": m["created_at"],
                }
                for m in messages
            ],
        }

    def _delete_thread(self, thread_id: str, _: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if self._state.threads.pop(thread_id, None) is None:
                return 404, {"detail": "Thread not found"}
            self._state.messages.pop(thread_id, None)
        return 200, {"message": "Thread deleted successfully"}

    def _add_message(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        thread_id, content = str(body.get("thread_id", "")), str(body.get("content", ""))
        with self._lock:
            assistant_id = self._state.threads.get(thread_id)
            if assistant_id is None:
                return 404, {"detail": "Thread not found"}
            history = self._state.messages[thread_id]
            turn = sum(1 for m in history if m["role"] == "user") + 1
            reply = f"{REPLY_PREFIX} Reply #{turn} to: {content[:80]}"
            for role, text in (("user", content), ("assistant", reply)):
                history.append(
                    {
                        "message_id": str(uuid.uuid4()),
                        "role": role,
                        "content": text,
                        "memory": body.get("memory") if role == "user" else None,
                        "created_at": _now(),
                    }
                )
        return 200, {
            "messages": [
                {
                    "message_id": history[-1]["message_id"],
                    "role": "assistant",
                    "content": reply,
                    "status": "COMPLETED",
                    "thread_id": thread_id,
                    "assistant_id": assistant_id,
                    "created_at": history[-1]["created_at"],
                }
            ]
        }

    # Control routes for other processes

    def _control(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if (method, path) == ("GET", "/_standin/state"):
            return 200, self.snapshot()
        if (method, path) == ("POST", "/_standin/faults"):
            try:
                self.inject(
                    str(body["operation"]),
                    status=body.get("status"),
                    delay=float(body.get("delay", 0)),
                    times=body.get("times", 1),
                    probability=float(body.get("probability", 1.0)),
                    retry_after=body.get("retry_after"),
                )
            except (KeyError, ValueError, TypeError) as exc:
                return 400, {"detail": str(exc)}
            return 200, {"ok": True}
        if (method, path) == ("DELETE", "/_standin/faults"):
            self.clear_faults()
            return 200, {"ok": True}
        if (method, path) == ("POST", "/_standin/reset"):
            self.reset()
            return 200, {"ok": True}
        return 404, {"detail": "Not Found"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle's algorithm and delayed
            # ACKs each reply would wait ~40 ms. The stand-in must add no latency.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                if path.startswith("/_standin/"):
                    status, payload = standin._control(self.command, path, _parse(raw, ""))
                    self._reply(status, payload, {})
                    return
                if self.headers.get("X-API-Key") != standin.api_key:
                    self._reply(401, {"detail": "Invalid API key"}, {})
                    return
                body = _parse(raw, self.headers.get("Content-Type") or "")
                if self.command == "GET":  # list filters come in the query string
                    query = parse_qs(urlsplit(self.path).query)
                    body = {k: v[-1] for k, v in query.items()}
                status, payload, headers = standin._dispatch(self.command, path, body)
                self._reply(status, payload, headers)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def _reply(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is the injected fault working

            def log_message(self, format: str, *args: Any) -> None:
                pass  # never log requests: they carry message contents

        return Handler


def _parse(raw: bytes, content_type: str) -> dict[str, Any]:
    if not raw:
        return {}
    text = raw.decode("utf-8", "replace")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Backboard stand-in (development aid).")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="dev-local-backboard-key")
    args = parser.parse_args(argv)
    standin = BackboardStandIn(api_key=args.api_key, port=args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("!" * 72)
    print("! Backboard STAND-IN: replies are OFFLINE PLACEHOLDERS, not AI answers.")
    print("!" * 72)
    print(f"Backboard stand-in on {standin.base_url} (API key: {args.api_key})", flush=True)
    stop.wait()
    standin.stop()


if __name__ == "__main__":
    main()
