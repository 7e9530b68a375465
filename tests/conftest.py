"""Test fixtures: a throwaway PostgreSQL database per test run, on the real server.

Tests live by depth: unit/ (in-process, no database, no sockets), integration/ (one part of
ours against a real peer: PostgreSQL, PgBouncer, a stand-in over loopback HTTP), system/ (the
backend through its edge: handlers, the local API and stack, packaging, the benchmark).

The run's database is created, migrated by the migrate code and exported as DATABASE_URL;
it is dropped when the run ends. Tests that need an empty database (migrations) get their own.

With TEST_VIA_POOLER=1 the run goes through a real PgBouncer in transaction mode: the
application's DATABASE_URL is the pooled URL, DATABASE_URL_UNPOOLED the direct one (used by
migrations and by the fixtures that inspect or tamper with the database).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from dev.stack.apiclient import Client
from dev.stack.backboard_standin import BackboardStandIn
from dev.stack.pgbouncer import PgBouncer
from dev.stack.token_issuer import LocalIssuer
from dev.tools.databases import ADMIN_URL, create_database, drop_database
from shared import config
from shared.gateways import auth
from shared.store import db, migrations

# The Backboard stand-in's fixtures (backboard_server, backboard, short_backboard_timeout).
pytest_plugins = ["tests.fixtures_backboard"]

# Powertools outside Lambda: no X-Ray daemon to send traces to, metrics printed not shipped.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TripChatTests")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

VIA_POOLER = os.environ.get("TEST_VIA_POOLER", "") not in ("", "0", "false")
REPO = Path(__file__).resolve().parent.parent
DEPTHS = ("unit", "integration", "system")
# What clean_db empties: every table the migrations make, a referencing table before the one it
# references (test_schema checks that this is every table).
EVERY_TABLE_CHILDREN_FIRST = (
    "tripchat.reply_stream",
    "tripchat.message_turn",
    "tripchat.rate_limit",
    "tripchat.trip_title_chosen",
    "tripchat.clerk_user_state",
    '"Message"',
    '"Session"',
    '"User"',
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its depth, the folder it lives in: `pytest -m unit` runs the tests
    that need no database and no server."""
    for item in items:
        depth = item.path.parent.name
        if depth in DEPTHS:
            item.add_marker(depth)


@pytest.fixture(scope="session")
def pooler() -> Iterator[PgBouncer | None]:
    """The run's PgBouncer (transaction mode) when TEST_VIA_POOLER is set, else None."""
    if not VIA_POOLER:
        yield None
        return
    bouncer = PgBouncer(ADMIN_URL, REPO / "build" / f"pgbouncer-{uuid.uuid4().hex[:8]}")
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def direct_url(pooler: PgBouncer | None) -> Iterator[str]:
    """The run's migrated database, connected to directly."""
    name, url = create_database()
    previous = {
        k: os.environ.pop(k, None)
        for k in (*config.DATABASE_URL_VARIABLES, *config.DIRECT_DATABASE_URL_VARIABLES)
    }
    os.environ["DATABASE_URL"] = pooler.url(name) if pooler else url
    if pooler:
        os.environ["DATABASE_URL_UNPOOLED"] = url
    try:
        with migrations.connect(config.direct_database_url()) as conn:
            migrations.apply(conn)
        yield url
    finally:
        db.close_pool()
        drop_database(name)
        for key in (*config.DATABASE_URL_VARIABLES, *config.DIRECT_DATABASE_URL_VARIABLES):
            os.environ.pop(key, None)
        for key, value in previous.items():
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="session")
def database_url(direct_url: str) -> str:
    """The URL the application uses for the run's database: DATABASE_URL (through
    PgBouncer when TEST_VIA_POOLER is set)."""
    return os.environ["DATABASE_URL"]


@pytest.fixture
def empty_database(pooler: PgBouncer | None) -> Iterator[str]:
    """A database of its own, with nothing in it, dropped after the test (reached through
    the run's PgBouncer when there is one: the migrator must be correct through a pooler)."""
    name, url = create_database()
    try:
        yield pooler.url(name) if pooler else url
    finally:
        drop_database(name)


@pytest.fixture
def clean_db(database_url: str, direct_url: str) -> Iterator[str]:
    """The run's database, emptied of rows, with fresh settings and a fresh pool; the value is
    the application's URL."""
    # DELETE, children first, not TRUNCATE: the tables hold a test's few rows, and TRUNCATE
    # makes new files for every table and index (~50-150 ms a test against ~2 ms).
    with psycopg.connect(direct_url, autocommit=True) as conn, conn.transaction():
        for table in EVERY_TABLE_CHILDREN_FIRST:
            conn.execute(f"DELETE FROM {table}")
    config.reset_caches()
    db.close_pool()
    yield database_url
    db.close_pool()
    config.reset_caches()


class DatabaseOutage:
    """The run's database going away as in a restart, and coming back."""

    def __init__(self, database_url: str) -> None:
        self.name = database_url.rsplit("/", 1)[1]

    def start(self) -> None:
        """New connections refused, and every open one of the backend's dropped."""
        self._allow(False)

    def end(self) -> None:
        self._allow(True)

    def _allow(self, allowed: bool) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'tripchat'",
                    (self.name,),
                )


@pytest.fixture
def database_outage(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseOutage]:
    """An outage to start and end at will (always ended afterwards), on a fresh pool whose
    connection attempts give up after 1 s, so requests during it fail fast."""
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "1")
    config.reset_caches()
    db.close_pool()
    outage = DatabaseOutage(clean_db)
    yield outage
    outage.end()


@pytest.fixture
def admin_conn(direct_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A direct connection to the run's database, outside the pool, to inspect and tamper."""
    with psycopg.connect(direct_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def issuer_key() -> rsa.RSAPrivateKey:
    """One RSA key per test run (per worker): generating a 2048-bit key costs ~0.1 s, and the
    tests that need a key of their own (rotation, forgery) generate it themselves."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def issuer(issuer_key: rsa.RSAPrivateKey) -> LocalIssuer:
    """A local token issuer."""
    return LocalIssuer(issuer_key)


@pytest.fixture
def api_env(
    clean_db: str,
    backboard: BackboardStandIn,
    issuer: LocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LocalIssuer]:
    """The API's settings for a test: tokens from `issuer`, verified networklessly through
    CLERK_JWT_KEY; the rate limits out of the way (tests of them set their own)."""
    monkeypatch.setenv("CLERK_ISSUER", issuer.issuer)
    monkeypatch.setenv("CLERK_JWT_KEY", issuer.public_pem())
    monkeypatch.delenv("CLERK_JWKS_URL", raising=False)
    monkeypatch.setenv("MESSAGE_RATE_LIMIT_PER_MINUTE", "10000")
    monkeypatch.setenv("TRIP_RATE_LIMIT_PER_MINUTE", "10000")
    config.reset_caches()
    auth.reset_auth()
    yield issuer
    auth.reset_auth()


@pytest.fixture
def api(api_env: LocalIssuer) -> Callable[[str], Client]:
    """A factory of API clients, one per Clerk user id, with tokens carrying email and name."""

    def client(clerk_id: str) -> Client:
        name = clerk_id.removeprefix("user_").title()
        return Client(api_env.mint(clerk_id, email=f"{clerk_id}@example.test", name=name))

    return client
