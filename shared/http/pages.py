"""Pages as the API returns them: the domain's windows of trips, messages and search hits, with
opaque cursors (shared.http.cursors) where the domain speaks of keyset positions."""

from __future__ import annotations

import html

from shared.domain.account import MemoryWindow, memory_position
from shared.domain.chat import MessageWindow
from shared.domain.search import SearchWindow
from shared.domain.trips import TripWindow
from shared.errors import ValidationFailed
from shared.http.cursors import (
    decode_cursor,
    decode_search_cursor,
    encode_cursor,
    encode_search_cursor,
)
from shared.models import (
    MemoryOut,
    MemoryPage,
    MessagePage,
    PendingReplyOut,
    SearchHitOut,
    SearchPage,
    TripOut,
    TripPage,
    TripRef,
)
from shared.store.common import Keyset
from shared.store.search_rows import MARK_END, MARK_START, SearchKeyset


def trip_page(window: TripWindow) -> TripPage:
    last = window.trips[-1] if window.trips and window.more else None
    return TripPage(
        sessions=[TripOut.of(trip) for trip in window.trips],
        next_cursor=encode_cursor(last.created_at, last.id) if last else None,
    )


def message_positions(before: str | None, after: str | None) -> tuple[Keyset | None, Keyset | None]:
    """The (before, after) positions the query's cursors name; at most one of them."""
    if before and after:
        raise ValidationFailed("Use either before or after, not both.")
    return (
        decode_cursor(before, name="before") if before else None,
        decode_cursor(after, name="after") if after else None,
    )


def message_page(window: MessageWindow) -> MessagePage:
    messages = window.messages
    first, last = (messages[0], messages[-1]) if messages else (None, None)
    return MessagePage(
        # Each Message is a MessageOut (see shared.models.Message): taken as it is.
        messages=messages,
        older_cursor=encode_cursor(first.created_at, first.id) if first and window.older else None,
        newer_cursor=encode_cursor(last.created_at, last.id) if last else None,
        pending_replies=[
            PendingReplyOut.model_validate(p, from_attributes=True) for p in window.pending
        ],
    )


def memory_page(window: MemoryWindow) -> MemoryPage:
    last = window.memories[-1] if window.memories and window.more else None
    return MemoryPage(
        memories=[
            MemoryOut(id=m.id, content=m.content, created_at=m.created_at, updated_at=m.updated_at)
            for m in window.memories
        ],
        next_cursor=encode_cursor(*memory_position(last)) if last else None,
    )


def search_position(cursor: str | None, query: str) -> SearchKeyset | None:
    return decode_search_cursor(cursor, query) if cursor else None


def search_page(window: SearchWindow, query: str) -> SearchPage:
    last = window.hits[-1] if window.hits and window.more else None
    return SearchPage(
        hits=[
            SearchHitOut(
                trip=TripRef(id=hit.trip_id, title=hit.trip_title),
                message_id=hit.message_id,
                role=hit.role,
                created_at=hit.created_at,
                snippet=highlighted(hit.snippet),
            )
            for hit in window.hits
        ],
        next_cursor=encode_search_cursor(last.position, query.strip()) if last else None,
    )


def highlighted(snippet: str) -> str:
    """A snippet as safe HTML: its text escaped, each match (between the store's marks) in
    <mark>...</mark>. The store removes marks from the text itself, so each one is a match's."""
    parts = []
    for i, piece in enumerate(snippet.split(MARK_START)):
        match, _, rest = piece.partition(MARK_END) if i else ("", "", piece)
        if match:
            parts.append(f"<mark>{html.escape(match)}</mark>")
        parts.append(html.escape(rest))
    return "".join(parts)
