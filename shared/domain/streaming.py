"""Streamed replies: a send whose reply reaches the traveller as Backboard writes it.

A streamed send is the same turn as chat.send_message (same checks, same Idempotency-Key
rules, the user's message stored first) whose reply is written to tripchat.reply_stream as it
grows, at most every FLUSH_SECONDS, and moved to "Message" when complete. The turn runs as a
task of its own: the request that started it only listens, so a client that goes away does
not stop it. Any request, in any container, can follow a reply in flight by polling its row
(`follow`), and stop it (`stop`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from aws_lambda_powertools import Logger

from shared.domain import chat, titles
from shared.domain.trips import not_found
from shared.domain.users import Viewer
from shared.errors import AppError, BackboardObjectMissing, UpstreamError, UpstreamUnavailable
from shared.gateways.backboard import ReplyStream, get_backboard
from shared.store import db, reply_rows
from shared.store.reply_rows import ReplyInFlight

logger = Logger(child=True)
T = TypeVar("T")

FLUSH_SECONDS = 0.25  # the partial reply is written at most this often per turn
POLL_SECONDS = 0.2  # how often a follower reads a reply written by another request


@dataclass(frozen=True)
class StreamIds:
    """What the stream names: our ids, so a front end can match its messages to GET's."""

    trip_id: str
    user_message_id: str
    assistant_message_id: str


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Ended:
    status: Literal["completed", "failed", "stopped"]
    error: AppError | None = None  # why, when failed


Event = Delta | Ended


@dataclass(frozen=True)
class Replayed:
    """The turn had finished before: its stored reply, nothing asked of Backboard."""

    ids: StreamIds
    reply: str
    status: Literal["completed", "stopped"] = "completed"


@dataclass(frozen=True)
class Live:
    """A turn this request now holds: its events, as the running turn produces them."""

    ids: StreamIds
    events: AsyncIterator[Event]


def begin(
    viewer: Viewer, trip_id: str, content: str, idempotency_key: str | None
) -> Replayed | chat.Begun:
    """Every check of a send, before anything streams (404, 409, 429, 503 raise here)."""
    started = chat.begin_turn(viewer, trip_id, content, idempotency_key)
    if isinstance(started, chat.Turn):
        reply = started.assistant_message
        ids = StreamIds(trip_id, started.user_message.id, reply.id)
        # A stopped reply stays marked as such (a rare path: one more statement is fine).
        stopped = db.read(lambda conn: reply_rows.was_stopped(conn, reply.id))
        return Replayed(ids, reply.content, "stopped" if stopped else "completed")
    return started


def start(viewer: Viewer, begun: chat.Begun) -> tuple[StreamIds, Callable[[], Live]]:
    """Open the turn's reply row (sync: run it in a thread), then return the ids and a
    function that, called on the event loop, starts the turn's task and its listener."""
    ids = StreamIds(begun.trip_id, begun.user_message.id, str(uuid.uuid4()))
    with db.connection() as conn:
        reply_rows.open_reply(
            conn,
            user_id=begun.user_id,
            idempotency_key=begun.key,
            trip_id=begun.trip_id,
            user_message_id=ids.user_message_id,
            assistant_message_id=ids.assistant_message_id,
        )

    def launch() -> Live:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        task = asyncio.create_task(_run_turn(viewer, begun, queue.put_nowait))
        _running.add(task)  # kept alive (and awaited nowhere) even if the listener leaves
        task.add_done_callback(_running.discard)
        return Live(ids, _drain(queue))

    return ids, launch


_running: set[asyncio.Task[None]] = set()


