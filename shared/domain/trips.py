"""Trips ("sessions"): each is one Backboard thread under the user's assistant."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from aws_lambda_powertools import Logger

from shared.config import get_settings
from shared.domain import users
from shared.domain.users import Viewer
from shared.errors import (
    AppError,
    BackboardObjectMissing,
    NotFound,
    RateLimited,
    UpstreamUnavailable,
)
from shared.gateways.backboard import delete_quietly, get_backboard, late_landing_seconds
from shared.models import Trip, User
from shared.store import db, trip_rows
from shared.store.common import Keyset

logger = Logger(child=True)


class TripNotFound(NotFound):
    code = "session_not_found"
    default_message = "No such trip."


@dataclass(frozen=True)
class TripWindow:
    trips: list[Trip]  # newest first
    more: bool  # older trips follow the last one


def list_trips(viewer: Viewer, *, limit: int, after: Keyset | None) -> TripWindow:
    """The user's trips, newest first, `limit` at a time, after the position `after` (the last
    trip of the previous window): one statement for a known user."""
    found = db.read(
        lambda conn: trip_rows.list_trips_of(conn, viewer.clerk_id, limit=limit + 1, after=after)
    )
    if found.owner_id is None:
        viewer.user()  # first sight: the row and the assistant; no trips yet
    return TripWindow(found.trips[:limit], len(found.trips) > limit)


def create_trip(viewer: Viewer, title: str | None) -> Trip:
    """A Backboard thread first, then the row; no row when Backboard fails (502/503), and the
    thread is deleted again when the row cannot be written. At most TRIP_RATE_LIMIT_PER_MINUTE
    new trips in any 60 seconds (429), counted before Backboard is asked for anything."""
    limit = get_settings().trip_rate_limit_per_minute
    with db.connection() as conn:
        slot = trip_rows.take_trip_slot(conn, viewer.clerk_id, limit=limit)
    if slot.user is None:  # first sight: the row and the assistant, then count this trip
        viewer.user()
        with db.connection() as conn:
            slot = trip_rows.take_trip_slot(conn, viewer.clerk_id, limit=limit)
    if slot.user is None or not slot.accepted:
        raise RateLimited(
            f"At most {limit} new trips in any 60 seconds.", retry_after=slot.retry_after_seconds
        )
    user = slot.user
    check_at = slot.threads_check_at
    if check_at is not None and check_at <= datetime.now(UTC):
        _delete_stray_threads(user, check_at)
    try:
        user, thread_id = new_thread(viewer, user)
    except UpstreamUnavailable:
        # Timed out (or 5xx): Backboard may still create the thread after we gave up.
        with contextlib.suppress(AppError), db.connection() as conn:
            trip_rows.mark_threads_unsure(conn, user.id, after_seconds=late_landing_seconds())
        raise
    try:
        with db.connection() as conn:
            trip = trip_rows.insert_trip(conn, user_id=user.id, thread_id=thread_id, title=title)
    except BaseException:
        delete_quietly("thread", thread_id)
        raise
    logger.info("trip created", extra={"trip_id": trip.id})
    return trip


def new_thread(viewer: Viewer, user: User) -> tuple[User, str]:
    """A new Backboard thread under the user's assistant. When Backboard no longer knows the
    assistant, the user gets a new one first (once) and the thread goes there."""
    backboard = get_backboard()
    try:
        return user, backboard.create_thread(user.assistant_id)
    except BackboardObjectMissing:
        user = users.replace_missing_assistant(viewer.clerk_id, user.assistant_id)
        return user, backboard.create_thread(user.assistant_id)


def _delete_stray_threads(user: User, check_at: datetime) -> None:
    """Threads of the user's assistant, created before `check_at`, that no trip knows: what a
    timed-out creation left behind. Best effort: a failure leaves the check for next time."""
    try:
        threads = get_backboard().list_threads(user.assistant_id)
    except AppError as exc:
        logger.warning("could not list threads to reclaim", extra={"error": exc.code})
        return
    before = [tid for tid, created in threads if created <= check_at]
    with db.connection() as conn:
        known = trip_rows.known_threads(conn, user.id, before) if before else set()
    for thread_id in before:
        if thread_id not in known:
            logger.info("deleting a thread no trip knows", extra={"thread_id": thread_id})
            delete_quietly("thread", thread_id)
    with db.connection() as conn:
        trip_rows.clear_threads_check(conn, user.id, check_at)


def get_trip(viewer: Viewer, trip_id: str) -> Trip:
    session = db.read(lambda conn: trip_rows.get_trip_of(conn, viewer.clerk_id, trip_id))
    return session or not_found(viewer)


def rename_trip(viewer: Viewer, trip_id: str, title: str) -> Trip:
    with db.connection() as conn:
        session = trip_rows.rename_trip_of(conn, viewer.clerk_id, trip_id, title)
    return session or not_found(viewer)


def delete_trip(viewer: Viewer, trip_id: str) -> None:
    """Messages and trip in one transaction (no cascades), then the thread, best effort."""
    with db.transaction() as conn:
        thread_id = trip_rows.delete_trip_rows_of(conn, viewer.clerk_id, trip_id)
    if thread_id is None:
        not_found(viewer)
    delete_quietly("thread", thread_id)
    logger.info("trip deleted", extra={"trip_id": trip_id})


def not_found(viewer: Viewer) -> NoReturn:
    """No such trip for this user. A user seen for the first time is still provisioned, as
    on every route, before the 404."""
    viewer.user()
    raise TripNotFound()
