"""The connection pool: one per container, created on first use, reused by warm invocations.

This is the Python counterpart of the seed's Prisma client singleton. Lambda runs one request
at a time per container, so the pool stays small (DB_POOL_MAX_SIZE, default 2: one for the
request, one spare for the rare nested use); hundreds of containers then stay within what
PostgreSQL (or RDS Proxy in front of it) accepts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from aws_lambda_powertools import Logger
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.config import database_url, get_settings
from shared.container import PerContainer
from shared.errors import Conflict, DatabaseUnavailable

logger = Logger(child=True)

Connection = psycopg.Connection[Any]


def connection_kwargs() -> dict[str, Any]:
    """Per-connection settings: UTC session time zone (timestamps are stored as UTC, as
    Prisma does), the statement timeout, and a bounded connect time."""
    settings = get_settings()
    return {
        "autocommit": True,
        "connect_timeout": max(1, round(settings.db_connect_timeout_seconds)),
        "application_name": "tripchat",
        "options": f"-c statement_timeout={settings.db_statement_timeout_ms} -c TimeZone=UTC",
    }


def _open_pool() -> ConnectionPool[Connection]:
    settings = get_settings()
    pool: ConnectionPool[Connection] = ConnectionPool(
        conninfo=database_url(),
        kwargs=connection_kwargs(),
        min_size=1,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_connect_timeout_seconds,
        # A connection PostgreSQL dropped (restart, failover, idle kill) is found and
        # replaced at checkout instead of failing the request that gets it.
        check=ConnectionPool.check_connection,
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


@contextmanager
def connection() -> Iterator[Connection]:
    """An autocommit connection from the pool: each statement is its own transaction, which
    keeps single-statement reads at one round trip. Lost connections become 503s.

    Inside `request_scope()` every call gets the request's one connection, checked out (and
    checked for liveness) once per request instead of once per query."""
    scope = _scope.get()
    try:
        if scope is None:
            with _checkout() as conn:
                yield conn
            return
        if scope.conn is None:
            scope.checkout = _checkout()
            scope.conn = scope.checkout.__enter__()
        yield scope.conn
    except psycopg.OperationalError as exc:
        logger.warning("database operational error", extra={"error": type(exc).__name__})
        raise DatabaseUnavailable() from exc
    except psycopg.IntegrityError as exc:
        # A row this request relies on changed meanwhile (e.g. its trip was deleted while
        # the assistant was answering): the constraints held; tell the client to re-read.
        logger.info("integrity conflict", extra={"constraint": exc.diag.constraint_name})
        raise Conflict("The data changed while the request ran; reload and retry.") from exc


@contextmanager
def _checkout() -> Iterator[Connection]:
    pool = get_pool()
    try:
        with pool.connection() as conn:
            yield conn
    except PoolTimeout as exc:
        logger.warning("database pool timeout", extra={"error": str(exc)})
        if pool.pop_stats().get("connections_errors", 0):
            # Connections are failing: the server is down or refusing. The pool's own
            # reconnection backs off for minutes, so start afresh on the next request
            # instead, which recovers as soon as the server is back.
            _pool.reset(only=pool)
        raise DatabaseUnavailable() from exc


class _Scope:
    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.checkout: AbstractContextManager[Connection] | None = None


_scope: ContextVar[_Scope | None] = ContextVar("tripchat_request_scope", default=None)


@contextmanager
def request_scope() -> Iterator[None]:
    """One pooled connection for everything a request does, returned when it ends."""
    scope = _Scope()
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)
        if scope.checkout is not None:
            # Back to the pool; a connection left broken or mid-transaction is discarded
            # or rolled back there.
            with contextlib.suppress(psycopg.Error):
                scope.checkout.__exit__(None, None, None)


@contextmanager
def transaction() -> Iterator[Connection]:
    """A connection inside one transaction: committed when the block ends, rolled back when it
    raises, so multi-statement writes are all-or-nothing."""
    with connection() as conn, conn.transaction():
        yield conn