async def _drain(queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
    while True:
        event = await queue.get()
        yield event
        if isinstance(event, Ended):
            return


async def _run_turn(viewer: Viewer, begun: chat.Begun, emit: Callable[[Event], None]) -> None:
    """Run the turn; whatever happens, its listener hears how it ended."""
    ended = False

    def tell(event: Event) -> None:
        nonlocal ended
        ended = ended or isinstance(event, Ended)
        emit(event)

    try:
        await _turn(viewer, begun, tell)
    finally:
        if not ended:  # a failure while handling a failure (the database gone as well)
            emit(Ended("failed", AppError()))


async def _turn(viewer: Viewer, begun: chat.Begun, emit: Callable[[Event], None]) -> None:
    """Ask Backboard, pass each piece on, keep the reply as it grows, store it at the end."""
    settings_lease = begun.lease_seconds
    parts: list[str] = []
    run_id: str | None = None
    written_at = time.monotonic()
    thread_id = begun.thread_id
    reply: ReplyStream | None = None
    # The trip's first reply: its title is asked for alongside, set before the turn ends.
    titling = (
        titles.begin(begun.trip_id, begun.user_id, begun.titling_assistant_id, begun.content)
        if begun.titling_assistant_id
        else None
    )
    try:
        try:
            reply = get_backboard().stream_message(thread_id, begun.content)
            first = await anext(reply, None)
        except BackboardObjectMissing:
            thread_id = await _off_loop(chat.replacement_thread, viewer, begun.trip_id, thread_id)
            reply = get_backboard().stream_message(thread_id, begun.content)
            first = await anext(reply, None)
        chunk = first
        run_saved = False
        while chunk is not None:
            run_id = run_id or chunk.run_id
            if chunk.text:
                parts.append(chunk.text)
                emit(Delta(chunk.text))
            # Written at a bounded rate, and at once when the run is first named: a stop can
            # then cancel it at Backboard from the first moment.
            due = time.monotonic() - written_at >= FLUSH_SECONDS and parts
            if due or (run_id and not run_saved):
                written_at, run_saved = time.monotonic(), run_id is not None
                if not await _off_loop(_save, begun, "".join(parts), run_id, settings_lease):
                    emit(Ended("stopped"))
                    return
            chunk = await anext(reply, None)
        stored = await _off_loop(_finish, begun, _whole(parts, completed=reply.completed))
        if stored and titling is not None:
            # While the response is still open: nothing runs after it (Lambda freezes then).
            await _off_loop(titles.finish, titling)
            titling = None
        emit(Ended("completed" if stored else "stopped"))
    except AppError as exc:
        status = await _off_loop(_fail, begun, "".join(parts))
        emit(Ended("stopped") if status == "stopped" else Ended("failed", exc))
    except Exception:
        logger.exception("streamed turn failed")
        status = await _off_loop(_fail, begun, "".join(parts))
        emit(Ended("stopped") if status == "stopped" else Ended("failed", AppError()))
    finally:
        if reply is not None:  # on every way out (a database failure too): no open response
            await reply.aclose()
        if titling is not None:  # no reply stored: the next first reply asks again
            await _off_loop(titles.abandon, titling)


def _whole(parts: list[str], *, completed: bool) -> str:
    if not completed:  # the stream stopped short of run_ended: only part of the reply
        raise UpstreamUnavailable("The assistant's reply broke off; send again.")
    text = "".join(parts)
    if not text.strip():
        raise UpstreamError("The assistant returned an empty reply.")
    return text


async def _off_loop(work: Callable[..., T], *args: object) -> T:
    # Database work is synchronous (psycopg's pool): off the event loop, in a thread.
    return await asyncio.to_thread(work, *args)


def _save(begun: chat.Begun, text: str, run_id: str | None, lease: float) -> bool:
    with db.connection() as conn:
        return reply_rows.save_partial(
            conn,
            user_id=begun.user_id,
            idempotency_key=begun.key,
            content=text,
            run_id=run_id,
            lease_seconds=lease,
        )


def _finish(begun: chat.Begun, text: str) -> bool:
    with db.connection() as conn:
        stored = reply_rows.finish_reply(
            conn, user_id=begun.user_id, idempotency_key=begun.key, reply=text
        )
    return stored is not None


def _fail(begun: chat.Begun, text: str) -> reply_rows.ReplyStatus | None:
    try:
        with db.connection() as conn:
            return reply_rows.fail_reply(
                conn, user_id=begun.user_id, idempotency_key=begun.key, content=text
            )
    except AppError:
        # The database is gone too: the lease runs out and readers see the turn as failed.
        logger.warning("could not mark a broken-off reply", extra={"session_id": begun.trip_id})
        return None


# Following a reply from another request (resume) ---------------------------------------


@dataclass(frozen=True)
class Following:
    ids: StreamIds
    events: AsyncIterator[Event]


def in_flight(viewer: Viewer, trip_id: str) -> ReplyInFlight | None:
    """The trip's reply being written now, if any (404 for someone else's trip)."""
    found = db.read(lambda conn: reply_rows.unfinished_replies(conn, viewer.clerk_id, trip_id))
    if not found.trip_found:
        not_found(viewer)
    live = [r for r in found.replies if r.status == "streaming"]
    return live[0] if live else None


def follow(reply: ReplyInFlight, trip_id: str) -> Following:
    """Replay what was written, then what is added, until the reply ends (polling its row:
    the writer may be in any container)."""
    ids = StreamIds(trip_id, reply.user_message_id, reply.assistant_message_id)
    return Following(ids, _poll(reply))


async def _poll(reply: ReplyInFlight) -> AsyncIterator[Event]:
    sent = reply.content
    if sent:
        yield Delta(sent)
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            state = await _off_loop(_state, reply.user_id, reply.idempotency_key)
        except AppError as exc:  # the stream is open: the failure is its last event
            yield Ended("failed", exc)
            return
        if state.content.startswith(sent) and len(state.content) > len(sent):
            yield Delta(state.content[len(sent) :])
            sent = state.content
        if state.status == "streaming":
            continue
        if state.status in ("completed", "stopped"):
            yield Ended(state.status)
        else:
            yield Ended("failed", UpstreamUnavailable("The reply was interrupted; send again."))
        return


def _state(user_id: str, key: str) -> reply_rows.ReplyState:
    return db.read(lambda conn: reply_rows.reply_state(conn, user_id=user_id, idempotency_key=key))


# Stopping ---------------------------------------------------------------------------


def stop(viewer: Viewer, trip_id: str) -> bool:
    """Stop the trip's reply in flight: the text written so far is kept as the assistant's
    message, the turn ends, Backboard's run is cancelled when the stream named it, and the
    request streaming it finishes at its next write. False when nothing was in flight."""
    with db.connection() as conn:
        stopped = reply_rows.stop_reply(conn, viewer.clerk_id, trip_id)
    if not stopped.trip_found:
        not_found(viewer)
    if stopped.stopped and stopped.run_id and stopped.thread_id:
        try:
            get_backboard().cancel_run(stopped.thread_id, stopped.run_id)
        except AppError as exc:  # the reply is stopped here either way
            logger.warning("backboard run not cancelled", extra={"error": exc.code})
    return stopped.stopped
