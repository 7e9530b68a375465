"""A Backboard stand-in: the part of Backboard's REST API this backend uses, over loopback HTTP.

For tests and local development only, never used in AWS. It answers the real `backboard-sdk`
with the JSON shapes its models parse (assistants, threads, messages with a deterministic,
clearly labelled offline reply, an assistant's memories), checks the API key, injects faults
(status codes, latency, timeouts, 429 with Retry-After, odd answers, random failures from a
seeded generator) and lets tests inspect what exists. Out-of-process users drive the same
controls over HTTP under /_standin/ (no API key, loopback only).

Semantics worth knowing:
- A call hit by a fault with a status (or a payload) has no effect on the state. A fault with
  only a delay still takes effect after the delay, even if the client gave up: that is how a
  real timeout looks (the object may exist although the caller saw an error).
- Deleting an assistant deletes its threads and their messages, and its memories, as
  Backboard does.
- Memory: a message sent with memory "Auto" leaves one memory on the thread's assistant (what
  the traveller said); "off" (or none) leaves none. The memory routes are scoped by assistant:
  another assistant's memory id is a 404, as on Backboard.
- A message sent without a thread (the SDK's `send_message`) starts a thread under the given
  assistant. When it carries per-turn instructions (`system_prompt`, as a titling request
  does) the answer is deterministic: the first six words of the content, in quotes.
- reset() empties the state, clears faults and re-seeds the random generator; a delayed call
  from before the reset lands in the discarded state, never in the new one.
- Message contents are never logged.
- With a state file (`make dev` keeps one under .local/), assistants, threads and messages
  survive a restart, as they do on Backboard: the embedded database remembers the ids across
  restarts too. The file is rewritten atomically after every change and locked while a
  stand-in serves from it. Without one (the tests), everything lives in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from dev.stack.loopback import LoopbackServer

OPERATIONS = (
    "create_assistant",
    "list_assistants",
    "get_assistant",
    "delete_assistant",
    "create_thread",
    "list_threads",
    "get_thread",
    "delete_thread",
    "add_message",
    "send_message",
    "list_memories",
    "get_memory",
    "add_memory",
    "delete_memory",
    "reset_memories",
    "memory_stats",
    "cancel_run",
)
# The operations that change what exists: the state file is rewritten after each success.
CHANGES = frozenset(
    {
        "create_assistant",
        "delete_assistant",
        "create_thread",
        "delete_thread",
        "add_message",
        "send_message",
        "add_memory",
        "delete_memory",
        "reset_memories",
    }
)
STATE_VERSION = 1
REPLY_PREFIX = "[offline Backboard stand-in]"
SENT_OPTIONS = ("memory", "llm_provider", "model_name", "system_prompt")
MEMORY_PREFIX = "The traveller said: "
TITLE_WORDS = 6
DEFAULT_SEED = 1234
MEMORY_NOT_FOUND = {"detail": "Memory not found"}

Answer = tuple[int, Any]  # HTTP status, JSON payload (None: an empty body)


@dataclass
class Fault:
    status: int | None = None
    delay: float = 0.0
    times: int | None = 1  # None: until cleared
    probability: float = 1.0
    retry_after: int | None = None
    payload: Any = None  # answered instead of the real result (with `status`, default 200)
    # A streamed add_message: send this many pieces of the reply, then an `error` event.
    after_chunks: int | None = None
    cut: bool = False  # with after_chunks: the stream just ends there, no `error` event

    def __post_init__(self) -> None:
        # Checked here so a typo fails the test that made it, not a later confusing one.
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status (200-599), not {self.status}")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1, or None for until cleared")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        if self.after_chunks is not None and self.after_chunks < 0:
            raise ValueError("after_chunks must be >= 0")


@dataclass
class _State:
    assistants: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> assistant, time
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    memories: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> record
    runs: dict[str, str] = field(default_factory=dict)  # streamed run id -> status
    calls: dict[str, int] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)


# An operation's implementation: (state, id from the path, body or query) -> answer.
Action = Callable[[_State, str, dict[str, Any]], Answer]


class StateFileBusyError(RuntimeError):
    """Another stand-in is serving from this state file."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _check_operation(operation: str) -> None:
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")


