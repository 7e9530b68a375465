"""Trips ("sessions"): each is one Backboard thread under the user's assistant."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from shared import db, queries
from shared.backboard import delete_quietly, get_backboard
from shared.errors import NotFound
from shared.models import Session, TripOut, TripPage, User
from shared.pagination import decode_cursor, encode_cursor

logger = Logger(child=True)


class TripNotFound(NotFound):
    code = "session_not_found"
    default_message = "No such trip."


def list_trips(user: User, *, limit: int, cursor: str | None) -> TripPage:
    """The user's trips, newest first, `limit` at a time."""
    after = decode_cursor(cursor) if cursor else None
    with db.connection() as conn:
        rows = queries.list_sessions_for_user(conn, user.id, limit=limit + 1, after=after)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return TripPage(sessions=[TripOut.of(s) for s in page], next_cursor=next_cursor)


def create_trip(user: User, title: str | None) -> Session:
    """A Backboard thread first, then the row; no row when Backboard fails (502/503), and the
    thread is deleted again when the row cannot be written."""
    thread_id = get_backboard().create_thread(user.assistant_id)
    try:
        with db.connection() as conn:
            session = queries.insert_session(
                conn, user_id=user.id, thread_id=thread_id, title=title
            )
    except BaseException:
        delete_quietly("thread", thread_id)
        raise
    logger.info("trip created", extra={"session_id": session.id})
    return session


def get_trip(user: User, trip_id: str) -> Session:
    with db.connection() as conn:
        session = queries.get_session_for_user(conn, trip_id, user.id)
    if session is None:
        raise TripNotFound()
    return session


def rename_trip(user: User, trip_id: str, title: str) -> Session:
    with db.connection() as conn:
        session = queries.rename_session(conn, trip_id, user.id, title)
    if session is None:
        raise TripNotFound()
    return session


def delete_trip(user: User, trip_id: str) -> None:
    """Messages and trip in one transaction (no cascades), then the thread, best effort."""
    with db.transaction() as conn:
        thread_id = queries.delete_session_rows(conn, trip_id, user.id)
    if thread_id is None:
        raise TripNotFound()
    delete_quietly("thread", thread_id)
    logger.info("trip deleted", extra={"session_id": trip_id})
