"""diff_schema on described schemas, without a database: every kind of drift is named, and
identical schemas have none. (The integration tests describe live databases.)"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from shared.store.migrations import diff_schema

EXPECTED: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "sql" / "expected_schema.json").read_text()
)


def test_identical_schemas_have_no_drift() -> None:
    assert diff_schema(EXPECTED, copy.deepcopy(EXPECTED)) == []


def test_missing_and_unexpected_tables_are_named() -> None:
    actual = copy.deepcopy(EXPECTED)
    actual["tables"]["public.Extra"] = actual["tables"].pop("public.Message")
    assert diff_schema(EXPECTED, actual) == [
        "missing table public.Message",
        "unexpected table public.Extra",
    ]


def test_each_kind_of_drift_inside_a_table_is_named() -> None:
    actual = copy.deepcopy(EXPECTED)
    session = actual["tables"]["public.Session"]
    del session["columns"]["title"]
    session["columns"]["note"] = {"type": "text", "nullable": True, "default": None}
    index = next(iter(session["indexes"]))
    session["indexes"][index] = "CREATE INDEX changed ON x (y)"
    problems = diff_schema(EXPECTED, actual)
    assert "public.Session: missing column title" in problems
    assert "public.Session: unexpected column note" in problems
    assert any(p.startswith(f"public.Session: index {index} differs: expected ") for p in problems)
    assert len(problems) == 3


def test_function_drift_is_named() -> None:
    actual = copy.deepcopy(EXPECTED)
    name, function = next(iter(actual["functions"].items()))
    function["body_sha256"] = "0" * 64
    actual["functions"]["tripchat.stray()"] = dict(function)
    problems = diff_schema(EXPECTED, actual)
    assert problems[0] == "unexpected function tripchat.stray()"
    assert problems[1].startswith(f"function {name}: body_sha256 differs: expected ")
    assert len(problems) == 2
    del actual["functions"][name]
    assert f"missing function {name}" in diff_schema(EXPECTED, actual)


def test_a_snapshot_without_functions_reads_as_none() -> None:
    older = {"tables": EXPECTED["tables"]}
    assert diff_schema(older, copy.deepcopy(older)) == []
    assert diff_schema(older, EXPECTED) == [
        f"unexpected function {name}" for name in sorted(EXPECTED["functions"])
    ]
