"""Users: every Clerk user has exactly one User row and exactly one Backboard assistant.

The webhook and several first API requests for the same new user can run at once in
different containers. Everything that creates, updates or erases one Clerk user runs under a
PostgreSQL advisory lock on its clerk id (transaction-scoped, so a crashed container releases
it), which makes the second caller wait and then find the first caller's user: an extra
assistant is never created, so none has to be cleaned up.

A user without any email address (a phone-number or username-only Clerk sign-up) is stored
with an empty email, since the seed's column is NOT NULL; a later `user.updated` fills it in.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from shared.config import get_settings
from shared.errors import (
    AccountDeleted,
    AppError,
    ServiceInitializationError,
    UpstreamUnavailable,
)
from shared.gateways.backboard import delete_quietly, get_backboard, late_landing_seconds
from shared.gateways.clerk import ClerkProfile
from shared.models import User
from shared.store import db, user_rows

logger = Logger(child=True)

ASSISTANT_SYSTEM_PROMPT = (
    "You are a friendly, practical trip-planning assistant. Help the traveller plan trips: "
    "destinations, itineraries, transport, lodging, budgets, timing and local tips. Remember "
    "their preferences (pace, interests, dietary needs, budget, who they travel with) across "
    "trips and use them. Ask a short clarifying question when a request is ambiguous, and "
    "say so when information may be out of date (prices, opening hours, entry rules)."
)


class SyncOutcome(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    IGNORED_STALE = "ignored_stale"  # an older event than one already applied
    IGNORED_DELETED = "ignored_deleted"  # the user was deleted; Clerk never reuses ids


@dataclass(frozen=True)
class Viewer:
    """The signed-in traveller, known by Clerk id. The request path's statements find their
    row themselves (one round trip); `user()` is the first-sight path: it returns the row,
    creating it and the assistant when there is none yet."""

    clerk_id: str
    email: str | None = None
    name: str | None = None
    fetch_profile: Callable[[], ClerkProfile] | None = None

    def user(self) -> User:
        return ensure_user_exists(
            self.clerk_id, self.email, self.name, fetch_profile=self.fetch_profile
        )


def ensure_user_exists(
    clerk_id: str,
    email: str | None,
    name: str | None,
    *,
    fetch_profile: Callable[[], ClerkProfile] | None = None,
) -> User:
    """The user's row, created with their Backboard assistant on first sight.

    An existing user costs one query and no Backboard call. For a new user without an email,
    `fetch_profile` (e.g. Clerk's Backend API) is asked for one. Raises
    ServiceInitializationError when the assistant cannot be created (no row is written) and
    AccountDeleted for a user erased by the Clerk webhook.
    """
    user = db.read(lambda conn: user_rows.get_user_by_clerk_id(conn, clerk_id))
    if user is not None:
        return user
    if email is None and fetch_profile is not None:
        fetched = fetch_profile()
        email, name = fetched.email, name or fetched.name
    with _locked(clerk_id) as locked:
        user = user_rows.get_user_by_clerk_id(locked.conn, clerk_id)
        if user is not None:  # another container created it while we waited for the lock
            return user
        state = user_rows.get_clerk_state(locked.conn, clerk_id)
        if state is not None and state.deleted:
            raise AccountDeleted()
        return _create_user(locked, clerk_id, ClerkProfile(email, name), state)


def apply_clerk_profile(clerk_id: str, profile: ClerkProfile, event_at: int) -> SyncOutcome:
    """Apply a user.created or user.updated event (Clerk's updated_at, in ms, as `event_at`).

    Events arrive at least once and in any order: an event older than the last one applied
    is ignored, an update for a user not created yet creates them, and a deleted user stays
    deleted. So any delivery order ends in the state of the newest event.
    """
    with _locked(clerk_id) as locked:
        conn = locked.conn
        state = user_rows.get_clerk_state(conn, clerk_id)
        if state is not None and state.deleted:
            return SyncOutcome.IGNORED_DELETED
        if state is not None and state.last_event_at >= event_at:
            return SyncOutcome.IGNORED_STALE
        user = user_rows.get_user_by_clerk_id(conn, clerk_id)
        if user is None:
            _create_user(locked, clerk_id, profile, state)
            # Only once the user exists: a failed creation must leave the event unapplied.
            user_rows.record_clerk_event(conn, clerk_id, event_at)
            return SyncOutcome.CREATED
        user_rows.record_clerk_event(conn, clerk_id, event_at)
        user_rows.update_user_profile(conn, user.id, email=profile.email or "", name=profile.name)
        return SyncOutcome.UPDATED


def erase_user(clerk_id: str) -> bool:
    """Delete the user's messages, trips and row in one transaction, children first, then
    their Backboard threads, memories and assistant. Remembers the deletion so a late
    user.created cannot bring them back. Returns False when there was nobody to erase (a
    repeat)."""
    with _locked(clerk_id) as locked:
        user_rows.mark_clerk_deleted(locked.conn, clerk_id)
        user = user_rows.get_user_by_clerk_id(locked.conn, clerk_id)
        if user is None:
            return False
        thread_ids = user_rows.delete_user_rows(locked.conn, user.id)
    # After the commit: Backboard objects of a committed erasure are deleted best effort; a
    # failure is logged with the ids so an operator can finish the job.
    for thread_id in thread_ids:
        delete_quietly("thread", thread_id)
    # Deleting the assistant deletes its memories; forgetting them first keeps that promise
    # even when the assistant's deletion fails and waits for an operator.
    delete_quietly("memories", user.assistant_id)
    delete_quietly("assistant", user.assistant_id)
    _delete_stray_assistants(clerk_id)
    logger.info("user erased", extra={"user_id": user.id, "threads": len(thread_ids)})
    return True


@dataclass
class _Locked:
    conn: db.Connection
    uncommitted_assistants: list[str]


@contextmanager
def _locked(clerk_id: str) -> Iterator[_Locked]:
    """A transaction holding the clerk id's advisory lock. Waiters wait as long as the holder
    may spend creating an assistant, then give up with a 503."""
    uncommitted: list[str] = []
    committed_failure: _CommitThenRaise | None = None
    try:
        with db.transaction() as conn:
            wait_ms = int(get_settings().backboard_timeout_seconds * 2 * 1000) + 5_000
            user_rows.lock_clerk_id(conn, clerk_id, wait_ms=wait_ms)
            try:
                yield _Locked(conn, uncommitted)
            except _CommitThenRaise as failure:
                committed_failure = failure
    except BaseException:
        # The row was inserted but the commit failed (connection lost): whether it committed
        # is unknown, so the assistant is not deleted blindly; the id is logged instead.
        for assistant_id in uncommitted:
            logger.error(
                "user insert may not have committed; check this assistant for an orphan",
                extra={"clerk_id": clerk_id, "assistant_id": assistant_id},
            )
        raise
    if committed_failure is not None:
        raise committed_failure.error from committed_failure


def replace_missing_assistant(clerk_id: str, missing_id: str) -> User:
    """Backboard no longer knows the user's assistant (deleted by hand, or a development
    stand-in that forgot it): give the user a new one, once, under their lock; a request that
    finds it replaced already takes the new one. The memory of the old one is gone with it."""
    with _locked(clerk_id) as locked:
        user = user_rows.get_user_by_clerk_id(locked.conn, clerk_id)
        if user is None:
            raise AccountDeleted()
        if user.assistant_id != missing_id:
            return user
        logger.warning(
            "the user's assistant is gone at Backboard; creating a new one",
            extra={"user_id": user.id, "assistant_id": missing_id},
        )
        assistant_id = _obtain_assistant(locked, clerk_id, None)
        locked.uncommitted_assistants.append(assistant_id)
        return user_rows.set_assistant(locked.conn, user.id, assistant_id)


def assistant_name(clerk_id: str) -> str:
    """Unique per user, so an operator can tell whose it is and we can find it again."""
    return f"Trip planner for {clerk_id}"


class _CommitThenRaise(Exception):
    """Raised inside `_locked` to commit what the transaction wrote, then raise `error`."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.code)
        self.error = error


def _create_user(
    locked: _Locked, clerk_id: str, profile: ClerkProfile, state: user_rows.ClerkState | None
) -> User:
    """Create the assistant, then the row, under the clerk id's lock. If the insert fails,
    the assistant is deleted again (compensation)."""
    assistant_id = _obtain_assistant(locked, clerk_id, state)
    try:
        with locked.conn.transaction():  # a savepoint: the insert fails alone
            user = user_rows.insert_user(
                locked.conn,
                clerk_id=clerk_id,
                assistant_id=assistant_id,
                email=profile.email or "",
                name=profile.name,
            )
    except BaseException:
        delete_quietly("assistant", assistant_id)
        raise
    locked.uncommitted_assistants.append(assistant_id)
    logger.info("user created", extra={"user_id": user.id, "assistant_id": assistant_id})
    return user


def _obtain_assistant(locked: _Locked, clerk_id: str, state: user_rows.ClerkState | None) -> str:
    """A new assistant for the user, under their lock. An earlier attempt may have timed out
    on our side after Backboard created the assistant; such an assistant carries this user's
    name, so it is adopted instead of orphaned."""
    backboard = get_backboard()
    try:
        existing = backboard.find_assistants(assistant_name(clerk_id))
    except AppError as exc:
        raise _initialization_failed(locked, clerk_id, exc) from exc
    if existing:
        assistant_id = existing[0]
        logger.info(
            "adopting an assistant from an earlier attempt", extra={"assistant_id": assistant_id}
        )
        for extra in existing[1:]:
            delete_quietly("assistant", extra)
    elif state is not None and state.assistant_wait_seconds > 0:
        # An earlier creation timed out moments ago and may still land: asking for another
        # now could leave this user with two.
        logger.info("waiting for a late assistant", extra={"clerk_id": clerk_id})
        raise ServiceInitializationError(retry_after=state.assistant_wait_seconds)
    else:
        try:
            assistant_id = backboard.create_assistant(
                name=assistant_name(clerk_id),
                description=f"Trip-planning assistant of Clerk user {clerk_id} (tripchat)",
                system_prompt=ASSISTANT_SYSTEM_PROMPT,
            )
        except AppError as exc:
            raise _initialization_failed(locked, clerk_id, exc) from exc
    return assistant_id


def _initialization_failed(locked: _Locked, clerk_id: str, exc: AppError) -> Exception:
    """What to raise when Backboard failed us. After a timeout it may still create the
    assistant: no other is requested for a while, and that must be committed."""
    retryable = isinstance(exc, UpstreamUnavailable)
    logger.warning(
        "assistant creation failed",
        extra={"clerk_id": clerk_id, "error": exc.code, "retryable": retryable},
    )
    if not isinstance(exc, UpstreamUnavailable):
        return ServiceInitializationError(retryable=False)
    if not exc.unanswered:
        return ServiceInitializationError(retry_after=exc.retry_after or 5)
    seconds = late_landing_seconds()
    user_rows.wait_for_late_assistant(locked.conn, clerk_id, seconds=seconds)
    return _CommitThenRaise(ServiceInitializationError(retry_after=math.ceil(seconds)))


def _delete_stray_assistants(clerk_id: str) -> None:
    """Assistants of this user that no row points at (a creation that timed out on our side
    but landed at Backboard): erasure leaves none behind."""
    try:
        strays = get_backboard().find_assistants(assistant_name(clerk_id))
    except AppError as exc:
        logger.warning("could not look for stray assistants", extra={"error": exc.code})
        return
    for assistant_id in strays:
        delete_quietly("assistant", assistant_id)
