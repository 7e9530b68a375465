"""The migrator: ordered, once-only, locked, tamper-proof, all-or-nothing, drift-aware."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from dev.stack.apigw import LambdaContext
from dev.stack.loopback import LoopbackServer
from dev.stack.response_url import ResponseUrl
from dev.tools.databases import ADMIN_URL
from functions.migrate import app as migrate_app
from shared import config
from shared.store import migrations

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_direct_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests point DATABASE_URL at databases of their own: a direct URL the run set
    (the pooler run does) would win over it."""
    for name in config.DIRECT_DATABASE_URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A private copy of sql/ that a test may add files to or tamper with."""
    target = tmp_path / "sql"
    shutil.copytree(REPO / "sql", target)
    return target


@pytest.fixture
def conn(empty_database: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with migrations.connect(empty_database) as connection:
        yield connection


def _tracked(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    rows = conn.execute("SELECT name FROM tripchat.schema_migrations ORDER BY name").fetchall()
    return [str(name) for (name,) in rows]


def test_applies_every_file_in_order_then_nothing(
    conn: psycopg.Connection[tuple[object, ...]], sql_copy: Path
) -> None:
    files = migrations.load_files(sql_copy)
    names = [f.name for f in files]
    assert names == sorted(names) and len(names) >= 2
    first = migrations.apply(conn, files)
    assert first.applied == names
    assert migrations.apply(conn, files).applied == []
    assert _tracked(conn) == names
    assert migrations.verify(conn, sql_copy) == []


def test_status_lists_applied_pending_changed_and_missing(
    conn: psycopg.Connection[tuple[object, ...]], sql_copy: Path
) -> None:
    files = migrations.load_files(sql_copy)
    assert {s.state for s in migrations.status(conn, files)} == {"pending"}
    migrations.apply(conn, files[:1])
    states = {s.name: s.state for s in migrations.status(conn, files)}
    assert states == {files[0].name: "applied"} | {f.name: "pending" for f in files[1:]}
    tampered = [migrations.MigrationFile(files[0].name, files[0].sql + "\n-- edit")]
    assert [s.state for s in migrations.status(conn, tampered)] == ["changed"]
    later = [s.state for s in migrations.status(conn, files[1:])]
    assert later == ["pending"] * (len(files) - 1) + ["missing"]


def test_concurrent_migrators_apply_each_file_once(empty_database: str, sql_copy: Path) -> None:
    # A slow file keeps the first migrator busy while the second one arrives.
    (sql_copy / "0999_slow.sql").write_text("SELECT pg_sleep(0.5); CREATE TABLE slow (x int);")
    files = migrations.load_files(sql_copy)
    barrier = threading.Barrier(4)
    reports: list[migrations.ApplyReport] = []
    failures: list[BaseException] = []

    def migrate() -> None:
        try:
            with migrations.connect(empty_database) as c:
                barrier.wait()
                reports.append(migrations.apply(c, files))
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    applied = [name for r in reports for name in r.applied]
    assert sorted(applied) == [f.name for f in files]  # each exactly once, across all four
    with migrations.connect(empty_database) as c:
        assert _tracked(c) == [f.name for f in files]


def test_modified_applied_file_is_refused(
    conn: psycopg.Connection[tuple[object, ...]], sql_copy: Path
) -> None:
    migrations.apply(conn, migrations.load_files(sql_copy))
    first = sorted(sql_copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + '\nALTER TABLE "User" ADD COLUMN sneaky int;\n')
    (sql_copy / "0900_next.sql").write_text("CREATE TABLE next_one (x int);")
    with pytest.raises(migrations.MigrationError, match=first.name):
        migrations.apply(conn, migrations.load_files(sql_copy))
    # Refused before anything ran: neither the edit nor the next file took effect.
    assert "0900_next.sql" not in _tracked(conn)
    assert conn.execute("SELECT to_regclass('next_one')").fetchone() == (None,)


def test_failing_statement_leaves_nothing_half_applied(
    conn: psycopg.Connection[tuple[object, ...]], sql_copy: Path
) -> None:
    (sql_copy / "0900_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nALTER TABLE no_such_table ADD COLUMN y int;\n"
    )
    with pytest.raises(migrations.MigrationError, match=r"0900_broken\.sql.*no_such_table"):
        migrations.apply(conn, migrations.load_files(sql_copy))
    assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
    assert "0900_broken.sql" not in _tracked(conn)
    # Files before the broken one are applied and recorded; the lock was released.
    assert len(_tracked(conn)) == len(list(sql_copy.glob("*.sql"))) - 1
    # Only this database's locks: other tests and users share the server.
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    assert row == (0,)


def test_verify_reports_every_kind_of_drift(
    conn: psycopg.Connection[tuple[object, ...]], sql_copy: Path
) -> None:
    migrations.apply(conn, migrations.load_files(sql_copy))
    conn.execute('ALTER TABLE "User" ADD COLUMN "nickname" TEXT')
    conn.execute('ALTER TABLE "User" ALTER COLUMN "email" DROP NOT NULL')
    conn.execute('ALTER TABLE "Session" ALTER COLUMN "title" SET DEFAULT \'Trip\'')
    conn.execute('DROP INDEX "Message_sessionId_createdAt_id_idx"')
    conn.execute('ALTER TABLE "Message" DROP CONSTRAINT "Message_role_check"')
    conn.execute("CREATE TABLE public.stray (x int)")
    conn.execute(
        "CREATE OR REPLACE FUNCTION tripchat.pending_replies(trip_id TEXT) RETURNS TEXT "
        "LANGUAGE plpgsql STABLE STRICT AS $$ BEGIN RETURN '[]'; END $$"
    )
    drift = migrations.verify(conn, sql_copy)
    joined = "\n".join(drift)
    assert "public.User: unexpected column nickname" in joined
    assert "public.User: column email differs" in joined
    assert "public.Session: column title differs" in joined
    assert "public.Message: missing index Message_sessionId_createdAt_id_idx" in joined
    assert "public.Message: missing constraint Message_role_check" in joined
    assert "unexpected table public.stray" in joined
    assert "function tripchat.pending_replies(trip_id text): body_sha256 differs" in joined
    assert len(drift) == 7


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "POWERTOOLS_LOG_LEVEL": "ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "functions.migrate.app", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_apply_status_verify_and_drift_exit_codes(empty_database: str) -> None:
    status = _cli("status", database_url=empty_database)
    assert status.returncode == 1 and '"pending"' in status.stdout
    assert _cli("apply", database_url=empty_database).returncode == 0
    assert _cli("status", database_url=empty_database).returncode == 0
    assert _cli("verify", database_url=empty_database).returncode == 0
    with psycopg.connect(empty_database, autocommit=True) as c:
        c.execute('ALTER TABLE "User" ADD COLUMN "extra" TEXT')
    drifted = _cli("verify", database_url=empty_database)
    assert drifted.returncode == 1 and "unexpected column extra" in drifted.stdout


def test_cli_unreachable_database_is_a_clear_error() -> None:
    result = _cli("apply", database_url="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "Cannot connect to the database" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_migrations_use_the_direct_url_when_one_is_set(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pooled URL leads nowhere: only the direct one can have applied the files.
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/pooled")
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", empty_database)
    config.reset_caches()
    applied = migrate_app.run("apply")
    assert applied["ok"] is True, applied
    assert applied["applied"] == [f.name for f in migrations.load_files()]


def test_lambda_handler_actions(empty_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database)
    config.reset_caches()
    assert migrate_app.run("status")["ok"] is False
    applied = migrate_app.run("apply")
    assert applied["ok"] is True and applied["drift"] == []
    assert applied["applied"] == [f.name for f in migrations.load_files()]
    assert migrate_app.run("apply")["applied"] == []
    assert migrate_app.run("verify") == {"ok": True, "action": "verify", "drift": []}
    assert migrate_app.run("drop-everything")["ok"] is False


def test_cloudformation_custom_resource_applies_and_answers(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On deploy CloudFormation sends Create/Update; the function migrates and PUTs the
    outcome to the presigned ResponseURL (here a loopback server standing in for S3)."""

    from shared import config

    with ResponseUrl() as response_url:
        answers = response_url.answers
        url = response_url.url
        event = {
            "RequestType": "Create",
            "ResponseURL": url,
            "StackId": "stack",
            "RequestId": "req-1",
            "LogicalResourceId": "DatabaseSchema",
        }
        monkeypatch.setenv("DATABASE_URL", empty_database)
        config.reset_caches()
        assert migrate_app._custom_resource(event)["ok"] is True
        assert answers[-1]["Status"] == "SUCCESS"
        assert answers[-1]["PhysicalResourceId"] == migrate_app.PHYSICAL_RESOURCE_ID
        assert answers[-1]["RequestId"] == "req-1"

        monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
        config.reset_caches()
        assert migrate_app._custom_resource({**event, "RequestType": "Update"})["ok"] is False
        assert answers[-1]["Status"] == "FAILED"
        assert "Cannot connect" in str(answers[-1]["Reason"])

        # A rollback runs older code against a database newer migrations extended: its
        # expected schema differs, which is logged but must not fail the rollback.
        monkeypatch.setenv("DATABASE_URL", empty_database)
        config.reset_caches()
        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute('ALTER TABLE "User" ADD COLUMN "fromNewerRelease" TEXT')
        result = migrate_app._custom_resource({**event, "RequestType": "Update"})
        assert result["drift"]
        assert answers[-1]["Status"] == "SUCCESS"

        # Deleting the stack never touches the database.
        migrate_app._custom_resource({**event, "RequestType": "Delete"})
        assert answers[-1]["Status"] == "SUCCESS"


