"""Export: a trip's whole conversation, to take out of the app, a window at a time.

A window holds the trip, how many messages it has, and the messages after a position, as many
as fit in a byte budget of content: the edge (shared.http.exports) renders them and sizes each
response to what Lambda can return, so a trip of any length leaves in consecutive parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.trips import not_found
from shared.domain.users import Viewer
from shared.models import Message, Trip
from shared.store import db, message_rows
from shared.store.common import Keyset


@dataclass(frozen=True)
class ExportWindow:
    trip: Trip
    message_count: int  # in the whole trip
    offset: int  # messages before this window
    messages: list[Message]  # in conversation order


def export_window(
    viewer: Viewer, trip_id: str, *, after: Keyset | None, max_bytes: int, max_messages: int
) -> ExportWindow:
    """The trip's messages after `after`, as many as fit in `max_bytes` of content plus the
    one that crosses it (at most `max_messages`): one statement for a known user. Someone
    else's trip is a 404, as everywhere."""
    found = db.read(
        lambda conn: message_rows.export_rows_of(
            conn, viewer.clerk_id, trip_id, after=after, max_bytes=max_bytes, max_rows=max_messages
        )
    )
    if found.trip is None:
        not_found(viewer)
    return ExportWindow(found.trip, found.message_count, found.offset, found.messages)
