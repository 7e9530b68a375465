"""`make bench` keeps working: a tiny run in CI, one figure group per test so they run in
parallel. Only counts are asserted, never times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _check_b1(figures: dict[str, Any]) -> None:
    assert set(figures) >= {"B1", "B2"}
    # Round trips are counts, deterministic: the goals hold on every run, in both modes.
    assert len(figures["B2"]) == 2
    for b2 in figures["B2"].values():
        assert b2["GET /sessions"] == {"round_trips": 1, "pings": 0}
        assert b2["GET /sessions/{id}/messages (50)"] == {"round_trips": 1, "pings": 0}
        assert b2["POST /sessions/{id}/messages"] == {"round_trips": 2, "pings": 0}


def _check_b3(figures: dict[str, Any]) -> None:
    b3 = figures["B3"]
    # The large side really is larger: the ratios compare what they say they compare.
    assert b3["message_page"]["rows_large"] > b3["message_page"]["rows_small"]
    assert b3["search"]["rows_large"] > b3["search"]["rows_small"]
    assert b3["trip_list"]["trips_large"] > b3["trip_list"]["trips_small"]


def _check_b4(figures: dict[str, Any]) -> None:
    b4 = figures["B4"]
    if "skipped" in b4:  # no python3.13 on this machine
        return
    for function in ("clerk_webhook", "sessions", "messages", "me", "migrate"):
        assert b4[function]["import_ms_p50"] > 0, function
    assert b4["layer_mb"] > 0
    # Each function with required libraries beyond the baseline's has its floor, measured in
    # the same interleaved runs.
    for function in ("clerk_webhook", "sessions", "messages", "me"):
        floor = b4[function]["floor"]
        assert floor["import_ms_p50"] > 0 and floor["function_to_floor_p50"] > 0, function
    assert "floor" not in b4["migrate"]
    # The first request's secret, both through boto3 and through the extension's stand-in.
    for function in ("sessions", "messages", "me"):
        steps = b4[function]["first_request_ms_p50"]
        assert steps["secrets_manager"] > 0 and steps["secrets_via_extension"] > 0, function


def _check_b5(figures: dict[str, Any]) -> None:
    for b5 in figures["B5"].values():
        assert b5["errors"] == 0
        assert b5["peak_server_connections"] <= b5["connection_budget"]
        assert b5["connections_opened"] <= b5["connection_budget"]


def _check_b6(figures: dict[str, Any]) -> None:
    assert figures["B6"]["samples"] > 0  # every streamed reply was relayed piece by piece


CHECKS = {"B1": _check_b1, "B3": _check_b3, "B4": _check_b4, "B5": _check_b5, "B6": _check_b6}


@pytest.mark.slow
@pytest.mark.parametrize("figure", sorted(CHECKS))
def test_bench_smoke_run_produces_every_figure(figure: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dev.bench.run",
            "--smoke",
            "--only",
            figure,
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().startswith("| figure |")
    CHECKS[figure](figures)