@pytest.fixture
def ddl_less_role(empty_database: str) -> Iterator[str]:
    """A URL for the empty database as a role that may connect but not create anything, so
    the migrator fails with a plain psycopg error (InsufficientPrivilege) mid-work."""
    role = f"tripchat_noddl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    # Straight to the server: the run's PgBouncer (if any) knows only its own user.
    direct = f"{ADMIN_URL.rpartition('/')[0]}/{empty_database.rpartition('/')[2]}"
    try:
        yield direct.replace("postgres@", f"{role}@", 1)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The migrate function's entry point, with the stand-in for Lambda's context object."""
    return migrate_app.lambda_handler(event, cast(Any, context))


def _cloudformation_event(url: str) -> dict[str, Any]:
    return {
        "RequestType": "Create",
        "ResponseURL": url,
        "StackId": "stack",
        "RequestId": "req-unexpected",
        "LogicalResourceId": "DatabaseSchema",
    }


@pytest.mark.parametrize(
    "failure", ["unparsable-url-setting", "bad-url-option", "psycopg-error", "non-utf8-file"]
)
def test_custom_resource_answers_failed_on_unexpected_errors(
    failure: str,
    empty_database: str,
    ddl_less_role: str,
    sql_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Errors other than the two mapped ones still get a FAILED answer (not a deploy hanging
    until ServiceTimeout), with a short reason that quotes neither the error's message nor
    any credential; the details go to the log, credentials redacted."""
    from shared import config

    password = "hunter2-do-not-leak"  # a fake one, which must not leak
    if failure == "unparsable-url-setting":
        # A bad setting: the URL cannot even be split, before any work starts.
        url = f"postgresql://admin:{password}@[::1/tripchat"
        expected_type = "ValueError"
    elif failure == "bad-url-option":
        # psycopg refuses the URL before connecting, quoting the bad token: the password.
        password += "%zz"
        url = f"postgresql://admin:{password}@127.0.0.1:5432/tripchat"
        expected_type = "ProgrammingError"
    elif failure == "psycopg-error":
        url = ddl_less_role
        expected_type = "InsufficientPrivilege, SQLSTATE 42501"
    else:
        url = empty_database
        (sql_copy / "0900_latin1.sql").write_bytes(b"-- caf\xe9\nSELECT 1;\n")
        monkeypatch.setenv("MIGRATIONS_DIR", str(sql_copy))
        expected_type = "UnicodeDecodeError"
    monkeypatch.setenv("DATABASE_URL", url)
    config.reset_caches()
    context = LambdaContext(log_stream_name="2026/01/01/[$LATEST]abc")

    with ResponseUrl() as response_url:
        result = _handle(_cloudformation_event(response_url.url), context)
        answers = response_url.answers

    assert result["ok"] is False
    assert len(answers) == 1
    answer = answers[0]
    assert answer["Status"] == "FAILED"
    assert answer["RequestId"] == "req-unexpected"
    assert answer["PhysicalResourceId"] == migrate_app.PHYSICAL_RESOURCE_ID
    reason = str(answer["Reason"])
    assert reason == (
        f"Migration failed unexpectedly ({expected_type}); see log stream "
        f"{context.log_stream_name}, request {context.aws_request_id}."
    )
    # Each record as the function's own (Powertools JSON) formatter writes it to CloudWatch.
    formatter = migrate_app.logger.registered_formatter
    logs = [formatter.format(r) for r in caplog.records if r.name == "migrate"]
    records = [json.loads(line) for line in logs]
    failed = [r for r in records if r["message"] == "migration failed unexpectedly"]
    assert len(failed) == 1
    assert failed[0]["error_type"] == expected_type.split(",")[0]
    assert "Traceback" in failed[0]["traceback"]
    assert not any(password in line for line in logs)
    if failure == "bad-url-option":
        assert 'invalid percent-encoded token: "***"' in failed[0]["traceback"]


