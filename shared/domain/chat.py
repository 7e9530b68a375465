"""Chat: a trip's conversation, and sending a message to the user's assistant.

A send is a "turn", persisted around the Backboard call: the user's message is stored before
the call and kept if it fails; the reply is stored after. Each turn has a key (the client's
Idempotency-Key, or a generated one), so a retry with the same key never stores the message
twice and never asks Backboard again once the reply is stored. A lease on the turn keeps two
concurrent retries from both calling Backboard.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from shared.config import get_settings
from shared.domain import titles, trips
from shared.domain.trips import not_found
from shared.domain.users import Viewer
from shared.errors import (
    AppError,
    BackboardObjectMissing,
    Conflict,
    DatabaseUnavailable,
    RateLimited,
)
from shared.gateways.backboard import delete_quietly, get_backboard
from shared.models import Message
from shared.store import db, message_rows, trip_rows
from shared.store.common import Keyset
from shared.store.reply_rows import PendingReply

logger = Logger(child=True)


@dataclass(frozen=True)
class Turn:
    user_message: Message
    assistant_message: Message
    replayed: bool  # True when an earlier request with the same key had already finished


@dataclass(frozen=True)
class MessageWindow:
    messages: list[Message]  # in conversation order
    older: bool  # older messages precede the first one
    pending: list[PendingReply] = field(default_factory=list)  # streamed replies unfinished


def list_messages(
    viewer: Viewer,
    trip_id: str,
    *,
    limit: int,
    before: Keyset | None = None,
    after: Keyset | None = None,
) -> MessageWindow:
    """A window of the trip's messages in conversation order: the latest by default, older
    ones before `before`, newer ones after `after`. One statement for a known user."""
    found = db.read(
        lambda conn: message_rows.list_trip_messages(
            conn, viewer.clerk_id, trip_id, limit=limit + 1, before=before, after=after
        )
    )
    if not found.trip_found:
        not_found(viewer)
    rows = found.messages
    more = len(rows) > limit
    if after is not None:  # ascending from the position: the extra row is the newest
        window = rows[:limit]
        return MessageWindow(window, older=bool(window), pending=found.pending)
    # The extra row is the oldest.
    return MessageWindow(rows[-limit:] if more else rows, older=more, pending=found.pending)


@dataclass(frozen=True)
class Begun:
    """A turn this request now holds (its lease): the user's message is stored; ask the
    assistant on `thread_id`."""

    user_message: Message
    user_id: str
    key: str
    trip_id: str
    thread_id: str
    content: str
    lease_seconds: float
    # The user's assistant when the trip still waits for its automatic title (shared.domain.titles).
    titling_assistant_id: str | None = None


def begin_turn(
    viewer: Viewer, trip_id: str, content: str, idempotency_key: str | None
) -> Turn | Begun:
    """Every check of a send, in one statement, before the assistant is asked: the trip is
    the viewer's (404), the rate limit (429), the Idempotency-Key (a finished turn is
    replayed, an unfinished one resumed, one in flight or reused for another message is 409).
    The user's message is stored when the turn is new."""
    key = idempotency_key or f"auto-{uuid.uuid4()}"
    settings = get_settings()
    lease = settings.backboard_timeout_seconds + 5
    sha = hashlib.sha256(content.encode()).hexdigest()
    with db.connection() as conn:
        start = message_rows.begin_turn(
            conn,
            clerk_id=viewer.clerk_id,
            trip_id=trip_id,
            idempotency_key=key,
            content=content,
            request_sha256=sha,
            rate_limit=settings.message_rate_limit_per_minute,
            lease_seconds=lease,
        )
        match start:
            case message_rows.NoTrip():
                not_found(viewer)
            case message_rows.Refused(rate_limited=True, retry_after_seconds=retry_after):
                raise RateLimited(
                    f"At most {settings.message_rate_limit_per_minute} messages in any 60 seconds.",
                    retry_after=retry_after,
                )
            case message_rows.Refused():
                # The key was taken by a concurrent request between our read and our insert.
                raise TurnInProgress(retry_after=2)
            case message_rows.Started(
                user_id=user_id, thread_id=thread_id, titling_assistant_id=titling
            ):
                user_message = start.user_message
            case message_rows.Earlier(
                user_id=user_id, thread_id=thread_id, titling_assistant_id=titling
            ):
                if start.assistant_message is not None and _same_request(start, trip_id, sha):
                    return Turn(start.user_message, start.assistant_message, replayed=True)
                user_message = _resume(conn, start, trip_id=trip_id, key=key, sha=sha, lease=lease)
    return Begun(user_message, user_id, key, trip_id, thread_id, content, lease, titling)


