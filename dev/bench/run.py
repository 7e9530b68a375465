"""`make bench`: performance figures, each a ratio or a count measured side by side in one run.

B1 handler cost: warm handler invocations vs the same statements run directly on the pool, and
   vs the same request in the shape before (a ping and a user lookup first: a read took three
   round trips), on loopback and through
   a proxy adding --delay-ms each way (default 0.5 ms: a ~1 ms round trip, as in AWS).
B2 round trips: libpq protocol trace of one request per route (statements and pings).
B3 scale: a 50-message page and a search for a selective term at small vs large Message
   tables (1,000 vs 1,000,000 rows); the trip list at 10 vs 10,000.
B4 cold start on python3.13 from the deployment artifact (the same recipe, this machine's wheels):
   importing each function vs only Powertools' Logger and psycopg, and the first request's setup;
   and the floor: the libraries DESIGN.md requires (validating resolver, PyJWT, ...) alone.
B5 concurrency: K processes, each a warm container with its own pool, against one database.
B6 streaming: through the stream function (uvicorn, the real SDK streaming from the stand-in),
   the time from the stand-in sending a piece to our text-delta carrying it reaching the client
   (the first piece, and every piece), and the first text-delta against the whole reply.

Runs on a throwaway database on the local PostgreSQL and the Backboard stand-in (no added
latency); writes build/bench/results.json and results.md. `--smoke` makes it tiny (CI).
Machines here are noisy: read the ratios and medians, not single timings.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "bench"


@dataclass(frozen=True)
class Scale:
    samples: int
    warmup: int
    messages_small: int
    messages_large: int
    trips_large: int
    cold_runs: int
    workers: int
    requests_per_worker: int


FULL = Scale(400, 50, 1_000, 1_000_000, 10_000, 9, 4, 150)
SMOKE = Scale(20, 5, 200, 2_000, 200, 1, 2, 10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def timed(fn: Callable[[], object], samples: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    result = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        result.append((time.perf_counter() - started) * 1000)
    return result


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p95_ms": round(percentile(values, 95), 3),
        "p99_ms": round(percentile(values, 99), 3),
    }


class Bench:
    """The environment: database, stand-in, token, and a user with trips and messages."""

    def __init__(self, scale: Scale) -> None:
        from dev.stack.backboard_standin import BackboardStandIn
        from dev.stack.token_issuer import LocalIssuer
        from dev.tools.databases import create_database

        self.scale = scale
        self.db_name, self.url = create_database()
        self.standin = BackboardStandIn(api_key="bench-key").start()
        issuer = LocalIssuer.generate()
        os.environ.update(
            {
                "DATABASE_URL": self.url,
                "BACKBOARD_API_KEY": "bench-key",
                "BACKBOARD_BASE_URL": self.standin.base_url,
                "CLERK_ISSUER": issuer.issuer,
                "CLERK_JWT_KEY": issuer.public_pem(),
                "MESSAGE_RATE_LIMIT_PER_MINUTE": "10000",
                "TRIP_RATE_LIMIT_PER_MINUTE": "10000",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
                "POWERTOOLS_METRICS_NAMESPACE": "TripChatBench",
            }
        )
        for name in ("POSTGRES_URL", "PRISMA_DATABASE_URL", "CLERK_JWKS_URL"):
            os.environ.pop(name, None)
        self.issuer = issuer
        from shared.store import migrations

        with migrations.connect(self.url) as conn:
            migrations.apply(conn)

    def close(self) -> None:
        from dev.tools.databases import drop_database
        from shared.store.db import close_pool

        close_pool()
        self.standin.stop()
        drop_database(self.db_name)


def _client(bench: Bench, clerk_id: str) -> Any:
    from dev.stack.apiclient import Client

    return Client(bench.issuer.mint(clerk_id, email=f"{clerk_id}@example.test", name="Bench"))


def _ready_trip(bench: Bench, clerk_id: str, messages: int) -> tuple[Any, str, Any]:
    """A user with one trip holding `messages` messages (bulk-loaded), via the API."""
    from shared.store import db, user_rows

    client = _client(bench, clerk_id)
    created = client.call("POST", "/sessions", body={"title": "Bench trip"})
    assert created.status == 201, created.body
    trip = created.body["id"]
    with db.connection() as conn:
        user = user_rows.get_user_by_clerk_id(conn, clerk_id)
    # Bulk loads go through their own connection: no statement timeout for a million rows.
    with psycopg.connect(bench.url, autocommit=True) as conn:
        with conn.cursor().copy(
            'COPY "Message" ("sessionId", "role", "content", "createdAt") FROM STDIN'
        ) as copy:
            base = time.time() - messages
            for i in range(messages):
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base + i))
                copy.write_row((trip, "user" if i % 2 == 0 else "assistant", f"m{i}", stamp))
        conn.execute('ANALYZE "Message"')
    return client, trip, user


# Travel words for generated messages: ~12 of them per message, so the search index holds
# realistic lexemes, and the selective term lands in 1 message in `every`.
_VOCABULARY = (
    "day museum market train station hotel dinner lunch breakfast beach walk tour ticket castle "
    "river bridge old town square cathedral garden park view sunset wine food coffee tapas "
    "seafood bus ferry airport flight night early late morning afternoon evening booking price "
    "cheap expensive budget local guide map street shop souvenir festival music art gallery hike "
    "mountain lake island coast cliff village city district metro tram taxi bike car parking "
    "weather rain sun warm cold spring summer autumn winter"
)
WORDS = _VOCABULARY.split()
SEARCH_TERM = "ryokan"
COMMON_TERM = "hotel"

_GENERATE_MESSAGES = """
INSERT INTO "Message" ("sessionId", "role", "content", "createdAt")
SELECT (%(trips)s::text[])[1 + i %% cardinality(%(trips)s::text[])],
       CASE WHEN i %% 2 = 0 THEN 'user' ELSE 'assistant' END,
       concat_ws(' ', w[1 + (i * 31) %% n], w[1 + (i * 17 + 3) %% n], w[1 + (i * 7 + 11) %% n],
                 w[1 + (i * 13 + 5) %% n], w[1 + (i / 3) %% n], w[1 + (i * 29 + 1) %% n],
                 w[1 + (i / 11) %% n], w[1 + (i * 3 + 7) %% n], w[1 + (i / 97) %% n],
                 w[1 + (i * 101) %% n], 'm' || i,
                 CASE WHEN i %% %(every)s = 0 THEN %(term)s END),
       now() - interval '400 days' + make_interval(secs => i + %(offset)s)
