"""The traveller's own account: their profile with counts, and what their assistant remembers
of them (Backboard memory), which they may read and erase, one memory or all.

Memories live at Backboard, on the user's assistant; only the user's own assistant is ever
asked. A user whose assistant Backboard no longer knows has no memories (it is not recreated
to be read). Backboard pages memories by page number, which shifts under deletions; pages here
are keyset pages over the whole list, newest first, so deleting while paging skips nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from aws_lambda_powertools import Logger

from shared.domain.users import Viewer
from shared.errors import AppError, BackboardObjectMissing, NotFound
from shared.gateways.backboard import Memory, UnsafeId, get_backboard
from shared.models import User
from shared.store import db, user_rows
from shared.store.common import Keyset

logger = Logger(child=True)
T = TypeVar("T")

# Where a memory without a creation time sorts (last, as the oldest).
_UNDATED = datetime(1970, 1, 1, tzinfo=UTC)


class MemoryNotFound(NotFound):
    code = "memory_not_found"
    default_message = "No such memory."


@dataclass(frozen=True)
class Profile:
    user: User
    trips: int
    messages: int
    memories: int | None  # None: the assistant service could not be asked just now


def profile(viewer: Viewer) -> Profile:
    """The user's row and counts (one statement for a known user, provisioned on first sight)
    and how many memories their assistant holds. Backboard failing does not fail the profile:
    the memory count is then None."""
    found = db.read(lambda conn: user_rows.get_user_totals(conn, viewer.clerk_id))
    totals = found or user_rows.UserTotals(viewer.user(), 0, 0)
    try:
        memories: int | None = _unless_gone(
            lambda: get_backboard().memory_count(totals.user.assistant_id), 0
        )
    except AppError as exc:
        logger.warning("memory count unavailable", extra={"error": exc.code})
        memories = None
    return Profile(totals.user, totals.trips, totals.messages, memories)


@dataclass(frozen=True)
class MemoryWindow:
    memories: list[Memory]  # newest first
    more: bool  # older memories follow the last one


def memory_position(memory: Memory) -> Keyset:
    """A memory's place in the newest-first order: (created, id)."""
    return memory.created_at or _UNDATED, memory.id


def list_memories(viewer: Viewer, *, limit: int, after: Keyset | None) -> MemoryWindow:
    """What the assistant remembers, newest first, `limit` at a time after the position
    `after` (the last memory of the previous window)."""
    ordered = sorted(_memories(viewer.user()), key=memory_position, reverse=True)
    if after is not None:
        ordered = [m for m in ordered if memory_position(m) < after]
    return MemoryWindow(ordered[:limit], len(ordered) > limit)


def forget_memory(viewer: Viewer, memory_id: str) -> None:
    """Delete one of the user's memories; MemoryNotFound (404) for any id that is not one of
    them, someone else's included. Membership is checked in the user's own list before the
    delete, so no other assistant's memory can be reached whatever Backboard does with ids."""
    user = viewer.user()
    if memory_id not in {m.id for m in _memories(user)}:
        raise MemoryNotFound()
    try:
        deleted = _unless_gone(
            lambda: get_backboard().delete_memory(user.assistant_id, memory_id), False
        )
    except UnsafeId as exc:
        raise MemoryNotFound() from exc
    if not deleted:  # deleted meanwhile (another request), or the assistant is gone
        raise MemoryNotFound()
    logger.info("memory deleted", extra={"user_id": user.id, "memory_id": memory_id})


def forget_all_memories(viewer: Viewer) -> None:
    """Delete everything the user's assistant remembers (nothing to do is success)."""
    user = viewer.user()
    get_backboard().delete_memories(user.assistant_id)
    logger.info("memories deleted", extra={"user_id": user.id})


def _memories(user: User) -> list[Memory]:
    return _unless_gone(lambda: get_backboard().list_memories(user.assistant_id), [])


def _unless_gone(call: Callable[[], T], gone: T) -> T:
    """The call's result, or `gone` when Backboard no longer knows the user's assistant: it
    remembers nothing, and is not recreated just to be read."""
    try:
        return call()
    except BackboardObjectMissing:
        return gone