def send_message(viewer: Viewer, trip_id: str, content: str, idempotency_key: str | None) -> Turn:
    """Store the user's message, ask the assistant (memory "Auto": it remembers the traveller
    across trips), store the reply. Backboard failing leaves the user's message stored and
    raises 502/503; retrying with the same key resumes the same turn."""
    begun = begin_turn(viewer, trip_id, content, idempotency_key)
    if isinstance(begun, Turn):
        return begun
    user_id, key = begun.user_id, begun.key
    # No connection is held while the assistant answers.
    reply = _unsaved_replies.pop((user_id, key), None)
    # The trip's first reply: its title is asked for alongside (not when the reply is known).
    titling_assistant = begun.titling_assistant_id if reply is None else None
    with titles.alongside(trip_id, user_id, titling_assistant, content):
        if reply is None:
            try:
                reply = _ask(viewer, trip_id, begun.thread_id, content)
            except AppError as exc:
                with db.connection() as conn:
                    if not message_rows.release_turn(conn, user_id=user_id, idempotency_key=key):
                        raise TripDeleted() from exc
                raise
        assistant_message = _store_reply(user_id, key, trip_id, reply)
    return Turn(begun.user_message, assistant_message, replayed=False)


def _store_reply(user_id: str, key: str, trip_id: str, reply: str) -> Message:
    try:
        with db.connection() as conn:
            return message_rows.finish_turn(
                conn, user_id=user_id, idempotency_key=key, trip_id=trip_id, reply=reply
            )
    except DatabaseUnavailable:
        # Backboard answered but the reply could not be stored: keep it for a retry with the
        # same key (which then asks Backboard nothing) and give the lease back if we can.
        _remember_unsaved(user_id, key, reply)
        with contextlib.suppress(AppError), db.connection() as conn:
            message_rows.release_turn(conn, user_id=user_id, idempotency_key=key)
        raise


def _ask(viewer: Viewer, trip_id: str, thread_id: str, content: str) -> str:
    """The assistant's reply on the trip's thread (in a new thread when Backboard lost it)."""
    backboard = get_backboard()
    try:
        return backboard.add_message(thread_id, content)
    except BackboardObjectMissing:
        pass
    return backboard.add_message(replacement_thread(viewer, trip_id, thread_id), content)


def replacement_thread(viewer: Viewer, trip_id: str, thread_id: str) -> str:
    """A new thread for a trip whose thread Backboard no longer knows (its assistant was
    deleted outside this backend): the conversation stays in PostgreSQL, Backboard's copy of
    it starts afresh. Raises TripDeleted when the trip went away meanwhile."""
    logger.warning("the trip's thread is gone at Backboard", extra={"trip_id": trip_id})
    _, new_id = trips.new_thread(viewer, viewer.user())
    with db.connection() as conn:
        current = trip_rows.replace_thread(conn, trip_id, thread_id, new_id)
    if current != new_id:  # another request replaced it first, or the trip was deleted
        delete_quietly("thread", new_id)
        if not current:
            raise TripDeleted()
    return current


# Replies this container received but could not store, by (user id, Idempotency-Key): a
# retry reaching this container stores them without a second Backboard call. Bounded.
UNSAVED_REPLIES_KEPT = 64
_unsaved_replies: OrderedDict[tuple[str, str], str] = OrderedDict()


def _remember_unsaved(user_id: str, key: str, reply: str) -> None:
    _unsaved_replies[(user_id, key)] = reply
    while len(_unsaved_replies) > UNSAVED_REPLIES_KEPT:
        _unsaved_replies.popitem(last=False)


def _same_request(earlier: message_rows.Earlier, trip_id: str, sha: str) -> bool:
    return earlier.trip_id == trip_id and earlier.request_sha256 == sha


def _resume(
    conn: db.Connection,
    earlier: message_rows.Earlier,
    *,
    trip_id: str,
    key: str,
    sha: str,
    lease: float,
) -> Message:
    """Resume an earlier request's unfinished turn with this key, or explain why not (a reused
    key, a concurrent request); returns the stored user message."""
    if not _same_request(earlier, trip_id, sha):
        raise IdempotencyKeyReused()
    # This container answered the turn but could not store the reply: the request that held
    # the lease has ended (one request at a time per container), so its lease is void.
    holder_gone = (earlier.user_id, key) in _unsaved_replies
    if earlier.lease_seconds_left > 0 and not holder_gone:
        raise TurnInProgress(retry_after=earlier.lease_seconds_left)
    if not message_rows.reclaim_turn(
        conn,
        user_id=earlier.user_id,
        idempotency_key=key,
        lease_seconds=lease,
        holder_gone=holder_gone,
    ):
        raise TurnInProgress(retry_after=2)
    logger.info("resuming an unfinished turn", extra={"trip_id": trip_id})
    return earlier.user_message


class TurnInProgress(Conflict):
    default_message = "A request with this Idempotency-Key is in progress."


class TripDeleted(Conflict):
    default_message = "The trip was deleted while the assistant was answering."


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used for a different message."
