"""`make bench` keeps working: a tiny run in CI. Only counts are asserted, never times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dev.bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / "results.json").read_text())
    assert set(figures) >= {"B1", "B2", "B3", "B4", "B5", "B6"}
    assert figures["B6"]["samples"] > 0  # every streamed reply was relayed piece by piece
    assert (tmp_path / "results.md").read_text().startswith("| figure |")
    # Round trips are counts, deterministic: the goals hold on every run, in both modes.
    assert len(figures["B2"]) == 2
    for b2 in figures["B2"].values():
        assert b2["GET /sessions"] == {"round_trips": 1, "pings": 0}
        assert b2["GET /sessions/{id}/messages (50)"] == {"round_trips": 1, "pings": 0}
        assert b2["POST /sessions/{id}/messages"] == {"round_trips": 2, "pings": 0}
    for b5 in figures["B5"].values():
        assert b5["errors"] == 0
        assert b5["peak_server_connections"] <= b5["connection_budget"]
        assert b5["connections_opened"] <= b5["connection_budget"]
