"""Automatic trip titles: a trip still called "New Trip" is named after its first exchange.

The title is asked of the user's assistant alongside the first reply (from the traveller's
first message, memory off, in a throwaway thread), so the send does not wait for one call after
the other: once the reply is stored, the send waits at most AUTO_TITLE_WAIT_SECONDS more for the
title. Nothing runs after the response (Lambda freezes the container then). A title the
traveller chose, at creation or by renaming, is never replaced, also when the rename races the
titling (the compare-and-set in trip_rows.set_automatic_title). A failure leaves the default
title and is logged without the conversation's contents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from shared.config import get_settings
from shared.errors import AppError, UpstreamUnavailable
from shared.gateways.backboard import Pending, get_backboard, late_landing_seconds
from shared.store import db, trip_rows

logger = Logger(child=True)

TITLE_MAX = 60
# The titling call sees the start of the first message only: enough to name a trip.
SOURCE_MAX = 2_000
INSTRUCTIONS = (
    "You name trip-planning conversations. Reply with a title for the trip the traveller's "
    "message is about: at most six words and 60 characters, such as the destination and what "
    "the trip is for. Reply with the title only: no quotes, no final punctuation, no preamble."
)
# Wrappings models put around a bare answer.
_QUOTES = "\"'`*_#\u201c\u201d\u2018\u2019\u00ab\u00bb"


@dataclass(frozen=True)
class Titling:
    """A title asked for, while the trip's first reply is on its way."""

    trip_id: str
    user_id: str
    pending: Pending[str]


@contextlib.contextmanager
def alongside(
    trip_id: str, user_id: str, assistant_id: str | None, first_message: str
) -> Iterator[None]:
    """Around asking for the trip's first reply and storing it: with `assistant_id` (the trip
    wants its title), the title is asked for on entry and set on a clean exit; an exception
    abandons it and goes on. Without, nothing happens."""
    titling = begin(trip_id, user_id, assistant_id, first_message) if assistant_id else None
    try:
        yield
    except BaseException:
        if titling is not None:
            abandon(titling)
        raise
    if titling is not None:
        finish(titling)


def begin(trip_id: str, user_id: str, assistant_id: str, first_message: str) -> Titling | None:
    """Ask for the trip's title now, without waiting for it; None when it cannot be asked."""
    try:
        pending = get_backboard().start_aside(
            assistant_id, first_message[:SOURCE_MAX], INSTRUCTIONS
        )
    except AppError as exc:
        logger.warning("automatic title not asked", extra={"trip_id": trip_id, "error": exc.code})
        return None
    return Titling(trip_id, user_id, pending)


def finish(titling: Titling) -> str | None:
    """Once the reply is stored: wait briefly for the title and give it to the trip unless the
    traveller chose one. The title set, or None. Never raises: the send has succeeded."""
    extra = {"trip_id": titling.trip_id}
    try:
        answer = titling.pending.result(get_settings().auto_title_wait_seconds)
    except AppError as exc:
        logger.warning("automatic title failed", extra={**extra, "error": exc.code})
        if isinstance(exc, UpstreamUnavailable) and exc.unanswered:
            _thread_may_remain(titling)
        return None
    title = clean_title(answer)
    if title is None:
        logger.warning("automatic title unusable", extra=extra)
        return None
    try:
        with db.pipeline() as conn:
            applied = trip_rows.set_automatic_title(conn, titling.trip_id, title)
    except AppError as exc:
        logger.warning("automatic title not stored", extra={**extra, "error": exc.code})
        return None
    logger.info("automatic title" if applied else "automatic title not needed", extra=extra)
    return title if applied else None


def abandon(titling: Titling) -> None:
    """The reply failed: the title is not wanted yet (the next first reply asks again)."""
    if titling.pending.cancel():
        _thread_may_remain(titling)


def clean_title(answer: str) -> str | None:
    """The model's answer as a title: its first non-empty line, unquoted, whitespace folded,
    no "Title:" label or final punctuation, at most TITLE_MAX characters (cut at a word);
    None when nothing usable is left."""
    line = next((line for line in answer.splitlines() if line.strip()), "")
    title = " ".join(line.split()).strip(_QUOTES + " ")
    if title.lower().startswith("title:"):
        title = title[len("title:") :].strip(_QUOTES + " ")
    title = title.rstrip(".,;:!?").strip(_QUOTES + " ")
    if len(title) > TITLE_MAX:
        head = title[:TITLE_MAX]
        if title[TITLE_MAX] != " ":  # mid-word: end at the last whole word, if not too short
            whole = head.rsplit(" ", 1)[0]
            head = whole if len(whole) >= TITLE_MAX // 2 else head
        title = head.rstrip(" ,;:-")
    # isprintable() refuses control characters, NUL and lone surrogates: nothing PostgreSQL
    # or a browser should get as a title.
    return title if title and title.isprintable() else None


def _thread_may_remain(titling: Titling) -> None:
    """The titling call was cut short, so Backboard may still create its thread: have the
    user's next new trip look for threads no trip knows (trips.create_trip deletes them)."""
    with contextlib.suppress(AppError), db.connection() as conn:
        trip_rows.mark_threads_unsure(conn, titling.user_id, after_seconds=late_landing_seconds())
