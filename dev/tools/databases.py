"""Throwaway PostgreSQL databases on the local server, for the tests, the benchmarks and the
schema snapshot: clearly named, created one at a time, dropped by whoever created them."""

from __future__ import annotations

import os
import uuid

import psycopg

ADMIN_URL = os.environ.get(
    "TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str) -> str:
    """The URL of database `name` on the server of ADMIN_URL."""
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def create_database() -> tuple[str, str]:
    """A new empty database: (name, URL)."""
    name = f"tripchat_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, database_url(name)


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
