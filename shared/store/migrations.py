"""Schema migrations: apply `sql/*.sql` in name order, report status, detect drift.

- Each file runs in its own transaction together with its row in the tracking table, so a
  failing statement leaves neither a half-applied file nor a record of it.
- A transaction-scoped PostgreSQL advisory lock, taken by every migration transaction,
  serializes migrators: two deploys or containers started at once apply each file exactly
  once, also through a transaction-mode pooler (a session lock would not hold there).
- An applied file whose content changed is refused: history is append-only.
- `verify` compares the live schema with `sql/expected_schema.json` (the schema a fresh
  database has after every file; a test keeps the two in step) and lists every difference.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

TRACKING_SCHEMA = "tripchat"
TRACKING_TABLE = "schema_migrations"
# Any fixed 64-bit number works; this one is "tripchat" read as ASCII bytes.
ADVISORY_LOCK_KEY = int.from_bytes(b"tripchat", "big") & 0x7FFF_FFFF_FFFF_FFFF
SNAPSHOT_NAME = "expected_schema.json"
# Schemas this project owns; Prisma's own bookkeeping table is not drift.
MANAGED_SCHEMAS = ("public", TRACKING_SCHEMA)
IGNORED_TABLES = {f"{TRACKING_SCHEMA}.{TRACKING_TABLE}", "public._prisma_migrations"}


class MigrationError(Exception):
    """A migration could not run; the message says why and what was left untouched."""


@dataclass(frozen=True)
class MigrationFile:
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class FileStatus:
    name: str
    state: str  # "applied", "pending", "changed" (checksum differs) or "missing" (no file)
    applied_at: datetime | None = None


@dataclass
class ApplyReport:
    applied: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)


def sql_dir() -> Path:
    """Where the .sql files are: MIGRATIONS_DIR, else the repository's sql/, else the Lambda
    package's sql/ (the packaging step copies it next to the migrate function)."""
    candidates = [
        os.environ.get("MIGRATIONS_DIR"),
        str(Path(__file__).resolve().parent.parent / "sql"),
        str(Path(os.environ.get("LAMBDA_TASK_ROOT", ".")) / "sql"),
    ]
    for candidate in candidates:
        if candidate and any(Path(candidate).glob("*.sql")):
            return Path(candidate)
    raise MigrationError(f"No sql/ directory found (looked in {[c for c in candidates if c]})")


