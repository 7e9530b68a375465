"""Rewrite sql/expected_schema.json from a throwaway database migrated from scratch.

Run after adding a migration file (make schema-snapshot); the schema tests then check that the
snapshot and the files agree, and `verify` compares live databases with it.
"""

from __future__ import annotations

from dev.tools.databases import create_database, drop_database
from shared.store import migrations


def main() -> None:
    name, url = create_database()
    try:
        with migrations.connect(url) as conn:
            migrations.apply(conn)
            print(f"wrote {migrations.write_snapshot(migrations.describe_schema(conn))}")
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
