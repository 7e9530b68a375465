"""The migrator: ordered, once-only, locked, tamper-proof, all-or-nothing, drift-aware."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from functions.migrate import app as migrate_app
from shared import migrations
from tests.devstack.response_url import ResponseUrl

REPO = Path(__file__).resolve().parent.parent


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
    assert states == {files[0].name: "applied", files[1].name: "pending"}
    tampered = [migrations.MigrationFile(files[0].name, files[0].sql + "\n-- edit")]
    assert [s.state for s in migrations.status(conn, tampered)] == ["changed"]
    assert [s.state for s in migrations.status(conn, files[1:])] == ["pending", "missing"]


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
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
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
    drift = migrations.verify(conn, sql_copy)
    joined = "\n".join(drift)
    assert "public.User: unexpected column nickname" in joined
    assert "public.User: column email differs" in joined
    assert "public.Session: column title differs" in joined
    assert "public.Message: missing index Message_sessionId_createdAt_id_idx" in joined
    assert "public.Message: missing constraint Message_role_check" in joined
    assert "unexpected table public.stray" in joined
    assert len(drift) == 6


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


def test_lambda_handler_actions(empty_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import config

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
