"""The database itself enforces the seed's rules: Prisma names, constraints, defaults."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors

from shared.store import migrations

Conn = psycopg.Connection[tuple[object, ...]]


def _user(conn: Conn, clerk_id: str = "user_a", assistant_id: str = "asst_a") -> str:
    row = conn.execute(
        'INSERT INTO "User" ("clerkId", "assistantId", "email") VALUES (%s, %s, %s) RETURNING id',
        (clerk_id, assistant_id, f"{clerk_id}@example.test"),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _session(conn: Conn, user_id: str) -> str:
    row = conn.execute(
        'INSERT INTO "Session" ("userId", "threadId") VALUES (%s, %s) RETURNING id',
        (user_id, f"thread-{uuid.uuid4()}"),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_prisma_names_are_used(clean_db: str, admin_conn: Conn) -> None:
    schema = migrations.describe_schema(admin_conn)["tables"]
    assert {"public.User", "public.Session", "public.Message"} <= schema.keys()
    assert set(schema["public.User"]["columns"]) == {
        "id",
        "clerkId",
        "assistantId",
        "email",
        "name",
        "createdAt",
    }
    assert set(schema["public.Session"]["columns"]) == {
        "id",
        "title",
        "userId",
        "threadId",
        "createdAt",
    }
    assert set(schema["public.Message"]["columns"]) == {
        "id",
        "role",
        "content",
        "sessionId",
        "createdAt",
    }
    assert {"User_pkey", "User_clerkId_key", "User_assistantId_key"} <= set(
        schema["public.User"]["indexes"]
    )
    session_fk = schema["public.Session"]["constraints"]["Session_userId_fkey"]
    message_fk = schema["public.Message"]["constraints"]["Message_sessionId_fkey"]
    for fk in (session_fk, message_fk):
        assert "ON UPDATE CASCADE ON DELETE RESTRICT" in fk
    created = schema["public.User"]["columns"]["createdAt"]
    assert created == {
        "type": "timestamp(3) without time zone",
        "nullable": False,
        "default": "CURRENT_TIMESTAMP",
    }
    assert schema["public.Session"]["columns"]["title"]["nullable"] is True


def test_duplicate_clerk_id_is_rejected(clean_db: str, admin_conn: Conn) -> None:
    _user(admin_conn, "user_dup", "asst_1")
    with pytest.raises(errors.UniqueViolation, match="User_clerkId_key"):
        _user(admin_conn, "user_dup", "asst_2")


def test_duplicate_assistant_id_is_rejected(clean_db: str, admin_conn: Conn) -> None:
    _user(admin_conn, "user_1", "asst_dup")
    with pytest.raises(errors.UniqueViolation, match="User_assistantId_key"):
        _user(admin_conn, "user_2", "asst_dup")


@pytest.mark.parametrize("role", ["system", "tool", "USER", ""])
def test_roles_other_than_user_and_assistant_are_rejected(
    clean_db: str, admin_conn: Conn, role: str
) -> None:
    session_id = _session(admin_conn, _user(admin_conn))
    with pytest.raises(errors.CheckViolation, match="Message_role_check"):
        admin_conn.execute(
            'INSERT INTO "Message" ("role", "content", "sessionId") VALUES (%s, %s, %s)',
            (role, "hi", session_id),
        )


def test_both_roles_are_accepted(clean_db: str, admin_conn: Conn) -> None:
    session_id = _session(admin_conn, _user(admin_conn))
    for role in ("user", "assistant"):
        admin_conn.execute(
            'INSERT INTO "Message" ("role", "content", "sessionId") VALUES (%s, %s, %s)',
            (role, "hi", session_id),
        )
    count = admin_conn.execute('SELECT count(*) FROM "Message"').fetchone()
    assert count == (2,)


def test_session_for_a_missing_user_is_rejected(clean_db: str, admin_conn: Conn) -> None:
    with pytest.raises(errors.ForeignKeyViolation, match="Session_userId_fkey"):
        _session(admin_conn, "no-such-user")


def test_deleting_a_user_with_sessions_is_restricted(clean_db: str, admin_conn: Conn) -> None:
    user_id = _user(admin_conn)
    _session(admin_conn, user_id)
    with pytest.raises(errors.ForeignKeyViolation, match="Session_userId_fkey"):
        admin_conn.execute('DELETE FROM "User" WHERE id = %s', (user_id,))


def test_deleting_a_session_with_messages_is_restricted(clean_db: str, admin_conn: Conn) -> None:
    session_id = _session(admin_conn, _user(admin_conn))
    admin_conn.execute(
        'INSERT INTO "Message" ("role", "content", "sessionId") VALUES (%s, %s, %s)',
        ("user", "hi", session_id),
    )
    with pytest.raises(errors.ForeignKeyViolation, match="Message_sessionId_fkey"):
        admin_conn.execute('DELETE FROM "Session" WHERE id = %s', (session_id,))


def test_defaults_fill_id_created_at_and_title(clean_db: str, admin_conn: Conn) -> None:
    user_id = _user(admin_conn)
    uuid.UUID(user_id)  # a real UUID in text form
    row = admin_conn.execute(
        'INSERT INTO "Session" ("userId", "threadId") VALUES (%s, %s) '
        'RETURNING id, title, "createdAt"',
        (user_id, "thread-1"),
    ).fetchone()
    assert row is not None
    session_id, title, created_at = row
    uuid.UUID(str(session_id))
    assert title == "New Trip"
    assert isinstance(created_at, datetime)
    # Stored as UTC without a zone: it reads as "now" once UTC is attached.
    assert abs(created_at.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(seconds=30)
    assert created_at.microsecond % 1000 == 0  # TIMESTAMP(3): millisecond precision


def test_fresh_schema_matches_the_snapshot(clean_db: str, admin_conn: Conn) -> None:
    assert migrations.verify(admin_conn) == []


def test_clean_db_empties_every_table_children_first(clean_db: str, admin_conn: Conn) -> None:
    from tests.conftest import EVERY_TABLE_CHILDREN_FIRST

    rows = admin_conn.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname, c.relname"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname IN ('public', 'tripchat')"
    ).fetchall()
    tables = {
        str(name).removeprefix("public.")
        for name, schema, table in rows
        if f"{schema}.{table}" not in migrations.IGNORED_TABLES
    }
    assert set(EVERY_TABLE_CHILDREN_FIRST) == tables
    position = {name: i for i, name in enumerate(EVERY_TABLE_CHILDREN_FIRST)}
    references = admin_conn.execute(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
        " WHERE contype = 'f'"
    ).fetchall()
    assert references
    for child, parent in references:
        if child != parent:
            assert position[str(child)] < position[str(parent)], (child, parent)
