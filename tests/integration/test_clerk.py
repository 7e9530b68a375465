"""Clerk user objects (webhook payloads and Backend API users) and the Backend API lookup of
a new user's profile: the official Clerk SDK against the loopback stand-in."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from moto import mock_aws

from dev.stack.clerk_standin import ClerkStandIn, clerk_user_json
from shared import config
from shared.errors import (
    ConfigurationError,
    Unauthorized,
    UpstreamError,
    UpstreamUnavailable,
)
from shared.gateways import clerk
from shared.gateways.clerk import ClerkProfile, fetch_clerk_profile, profile_from_clerk_user
from tests.fixtures_clerk import *  # noqa: F403

# profile_from_clerk_user

# A user.created webhook's `data`, as Clerk sends it (trimmed of fields we never read).
WEBHOOK_USER: dict[str, Any] = {
    "id": "user_29w83sxmDNGwOuEthce5gg56FcC",
    "object": "user",
    "first_name": "Example",
    "last_name": "Example",
    "username": None,
    "primary_email_address_id": "idn_29w83yL7CwVlJXylYLxcslromF1",
    "email_addresses": [
        {
            "id": "idn_29w83yL7CwVlJXylYLxcslromF1",
            "object": "email_address",
            "email_address": "example@example.org",
            "linked_to": [],
            "verification": {"status": "verified", "strategy": "ticket"},
        }
    ],
    "phone_numbers": [],
    "external_accounts": [],
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (WEBHOOK_USER, ClerkProfile("example@example.org", "Example Example")),
        (
            {
                "email_addresses": [
                    {"id": "idn_a", "email_address": "other@example.test"},
                    {"id": "idn_b", "email_address": "primary@example.test"},
                    {"id": "idn_c", "email_address": "third@example.test"},
                ],
                "primary_email_address_id": "idn_b",
                "first_name": "Ada",
                "last_name": None,
            },
            ClerkProfile("primary@example.test", "Ada"),
        ),
        (  # the primary id names no address: the first one
            {
                "email_addresses": [
                    {"id": "idn_a", "email_address": "first@example.test"},
                    {"id": "idn_b", "email_address": "second@example.test"},
                ],
                "primary_email_address_id": "idn_gone",
                "last_name": "Lovelace",
            },
            ClerkProfile("first@example.test", "Lovelace"),
        ),
        (  # the primary address is blank: the first usable one
            {
                "email_addresses": [
                    {"id": "idn_a", "email_address": "  "},
                    {"id": "idn_b", "email_address": "usable@example.test"},
                ],
                "primary_email_address_id": "idn_a",
            },
            ClerkProfile("usable@example.test", None),
        ),
        (  # phone-only sign-up: no email at all
            {
                "email_addresses": [],
                "primary_email_address_id": None,
                "phone_numbers": [{"phone_number": "+15555550100"}],
                "first_name": None,
                "last_name": None,
                "username": None,
            },
            ClerkProfile(None, None),
        ),
        (  # only a username
            {"email_addresses": [], "first_name": "", "last_name": "  ", "username": "ada_l"},
            ClerkProfile(None, "ada_l"),
        ),
        (  # names are stripped and joined
            {"first_name": "  Ada ", "last_name": " Lovelace  ", "username": "ada"},
            ClerkProfile(None, "Ada Lovelace"),
        ),
        ({}, ClerkProfile(None, None)),
        (
            {"email_addresses": "junk", "first_name": 7, "last_name": [], "username": ["x"]},
            ClerkProfile(None, None),
        ),
        (
            {
                "email_addresses": [None, 3, "a@example.test", {"email_address": 5}, {}],
                "primary_email_address_id": ["idn_a"],
            },
            ClerkProfile(None, None),
        ),
        (
            {
                "email_addresses": [{"email_address": "noid@example.test"}],
                "primary_email_address_id": None,
            },
            ClerkProfile("noid@example.test", None),
        ),
        (
            {"email_addresses": None, "first_name": None, "username": None},
            ClerkProfile(None, None),
        ),
    ],
)
def test_profile_from_clerk_user(data: dict[str, Any], expected: ClerkProfile) -> None:
    assert profile_from_clerk_user(data) == expected


@pytest.mark.parametrize("data", [None, [], "user", 42])
def test_profile_from_something_that_is_not_a_user_never_crashes(data: Any) -> None:
    assert profile_from_clerk_user(data) == ClerkProfile(None, None)


def test_the_stand_ins_users_are_read_like_webhook_payloads() -> None:
    user = clerk_user_json(
        "user_x", email="p@example.test", first="Grace", last="Hopper", other_emails=("o@x.test",)
    )
    assert profile_from_clerk_user(user) == ClerkProfile("p@example.test", "Grace Hopper")


# fetch_clerk_profile: the official SDK over loopback HTTP


def test_fetch_profile_reads_the_primary_email_and_name(clerk_env: ClerkStandIn) -> None:
    clerk_env.add_user(
        "user_api", email="api@example.test", other_emails=("old@example.test", "x@example.test")
    )
    assert fetch_clerk_profile("user_api") == ClerkProfile("api@example.test", "Ada Lovelace")
    assert clerk_env.paths == ["/v1/users/user_api"]


def test_fetch_profile_of_a_user_without_email_or_name(clerk_env: ClerkStandIn) -> None:
    clerk_env.add_user("user_phone", email=None, first=None)
    assert fetch_clerk_profile("user_phone") == ClerkProfile(None, None)
    clerk_env.add_user("user_handle", email=None, first=None, username="handle")
    assert fetch_clerk_profile("user_handle") == ClerkProfile(None, "handle")


def test_one_sdk_client_serves_every_lookup(clerk_env: ClerkStandIn) -> None:
    clerk_env.add_user("user_a", email="a@example.test")
    for _ in range(5):
        fetch_clerk_profile("user_a")
    built = clerk._client.get()
    fetch_clerk_profile("user_a")
    assert clerk._client.get() is built
    assert clerk_env.user_fetches == 6


def test_unknown_user_is_unauthorized(clerk_env: ClerkStandIn) -> None:
    with pytest.raises(Unauthorized, match="user no longer exists") as caught:
        fetch_clerk_profile("user_unknown")
    assert caught.value.status == 401


@pytest.mark.parametrize("clerk_id", ["", "../organizations", "user_1/../../x", "a b", "ü", "."])
def test_odd_user_ids_never_reach_clerk(clerk_env: ClerkStandIn, clerk_id: str) -> None:
    # The SDK puts path parameters into the URL unescaped, and httpx resolves "..".
    with pytest.raises(Unauthorized):
        fetch_clerk_profile(clerk_id)
    assert clerk_env.paths == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_clerk_5xx_is_503_and_not_retried(clerk_env: ClerkStandIn, status: int) -> None:
    clerk_env.add_user("user_x", email="x@example.test")
    # A Retry-After the SDK would sleep for, uncapped, if it retried.
    clerk_env.fail(status, route="users", headers={"Retry-After": "30"})
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        fetch_clerk_profile("user_x")
    assert time.monotonic() - started < 2
    assert caught.value.status == 503
    assert clerk_env.user_fetches == 1


def test_rate_limited_is_503_with_clerks_retry_after(clerk_env: ClerkStandIn) -> None:
    clerk_env.fail(429, route="users", headers={"Retry-After": "7"}, times=1)
    with pytest.raises(UpstreamUnavailable) as caught:
        fetch_clerk_profile("user_x")
    assert caught.value.retry_after == 7
    clerk_env.fail(429, route="users", headers={"Retry-After": "86400"}, times=1)
    with pytest.raises(UpstreamUnavailable) as caught:
        fetch_clerk_profile("user_x")
    assert caught.value.retry_after == clerk.MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize("status", [400, 402, 403, 409, 422])
def test_other_refusals_are_upstream_errors(clerk_env: ClerkStandIn, status: int) -> None:
    clerk_env.fail(status, route="users")
    with pytest.raises(UpstreamError) as caught:
        fetch_clerk_profile("user_x")
    assert caught.value.status == 502


def test_a_wrong_secret_key_is_an_upstream_error_and_a_fixed_one_is_picked_up(
    clerk_env: ClerkStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    clerk_env.add_user("user_x", email="x@example.test")
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_test_wrong")
    clerk.reset_clerk()
    with pytest.raises(UpstreamError) as caught:
        fetch_clerk_profile("user_x")
    assert "sk_test" not in caught.value.message
    # The rejected client was dropped: the rotated secret is used on the next lookup.
    monkeypatch.setenv("CLERK_SECRET_KEY", clerk_env.secret_key)
    assert fetch_clerk_profile("user_x").email == "x@example.test"


def test_no_secret_key_is_an_empty_profile_and_one_warning(
    clerk_env: ClerkStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Lookups are optional (README): without a key the user is stored with an empty email."""
    monkeypatch.delenv("CLERK_SECRET_KEY")
    clerk.reset_clerk()
    caplog.set_level(logging.WARNING)
    clerk_env.add_user("user_x", email="x@example.test")
    assert fetch_clerk_profile("user_x") == ClerkProfile(None, None)
    assert fetch_clerk_profile("user_y") == ClerkProfile(None, None)
    assert clerk_env.paths == []
    [warning] = [r for r in caplog.records if "CLERK_SECRET_KEY" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "sk_" not in caplog.text


@mock_aws
def test_a_configured_secret_key_that_cannot_be_read_is_still_a_configuration_error(
    clerk_env: ClerkStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("CLERK_SECRET_KEY")
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:clerk-missing-AbCdEf"
    monkeypatch.setenv("CLERK_SECRET_KEY_SECRET_ARN", arn)
    config.reset_caches()
    clerk.reset_clerk()
    with pytest.raises(ConfigurationError) as caught:
        fetch_clerk_profile("user_x")
    assert arn in caught.value.detail  # for the operator's log...
    assert arn not in caught.value.message  # ...never for the client
    assert clerk_env.paths == []


def test_unreachable_clerk_is_503(clerk_env: ClerkStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    with ClerkStandIn(clerk_env.issuers) as gone:
        url = gone.api_url
    monkeypatch.setenv("CLERK_API_URL", url)  # nothing listens there any more
    config.reset_caches()
    clerk.reset_clerk()
    with pytest.raises(UpstreamUnavailable):
        fetch_clerk_profile("user_x")


@pytest.mark.slow
def test_timeout_is_503(clerk_env: ClerkStandIn) -> None:
    clerk_env.add_user("user_slow", email="s@example.test")
    clerk_env.fail(route="users", delay=clerk.TIMEOUT_MS / 1000 + 1, times=1)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        fetch_clerk_profile("user_slow")
    assert time.monotonic() - started < clerk.TIMEOUT_MS / 1000 + 1
    # The client survives its timeout.
    assert fetch_clerk_profile("user_slow").email == "s@example.test"


def test_a_user_the_sdk_model_no_longer_matches_is_still_read(clerk_env: ClerkStandIn) -> None:
    user = clerk_env.add_user("user_new_shape", email="n@example.test")
    del user["has_image"]  # a required field of the SDK's model, gone
    user["email_addresses"][0]["verification"] = {"status": "some_new_status"}
    assert fetch_clerk_profile("user_new_shape") == ClerkProfile("n@example.test", "Ada Lovelace")


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[]", b'{"object": "user"}'])
def test_an_unreadable_200_is_an_upstream_error(clerk_env: ClerkStandIn, body: bytes) -> None:
    clerk_env.fail(200, route="users", body=body)
    with pytest.raises(UpstreamError):
        fetch_clerk_profile("user_x")


def test_the_stand_ins_error_bodies_parse_as_clerk_errors(clerk_env: ClerkStandIn) -> None:
    # Guard for the stand-in itself: the SDK raises its typed ClerkErrors (not a validation
    # error), so the 404 above exercises the same path real Clerk does.
    from clerk_backend_api import Clerk, models

    with Clerk(bearer_auth=clerk_env.secret_key, server_url=clerk_env.api_url) as sdk:
        with pytest.raises(models.ClerkErrors) as caught:
            sdk.users.get(user_id="user_unknown")
        assert caught.value.data.errors[0].code == "resource_not_found"
        clerk_env.add_user("user_ok", email="ok@example.test")
        assert sdk.users.get(user_id="user_ok").email_addresses[0].email_address == (
            "ok@example.test"
        )