def test_custom_resource_reason_never_carries_url_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a mapped error's message is redacted before it reaches the stack events."""
    from shared import config

    # An unreachable server: psycopg's message names host and port; the reason must hold no
    # user:password even if a future message quoted the URL.
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:hunter2@127.0.0.1:1/none")
    config.reset_caches()
    with ResponseUrl() as response_url:
        _handle(_cloudformation_event(response_url.url), LambdaContext())
    answer = response_url.answers[-1]
    assert answer["Status"] == "FAILED"
    assert "Cannot connect to the database" in answer["Reason"]
    assert "hunter2" not in answer["Reason"]
    assert migrate_app._redact("x postgresql://admin:hunter2@h/db y") == (
        "x postgresql://***@h/db y"
    )


class _FlakyResponseUrl:
    """A presigned-URL stand-in that answers 503 to the first PUT, then records answers."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.attempts > 1:
                    outer.answers.append(json.loads(body))
                self.send_response(503 if outer.attempts == 1 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = LoopbackServer(("127.0.0.1", 0), Handler)


def test_custom_resource_retries_a_failed_answer(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient S3 error on the answer is retried: a lost answer costs the whole
    ServiceTimeout."""
    from shared import config

    monkeypatch.setenv("DATABASE_URL", empty_database)
    config.reset_caches()
    flaky = _FlakyResponseUrl()
    flaky.server.start()
    try:
        url = f"http://127.0.0.1:{flaky.server.port}/presigned"
        assert _handle(_cloudformation_event(url), LambdaContext())["ok"]
    finally:
        flaky.server.stop()
    assert flaky.attempts == 2
    assert [a["Status"] for a in flaky.answers] == ["SUCCESS"]