FROM generate_series(1, %(count)s) i,
     (SELECT %(words)s::text[] AS w, cardinality(%(words)s::text[]) AS n) vocabulary
"""


def generate_messages(
    bench: Bench, trips: list[str], count: int, *, every: int, offset: int = 0
) -> None:
    """`count` messages spread over `trips`, generated in SQL (a million in about a minute,
    most of it the search index), then VACUUM ANALYZE: statistics, and the GIN index's pending
    entries merged, as autovacuum keeps a live table."""
    with psycopg.connect(bench.url, autocommit=True) as conn:
        conn.execute(
            _GENERATE_MESSAGES,
            {
                "trips": trips,
                "count": count,
                "every": every,
                "term": SEARCH_TERM,
                "offset": offset,
                "words": WORDS,
            },
        )
        conn.execute('VACUUM ANALYZE "Message"')


def crowd_trips(bench: Bench, users: int, trips: int) -> list[str]:
    """Other travellers' trips (rows only: the benchmark never asks Backboard about them)."""
    with psycopg.connect(bench.url, autocommit=True) as conn:
        conn.execute(
            'INSERT INTO "User" ("id", "clerkId", "assistantId", "email") '
            "SELECT 'crowd-' || u, 'user_bench_crowd_' || u, 'asst-crowd-' || u, "
            "'crowd' || u || '@example.test' FROM generate_series(1, %s) u",
            (users,),
        )
        rows = conn.execute(
            'INSERT INTO "Session" ("id", "userId", "threadId", "title") '
            "SELECT 'crowd-trip-' || t, 'crowd-' || (1 + t %% %s), 'thread-crowd-' || t, "
            "'Trip ' || t FROM generate_series(1, %s) t RETURNING id",
            (users, trips),
        ).fetchall()
    return [str(row[0]) for row in rows]


# B1 and B2

# The shape before, for comparison: a liveness ping at checkout and the user looked up by
# Clerk id came before every request's own statements (a read: three round trips).
_OLD_USER = 'SELECT "id" FROM "User" WHERE "clerkId" = %s'