def load_files(directory: Path | None = None) -> list[MigrationFile]:
    directory = directory or sql_dir()
    return [
        MigrationFile(path.name, path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.sql"))
    ]


def connect(url: str, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """A plain connection: no startup options and no prepared statements, so it also works
    through a pooler (a direct URL is still preferred: see config.direct_database_url)."""
    try:
        return psycopg.connect(
            url, autocommit=True, connect_timeout=connect_timeout, prepare_threshold=None
        )
    except psycopg.OperationalError as exc:
        # psycopg's message names host and port, never the password.
        raise MigrationError(f"Cannot connect to the database: {exc}".strip()) from exc


def _begin_locked(conn: psycopg.Connection[Any]) -> None:
    """Inside a transaction: wait for other migrators, then work in UTC until it ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
    conn.execute("SELECT set_config('TimeZone', 'UTC', true)")


def _ensure_tracking_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {TRACKING_SCHEMA}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TRACKING_SCHEMA}.{TRACKING_TABLE} ("
        " name TEXT PRIMARY KEY,"
        " sha256 TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )


def _applied(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, datetime]]:
    rows = conn.execute(
        f"SELECT name, sha256, applied_at FROM {TRACKING_SCHEMA}.{TRACKING_TABLE}"
    ).fetchall()
    return {name: (sha, at) for name, sha, at in rows}


def _tracking_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{TRACKING_SCHEMA}.{TRACKING_TABLE}",)
    ).fetchone()
    return bool(row and row[0])


def apply(conn: psycopg.Connection[Any], files: list[MigrationFile] | None = None) -> ApplyReport:
    """Apply every pending file, in name order, each in its own transaction."""
    files = load_files() if files is None else files
    report = ApplyReport()
    with conn.transaction():
        _begin_locked(conn)
        _ensure_tracking_table(conn)
        _refuse_changed(files, _applied(conn))
    for file in files:
        try:
            with conn.transaction():
                _begin_locked(conn)
                # Read under the lock: a migrator that waited sees what the other applied.
                if file.name in _applied(conn):
                    report.already_applied.append(file.name)
                    continue
                conn.execute(file.sql.encode())
                conn.execute(
                    f"INSERT INTO {TRACKING_SCHEMA}.{TRACKING_TABLE} (name, sha256) "
                    "VALUES (%s, %s)",
                    (file.name, file.sha256),
                )
        except psycopg.Error as exc:
            raise MigrationError(
                f"{file.name} failed and was rolled back (nothing of it is applied): "
                f"{str(exc).strip()}"
            ) from exc
        report.applied.append(file.name)
    return report


def _refuse_changed(files: list[MigrationFile], applied: dict[str, tuple[str, datetime]]) -> None:
    changed = [f.name for f in files if f.name in applied and applied[f.name][0] != f.sha256]
    if changed:
        raise MigrationError(
            f"Already-applied migration files were modified: {', '.join(changed)}. Applied "
            "files are history: restore them and put the change in a new file."
        )


def status(
    conn: psycopg.Connection[Any], files: list[MigrationFile] | None = None
) -> list[FileStatus]:
    files = load_files() if files is None else files
    applied = _applied(conn) if _tracking_exists(conn) else {}
    result = []
    for file in files:
        if file.name not in applied:
            result.append(FileStatus(file.name, "pending"))
        else:
            sha, at = applied[file.name]
            result.append(FileStatus(file.name, "applied" if sha == file.sha256 else "changed", at))
    known = {f.name for f in files}
    result += [
        FileStatus(name, "missing", at)
        for name, (_, at) in sorted(applied.items())
        if name not in known
    ]
    return result


# Drift detection


def describe_schema(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The live schema of the managed schemas as plain data: per table, its columns (type,
    nullability, default), constraints (definition) and indexes (definition); and the
    functions of our own schema."""
    tables: dict[str, Any] = {}
    for schema, table in conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE'",
        (list(MANAGED_SCHEMAS),),
    ):
        if f"{schema}.{table}" not in IGNORED_TABLES:
            tables[f"{schema}.{table}"] = {"columns": {}, "constraints": {}, "indexes": {}}
    for schema, table, column, data_type, nullable, default in conn.execute(
        "SELECT c.table_schema, c.table_name, c.column_name, "
        " format_type(a.atttypid, a.atttypmod), c.is_nullable = 'YES', c.column_default "
        "FROM information_schema.columns c "
        "JOIN pg_attribute a ON a.attrelid = format('%%I.%%I', c.table_schema, c.table_name)"
        "::regclass AND a.attname = c.column_name "
        "WHERE c.table_schema = ANY(%s)",
        (list(MANAGED_SCHEMAS),),
    ):
        if (key := f"{schema}.{table}") in tables:
            tables[key]["columns"][column] = {
                "type": data_type,
                "nullable": nullable,
                "default": default,
            }
    for schema, table, name, definition in conn.execute(
        "SELECT n.nspname, t.relname, c.conname, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = ANY(%s) "
        # PostgreSQL 18 lists NOT NULL as constraints too; the columns already say it.
        "AND c.contype <> 'n'",
        (list(MANAGED_SCHEMAS),),
    ):
        if (key := f"{schema}.{table}") in tables:
            tables[key]["constraints"][name] = definition
    for schema, table, name, definition in conn.execute(
        "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = ANY(%s)",
        (list(MANAGED_SCHEMAS),),
    ):
        if (key := f"{schema}.{table}") in tables:
            tables[key]["indexes"][name] = definition
    return {"tables": tables, "functions": _describe_functions(conn)}


def _describe_functions(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The functions of our own schema (the public one is Prisma's and its users'), by
    signature: what they return, how they are declared, and their body's hash (the body is
    stored as written, so the hash is the same on every PostgreSQL version)."""
    functions: dict[str, Any] = {}
    for name, arguments, returns, language, volatility, strict, body in conn.execute(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid), "
        " pg_get_function_result(p.oid), l.lanname, p.provolatile, p.proisstrict, p.prosrc "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "JOIN pg_language l ON l.oid = p.prolang WHERE n.nspname = %s "
        # An extension's own functions (installed into this schema) are not ours.
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass "
        " AND d.objid = p.oid AND d.deptype = 'e')",
        (TRACKING_SCHEMA,),
    ):
        functions[f"{TRACKING_SCHEMA}.{name}({arguments})"] = {
            "returns": returns,
            "language": language,
            "volatility": {"i": "immutable", "s": "stable", "v": "volatile"}[volatility],
            "strict": strict,
            "body_sha256": hashlib.sha256(body.encode()).hexdigest(),
        }
    return functions


def load_expected(directory: Path | None = None) -> dict[str, Any]:
    path = (directory or sql_dir()) / SNAPSHOT_NAME
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_snapshot(schema: dict[str, Any], directory: Path | None = None) -> Path:
    path = (directory or sql_dir()) / SNAPSHOT_NAME
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def diff_schema(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every difference between two described schemas, one readable line each."""
    exp_tables, act_tables = expected["tables"], actual["tables"]
    problems = _missing_and_unexpected(exp_tables, act_tables, "table")
    for table in sorted(exp_tables.keys() & act_tables.keys()):
        exp, act = exp_tables[table], act_tables[table]
        for kind, noun in (
            ("columns", "column"),
            ("constraints", "constraint"),
            ("indexes", "index"),
        ):
            problems += _missing_and_unexpected(exp[kind], act[kind], noun, f"{table}: ")
            for name in sorted(exp[kind].keys() & act[kind].keys()):
                if exp[kind][name] != act[kind][name]:
                    problems.append(
                        f"{table}: {noun} {name} differs: expected {exp[kind][name]!r}, "
                        f"found {act[kind][name]!r}"
                    )
    # Snapshots written before functions were described have none.
    return problems + _diff_functions(expected.get("functions", {}), actual.get("functions", {}))


def _missing_and_unexpected(
    expected: dict[str, Any], actual: dict[str, Any], noun: str, where: str = ""
) -> list[str]:
    """A line for each name only one side has, the expected side's first."""
    return [f"{where}missing {noun} {name}" for name in sorted(expected.keys() - actual.keys())] + [
        f"{where}unexpected {noun} {name}" for name in sorted(actual.keys() - expected.keys())
    ]


def _diff_functions(exp_functions: dict[str, Any], act_functions: dict[str, Any]) -> list[str]:
    problems = _missing_and_unexpected(exp_functions, act_functions, "function")
    for function in sorted(exp_functions.keys() & act_functions.keys()):
        exp_function, act_function = exp_functions[function], act_functions[function]
        for aspect in sorted(exp_function.keys() | act_function.keys()):
            if exp_function.get(aspect) != act_function.get(aspect):
                problems.append(
                    f"function {function}: {aspect} differs: expected "
                    f"{exp_function.get(aspect)!r}, found {act_function.get(aspect)!r}"
                )
    return problems


def verify(conn: psycopg.Connection[Any], directory: Path | None = None) -> list[str]:
    """The drift between the live schema and the expected one (empty: no drift)."""
    return diff_schema(load_expected(directory), describe_schema(conn))
