"""Search: the words a traveller remembers, across the titles and messages of their own trips.

Only the signed-in user's trips are searched: the statement starts from their User row, so
another user's trips and messages cannot appear, whatever the query. Results are ranked (a
matching title first, then messages by relevance, newest first among equals) and come a
window at a time, after a keyset position in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.users import Viewer
from shared.errors import ValidationFailed
from shared.store import db, search_rows
from shared.store.search_rows import Hit, SearchKeyset


@dataclass(frozen=True)
class SearchWindow:
    hits: list[Hit]  # best first
    more: bool  # more hits follow the last one


def search(viewer: Viewer, text: str, *, limit: int, after: SearchKeyset | None) -> SearchWindow:
    """The user's best `limit` hits for `text` (websearch syntax: "a phrase", or, -word;
    validated as models.SearchText) after the position `after`: one statement for a known
    user. A query with no searchable words (only stop words such as "the", or punctuation) is
    a 422: it could match nothing."""
    found = db.read(
        lambda conn: search_rows.search_trips_of(
            conn, viewer.clerk_id, text, limit=limit + 1, after=after
        )
    )
    if not found.searchable:
        raise ValidationFailed(
            "q has no words to search for (only common words such as 'the', or punctuation)."
        )
    if found.owner_id is None:
        viewer.user()  # first sight: the row and the assistant; nothing to find yet
    return SearchWindow(found.hits[:limit], len(found.hits) > limit)
