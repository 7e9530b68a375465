"""README's layout table matches the tree: every top-level entry has a row, every module of
`shared/` and every function is named in its row, and every path a row names exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Housekeeping files that need no row of their own.
UNLISTED = {"README.md", ".gitignore"}


def _layout_rows() -> dict[str, str]:
    """{first cell: whole row} of the table under '## Layout'."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return {
        line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")
    }


def _tracked_top_level() -> set[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return {path.split("/", 1)[0] for path in listed.splitlines()}


def test_every_top_level_entry_has_a_row_and_every_named_path_exists() -> None:
    # `functions/<name>/app.py` stands for each function: its fixed part must exist.
    named = {
        path.split("/<", 1)[0].rstrip("/")
        for cell in _layout_rows()
        for path in re.findall(r"`([^`]+)`", cell)
    }
    missing = _tracked_top_level() - UNLISTED - {path.split("/", 1)[0] for path in named}
    assert not missing, f"add a row to README's layout table for {sorted(missing)}"
    assert [path for path in named if not (REPO / path).exists()] == []


def test_the_shared_row_names_every_module_and_the_functions_row_every_function() -> None:
    rows = _layout_rows()
    shared_row = rows["`shared/`"]
    modules = {
        path.stem
        for path in (REPO / "shared").rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }
    packages = {
        path.name for path in (REPO / "shared").iterdir() if (path / "__init__.py").exists()
    }
    # Named whole: `db` does not count for a `db_pool`.
    missing = {name for name in modules | packages if not re.search(rf"`{name}/?`", shared_row)}
    assert not missing, f"README's shared/ row does not name {sorted(missing)}"

    functions_row = rows["`functions/<name>/app.py`"]
    functions = {path.parent.name for path in (REPO / "functions").glob("*/app.py")}
    assert {name for name in functions if f"`{name}`" not in functions_row} == set()
