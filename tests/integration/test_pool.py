"""The pool singleton: one per process, bounded, self-healing after PostgreSQL drops it."""

from __future__ import annotations

import time

import psycopg
import pytest

from shared import config
from shared.errors import DatabaseUnavailable
from shared.store import db
from tests.conftest import VIA_POOLER

Conn = psycopg.Connection[tuple[object, ...]]


def _invocation() -> int:
    """What a warm invocation does with the database: borrow, query, give back."""
    with db.connection() as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(str(row[0]))


def _server_connections(admin_conn: Conn, database_url: str) -> int:
    row = admin_conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        (database_url.rsplit("/", 1)[1], "tripchat"),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_the_pool_is_created_once_and_reused(clean_db: str) -> None:
    first = db.get_pool()
    for _ in range(50):
        assert _invocation() == 1
        assert db.get_pool() is first


def test_connections_stay_within_max_size_over_1000_invocations(
    clean_db: str, admin_conn: Conn
) -> None:
    peak = 0
    for i in range(1000):
        _invocation()
        if i % 50 == 0:
            peak = max(peak, _server_connections(admin_conn, clean_db))
    peak = max(peak, _server_connections(admin_conn, clean_db))
    assert 1 <= peak <= config.get_settings().db_pool_max_size


def test_max_size_is_settable(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "1")
    config.reset_caches()
    db.close_pool()
    assert db.get_pool().max_size == 1
    assert _invocation() == 1


def test_pool_recovers_after_its_connections_are_terminated(
    clean_db: str, admin_conn: Conn
) -> None:
    assert _invocation() == 1
    pool_before = db.get_pool()
    killed = admin_conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = 'tripchat'",
        (clean_db.rsplit("/", 1)[1],),
    ).fetchone()
    assert killed is not None and int(str(killed[0])) >= 1
    time.sleep(0.2)  # let the terminations land
    for _ in range(5):  # every invocation after the kill succeeds, with the same pool
        assert _invocation() == 1
    assert db.get_pool() is pool_before


def test_statement_timeout_is_enforced(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "200")
    config.reset_caches()
    db.close_pool()
    with pytest.raises(DatabaseUnavailable), db.connection() as conn:
        conn.execute("SELECT pg_sleep(2)")
    assert _invocation() == 1  # the pool is still usable afterwards


def test_unreachable_database_fails_fast_with_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "1")
    config.reset_caches()
    db.close_pool()
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            _invocation()
        assert caught.value.status == 503 and caught.value.retry_after
    finally:
        db.close_pool()
        config.reset_caches()


def test_timestamps_are_utc_regardless_of_server_time_zone(clean_db: str, admin_conn: Conn) -> None:
    admin_conn.execute(
        f"ALTER DATABASE \"{clean_db.rsplit('/', 1)[1]}\" SET TimeZone = 'Asia/Tokyo'"
    )
    try:
        db.close_pool()
        with db.connection() as conn:
            row = conn.execute("SHOW TimeZone").fetchone()
        assert row == ("UTC",)
    finally:
        admin_conn.execute(f'ALTER DATABASE "{clean_db.rsplit("/", 1)[1]}" RESET TimeZone')


def test_request_settings_end_with_their_statement(clean_db: str) -> None:
    """Pooler-safe: the timeout and time zone are transaction-local, so nothing is left on a
    server connection that a pooler would hand to the next client."""
    with db.connection() as conn:
        inside = conn.execute(
            "SELECT current_setting('statement_timeout')::interval = %s * interval '1 ms'",
            (config.get_settings().db_statement_timeout_ms,),
        ).fetchone()
        # A plain cursor sends no settings: it sees what the server connection has left.
        after = psycopg.Cursor(conn).execute("SHOW statement_timeout").fetchone()
    assert inside == (True,)
    assert after == ("0",)


def test_no_prepared_statements_unless_enabled(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = "SELECT count(*) FROM pg_prepared_statements"
    with db.connection() as conn:
        counts = [conn.execute(query).fetchone() for _ in range(10)]
    assert counts[-1] == (0,)
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "true")
    config.reset_caches()
    db.close_pool()
    if VIA_POOLER:
        return  # PgBouncer 1.18 cannot carry them: only the direct run can show them
    with db.connection() as conn:
        counts = [conn.execute(query).fetchone() for _ in range(10)]
    assert counts[-1] is not None and int(str(counts[-1][0])) >= 1
