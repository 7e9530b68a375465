"""The connection pool, and the one way statements reach PostgreSQL.

One pool per container (the seed's Prisma client singleton), created on first use and reused
by warm invocations. Lambda runs one request at a time per container, so the pool holds one
connection by default (DB_POOL_MAX_SIZE): hundreds of containers stay within what PostgreSQL,
or the pooler in front of it, accepts.

Pooler-safe by construction (DESIGN.md, decision 9): DATABASE_URL may be a PgBouncer in
transaction mode, RDS Proxy, or a Neon / Supabase / Vercel pooled URL.
- No startup `options`: the statement timeout and the UTC time zone are set with
  `set_config(..., is_local => true)` in front of each unit of work, so they last exactly one
  transaction and never reach the next client of a shared server connection.
- An autocommit statement goes out as one pipeline, [settings, statement, Sync]: one round
  trip, run as one implicit transaction. Explicit transactions send the settings after BEGIN.
- Prepared statements only with DB_PREPARED_STATEMENTS=true (PgBouncer before 1.21 and RDS
  Proxy break or pin on them); locks are transaction-scoped, never session-scoped.

Round trips are the unit of cost (decision 10): a checkout does not ping. A connection is
checked only when it sat idle longer than DB_IDLE_CHECK_SECONDS or its socket shows that the
server hung up, and a read that still meets a dead connection runs once more on a fresh one.
"""

from __future__ import annotations

import atexit
import select
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, LiteralString, Self, TypeVar

import psycopg
from aws_lambda_powertools import Logger
from psycopg.abc import Params, QueryNoTemplate
from psycopg.pq import PipelineStatus, TransactionStatus
from psycopg.rows import Row
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.config import database_url, get_settings
from shared.container import PerContainer
from shared.errors import Conflict, DatabaseUnavailable

logger = Logger(child=True)

Connection = psycopg.Connection[Any]
T = TypeVar("T")

# Transaction-local (is_local => true): gone when the unit of work's transaction ends.
SESSION_SETTINGS: LiteralString = (
    "SELECT set_config('statement_timeout', %s, true), set_config('TimeZone', 'UTC', true)"
)


def send_settings(conn: Connection) -> None:
    """The statement timeout and UTC for the current transaction (or pipeline)."""
    timeout = f"{get_settings().db_statement_timeout_ms}ms"
    psycopg.Cursor(conn).execute(SESSION_SETTINGS, (timeout,))


