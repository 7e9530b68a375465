"""Backboard, for synchronous handlers: a small facade over the official async SDK.

Lambda handlers are synchronous, the SDK is async (httpx.AsyncClient). One event loop runs in
a daemon thread for the life of the container and the SDK client lives on it, so warm
invocations reuse its connections and never meet "event loop is closed"; any thread may submit
a call and wait for it, bounded by the configured timeout.

Failures become domain errors: timeouts, connection errors, 429 and 5xx are UpstreamUnavailable
(retrying can help), any other error answer is UpstreamError. Their messages are the generic
client-facing ones; the details (operation, ids, status) go to the log only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from aws_lambda_powertools import Logger

from shared.config import get_settings, secret
from shared.container import PerContainer
from shared.errors import (
    BackboardObjectMissing,
    ConfigurationError,
    UpstreamError,
    UpstreamUnavailable,
)
from shared.models import as_utc

logger = Logger(child=True)
T = TypeVar("T")

MEMORY_MODE = "Auto"  # Backboard reads and writes the assistant's memory of the traveller
MEMORY_OFF = "off"  # neither read nor written: for questions about, not from, the traveller
# Ids we put into Backboard's URL paths that came from a client. Anything else could walk the
# path: httpx resolves dot segments, so a memory id ".." would name the assistant itself.
SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
# httpx applies the SDK's timeout to each phase (connect, write, each read), so one request can
# outlast it; this margin on top bounds the whole call, including a wedged loop.
CALL_MARGIN_SECONDS = 2.0
LOOP_START_TIMEOUT_SECONDS = 5.0
FAILED_REPLY_STATUSES = frozenset({"FAILED", "CANCELLED", "CANCELED"})
MEMORY_PAGES_MAX = 100  # of 100 memories each: a traveller's memories are hundreds, not 10,000s


@dataclass(frozen=True)
class Memory:
    """One thing the assistant remembers of the traveller."""

    id: str
    content: str
    created_at: datetime | None
    updated_at: datetime | None


class UnsafeId(ValueError):
    """An id that must not reach a Backboard URL path (see SAFE_ID)."""


class Pending(Generic[T]):
    """A call under way on the gateway's loop; `result` waits for it (a bounded wait) and
    turns its failure into a domain error, as the blocking calls do."""

    def __init__(
        self, operation: str, future: concurrent.futures.Future[T], ids: dict[str, str]
    ) -> None:
        self._operation = operation
        self._future = future
        self._ids = ids

    def result(self, timeout: float) -> T:
        with _failures(self._operation, self._ids, self._future):
            return self._future.result(timeout=timeout)

    def cancel(self) -> bool:
        """Stop waiting for the call; True unless it had finished (an unfinished call may
        still take effect at Backboard, as a timed-out call may)."""
        return self._future.cancel()


class BackboardGateway:
    """The Backboard operations this backend uses, as blocking calls with domain errors."""

    def __init__(self, api_key: str, base_url: str | None, timeout: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="backboard-loop", daemon=True
        )
        self._thread.start()
        kwargs: dict[str, Any] = {"api_key": api_key, "timeout": timeout}
        if base_url:
            kwargs["base_url"] = base_url
        # Imported on first use: the SDK costs ~0.1 s of cold start, and read-only requests
        # never call Backboard.
        from backboard import BackboardClient

        async def make_client() -> Any:
            # Created on the loop, so its httpx client belongs to that loop.
            return BackboardClient(**kwargs)

        try:
            self._client: Any = self._submit(make_client()).result(
                timeout=LOOP_START_TIMEOUT_SECONDS
            )
        except BaseException:
            self._stop_loop()  # no thread left behind by a gateway that never worked
            raise

    def create_assistant(self, *, name: str, description: str, system_prompt: str) -> str:
        assistant = self._run(
            "create_assistant",
            self._client.create_assistant(
                name=name, description=description, system_prompt=system_prompt
            ),
        )
        assistant_id = str(assistant.assistant_id)
        logger.info("backboard assistant created", extra={"assistant_id": assistant_id})
        return assistant_id

    def find_assistants(self, name: str) -> list[str]:
        """Ids of the assistants with exactly this name (oldest first)."""
        found = self._run("list_assistants", self._client.list_assistants(name=name, limit=100))
        ordered = sorted(found, key=lambda a: a.created_at)
        return [str(a.assistant_id) for a in ordered if a.name == name]

    def delete_assistant(self, assistant_id: str) -> None:
        """Delete the assistant (Backboard deletes its threads too). Already gone is success:
        deletes are retried."""
        self._delete(
            "delete_assistant",
            self._client.delete_assistant(assistant_id),
            assistant_id=assistant_id,
        )

    def create_thread(self, assistant_id: str) -> str:
        thread = self._run(
            "create_thread", self._client.create_thread(assistant_id), assistant_id=assistant_id
        )
        return str(thread.thread_id)

    def list_threads(self, assistant_id: str) -> list[tuple[str, datetime]]:
        """(id, creation time) of the assistant's threads, at most the first 1,000."""
        found: list[tuple[str, datetime]] = []
        for skip in range(0, 1000, 200):
            page = self._run(
                "list_threads",
                self._client.list_threads_for_assistant(assistant_id, skip=skip, limit=200),
                assistant_id=assistant_id,
            )
            found += [(str(t.thread_id), as_utc(t.created_at)) for t in page]
            if len(page) < 200:
                break
        return found

    def delete_thread(self, thread_id: str) -> None:
        """Delete the thread. Already gone is success: deletes are retried."""
        self._delete("delete_thread", self._client.delete_thread(thread_id), thread_id=thread_id)

    def add_message(self, thread_id: str, content: str) -> str:
        """Send the traveller's message on the trip's thread and return the reply text."""
        response = self._run(
            "add_message", self._add_message(thread_id, content, stream=False), thread_id=thread_id
        )
        return _reply_text(response, thread_id=thread_id)

    def start_aside(self, assistant_id: str, content: str, instructions: str) -> Pending[str]:
        """Start a one-off question to the assistant and return at once: memory off (nothing
        read from or written to what it remembers of the traveller), `instructions` for this
        turn only, in a thread of its own that is deleted once answered (a thread under the
        user's assistant, so erasing the user erases a leftover too). Pending.result gives the
        answer's text."""
        settings = get_settings()

        async def ask() -> str:
            response = await self._client.send_message(
                content,
                assistant_id=assistant_id,
                system_prompt=instructions,
                memory=MEMORY_OFF,
                stream=False,
                llm_provider=settings.backboard_llm_provider,
                model_name=settings.backboard_model_name,
            )
            thread_id = str(getattr(response, "thread_id", None) or "")
            if thread_id:
                await self._delete_aside_thread(thread_id)
            return _reply_text(response, assistant_id=assistant_id)

        ids = {"assistant_id": assistant_id}
        return Pending("send_message", self._start("send_message", ask(), ids), ids)

    async def _delete_aside_thread(self, thread_id: str) -> None:
        from backboard.exceptions import BackboardError, BackboardNotFoundError

        try:
            await self._client.delete_thread(thread_id)
        except (BackboardNotFoundError, ValueError):
            pass  # gone already, or a 2xx without a JSON body: deleted either way
        except BackboardError as exc:
            logger.error(
                "could not delete Backboard thread; delete it by hand",
                extra={"thread_id": thread_id, "error": type(exc).__name__},
            )

    def list_memories(self, assistant_id: str) -> list[Memory]:
        """Everything the assistant remembers. Backboard answers all of them when no page is
        asked for; should it answer fewer than its total_count, the rest is read by page."""
        found = self._run(
            "list_memories", self._client.get_memories(assistant_id), assistant_id=assistant_id
        )
        memories = list(found.memories)
        if len(memories) < found.total_count:
            memories = []
            for page in range(1, MEMORY_PAGES_MAX + 1):
                chunk = self._run(
                    "list_memories",
                    self._client.get_memories(assistant_id, page=page, page_size=100),
                    assistant_id=assistant_id,
                ).memories
                memories += chunk
                if len(chunk) < 100:
                    break
        return [
            Memory(str(m.id), m.content, _stamp(m.created_at), _stamp(m.updated_at))
            for m in memories
        ]

    def memory_count(self, assistant_id: str) -> int:
        stats = self._run(
            "memory_stats", self._client.get_memory_stats(assistant_id), assistant_id=assistant_id
        )
        return int(stats.total_memories)

    def delete_memory(self, assistant_id: str, memory_id: str) -> bool:
        """Delete one memory of the assistant; False when it has no such memory."""
        if not SAFE_ID.fullmatch(memory_id):
            raise UnsafeId(memory_id)
        return self._delete(
            "delete_memory",
            self._client.delete_memory(assistant_id, memory_id),
            assistant_id=assistant_id,
            memory_id=memory_id,
        )

    def delete_memories(self, assistant_id: str) -> None:
        """Delete everything the assistant remembers. An assistant already gone remembers
        nothing: success."""
        self._delete(
            "reset_memories",
            self._client.reset_memories(assistant_id),
            assistant_id=assistant_id,
        )

    def stream_message(self, thread_id: str, content: str) -> ReplyStream:
        """Send the traveller's message on the trip's thread and read the reply as Backboard
        writes it (nothing is sent until the first read)."""

        async def open_stream() -> AsyncIterator[dict[str, Any]]:
            events: AsyncIterator[dict[str, Any]] = await self._add_message(
                thread_id, content, stream=True
            )
            return events

        return ReplyStream(self, open_stream, thread_id)

    def _add_message(
        self, thread_id: str, content: str, *, stream: bool
    ) -> Coroutine[Any, Any, Any]:
        """The SDK's add_message as this backend sends it (memory "Auto", the set model)."""
        settings = get_settings()
        call: Coroutine[Any, Any, Any] = self._client.add_message(
            thread_id,
            content=content,
            memory=MEMORY_MODE,
            stream=stream,
            llm_provider=settings.backboard_llm_provider,
            model_name=settings.backboard_model_name,
        )
        return call

    def cancel_run(self, thread_id: str, run_id: str) -> None:
        """Stop a run Backboard is still writing (a no-op for one that ended)."""
        self._run("cancel_run", self._client.cancel_run(thread_id, run_id), thread_id=thread_id)

    def close(self) -> None:
        """Close the SDK client and stop the loop. Never raises: it runs on reset paths."""
        try:
            self._submit(self._client.aclose()).result(timeout=LOOP_START_TIMEOUT_SECONDS)
        except Exception as exc:
            logger.debug("backboard client close failed", extra={"error": type(exc).__name__})
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if not self._loop.is_closed():
            # Safe even before run_forever() started: it then stops after one pass.
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=LOOP_START_TIMEOUT_SECONDS)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def _submit(self, call: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        try:
            return asyncio.run_coroutine_threadsafe(call, self._loop)
        except RuntimeError:
            call.close()  # never scheduled: close it, or Python warns it was never awaited
            raise

    def _delete(self, operation: str, call: Coroutine[Any, Any, Any], **ids: str) -> bool:
        """True when this call deleted it, False when it was already gone."""

        async def delete() -> None:
            # The SDK parses the answer's body as JSON; a 2xx without one is still a delete.
            with contextlib.suppress(ValueError):
                await call

        try:
            self._run(operation, delete(), missing_ok=True, **ids)
        except _AlreadyGone:
            return False
        return True

    def _run(
        self,
        operation: str,
        call: Coroutine[Any, Any, T],
        *,
        missing_ok: bool = False,
        **ids: str,
    ) -> T:
        started = time.monotonic()
        future = self._start(operation, call, ids)
        with _failures(operation, ids, future, missing_ok=missing_ok):
            result = future.result(timeout=self._timeout + CALL_MARGIN_SECONDS)
        logger.debug(
            "backboard call",
            extra={
                "operation": operation,
                "duration_ms": round((time.monotonic() - started) * 1000),
                **ids,
            },
        )
        return result

    async def _await(self, operation: str, call: Coroutine[Any, Any, T], **ids: str) -> T:
        """`_run` for a caller on another event loop: waits without blocking it."""
        future = self._start(operation, call, ids)
        with _failures(operation, ids, future):
            return await asyncio.wait_for(
                asyncio.wrap_future(future), self._timeout + CALL_MARGIN_SECONDS
            )

    def _start(
        self, operation: str, call: Coroutine[Any, Any, T], ids: dict[str, str]
    ) -> concurrent.futures.Future[T]:
        try:
            return self._submit(call)
        except RuntimeError as exc:  # the loop was closed under us (a reset racing a call)
            logger.warning("backboard loop is closed", extra={"operation": operation, **ids})
            raise UpstreamUnavailable() from exc


@dataclass(frozen=True)
class ReplyChunk:
    text: str = ""  # the next piece of the reply ("" for events that carry none)
    run_id: str | None = None  # Backboard's run, when the event names it


class ReplyStream:
    """Backboard's streamed reply: each `await anext()` runs on the gateway's loop, so any
    event loop (or a thread, through asyncio) may read it; failures are domain errors."""

    def __init__(
        self,
        gateway: BackboardGateway,
        opener: Callable[[], Coroutine[Any, Any, AsyncIterator[dict[str, Any]]]],
        thread_id: str,
    ) -> None:
        self._gateway = gateway
        self._opener = opener
        self._thread_id = thread_id
        self._events: AsyncIterator[dict[str, Any]] | None = None
        # Backboard ended the run (the SDK raises for a run_ended that is not "completed"): a
        # stream that stops without it was cut off, and its text is not the whole reply.
        self.completed = False

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> ReplyChunk:
        while True:
            if self._events is None:
                self._events = await self._step(self._opener())
            event = await self._step(_next_or_none(self._events))
            if event is None:
                raise StopAsyncIteration
            if event.get("type") == "run_ended":
                self.completed = True
            run_id = event.get("run_id")
            text = event.get("content") if event.get("type") == "content_streaming" else None
            if isinstance(text, str) or run_id:
                return ReplyChunk(
                    text if isinstance(text, str) else "", str(run_id) if run_id else None
                )

    async def aclose(self) -> None:
        """Stop reading (closes Backboard's response); never raises."""
        closer = getattr(self._events, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await self._step(closer())

    async def _step(self, call: Coroutine[Any, Any, T]) -> T:
        return await self._gateway._await("add_message", call, thread_id=self._thread_id)


async def _next_or_none(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


@contextlib.contextmanager
def _failures(
    operation: str,
    ids: dict[str, str],
    future: concurrent.futures.Future[Any],
    *,
    missing_ok: bool = False,
) -> Iterator[None]:
    """The SDK's failures (and ours: a call past its time) as domain errors."""
    from backboard.exceptions import BackboardError

    try:
        yield
    except TimeoutError as exc:
        future.cancel()
        logger.warning("backboard call timed out", extra={"operation": operation, **ids})
        raise UpstreamUnavailable(unanswered=True) from exc
    except BackboardError as exc:
        raise _domain_error(exc, operation, ids, missing_ok=missing_ok) from exc
    except ValueError as exc:
        # A 2xx the SDK could not parse (bad JSON, or a shape its pydantic models reject).
        logger.warning(
            "backboard answer unreadable",
            extra={"operation": operation, "error": type(exc).__name__, **ids},
        )
        raise UpstreamError() from exc


class _AlreadyGone(Exception):
    pass


def _domain_error(
    exc: Exception, operation: str, ids: dict[str, str], *, missing_ok: bool
) -> Exception:
    from backboard.exceptions import (
        BackboardNotFoundError,
        BackboardRateLimitError,
        BackboardServerError,
    )

    status = getattr(exc, "status_code", None)
    if isinstance(exc, BackboardNotFoundError):
        logger.info("backboard object missing", extra={"operation": operation, **ids})
        return _AlreadyGone() if missing_ok else BackboardObjectMissing()
    # A rejected key is a configuration problem an operator must fix: say so loudly.
    log = logger.error if status in (401, 403) else logger.warning
    details: dict[str, Any] = {"operation": operation, "status": status, **ids}
    details["error"] = type(exc).__name__
    if status is None:
        # The SDK's own words ("Request timed out", "Connection error"). An answer's detail is
        # not logged: validation errors can echo the traveller's message.
        details["reason"] = str(exc)[:200]
    log("backboard call failed", extra=details)
    if isinstance(exc, BackboardRateLimitError | BackboardServerError) or status is None:
        # 429, 5xx, or no answer at all (timeout, connection error): retrying can help, after
        # Backboard's Retry-After when it sent one (429 and 503 usually do).
        return UpstreamUnavailable(retry_after=_retry_after(exc) or 5, unanswered=status is None)
    return UpstreamError()


def _reply_text(response: Any, **ids: str) -> str:
    """The text of a ChatMessagesResponse (its .content and .status read the run's last
    message); a failed run is UpstreamUnavailable, an empty one UpstreamError."""
    status = getattr(response, "status", None)
    reply = getattr(response, "content", None)
    if isinstance(status, str) and status.upper() in FAILED_REPLY_STATUSES:
        # The model run failed on Backboard's side (often a provider hiccup).
        logger.warning("backboard reply failed", extra={**ids, "run_status": status})
        raise UpstreamUnavailable()
    if not isinstance(reply, str) or not reply.strip():
        logger.warning("backboard reply was empty", extra={**ids, "run_status": status})
        raise UpstreamError("The assistant returned an empty reply.")
    return reply


def _stamp(value: str | None) -> datetime | None:
    """A memory's ISO time as aware UTC; None when absent or unreadable."""
    try:
        return as_utc(datetime.fromisoformat(value)) if value else None
    except ValueError:
        return None


def late_landing_seconds() -> float:
    """How long after our call gave up (no answer) Backboard may still carry it out: creations
    that timed out are looked for, or waited for, within this window."""
    return get_settings().backboard_timeout_seconds * 2


def _retry_after(exc: Exception) -> int | None:
    """Backboard's Retry-After in whole seconds, capped at a minute (None if absent or an
    HTTP date, which is rare and not worth parsing)."""
    response = getattr(exc, "response", None)
    raw = str(response.headers.get("Retry-After", "")) if response is not None else ""
    return min(max(int(raw), 1), 60) if raw.isdigit() else None


def _open_gateway() -> BackboardGateway:
    api_key = secret("BACKBOARD_API_KEY")
    if not api_key:
        raise ConfigurationError(
            "Backboard is not configured: set BACKBOARD_API_KEY to the API key, or "
            "BACKBOARD_API_KEY_SECRET_ARN to the ARN of a Secrets Manager secret holding it."
        )
    settings = get_settings()
    return BackboardGateway(
        api_key, settings.backboard_base_url, settings.backboard_timeout_seconds
    )


_gateway: PerContainer[BackboardGateway] = PerContainer(_open_gateway, close=BackboardGateway.close)


def get_backboard() -> BackboardGateway:
    """The container's gateway, created on first use from BACKBOARD_API_KEY (or its secret)."""
    return _gateway.get()


def reset_backboard() -> None:
    """Close the gateway so the next get_backboard() builds a fresh one (tests, key rotation)."""
    _gateway.reset()


def delete_quietly(kind: Literal["thread", "assistant", "memories"], object_id: str) -> None:
    """Delete a thread, an assistant or an assistant's memories (`object_id`: the assistant's),
    best effort: a failure is logged with the id, so an operator can finish the job, and never
    fails the caller (the database is the truth)."""
    backboard = get_backboard()
    delete, id_name = {
        "thread": (backboard.delete_thread, "thread_id"),
        "assistant": (backboard.delete_assistant, "assistant_id"),
        "memories": (backboard.delete_memories, "assistant_id"),
    }[kind]
    try:
        delete(object_id)
    except (UpstreamError, UpstreamUnavailable) as exc:
        logger.error(
            f"could not delete Backboard {kind}; delete it by hand",
            extra={id_name: object_id, "error": exc.code},
        )
