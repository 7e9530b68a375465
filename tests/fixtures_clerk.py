"""Pytest fixtures for the Clerk stand-in: one server per run, a clean slate per test.

Import them into a conftest (or a test module) with
`from tests.fixtures_clerk import *`, or list this module in `pytest_plugins`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dev.stack.clerk_standin import ClerkStandIn
from dev.stack.token_issuer import LocalIssuer
from shared import config
from shared.gateways import auth, clerk

__all__ = ["CLERK_ENV_VARIABLES", "clerk_env", "clerk_issuer", "clerk_server"]

# Every variable the Clerk code reads: cleared first, so the developer's shell cannot leak in.
CLERK_ENV_VARIABLES = (
    "CLERK_ISSUER",
    "CLERK_JWKS_URL",
    "CLERK_JWT_KEY",
    "CLERK_AUTHORIZED_PARTIES",
    "CLERK_API_URL",
    "CLERK_JWT_LEEWAY_SECONDS",
    "CLERK_SECRET_KEY",
    "CLERK_SECRET_KEY_SECRET_ARN",
)


def _forget() -> None:
    config.reset_caches()
    auth.reset_auth()
    clerk.reset_clerk()


@pytest.fixture(scope="session")
def clerk_server() -> Iterator[ClerkStandIn]:
    """The run's Clerk stand-in (loopback HTTP), publishing one LocalIssuer's key. Use
    `clerk_env`, which also resets it and points the code at it."""
    with ClerkStandIn([LocalIssuer.generate()], secret_key="sk_test_standin") as standin:
        yield standin


@pytest.fixture
def clerk_env(
    clerk_server: ClerkStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClerkStandIn]:
    """The Clerk stand-in, reset (original key only, no users, no faults, counters at zero),
    with the env pointing the real PyJWT and Clerk SDK at it: CLERK_ISSUER (the issuer's),
    CLERK_JWKS_URL, CLERK_API_URL, CLERK_SECRET_KEY; every other CLERK_* variable unset.
    Settings, the JWKS client, verified tokens and the SDK client are forgotten before and
    after."""
    clerk_server.reset()
    for name in CLERK_ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLERK_ISSUER", clerk_server.issuers[0].issuer)
    monkeypatch.setenv("CLERK_JWKS_URL", clerk_server.jwks_url)
    monkeypatch.setenv("CLERK_API_URL", clerk_server.api_url)
    monkeypatch.setenv("CLERK_SECRET_KEY", clerk_server.secret_key)
    _forget()
    yield clerk_server
    clerk_server.clear_faults()
    _forget()


@pytest.fixture
def clerk_issuer(clerk_env: ClerkStandIn) -> LocalIssuer:
    """The LocalIssuer whose key `clerk_env` publishes (mint tokens with it)."""
    return clerk_env.issuers[0]