class SettingsCursor(psycopg.Cursor[Row]):
    """Every autocommit statement runs with the request settings, in one round trip.

    Outside a transaction, the settings and the statement are pipelined and end in one Sync:
    PostgreSQL runs them as one implicit transaction, so the settings apply to the statement
    and vanish with it. Inside a transaction or a pipeline the caller has sent them already."""

    # Only the plain-query form: this project writes no t-string (Template) queries.
    def execute(  # type: ignore[override]
        self,
        query: QueryNoTemplate,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        conn = self.connection
        if (
            conn.autocommit
            and conn.info.transaction_status == TransactionStatus.IDLE
            and conn.info.pipeline_status == PipelineStatus.OFF
        ):
            with conn.pipeline():
                send_settings(conn)
                super().execute(query, params, prepare=prepare, binary=binary)
            return self
        super().execute(query, params, prepare=prepare, binary=binary)
        return self


def connection_kwargs() -> dict[str, Any]:
    """How every connection is opened: nothing a transaction-mode pooler would refuse."""
    settings = get_settings()
    return {
        "autocommit": True,
        "connect_timeout": max(1, round(settings.db_connect_timeout_seconds)),
        "application_name": "tripchat",
        "cursor_factory": SettingsCursor,
        # None: never prepare server-side (psycopg's default prepares after 5 executions).
        "prepare_threshold": 5 if settings.db_prepared_statements else None,
    }


# When each pooled connection was last handed back (or opened): the idle check reads it.
_returned_at: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()


def _stamp(conn: Connection) -> None:
    _returned_at[conn] = time.monotonic()


def _server_hung_up(conn: Connection) -> bool:
    """An idle connection has nothing to read unless the server closed it or sent a FATAL
    (restart, idle kill, failover): a look at the socket that costs no round trip."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def _check(conn: Connection) -> None:
    idle_for = time.monotonic() - _returned_at.get(conn, 0.0)
    if idle_for > get_settings().db_idle_check_seconds or _server_hung_up(conn):
        # Raises on a dead connection: the pool discards it and hands out another.
        psycopg.Cursor(conn).execute("")


def _open_pool() -> ConnectionPool[Connection]:
    settings = get_settings()
    pool: ConnectionPool[Connection] = ConnectionPool(
        conninfo=database_url(),
        kwargs=connection_kwargs(),
        min_size=1,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_connect_timeout_seconds,
        configure=_stamp,
        # No `reset=`: with one, the pool hands every returned connection to its worker
        # thread, and the next checkout waits for that thread. _checkout stamps returns.
        check=_check,
        name="tripchat",
        open=False,
    )
    pool.open(wait=False)
    return pool


# Opened on first use, never at import: a cold start that cannot reach the database must
# fail the request with a clear 503, not the module import.
_pool: PerContainer[ConnectionPool[Connection]] = PerContainer(
    _open_pool, close=lambda pool: pool.close(timeout=1)
)


def get_pool() -> ConnectionPool[Connection]:
    """The container's pool."""
    return _pool.get()


def close_pool() -> None:
    """Close the pool (tests, and the local server on shutdown)."""
    _pool.reset()


# A process that ends with the pool open (a CLI, a local worker, a test's child process) would
# otherwise leave it to the pool's finalizer, which on Python 3.13 cannot stop the pool's
# threads during interpreter shutdown and waits 5 s for each (20 s per exit, measured). Lambda
# never gets here: its processes are frozen, then killed.
atexit.register(close_pool)


# The connection the current unit of work holds: nested units share it, so a pool of one
# never waits on itself.
_held: ContextVar[Connection | None] = ContextVar("tripchat_connection", default=None)


@contextmanager
def connection() -> Iterator[Connection]:
    """A pooled autocommit connection for one unit of work, returned when the block ends (so
    none is held while Backboard answers). Lost connections become 503s."""
    held = _held.get()
    if held is not None:
        yield held
        return
    with _translated(), _hold() as conn:
        yield conn


def read(work: Callable[[Connection], T]) -> T:
    """Run a read-only unit of work; one that meets a dead connection (the server restarted
    since the last check) runs once more on a fresh connection, which a read can afford."""
    held = _held.get()
    if held is not None:
        return work(held)
    with _translated():
        try:
            return _run(work)
        except _ConnectionLost:
            logger.info("database connection lost; retrying the read once")
        return _run(work)


class _ConnectionLost(psycopg.OperationalError):
    pass


def _run(work: Callable[[Connection], T]) -> T:
    with _hold() as conn:
        try:
            return work(conn)
        except psycopg.OperationalError as exc:
            if conn.broken:
                raise _ConnectionLost(str(exc)) from exc
            raise


@contextmanager
def _hold() -> Iterator[Connection]:
    """A connection checked out for one unit of work, which nested units then share."""
    with _checkout() as conn:
        token = _held.set(conn)
        try:
            yield conn
        finally:
            _held.reset(token)


@contextmanager
def transaction() -> Iterator[Connection]:
    """A connection inside one transaction with the request settings: committed when the
    block ends, rolled back when it raises, so multi-statement writes are all-or-nothing."""
    with connection() as conn, conn.transaction():
        send_settings(conn)
        yield conn


@contextmanager
def pipeline() -> Iterator[Connection]:
    """A connection whose statements in the block are pipelined with the request settings and
    end in one Sync: PostgreSQL runs them as one implicit transaction (locks held to the end,
    all rolled back on an error), and they cost one round trip, plus one where a result is
    read inside the block."""
    with connection() as conn, conn.pipeline():
        send_settings(conn)
        yield conn


# Only the races the code expects are conflicts a client should retry; any other constraint
# violation is a bug and must surface as one.
RETRYABLE_CONSTRAINTS = frozenset({"Message_sessionId_fkey", "Session_userId_fkey"})


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        logger.warning("statement timed out", extra={"error": type(exc).__name__})
        raise DatabaseUnavailable() from exc
    except psycopg.OperationalError as exc:
        logger.warning("database operational error", extra={"error": type(exc).__name__})
        raise DatabaseUnavailable() from exc
    except psycopg.IntegrityError as exc:
        constraint = exc.diag.constraint_name
        if constraint not in RETRYABLE_CONSTRAINTS:
            raise
        # A row this request relies on went away meanwhile (its trip was deleted while the
        # assistant was answering): the constraints held; tell the client to re-read.
        logger.info("integrity conflict", extra={"constraint": constraint})
        raise Conflict("The data changed while the request ran; reload and retry.") from exc


@contextmanager
def _checkout() -> Iterator[Connection]:
    pool = get_pool()
    try:
        with pool.connection() as conn:
            try:
                yield conn
            finally:
                _stamp(conn)  # handed back now: the idle check counts from here
    except PoolTimeout as exc:
        logger.warning("database pool timeout", extra={"error": str(exc)})
        if pool.pop_stats().get("connections_errors", 0):
            # Connections are failing: the server is down or refusing. The pool's own
            # reconnection backs off for minutes, so start afresh on the next request
            # instead, which recovers as soon as the server is back.
            _pool.reset(only=pool)
        raise DatabaseUnavailable() from exc
