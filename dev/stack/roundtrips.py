"""Round trips of one request, read from libpq's protocol trace of the pool's connection.

Every exchange with the server ends in a ReadyForQuery message (a simple query, or a Sync
closing a pipeline), so counting them counts round trips; an EmptyQueryResponse is a liveness
ping. The pool must hold exactly one connection (DB_POOL_MAX_SIZE=1, the default).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from psycopg.pq import Trace


@dataclass(frozen=True)
class RoundTrips:
    statements: int  # round trips that ran SQL
    pings: int  # liveness checks (empty queries)


def count_round_trips(request: Callable[[], object]) -> RoundTrips:
    from shared.store import db

    pool = db.get_pool()
    if pool.max_size != 1:
        raise RuntimeError("count_round_trips needs DB_POOL_MAX_SIZE=1")
    with tempfile.TemporaryFile(mode="w+") as trace:
        with pool.connection() as conn:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            request()
        finally:
            # The same connection object, idle in the pool again: no checkout (and no check)
            # that would show up in the trace.
            conn.pgconn.untrace()
        trace.seek(0)
        lines = trace.read().splitlines()
    cycles = sum("\tReadyForQuery" in line for line in lines)
    pings = sum("\tEmptyQueryResponse" in line for line in lines)
    return RoundTrips(statements=cycles - pings, pings=pings)