def _mode_url(bench: Bench, port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{bench.db_name}"


def b1_b2(bench: Bench, delay_ms: float) -> dict[str, Any]:
    """B1 and B2 twice: on loopback, and through a proxy adding `delay_ms` each way."""
    from dev.stack import latency_proxy

    client, trip, user = _ready_trip(bench, "user_bench_b1", 200)
    b1: dict[str, Any] = {}
    b2: dict[str, Any] = {}
    with latency_proxy.spawn(("127.0.0.1", 5432), delay_ms / 1000) as port:
        modes = {
            "loopback": bench.url,
            f"+{delay_ms} ms each way": _mode_url(bench, port),
        }
        for mode, url in modes.items():
            os.environ["DATABASE_URL"] = url
            b1[mode], b2[mode] = _b1_b2_mode(bench, client, trip, user.clerk_id, url)
    os.environ["DATABASE_URL"] = bench.url
    return {"B1": b1, "B2": b2, "delay_ms_each_way": delay_ms}


def _b1_b2_mode(
    bench: Bench, client: Any, trip: str, clerk_id: str, url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    from dev.stack.roundtrips import count_round_trips
    from shared import config
    from shared.gateways.backboard import get_backboard
    from shared.store import db, message_rows, trip_rows

    config.reset_caches()
    db.close_pool()
    old = psycopg.connect(
        url, autocommit=True, options="-c statement_timeout=10000 -c TimeZone=UTC"
    )

    def send_direct() -> None:
        key = f"direct-{uuid.uuid4()}"  # unique across the modes that share the database
        with db.connection() as conn:
            start = message_rows.begin_turn(
                conn,
                clerk_id=clerk_id,
                trip_id=trip,
                idempotency_key=key,
                content="hello",
                request_sha256="0" * 64,
                rate_limit=10**6,
                lease_seconds=30,
            )
        assert isinstance(start, message_rows.Started), start
        reply = get_backboard().add_message(start.thread_id, "hello")
        with db.connection() as conn:
            message_rows.finish_turn(
                conn, user_id=start.user_id, idempotency_key=key, trip_id=trip, reply=reply
            )

    def before(handler: Callable[[], object]) -> Callable[[], object]:
        """The same request in the shape before: a liveness ping and the user looked up by
        Clerk id (two round trips, on a connection with startup options) ahead of the work
        the handler does now."""

        def run() -> object:
            old.execute("")
            assert old.execute(_OLD_USER, (clerk_id,)).fetchone() is not None
            return handler()

        return run

    routes: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "GET /sessions": (
            client.prepare("GET", "/sessions"),
            lambda: db.read(lambda c: trip_rows.list_trips_of(c, clerk_id, limit=21)),
        ),
        "GET /sessions/{id}/messages (50)": (
            client.prepare("GET", f"/sessions/{trip}/messages", query={"limit": "50"}),
            lambda: db.read(lambda c: message_rows.list_trip_messages(c, clerk_id, trip, limit=51)),
        ),
        "POST /sessions/{id}/messages": (
            client.prepare("POST", f"/sessions/{trip}/messages", body={"content": "hello"}),
            send_direct,
        ),
    }
    s = bench.scale
    b1: dict[str, Any] = {}
    try:
        for name, (handler, direct) in routes.items():
            three = before(handler)
            # Interleaved rounds, so drift on a noisy machine hits every side alike.
            times: dict[str, list[float]] = {"handler": [], "direct_sql": [], "old_shape": []}
            for _ in range(5):
                times["handler"] += timed(handler, s.samples // 5, s.warmup // 5 + 1)
                times["direct_sql"] += timed(direct, s.samples // 5, s.warmup // 5 + 1)
                times["old_shape"] += timed(three, s.samples // 5, s.warmup // 5 + 1)
            sums = {side: summary(values) for side, values in times.items()}
            b1[name] = {
                **sums,
                "ratio_handler_to_sql": round(
                    sums["handler"]["p50_ms"] / sums["direct_sql"]["p50_ms"], 2
                ),
                "ratio_handler_to_old_shape": round(
                    sums["handler"]["p50_ms"] / sums["old_shape"]["p50_ms"], 2
                ),
            }
        b2 = {}
        for name, (handler, _) in routes.items():
            counted = count_round_trips(handler)
            b2[name] = {"round_trips": counted.statements, "pings": counted.pings}
    finally:
        old.close()
        db.close_pool()
    return b1, b2


# B3


def b3(bench: Bench) -> dict[str, Any]:
    from shared.store import db

    s = bench.scale
    client, trip, _ = _ready_trip(bench, "user_bench_b3", 200)

    def page() -> object:
        return client.call("GET", f"/sessions/{trip}/messages", query={"limit": "50"})

    def older_page() -> object:
        return client.call("GET", f"/sessions/{trip}/messages", query={"limit": "50"})

    # The searching traveller: three trips, one titled with the term, and
    # `messages_small` messages of their own, the term in 1 in 200.
    searcher = _client(bench, "user_bench_search")
    own = [
        searcher.call("POST", "/sessions", body={"title": title}).body["id"]
        for title in (f"Kyoto {SEARCH_TERM} week", "Lisbon", "Porto")
    ]
    generate_messages(bench, own, s.messages_small, every=200)

    def search(term: str = SEARCH_TERM) -> Any:
        reply = searcher.call("GET", "/search", query={"q": term, "limit": "20"})
        assert reply.status == 200, reply.body
        return reply

    def common() -> object:  # in about 1 message in 8, everyone's: not selective
        return search(COMMON_TERM)

    rows_small = _count_messages(bench)
    small_page = summary(timed(page, s.samples, s.warmup))
    small_search = summary(timed(search, s.samples, s.warmup))
    small_common = summary(timed(common, s.samples, s.warmup))
    hits = len(search().body["hits"])
    # Grow Message to the large size with 100 other travellers' messages over 1,000 trips,
    # the term in 1 in 10,000 of them (selective), then measure again.
    generate_messages(
        bench,
        crowd_trips(bench, users=100, trips=1_000),
        s.messages_large - rows_small,
        every=10_000,
        offset=s.messages_small,
    )
    large_page = summary(timed(page, s.samples, s.warmup))
    large_search = summary(timed(search, s.samples, s.warmup))
    large_common = summary(timed(common, s.samples, s.warmup))
    search_plan = _search_plan(bench)

    few = _client(bench, "user_bench_few")
    many = _client(bench, "user_bench_many")
    for user_client in (few, many):
        user_client.call("GET", "/sessions")
    with psycopg.connect(bench.url, autocommit=True) as conn:
        rows = conn.execute(
            'SELECT "clerkId", id FROM "User" WHERE "clerkId" IN (%s, %s)',
            ("user_bench_few", "user_bench_many"),
        ).fetchall()
        ids = {str(clerk_id): str(user_id) for clerk_id, user_id in rows}
        for clerk_id, count in (("user_bench_few", 10), ("user_bench_many", s.trips_large)):
            with conn.cursor().copy(
                'COPY "Session" ("userId", "threadId", "title") FROM STDIN'
            ) as copy:
                for i in range(count):
                    copy.write_row((ids[clerk_id], f"thread-{uuid.uuid4()}", f"Trip {i}"))
        conn.execute('ANALYZE "Session"')
    # Pages of the same size (10) for both users: only the table behind them differs.
    page10 = {"limit": "10"}
    few_list = summary(
        timed(lambda: few.call("GET", "/sessions", query=page10), s.samples, s.warmup)
    )
    many_list = summary(
        timed(lambda: many.call("GET", "/sessions", query=page10), s.samples, s.warmup)
    )
    with db.connection() as conn:
        total = conn.execute('SELECT count(*) FROM "Message"').fetchone()
        plan = conn.execute(
            'EXPLAIN SELECT id FROM "Message" WHERE "sessionId" = %s '
            'ORDER BY "createdAt" DESC, id DESC LIMIT 51',
            (trip,),
        ).fetchall()
    return {
        "search": {
            "rows_small": rows_small,
            "rows_large": int(total[0]) if total else 0,
            "term": SEARCH_TERM,
            "hits": hits,
            "small": small_search,
            "large": large_search,
            "ratio_p50": round(large_search["p50_ms"] / small_search["p50_ms"], 2),
            "plan": search_plan,
            "common_term": COMMON_TERM,
            "common_small": small_common,
            "common_large": large_common,
            "common_ratio_p50": round(large_common["p50_ms"] / small_common["p50_ms"], 2),
        },
        "message_page": {
            "rows_small": rows_small,
            "rows_large": int(total[0]) if total else 0,
            "small": small_page,
            "large": large_page,
            "ratio_p50": round(large_page["p50_ms"] / small_page["p50_ms"], 2),
            "plan": " / ".join(str(r[0]).strip() for r in plan[:2]),
        },
        "trip_list": {
            "trips_small": 10,
            "trips_large": s.trips_large,
            "small": few_list,
            "large": many_list,
            "ratio_p50": round(many_list["p50_ms"] / few_list["p50_ms"], 2),
        },
    }


def _count_messages(bench: Bench) -> int:
    with psycopg.connect(bench.url, autocommit=True) as conn:
        row = conn.execute('SELECT count(*) FROM "Message"').fetchone()
    return int(row[0]) if row else 0


def _search_plan(bench: Bench) -> str:
    """How PostgreSQL runs the search statement: the index scans it uses."""
    from shared.store import search_rows

    with psycopg.connect(bench.url, autocommit=True) as conn:
        clerk = "user_bench_search"
        plan = conn.execute(
            "EXPLAIN " + search_rows.SEARCH, search_rows.search_params(clerk, SEARCH_TERM, 21)
        ).fetchall()
    scans = [str(r[0]).strip().removeprefix("->  ") for r in plan if "Index Scan" in str(r[0])]
    return " / ".join(scan.split("  (")[0] for scan in scans)


# B4

FUNCTIONS = ("clerk_webhook", "sessions", "messages", "me", "migrate")
BASELINE = "from aws_lambda_powertools import Logger; import psycopg"
# The floor under B4's goal: the libraries DESIGN.md requires, with no line of ours. Every API
# route goes through Powertools' validating resolver (pydantic) and a Clerk token through PyJWT
# (cryptography for RS256); the webhook verifies with standardwebhooks instead of a token.
_REQUIRED = (
    BASELINE + "; import psycopg_pool; from aws_lambda_powertools import Metrics"
    "; from aws_lambda_powertools.event_handler import APIGatewayHttpResolver"
    "; APIGatewayHttpResolver(enable_validation=True)"
)
_API_FLOOR = _REQUIRED + "; import jwt"
# Each function's floor (migrate needs nothing beyond the baseline's libraries).
FLOOR = {
    "clerk_webhook": _REQUIRED + "; import standardwebhooks",
    "sessions": _API_FLOOR,
    "messages": _API_FLOOR,
    "me": _API_FLOOR,
}
# A cold start in one process: the function's import (Lambda's init), then what its first
# request sets up: the Secrets Manager client and a secret, the pool and its first statement,
# the JWKS fetch and a token's verification.
COLD_START = """
import json, os, sys, time
clock = lambda: (time.perf_counter(), time.process_time())
marks = [clock()]
exec(sys.argv[1])
marks.append(clock())
if len(sys.argv) > 2:
    from shared import config
    config.secret("BACKBOARD_API_KEY")
    marks.append(clock())
    from shared.store.db import read
    read(lambda conn: conn.execute("SELECT 1").fetchone())
    marks.append(clock())
if len(sys.argv) > 4:
    from shared.gateways.auth import authenticate
    authenticate("Bearer " + os.environ["BENCH_TOKEN"])
    marks.append(clock())
print(json.dumps([
    [(b[0] - a[0]) * 1000, (b[1] - a[1]) * 1000] for a, b in zip(marks, marks[1:])
]))
"""
FIRST_REQUEST_STEPS = ("secrets_manager", "pool_open_first_statement", "jwks_and_verify")
# What each function's first request sets up (the webhook verifies signatures, not tokens).
FIRST_REQUEST = {"clerk_webhook": 2, "sessions": 3, "messages": 3, "me": 3, "migrate": 0}


class _SecretsManagerStandIn(BaseHTTPRequestHandler):
    """GetSecretValue over loopback, as boto3 speaks it (JSON 1.1), for any secret id."""

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.headers["X-Amz-Target"] == "secretsmanager.GetSecretValue"
        body = json.dumps(
            {
                "ARN": request["SecretId"],
                "Name": "bench",
                "SecretString": "bench-key",
                "VersionId": "v1",
                "VersionStages": ["AWSCURRENT"],
                "CreatedDate": 1_700_000_000,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def build_artifact(target: Path) -> Path:
    """The deployment artifact as `make package` builds it (same recipe, same lock, bytecode),
    with this machine's wheels so it imports here: target/opt is the layer (/opt), target/<fn>
    each function (/var/task), target/runtime the AWS SDK Lambda's runtime provides."""
    from dev.tools import package

    architecture = "arm64" if platform.machine() in {"aarch64", "arm64"} else "x86_64"
    package.build_layer(target / "opt", architecture=architecture, cache=package.CACHE)
    for function in FUNCTIONS:
        package.build_function(REPO / "functions" / function, target / function)
    runtime = target / "runtime"
    if not (runtime / "boto3").is_dir():  # this machine's platform
        package.install_site(runtime, "/var/runtime", ["boto3"], package.CACHE)
    return target


def _cold_start(
    python: str, paths: list[Path], statement: str, env: dict[str, str], steps: int = 0
) -> list[list[float]]:
    """One fresh process: [[wall ms, cpu ms] of the import, then of each first-request step].
    -S: site is skipped on both sides, as this machine's interpreters carry a .pth that imports
    certifi at startup (Lambda's do not); PYTHONDONTWRITEBYTECODE: /opt and /var/task are
    read-only, only the artifact's own .pyc files count."""
    out = subprocess.run(
        [python, "-S", "-c", COLD_START, statement, *FIRST_REQUEST_STEPS[:steps]],
        cwd=paths[0],
        env={
            **env,
            "PYTHONPATH": os.pathsep.join(map(str, paths)),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cold start failed ({statement}):\n{out.stderr[-3000:]}")
    timings: list[list[float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return timings


def b4(bench: Bench, out: Path) -> dict[str, Any]:
    import boto3

    from dev.stack.clerk_standin import ClerkStandIn
    from dev.stack.loopback import LoopbackServer
    from dev.stack.secrets_extension import SecretsExtension
    from dev.tools.package import find_python313

    python = find_python313()
    if python is None:
        return {"skipped": "needs python3.13 (Lambda's runtime): PYTHON313, PATH or pyenv"}
    artifact = build_artifact(out / "artifact")
    layer = [artifact / "opt" / "python", artifact / "runtime"]
    secrets = LoopbackServer(("127.0.0.1", 0), _SecretsManagerStandIn)
    secrets.start()
    clerk = ClerkStandIn([bench.issuer]).start()
    from dev.stack.template import load_template

    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    env = {
        # The template's fixed settings (PYDANTIC_DISABLE_PLUGINS, pool size, ...), as deployed.
        **{name: value for name, value in variables.items() if isinstance(value, str)},
        "PATH": os.environ["PATH"],
        "DATABASE_URL": bench.url,
        "BACKBOARD_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:bb",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{secrets.port}",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "CLERK_ISSUER": bench.issuer.issuer,
        "CLERK_JWKS_URL": clerk.jwks_url,
        "BENCH_TOKEN": bench.issuer.mint("user_b4", expires_in=3600),
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    # The Parameters and Secrets extension (SecretsExtensionLayerArn): the same secret from
    # localhost, the extension's own fetch made by a client built once, as its process does.
    extension = SecretsExtension(
        "bench",
        boto3.client(
            "secretsmanager",
            endpoint_url=env["AWS_ENDPOINT_URL_SECRETS_MANAGER"],
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 (the stand-in's)
        ),
    ).start()
    env_extension = {
        **env,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.port),
        "AWS_SESSION_TOKEN": "bench",
    }
    result: dict[str, Any] = {"python": python}
    try:
        for function in FUNCTIONS:
            base, floor, fn, first, via_extension = [], [], [], [], []
            for _ in range(bench.scale.cold_runs):  # interleaved: noise hits every side alike
                base.append(_cold_start(python, layer, BASELINE, env)[0])
                if function in FLOOR:
                    floor.append(_cold_start(python, layer, FLOOR[function], env)[0][0])
                steps = _cold_start(
                    python,
                    [artifact / function, *layer],
                    "import app",
                    env,
                    FIRST_REQUEST[function],
                )
                fn.append(steps[0])
                first.append(steps[1:])
                if FIRST_REQUEST[function]:
                    secrets_step = _cold_start(
                        python, [artifact / function, *layer], "import app", env_extension, 1
                    )[1]
                    via_extension.append(secrets_step[0])
            wall, cpu = (statistics.median(s[i] for s in fn) for i in (0, 1))
            base_wall, base_cpu = (statistics.median(s[i] for s in base) for i in (0, 1))
            result[function] = {
                "import_ms_p50": round(wall, 1),
                "baseline_ms_p50": round(base_wall, 1),
                "ratio_p50": round(wall / base_wall, 2),
                "import_cpu_ms_p50": round(cpu, 1),
                "baseline_cpu_ms_p50": round(base_cpu, 1),
                "cpu_ratio_p50": round(cpu / base_cpu, 2),
            }
            if floor:
                floor_wall = statistics.median(floor)
                result[function]["floor"] = {
                    "import_ms_p50": round(floor_wall, 1),
                    "ratio_p50": round(floor_wall / base_wall, 2),
                    "function_to_floor_p50": round(wall / floor_wall, 2),
                }
            if FIRST_REQUEST[function]:
                result[function]["first_request_ms_p50"] = {
                    step: round(statistics.median(run[i][0] for run in first), 1)
                    for i, step in enumerate(FIRST_REQUEST_STEPS[: FIRST_REQUEST[function]])
                }
                result[function]["first_request_ms_p50"]["secrets_via_extension"] = round(
                    statistics.median(via_extension), 1
                )
    finally:
        extension.stop()
        clerk.stop()
        secrets.stop()
    result["layer_mb"] = round(
        sum(p.stat().st_size for p in (artifact / "opt").rglob("*") if p.is_file()) / 1e6, 1
    )
    result["dominant_imports"] = {
        function: dominant_imports(python, [artifact / function, *layer])
        for function in ("clerk_webhook", "messages")
    }
    return result


def dominant_imports(python: str, paths: list[Path], top: int = 8) -> list[str]:
    """What dominates a cold import, from `python -X importtime`: for each top-level package,
    the cumulative time of its first import from outside it, largest first."""
    out = subprocess.run(
        [python, "-S", "-X", "importtime", "-c", "import app"],
        cwd=paths[0],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.pathsep.join(map(str, paths)),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []  # (depth, root package, cumulative microseconds), in the order printed
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((depth, name.strip().split(".")[0], int(parts[1])))
    # importtime prints a module after its imports, one level deeper: walk backwards to know
    # each line's importer, and keep the lines where a package is entered from another one.
    totals: dict[str, int] = {}
    importers: list[tuple[int, str]] = []
    for depth, root, cumulative in reversed(rows):
        while importers and importers[-1][0] >= depth:
            importers.pop()
        parent = importers[-1][1] if importers else None
        if parent != root and root not in {"app", "shared"}:
            totals[root] = max(totals.get(root, 0), cumulative)
        importers.append((depth, root))
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [f"{name} {micros / 1000:.0f} ms" for name, micros in ranked]


# B5


def _worker(args: tuple[dict[str, str], str, int, int]) -> dict[str, Any]:
    env, clerk_id, requests, _ = args
    os.environ.update(env)
    from dev.stack.apiclient import Client

    client = Client(env[f"TOKEN_{clerk_id}"])
    trip = client.call("POST", "/sessions", body={"title": "Load"}).body["id"]
    latencies, errors = [], 0
    started = time.perf_counter()
    for i in range(requests):
        t0 = time.perf_counter()
        if i % 3 == 0:
            reply = client.call("POST", f"/sessions/{trip}/messages", body={"content": f"m{i}"})
        elif i % 3 == 1:
            reply = client.call("GET", f"/sessions/{trip}/messages")
        else:
            reply = client.call("GET", "/sessions")
        latencies.append((time.perf_counter() - t0) * 1000)
        errors += reply.status >= 400
    from shared.store.db import get_pool

    stats = get_pool().get_stats()
    return {
        "latencies": latencies,
        "errors": errors,
        "seconds": time.perf_counter() - started,
        "connections_opened": stats.get("connections_num", 0),
    }


def b5(bench: Bench) -> dict[str, Any]:
    """K containers at pool size 1 (the default) and at 2: throughput and server connections."""
    return {str(size): _b5_pool(bench, size) for size in (1, 2)}


def _b5_pool(bench: Bench, pool_size: int) -> dict[str, Any]:
    from shared.store.db import close_pool

    close_pool()  # this process is not one of the K containers
    s = bench.scale
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("DATABASE", "BACKBOARD", "CLERK", "MESSAGE", "POWERTOOLS"))
    }
    env["DB_POOL_MAX_SIZE"] = str(pool_size)
    clerk_ids = [f"user_bench_load{i}" for i in range(s.workers)]
    for clerk_id in clerk_ids:
        env[f"TOKEN_{clerk_id}"] = bench.issuer.mint(
            clerk_id, email=f"{clerk_id}@example.test", expires_in=3600
        )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        with psycopg.connect(bench.url, autocommit=True) as conn:
            # Only the workers' connections: none from earlier figures still closing.
            since = conn.execute("SELECT now()").fetchone()
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = 'tripchat' AND backend_start >= %s",
                    (bench.db_name, since[0] if since else None),
                ).fetchone()
                peak = max(peak, int(row[0]) if row else 0)
                time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    # Fresh processes as containers are; forkserver imports the heavy libraries once, not in
    # each worker (what the workers' own modules read from the environment, they read after).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["psycopg", "psycopg_pool", "pydantic", "httpx"])
    with context.Pool(s.workers) as pool:
        results = pool.map(
            _worker, [(env, c, s.requests_per_worker, i) for i, c in enumerate(clerk_ids)]
        )
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    latencies = [x for r in results for x in r["latencies"]]
    return {
        "workers": s.workers,
        "requests": len(latencies),
        "errors": sum(r["errors"] for r in results),
        "throughput_rps": round(len(latencies) / max(r["seconds"] for r in results), 1),
        "wall_seconds_incl_spawn": round(elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "peak_server_connections": peak,
        "connections_opened": sum(r["connections_opened"] for r in results),
        "connection_budget": s.workers * pool_size,
    }


# B6


def b6(bench: Bench) -> dict[str, Any]:
    """Streamed sends with the stand-in writing a piece every `gap` seconds."""
    import httpx

    from dev.stack.stream_process import InThreadStreamServer

    gap, samples = 0.01, max(5, bench.scale.samples // 4)
    client, trip, _ = _ready_trip(bench, "user_bench_stream", 0)
    bench.standin.stream_delay = gap
    first_relay, piece_relay, first_delta, whole = [], [], [], []
    with InThreadStreamServer() as base, httpx.Client(timeout=60) as http:
        url = f"{base}/sessions/{trip}/messages/stream"
        for i in range(samples + bench.scale.warmup // 5):
            started, arrived = time.perf_counter(), []
            with http.stream(
                "POST",
                url,
                json={"content": f"Stream {i}"},
                headers={"authorization": f"Bearer {client.token}"},
            ) as response:
                for line in response.iter_lines():
                    if '"text-delta"' in line:
                        arrived.append(time.perf_counter())
            ended, sent = time.perf_counter(), bench.standin.sent_at
            if i < bench.scale.warmup // 5 or len(sent) != len(arrived):
                continue  # warm-up, or a reply the reader saw differently: not a sample
            first_relay.append((arrived[0] - sent[0]) * 1000)  # ms, as summary() takes
            piece_relay += [(a - s) * 1000 for a, s in zip(arrived, sent, strict=True)]
            first_delta.append((arrived[0] - started) * 1000)
            whole.append((ended - started) * 1000)
    bench.standin.stream_delay = 0.0
    return {
        "piece_gap_ms": gap * 1000,
        "samples": len(first_delta),
        "first_piece_relay": summary(first_relay),
        "every_piece_relay": summary(piece_relay),
        "first_text_delta": summary(first_delta),
        "whole_reply": summary(whole),
        "ratio_first_delta_to_whole_p50": round(
            statistics.median(first_delta) / statistics.median(whole), 2
        ),
    }


# Report


def markdown(results: dict[str, Any]) -> str:
    lines = ["| figure | measured | goal |", "|---|---|---|"]
    for mode, routes in results.get("B1", {}).items():
        for route, r in routes.items():
            h, d, o = r["handler"], r["direct_sql"], r["old_shape"]
            lines.append(
                f"| B1 {mode}: {route}, handler p50/p99 ms | {h['p50_ms']} / {h['p99_ms']} "
                f"(same SQL direct {d['p50_ms']}, shape before {o['p50_ms']}) → "
                f"**{r['ratio_handler_to_sql']}x SQL, {r['ratio_handler_to_old_shape']}x "
                "before** | reads ≤ 0.5x before at ~1 ms RTT |"
            )
    for mode, routes in results.get("B2", {}).items():
        for route, r in routes.items():
            goal = "≤ 2 before Backboard + 1 after" if route.startswith("POST") else "1"
            lines.append(
                f"| B2 {mode}: {route}, round trips | **{r['round_trips']}** "
                f"(+{r['pings']} pings) | {goal} |"
            )
    if "B3" in results:
        _b3_lines(results["B3"], lines)
    if "B4" in results:
        _b4_lines(results["B4"], lines)
    for size, c in results.get("B5", {}).items():
        lines.append(
            f"| B5 {c['workers']} processes x {c['requests'] // c['workers']} requests, pool "
            f"size {size} | {c['throughput_rps']} req/s, p50 {c['p50_ms']} ms, p99 "
            f"{c['p99_ms']} ms, **{c['errors']} errors**, "
            f"**peak {c['peak_server_connections']} connections** | "
            f"0 errors, ≤ {c['connection_budget']} |"
        )
    if "B6" in results:
        _b6_lines(results["B6"], lines)
    return "\n".join(lines) + "\n"


def _b6_lines(b6: dict[str, Any], lines: list[str]) -> None:
    first, every = b6["first_piece_relay"], b6["every_piece_relay"]
    lines.append(
        f"| B6 streaming: stand-in's piece sent → our text-delta received, p50/p99 ms | "
        f"first piece **{first['p50_ms']} / {first['p99_ms']}**, every piece "
        f"**{every['p50_ms']} / {every['p99_ms']}** ({b6['samples']} replies, a piece every "
        f"{b6['piece_gap_ms']} ms) | a few ms |"
    )
    lines.append(
        f"| B6 streaming: first text-delta vs whole reply after the request, p50 ms | "
        f"{b6['first_text_delta']['p50_ms']} vs {b6['whole_reply']['p50_ms']} → "
        f"**ratio {b6['ratio_first_delta_to_whole_p50']}** | first words long before the end |"
    )


def _b3_lines(b3: dict[str, Any], lines: list[str]) -> None:
    page, trips, search = b3["message_page"], b3["trip_list"], b3["search"]
    lines.append(
        f"| B3 search, a selective term ({search['hits']} hits), {search['rows_small']:,} vs "
        f"{search['rows_large']:,} messages | p50 {search['small']['p50_ms']} vs "
        f"{search['large']['p50_ms']} ms → **ratio {search['ratio_p50']}** | ≤ 1.5 |"
    )
    lines.append(
        f"| B3 search, a common term (page of 20), {search['rows_small']:,} vs "
        f"{search['rows_large']:,} messages | p50 {search['common_small']['p50_ms']} vs "
        f"{search['common_large']['p50_ms']} ms → ratio {search['common_ratio_p50']} | |"
    )
    lines.append(
        f"| B3 50-message page, {page['rows_small']:,} vs {page['rows_large']:,} rows | "
        f"p50 {page['small']['p50_ms']} vs {page['large']['p50_ms']} ms → "
        f"**ratio {page['ratio_p50']}** | ≤ 1.2 |"
    )
    lines.append(
        f"| B3 trip list, {trips['trips_small']} vs {trips['trips_large']:,} trips | "
        f"p50 {trips['small']['p50_ms']} vs {trips['large']['p50_ms']} ms → "
        f"**ratio {trips['ratio_p50']}** | ≤ 1.2 |"
    )


def _b4_lines(b4: dict[str, Any], lines: list[str]) -> None:
    if "skipped" in b4:
        lines.append(f"| B4 cold start | skipped: {b4['skipped']} | |")
        return
    for function in FUNCTIONS:
        r = b4[function]
        lines.append(
            f"| B4 cold import `{function}` (artifact, 3.13), wall / CPU | {r['import_ms_p50']} "
            f"vs {r['baseline_ms_p50']} ms bare → **ratio {r['ratio_p50']}**; CPU "
            f"{r['import_cpu_ms_p50']} vs {r['baseline_cpu_ms_p50']} ms → {r['cpu_ratio_p50']} "
            "| ≤ 1.5 |"
        )
    for function in FUNCTIONS:
        floor = b4[function].get("floor")
        if floor:
            lines.append(
                f"| B4 floor `{function}`: the libraries it requires, alone (no project code) | "
                f"{floor['import_ms_p50']} ms → **ratio {floor['ratio_p50']}** to bare; the "
                f"function is **{floor['function_to_floor_p50']}x its floor** | |"
            )
    for function in FUNCTIONS:
        steps = b4[function].get("first_request_ms_p50")
        if steps:
            lines.append(
                f"| B4 first request's setup `{function}`, ms | "
                + ", ".join(f"{step} {ms}" for step, ms in steps.items())
                + " | |"
            )
    for function, dominant in b4["dominant_imports"].items():
        lines.append(
            f"| B4 what dominates `{function}` (python -X importtime) | {', '.join(dominant)} | |"
        )
    lines.append(f"| B4 layer size (unzipped, with bytecode) | {b4['layer_mb']} MB | ≤ 250 MB |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.5,
        help="latency added each way by the proxy for B1/B2's second mode (default 0.5)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["B1", "B3", "B4", "B5", "B6"],
        help="some figures (B1 brings B2)",
    )
    args = parser.parse_args(argv)
    only = set(args.only or ["B1", "B3", "B4", "B5", "B6"])
    scale = SMOKE if args.smoke else FULL
    bench = Bench(scale)
    try:
        results: dict[str, Any] = {"scale": scale.__dict__}
        if "B1" in only:
            results.update(b1_b2(bench, args.delay_ms))
        if "B3" in only:
            results["B3"] = b3(bench)
        if "B4" in only:
            results["B4"] = b4(bench, args.out)
        if "B5" in only:
            results["B5"] = b5(bench)
        if "B6" in only:
            results["B6"] = b6(bench)
    finally:
        bench.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    print(table)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return results


if __name__ == "__main__":
    main()