class BackboardStandIn:
    def __init__(
        self,
        api_key: str = "standin-key",
        port: int = 0,
        seed: int = DEFAULT_SEED,
        *,
        state_file: Path | None = None,
        stream_delay: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.state_file = state_file
        # Seconds between the pieces of a streamed reply (settable while serving).
        self.stream_delay = self._initial_stream_delay = stream_delay
        # When each piece of the latest streamed reply left (time.perf_counter(), benchmarks).
        self.sent_at: list[float] = []
        self._port = port
        self._seed = seed
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one writer at a time, so the newest state lands last
        self._state = _State()
        self._random = random.Random(seed)
        self._server: LoopbackServer | None = None
        self._state_lock_file: IO[bytes] | None = None

    # Lifecycle

    def start(self) -> BackboardStandIn:
        """Serve on 127.0.0.1 (a random free port unless one was given) from a daemon thread;
        with a state file, lock it and load what it holds first."""
        if self._server is None:
            if self.state_file is not None:
                self._lock_state_file(self.state_file)
                try:
                    self._load(self.state_file)
                except BaseException:
                    self._unlock_state_file()
                    raise
            self._server = LoopbackServer(("127.0.0.1", self._port), self._handler_class())
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._unlock_state_file()

    # The state file

    def _lock_state_file(self, path: Path) -> None:
        # A separate lock file: the state file itself is replaced on every save.
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.with_name(f"{path.name}.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StateFileBusyError(
                f"{path} is in use by another Backboard stand-in (is `make dev` running?)"
            ) from None
        self._state_lock_file = handle

    def _unlock_state_file(self) -> None:
        if self._state_lock_file is not None:
            self._state_lock_file.close()  # closing releases the lock
            self._state_lock_file = None

    def _load(self, path: Path) -> None:
        if not path.is_file():
            return
        problem = f"{path} is not a Backboard stand-in state file (version {STATE_VERSION})"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = _State(
                assistants=dict(data["assistants"]),
                threads=dict(data["threads"]),
                messages={k: list(v) for k, v in data["messages"].items()},
                # Files written before the stand-in kept memories have none.
                memories=dict(data.get("memories", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{problem}: {exc}; move it away to start afresh") from exc
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{problem}; move it away to start afresh")
        with self._lock:
            self._state = state

    def _save(self, state: _State) -> None:
        """Write `state` to the state file (if any) atomically: a crash or Ctrl-C leaves either
        the previous file or the new one, never half of one."""
        path = self.state_file
        if path is None:
            return
        with self._save_lock:
            with self._lock:
                if state is not self._state:
                    return  # a call delayed across a reset(): its state was discarded
                data = json.dumps(
                    {
                        "version": STATE_VERSION,
                        "assistants": state.assistants,
                        "threads": state.threads,
                        "messages": state.messages,
                        "memories": state.memories,
                    }
                )
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            try:
                temporary.write_text(data, encoding="utf-8")
                os.replace(temporary, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()

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
        """id -> {name, description, system_prompt, ...} of every live assistant."""
        with self._lock:
            return {k: dict(v) for k, v in self._state.assistants.items()}

    def threads(self) -> dict[str, str]:
        """thread id -> assistant id of every live thread."""
        with self._lock:
            return {k: v["assistant_id"] for k, v in self._state.threads.items()}

    def messages(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's messages, oldest first: {role, content, memory, llm_provider,
        model_name, ...}; the last three are what a user message was sent with (None on
        replies and when not sent)."""
        with self._lock:
            return [dict(m) for m in self._state.messages.get(thread_id, [])]

    def memories(self, assistant_id: str | None = None) -> list[dict[str, Any]]:
        """The memories of `assistant_id` (of every assistant when None), oldest first:
        {id, assistant_id, content, metadata, created_at, updated_at}."""
        with self._lock:
            return [
                dict(m)
                for m in self._state.memories.values()
                if assistant_id is None or m["assistant_id"] == assistant_id
            ]

    def add_memory(self, assistant_id: str, content: str) -> str:
        """Give the assistant a memory, as Backboard's memory extraction would; returns its id."""
        with self._lock:
            state = self._state
            if assistant_id not in state.assistants:
                raise KeyError(f"no assistant {assistant_id}")
            memory_id = _remember(state, assistant_id, content, {"source": "test"})
        self._save(state)
        return memory_id

    def calls(self, operation: str) -> int:
        """How many requests of `operation` arrived (failed ones included)."""
        _check_operation(operation)
        with self._lock:
            return self._state.calls.get(operation, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "assistants": {k: dict(v) for k, v in self._state.assistants.items()},
                "threads": {k: v["assistant_id"] for k, v in self._state.threads.items()},
                "message_counts": {k: len(v) for k, v in self._state.messages.items()},
                "memory_count": len(self._state.memories),
                "calls": dict(self._state.calls),
                "faults": sorted(self._state.faults),
            }

    def reset(self, *, seed: int | None = None) -> None:
        """Forget everything (state, calls, faults, a changed stream_delay) and re-seed, so
        each test starts alike."""
        with self._lock:
            self._state = _State()
            self.stream_delay = self._initial_stream_delay
            self._seed = self._seed if seed is None else seed
            self._random.seed(self._seed)
            state = self._state
        self._save(state)

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
        payload: Any = None,
        after_chunks: int | None = None,
        cut: bool = False,
    ) -> None:
        """Make the next `times` calls of `operation` (None: all, until cleared) wait `delay`
        seconds and then, if `status` is set, fail with it (`retry_after` is sent as
        Retry-After). With `payload`, answer that JSON (with `status`, default 200) instead of
        doing the operation; a 2xx `status` without payload answers an empty body. With
        `probability` < 1 each call is hit at random (seeded, so runs repeat). A new fault on
        an operation replaces its previous one. With `after_chunks`, a streamed add_message
        sends that many pieces of its reply, then fails with an `error` event, or with `cut`
        ends the stream there cleanly, with neither `error` nor `run_ended` (a connection
        closed mid-reply)."""
        _check_operation(operation)
        if payload is not None and status is None:
            status = 200
        fault = Fault(status, delay, times, probability, retry_after, payload, after_chunks, cut)
        with self._lock:
            self._state.faults[operation] = fault

    def clear_faults(self) -> None:
        with self._lock:
            self._state.faults.clear()

    def _take_fault(self, state: _State, operation: str) -> Fault | None:
        with self._lock:
            state.calls[operation] = state.calls.get(operation, 0) + 1
            fault = state.faults.get(operation)
            # The generator is drawn only while a fault is set, so unrelated calls do not
            # shift the sequence.
            if fault is None or self._random.random() >= fault.probability:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del state.faults[operation]
            return fault

    # The API

    def _dispatch(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        parts = [p for p in path.split("/") if p]
        # Ids stand at odd positions (/assistants/{id}/memories/{id}, but .../memories/stats);
        # a route's second id reaches its action after the first, as "first/second".
        ids = [p for i, p in enumerate(parts) if i % 2 and p != "stats"]
        route = (method, *("{id}" if i % 2 and p != "stats" else p for i, p in enumerate(parts)))
        action: Action
        handlers: dict[tuple[str, ...], tuple[str, Action]] = {
            ("POST", "assistants"): ("create_assistant", self._create_assistant),
            ("GET", "assistants"): ("list_assistants", self._list_assistants),
            ("GET", "assistants", "{id}"): ("get_assistant", self._get_assistant),
            ("DELETE", "assistants", "{id}"): ("delete_assistant", self._delete_assistant),
            ("POST", "assistants", "{id}", "threads"): ("create_thread", self._create_thread),
            ("GET", "assistants", "{id}", "threads"): ("list_threads", self._list_threads),
            ("GET", "threads", "{id}"): ("get_thread", self._get_thread),
            ("DELETE", "threads", "{id}"): ("delete_thread", self._delete_thread),
            ("GET", "assistants", "{id}", "memories"): ("list_memories", self._list_memories),
            ("POST", "assistants", "{id}", "memories"): ("add_memory", self._add_memory),
            ("DELETE", "assistants", "{id}", "memories"): ("reset_memories", self._reset_memories),
            ("GET", "assistants", "{id}", "memories", "stats"): ("memory_stats", self._stats),
            ("GET", "assistants", "{id}", "memories", "{id}"): ("get_memory", self._get_memory),
            ("DELETE", "assistants", "{id}", "memories", "{id}"): (
                "delete_memory",
                self._delete_memory,
            ),
        }
        if (method, *parts) == ("POST", "threads", "messages"):
            # add_message names its thread; send_message may start one under an assistant.
            if body.get("thread_id"):
                operation, action = "add_message", self._add_message
            else:
                operation, action = "send_message", self._send_message
            ident = ""
        elif method == "POST" and len(parts) == 5 and parts[::2] == ["threads", "runs", "cancel"]:
            operation, action = "cancel_run", self._cancel_run
            ident = parts[3]
        elif route in handlers:
            operation, action = handlers[route]
            ident = "/".join(ids)
        else:
            return 404, {"detail": "Not Found"}, {}
        # Bound to the state of the moment: a delayed call must not land after a reset.
        with self._lock:
            state = self._state
        fault = self._take_fault(state, operation)
        if fault is not None:
            time.sleep(fault.delay)
            if fault.after_chunks is not None:
                body = {**body, "_break_after": fault.after_chunks, "_cut": fault.cut}
            elif fault.status is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                payload = fault.payload
                if payload is None and fault.status >= 400:
                    payload = {"detail": f"injected fault ({fault.status})"}
                return fault.status, payload, headers
        status, payload = action(state, ident, body)
        if operation in CHANGES and 200 <= status < 300:
            self._save(state)
        return status, payload, {}

    def _create_assistant(self, state: _State, _: str, body: dict[str, Any]) -> Answer:
        if not isinstance(body.get("name"), str) or not body["name"]:
            return 422, {"detail": "name is required"}
        assistant_id = str(uuid.uuid4())
        record = {
            "assistant_id": assistant_id,
            "name": body["name"],
            "description": body.get("description"),
            "system_prompt": body.get("system_prompt"),
            "created_at": _now(),
        }
        with self._lock:
            state.assistants[assistant_id] = record
        return 200, dict(record)

    def _list_assistants(self, state: _State, _: str, query: dict[str, Any]) -> Answer:
        try:
            skip, limit = int(query.get("skip", 0)), int(query.get("limit", 100))
        except ValueError:
            return 422, {"detail": "skip and limit must be integers"}
        with self._lock:
            found = [
                dict(a)
                for a in state.assistants.values()
                if "name" not in query or a["name"] == query["name"]
            ]
        return 200, found[skip : skip + limit]

    def _get_assistant(self, state: _State, assistant_id: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            record = state.assistants.get(assistant_id)
        return (200, dict(record)) if record else (404, {"detail": "Assistant not found"})

    def _delete_assistant(self, state: _State, assistant_id: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            if state.assistants.pop(assistant_id, None) is None:
                return 404, {"detail": "Assistant not found"}
            # Like Backboard, an assistant's threads (and their messages) and its memories go
            # with it.
            for thread_id, thread in list(state.threads.items()):
                if thread["assistant_id"] == assistant_id:
                    del state.threads[thread_id]
                    state.messages.pop(thread_id, None)
            for memory_id, memory in list(state.memories.items()):
                if memory["assistant_id"] == assistant_id:
                    del state.memories[memory_id]
        return 200, {"message": "Assistant deleted successfully"}

    def _create_thread(self, state: _State, assistant_id: str, _: dict[str, Any]) -> Answer:
        thread_id, created_at = str(uuid.uuid4()), _now()
        with self._lock:
            if assistant_id not in state.assistants:
                return 404, {"detail": "Assistant not found"}
            state.threads[thread_id] = {"assistant_id": assistant_id, "created_at": created_at}
            state.messages[thread_id] = []
        return 200, {"thread_id": thread_id, "created_at": created_at, "messages": []}

    def _list_threads(self, state: _State, assistant_id: str, query: dict[str, Any]) -> Answer:
        try:
            skip, limit = int(query.get("skip", 0)), int(query.get("limit", 100))
        except ValueError:
            return 422, {"detail": "skip and limit must be integers"}
        with self._lock:
            if assistant_id not in state.assistants:
                return 404, {"detail": "Assistant not found"}
            found = [
                {"thread_id": thread_id, "created_at": thread["created_at"], "messages": []}
                for thread_id, thread in state.threads.items()
                if thread["assistant_id"] == assistant_id
            ]
        return 200, found[skip : skip + limit]

    def _get_thread(self, state: _State, thread_id: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            thread = state.threads.get(thread_id)
            if thread is None:
                return 404, {"detail": "Thread not found"}
            messages = [dict(m) for m in state.messages.get(thread_id, [])]
        return 200, {
            "thread_id": thread_id,
            "created_at": thread["created_at"],
            "messages": [
                {k: m[k] for k in ("message_id", "role", "content", "created_at")} for m in messages
            ],
        }

    def _delete_thread(self, state: _State, thread_id: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            if state.threads.pop(thread_id, None) is None:
                return 404, {"detail": "Thread not found"}
            state.messages.pop(thread_id, None)
        return 200, {"message": "Thread deleted successfully"}

    def _add_message(self, state: _State, _: str, body: dict[str, Any]) -> Answer:
        thread_id, content = str(body.get("thread_id", "")), str(body.get("content", ""))
        if not content:
            return 400, {"detail": "content is required"}
        with self._lock:
            thread = state.threads.get(thread_id)
            if thread is None:
                return 404, {"detail": "Thread not found"}
            history = state.messages[thread_id]
            turn = sum(1 for m in history if m["role"] == "user") + 1
        if body.get("system_prompt"):
            reply = _title_of(content)
        else:
            reply = f"{REPLY_PREFIX} Reply #{turn} to: {content[:80]}"
        if str(body.get("stream", "false")).lower() == "true":
            return 200, _EventStream(self._stream_reply(state, body, reply))
        answer = self._record(state, body, reply)
        return 200, {
            "messages": [
                {
                    "message_id": answer["message_id"],
                    "role": "assistant",
                    "content": reply,
                    "status": "COMPLETED",
                    "thread_id": thread_id,
                    "assistant_id": thread["assistant_id"],
                    "created_at": answer["created_at"],
                }
            ]
        }

    def _record(self, state: _State, body: dict[str, Any], reply: str | None) -> dict[str, Any]:
        """Add the user's message (and the reply, unless None) to the thread's history."""
        with self._lock:
            thread_id = str(body.get("thread_id", ""))
            history = state.messages.setdefault(thread_id, [])
            thread = state.threads.get(thread_id)
            if thread is not None and str(body.get("memory") or "").lower() == "auto":
                content = MEMORY_PREFIX + str(body.get("content", ""))[:200]
                _remember(state, thread["assistant_id"], content, {"thread_id": thread_id})
            texts = [("user", str(body.get("content", "")))]
            texts += [("assistant", reply)] if reply is not None else []
            for role, text in texts:
                # What the user message was sent with (memory mode, model), for assertions.
                options = {k: body.get(k) if role == "user" else None for k in SENT_OPTIONS}
                history.append(
                    {
                        "message_id": str(uuid.uuid4()),
                        "role": role,
                        "content": text,
                        **options,
                        "created_at": _now(),
                    }
                )
            return dict(history[-1])

    def _stream_reply(
        self, state: _State, body: dict[str, Any], reply: str
    ) -> Iterator[dict[str, Any]]:
        """Backboard's SSE events for a streamed reply, a word at a time, `stream_delay`
        apart: run_started, content_streaming..., run_ended (or an `error` event where a
        fault says, or run_ended "cancelled" once the run is cancelled)."""
        run_id = f"run_{uuid.uuid4().hex}"
        thread_id = str(body.get("thread_id", ""))
        with self._lock:
            state.runs[run_id] = "running"
        yield {"type": "run_started", "run_id": run_id, "thread_id": thread_id}
        pieces = re.findall(r"\S+\s*", reply)
        break_after = body.get("_break_after")
        for sent, piece in enumerate(pieces):
            if break_after is not None and sent >= int(break_after):
                self._record(state, body, None)
                if not body.get("_cut"):
                    yield {"type": "error", "error": "injected fault mid-stream", "run_id": run_id}
                return
            time.sleep(self.stream_delay)
            with self._lock:
                cancelled = state.runs.get(run_id) == "cancelled"
            if cancelled:
                self._record(state, body, None)
                yield {"type": "run_ended", "status": "cancelled", "run_id": run_id}
                return
            yield {"type": "content_streaming", "content": piece, "run_id": run_id}
        answer = self._record(state, body, reply)
        with self._lock:
            state.runs[run_id] = "completed"
        yield {
            "type": "run_ended",
            "status": "completed",
            "run_id": run_id,
            "message_id": answer["message_id"],
            "total_tokens": len(pieces),
        }
        self._save(state)

    def _cancel_run(self, state: _State, run_id: str, body: dict[str, Any]) -> Answer:
        with self._lock:
            if run_id not in state.runs:
                return 404, {"detail": "Run not found"}
            if state.runs[run_id] == "running":
                state.runs[run_id] = "cancelled"
        return 200, {"thread_id": body.get("thread_id"), "run_id": run_id, "cancelled": True}

    def _send_message(self, state: _State, _: str, body: dict[str, Any]) -> Answer:
        """A message without a thread: a new thread under `assistant_id`, then as add_message."""
        assistant_id = str(body.get("assistant_id") or "")
        if not assistant_id:
            return 400, {"detail": "the stand-in needs assistant_id (or thread_id)"}
        if not body.get("content") or str(body.get("stream", "false")).lower() != "false":
            return 400, {"detail": "content is required, and the stand-in does not stream"}
        status, thread = self._create_thread(state, assistant_id, {})
        if status != 200:
            return status, thread
        return self._add_message(state, "", {**body, "thread_id": thread["thread_id"]})

    def _list_memories(self, state: _State, assistant_id: str, query: dict[str, Any]) -> Answer:
        try:
            page = int(query["page"]) if "page" in query else None
            size = int(query.get("page_size", 25))
        except ValueError:
            return 422, {"detail": "page and page_size must be integers"}
        if (page is not None and page < 1) or not 1 <= size <= 100:
            return 422, {"detail": "page >= 1 and page_size within 1..100"}
        with self._lock:
            if assistant_id not in state.assistants:
                return 404, {"detail": "Assistant not found"}
            found = [
                _memory_out(m) for m in state.memories.values() if m["assistant_id"] == assistant_id
            ]
        total = len(found)
        if page is None:  # no page: all of them, as Backboard answers
            return 200, {"memories": found, "total_count": total}
        return 200, {
            "memories": found[(page - 1) * size : page * size],
            "total_count": total,
            "page": page,
            "page_size": size,
            "total_pages": -(-total // size),
        }

    def _add_memory(self, state: _State, assistant_id: str, body: dict[str, Any]) -> Answer:
        content = body.get("content")
        if not isinstance(content, str) or not content:
            return 422, {"detail": "content is required"}
        metadata = body.get("metadata")
        with self._lock:
            if assistant_id not in state.assistants:
                return 404, {"detail": "Assistant not found"}
            memory_id = _remember(
                state, assistant_id, content, metadata if isinstance(metadata, dict) else None
            )
        return 200, {"success": True, "memory_id": memory_id, "message": "Memory added"}

    def _get_memory(self, state: _State, ids: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            memory = _memory_of(state, ids)
            return (200, _memory_out(memory)) if memory else (404, MEMORY_NOT_FOUND)

    def _delete_memory(self, state: _State, ids: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            memory = _memory_of(state, ids)
            if memory is None:
                return 404, MEMORY_NOT_FOUND
            del state.memories[memory["id"]]
        return 200, {"success": True, "message": "Memory deleted successfully"}

    def _reset_memories(self, state: _State, assistant_id: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            if assistant_id not in state.assistants:
                return 404, {"detail": "Assistant not found"}
            gone = [k for k, m in state.memories.items() if m["assistant_id"] == assistant_id]
            for memory_id in gone:
                del state.memories[memory_id]
        return 200, {"success": True, "message": f"Deleted {len(gone)} memories"}

    def _stats(self, state: _State, assistant_id: str, _: dict[str, Any]) -> Answer:
        with self._lock:
            if assistant_id not in state.assistants:
                return 404, {"detail": "Assistant not found"}
            mine = [m for m in state.memories.values() if m["assistant_id"] == assistant_id]
        return 200, {
            "total_memories": len(mine),
            "last_updated": max((m["updated_at"] for m in mine), default=None),
            "limits": None,
        }

    # Control routes for other processes

    def _control(self, method: str, path: str, body: dict[str, Any]) -> Answer:
        if (method, path) == ("GET", "/_standin/state"):
            return 200, self.snapshot()
        if (method, path) == ("POST", "/_standin/faults"):
            return self._inject_from_json(body)
        if (method, path) == ("DELETE", "/_standin/faults"):
            self.clear_faults()
            return 200, {"ok": True}
        if (method, path) == ("POST", "/_standin/reset"):
            return self._reset_from_json(body)
        if (method, path) == ("POST", "/_standin/stream"):
            return self._stream_from_json(body)
        return 404, {"detail": "Not Found"}

    def _inject_from_json(self, body: dict[str, Any]) -> Answer:
        try:
            status, times = body.get("status"), body.get("times", 1)
            retry_after, after = body.get("retry_after"), body.get("after_chunks")
            self.inject(
                str(body["operation"]),
                status=None if status is None else int(status),
                delay=float(body.get("delay", 0)),
                times=None if times is None else int(times),
                probability=float(body.get("probability", 1.0)),
                retry_after=None if retry_after is None else int(retry_after),
                payload=body.get("payload"),
                after_chunks=None if after is None else int(after),
                cut=bool(body.get("cut", False)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            return 400, {"detail": str(exc)}
        return 200, {"ok": True}

    def _stream_from_json(self, body: dict[str, Any]) -> Answer:
        try:
            self.stream_delay = max(0.0, float(body.get("delay", 0)))
        except (TypeError, ValueError) as exc:
            return 400, {"detail": str(exc)}
        return 200, {"ok": True}

    def _reset_from_json(self, body: dict[str, Any]) -> Answer:
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            return 400, {"detail": "seed must be an integer"}
        self.reset(seed=seed)
        return 200, {"ok": True}

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
                url = urlsplit(self.path)
                content_type = self.headers.get("Content-Type") or ""
                if url.path.startswith("/_standin/"):
                    # Keyless, so never for anyone but this machine.
                    if not ipaddress.ip_address(self.client_address[0]).is_loopback:
                        self._reply(403, {"detail": "control routes are loopback-only"}, {})
                        return
                    body = _parse(raw, content_type)
                    status, payload = standin._control(self.command, url.path, body or {})
                    self._reply(status, payload, {})
                    return
                if self.headers.get("X-API-Key") != standin.api_key:
                    self._reply(401, {"detail": "Invalid API key"}, {})
                    return
                if self.command == "GET":  # list filters come in the query string
                    body = {k: v[-1] for k, v in parse_qs(url.query).items()}
                else:
                    body = _parse(raw, content_type)
                if body is None:
                    self._reply(422, {"detail": "the body is not valid JSON"}, {})
                    return
                status, payload, headers = standin._dispatch(self.command, url.path, body)
                self._reply(status, payload, headers)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def _reply(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                if isinstance(payload, _EventStream):
                    self._stream(payload)
                    return
                data = b"" if payload is None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    if payload is not None:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is the injected fault working

            def _stream(self, events: _EventStream) -> None:
                """Server-Sent Events as Backboard sends them, one chunk per event."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    standin.sent_at = sent = []
                    for event in events.events:
                        data = f"data: {json.dumps(event)}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        if event["type"] == "content_streaming":
                            sent.append(time.perf_counter())
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading

            def log_message(self, format: str, *args: Any) -> None:
                pass  # never log requests: they carry message contents

        return Handler


def _remember(
    state: _State, assistant_id: str, content: str, metadata: dict[str, Any] | None
) -> str:
    """Store a memory on the assistant (the caller holds the lock); returns its id."""
    memory_id, now = str(uuid.uuid4()), _now()
    state.memories[memory_id] = {
        "id": memory_id,
        "assistant_id": assistant_id,
        "content": content,
        "metadata": metadata,
        "created_at": now,
        "updated_at": now,
    }
    return memory_id


def _memory_of(state: _State, ids: str) -> dict[str, Any] | None:
    """The memory "assistant id/memory id" names, if it is that assistant's (as on Backboard,
    another assistant's memory is not found); the caller holds the lock."""
    assistant_id, memory_id = ids.split("/")
    memory = state.memories.get(memory_id)
    return memory if memory is not None and memory["assistant_id"] == assistant_id else None


def _memory_out(memory: dict[str, Any]) -> dict[str, Any]:
    """A memory as Backboard's API shows it (the SDK's Memory model)."""
    return {k: memory[k] for k in ("id", "content", "metadata", "created_at", "updated_at")} | {
        "score": None
    }


def _title_of(content: str) -> str:
    """What the stand-in answers to per-turn instructions (a titling request): the content's
    first words, quoted, as a model might answer "Title this conversation"."""
    return '"' + " ".join(content.split()[:TITLE_WORDS]) + '"'


@dataclass(frozen=True)
class _EventStream:
    """An answer sent as Server-Sent Events (a streamed add_message)."""

    events: Iterator[dict[str, Any]]


def _parse(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """The request body as a dict: form fields or a JSON object; None if it is neither."""
    if not raw:
        return {}
    text = raw.decode("utf-8", "replace")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run the Backboard stand-in (a development aid; replies are placeholders)."
    )
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", default="dev-local-backboard-key")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="for random faults")
    parser.add_argument(
        "--state-file", type=Path, default=None, help="keep the state in this JSON file"
    )
    parser.add_argument(
        "--stream-delay", type=float, default=0.05, help="seconds between streamed pieces"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    standin = BackboardStandIn(
        api_key=args.api_key,
        port=args.port,
        seed=args.seed,
        state_file=args.state_file,
        stream_delay=args.stream_delay,
    ).start()
    try:
        print("!" * 72)
        print("! Backboard STAND-IN: replies are OFFLINE PLACEHOLDERS, not AI answers.")
        print("! For local development only; never point a deployed stack at it.")
        print("!" * 72)
        print(f"Backboard stand-in on {standin.base_url} (API key: {args.api_key})", flush=True)
        while not stop.wait(0.5):  # a short wait, so signals are handled promptly
            pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
