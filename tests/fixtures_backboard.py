"""Pytest fixtures for the Backboard stand-in: one server per run, a clean slate per test.

Import them into a conftest (or a test module) with
`from tests.fixtures_backboard import *`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dev.stack.backboard_standin import BackboardStandIn
from shared import config
from shared.gateways.backboard import reset_backboard

__all__ = ["BACKBOARD_TEST_KEY", "backboard", "backboard_server", "short_backboard_timeout"]

BACKBOARD_TEST_KEY = "test-backboard-key"
# Short, so timeout faults are quick to provoke, yet long enough for loaded CI machines.
DEFAULT_TEST_TIMEOUT = "1"
SHORT_TEST_TIMEOUT = "0.3"


@pytest.fixture(scope="session")
def backboard_server() -> Iterator[BackboardStandIn]:
    """The run's Backboard stand-in (loopback HTTP). Use `backboard`, which also empties it."""
    with BackboardStandIn(api_key=BACKBOARD_TEST_KEY) as standin:
        yield standin


@pytest.fixture
def backboard(
    backboard_server: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BackboardStandIn]:
    """The Backboard stand-in, emptied, with the real SDK pointed at it through the env
    (BACKBOARD_API_KEY, BACKBOARD_BASE_URL, a 1 s BACKBOARD_TIMEOUT_SECONDS) and a fresh
    gateway; the gateway is closed and faults cleared afterwards."""
    backboard_server.reset()
    monkeypatch.delenv("BACKBOARD_API_KEY_SECRET_ARN", raising=False)
    monkeypatch.setenv("BACKBOARD_API_KEY", backboard_server.api_key)
    monkeypatch.setenv("BACKBOARD_BASE_URL", backboard_server.base_url)
    monkeypatch.setenv("BACKBOARD_TIMEOUT_SECONDS", DEFAULT_TEST_TIMEOUT)
    config.reset_caches()
    reset_backboard()
    yield backboard_server
    reset_backboard()
    backboard_server.clear_faults()
    config.reset_caches()


@pytest.fixture
def short_backboard_timeout(backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch) -> float:
    """Like `backboard`, with a 0.3 s BACKBOARD_TIMEOUT_SECONDS; returns it."""
    monkeypatch.setenv("BACKBOARD_TIMEOUT_SECONDS", SHORT_TEST_TIMEOUT)
    config.reset_caches()
    reset_backboard()
    return float(SHORT_TEST_TIMEOUT)
