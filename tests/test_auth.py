"""Clerk session-token verification (PyJWT against a loopback JWKS) and the Backend API
lookup of a new user's email (the official Clerk SDK against a loopback stand-in)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from shared import auth, clerk, config
from shared.errors import ConfigurationError, Unauthorized, UpstreamError, UpstreamUnavailable
from tests.devstack.clerk_standin import ClerkStandIn
from tests.devstack.token_issuer import LocalIssuer


@pytest.fixture
def issuer(tmp_path: Path) -> LocalIssuer:
    return LocalIssuer.load_or_create(tmp_path / "key.pem")


@pytest.fixture
def clerk_api(issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClerkStandIn]:
    with ClerkStandIn([issuer]) as standin:
        monkeypatch.setenv("CLERK_ISSUER", issuer.issuer)
        monkeypatch.setenv("CLERK_JWKS_URL", standin.jwks_url)
        monkeypatch.setenv("CLERK_API_URL", standin.api_url)
        monkeypatch.setenv("CLERK_SECRET_KEY", standin.secret_key)
        monkeypatch.delenv("CLERK_JWT_KEY", raising=False)
        monkeypatch.delenv("CLERK_AUTHORIZED_PARTIES", raising=False)
        config.reset_caches()
        auth.reset_auth()
        clerk.reset_clerk()
        yield standin
    auth.reset_auth()
    clerk.reset_clerk()
    config.reset_caches()


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_good_token_gives_the_identity_with_claims(
    clerk_api: ClerkStandIn, issuer: LocalIssuer
) -> None:
    identity = auth.authenticate(bearer(issuer.mint("user_1", email="a@example.test", name="A")))
    assert identity == auth.Identity("user_1", "a@example.test", "A")
    bare = auth.authenticate(bearer(issuer.mint("user_2")))
    assert bare == auth.Identity("user_2", None, None)


def test_jwks_is_fetched_once_per_container(clerk_api: ClerkStandIn, issuer: LocalIssuer) -> None:
    for i in range(25):
        auth.authenticate(bearer(issuer.mint(f"user_{i}")))
    assert clerk_api.jwks_fetches == 1


def test_rotated_key_is_fetched_on_its_first_token(
    clerk_api: ClerkStandIn, issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "JWKS_REFETCH_COOLDOWN_SECONDS", 0.2)
    auth.reset_auth()
    auth.authenticate(bearer(issuer.mint("user_1")))
    rotated = LocalIssuer.generate(issuer.issuer)
    clerk_api.issuers.append(rotated)
    time.sleep(0.3)
    assert auth.authenticate(bearer(rotated.mint("user_1"))).clerk_id == "user_1"
    assert clerk_api.jwks_fetches == 2


def test_unknown_key_ids_cannot_flood_the_jwks_endpoint(
    clerk_api: ClerkStandIn, issuer: LocalIssuer
) -> None:
    auth.authenticate(bearer(issuer.mint("user_1")))
    for i in range(20):
        with pytest.raises(Unauthorized):
            auth.authenticate(bearer(issuer.mint("user_1", kid=f"made-up-{i}")))
    assert clerk_api.jwks_fetches <= 2  # at most one refetch inside the cooldown


def _unsigned(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _hs256_with_public_key(issuer: LocalIssuer, claims: dict[str, object]) -> str:
    """The classic key-confusion attack: HMAC-sign with the (public) RSA key as the secret.
    PyJWT refuses to produce it, so the attacker's token is assembled by hand here."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': issuer.kid})}.{part(claims)}"
    mac = hmac.new(issuer.public_pem().encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{base64.urlsafe_b64encode(mac.digest()).decode().rstrip('=')}"


@pytest.fixture
def bad_tokens(issuer: LocalIssuer) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": "user_1", "iss": issuer.issuer, "iat": now, "exp": now + 600}
    good = issuer.mint("user_1")
    header, _, signature = good.split(".")
    forged_payload = (
        base64.urlsafe_b64encode(json.dumps({**claims, "sub": "user_admin"}).encode())
        .decode()
        .rstrip("=")
    )
    return {
        "expired": issuer.mint("user_1", expires_in=-60),
        "not yet valid": issuer.mint("user_1", not_before=now + 600),
        "wrong issuer": issuer.mint("user_1", issuer="https://evil.example"),
        "alg none": _unsigned(claims),
        "hs256 with the public key": _hs256_with_public_key(issuer, claims),
        "hs256 with a secret": jwt.encode(claims, "s" * 32, algorithm="HS256"),
        "tampered payload": f"{header}.{forged_payload}.{signature}",
        "unknown kid": issuer.mint("user_1", kid="nobody-knows"),
        "other key, same kid": LocalIssuer.generate(issuer.issuer).mint("user_1", kid=issuer.kid),
        "malformed": "not.a.jwt",
        "garbage": "%%%",
        "no sub": issuer.mint("", email="x@example.test"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "expired",
        "not yet valid",
        "wrong issuer",
        "alg none",
        "hs256 with the public key",
        "hs256 with a secret",
        "tampered payload",
        "unknown kid",
        "other key, same kid",
        "malformed",
        "garbage",
        "no sub",
    ],
)
def test_bad_tokens_are_unauthorized(
    clerk_api: ClerkStandIn, bad_tokens: dict[str, str], kind: str
) -> None:
    token = bad_tokens[kind]
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate(bearer(token))
    assert caught.value.status == 401
    assert token not in caught.value.message


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Token abc", "Basic dTpw"])
def test_missing_or_non_bearer_headers_are_unauthorized(
    clerk_api: ClerkStandIn, header: str | None
) -> None:
    with pytest.raises(Unauthorized, match="Bearer"):
        auth.authenticate(header)


def test_authorized_parties_are_enforced(
    clerk_api: ClerkStandIn, issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "https://app.example.com,http://localhost:3000")
    config.reset_caches()
    ok = issuer.mint("user_1", azp="http://localhost:3000")
    assert auth.authenticate(bearer(ok)).clerk_id == "user_1"
    for token in (issuer.mint("user_1", azp="https://evil.example"), issuer.mint("user_1")):
        with pytest.raises(Unauthorized, match="unauthorized party"):
            auth.authenticate(bearer(token))


def test_verified_tokens_are_remembered_only_until_they_expire(
    clerk_api: ClerkStandIn, issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_JWT_LEEWAY_SECONDS", "0")
    config.reset_caches()
    token = issuer.mint("user_cached", expires_in=1)
    assert auth.authenticate(bearer(token)).clerk_id == "user_cached"
    assert auth.authenticate(bearer(token)).clerk_id == "user_cached"  # from the cache
    time.sleep(1.2)
    with pytest.raises(Unauthorized, match="expired"):
        auth.authenticate(bearer(token))
    # A different token for the same user is verified on its own (here: forged, so refused).
    header, payload, _ = issuer.mint("user_cached").split(".")
    with pytest.raises(Unauthorized):
        auth.authenticate(bearer(f"{header}.{payload}.AAAA"))


def test_leeway_tolerates_small_clock_skew(clerk_api: ClerkStandIn, issuer: LocalIssuer) -> None:
    assert auth.authenticate(bearer(issuer.mint("user_1", expires_in=-2))).clerk_id == "user_1"


def test_pem_key_verifies_without_any_network(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_ISSUER", issuer.issuer)
    # As an env var the PEM often arrives with literal \n sequences.
    monkeypatch.setenv("CLERK_JWT_KEY", issuer.public_pem().replace("\n", "\\n"))
    monkeypatch.setenv("CLERK_JWKS_URL", "http://127.0.0.1:1/unreachable")
    config.reset_caches()
    auth.reset_auth()
    assert auth.authenticate(bearer(issuer.mint("user_pem"))).clerk_id == "user_pem"
    with pytest.raises(Unauthorized):
        auth.authenticate(bearer(LocalIssuer.generate(issuer.issuer).mint("user_pem")))
    config.reset_caches()


def test_jwks_down_is_a_503_not_a_401(clerk_api: ClerkStandIn, issuer: LocalIssuer) -> None:
    clerk_api.fault_status = 500
    with pytest.raises(UpstreamUnavailable):
        auth.authenticate(bearer(issuer.mint("user_1")))


def test_missing_issuer_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLERK_ISSUER", raising=False)
    config.reset_caches()
    with pytest.raises(ConfigurationError, match="CLERK_ISSUER"):
        auth.authenticate("Bearer x.y.z")
    config.reset_caches()


# Clerk Backend API (the official SDK over loopback HTTP)


def test_fetch_profile_reads_the_primary_email(clerk_api: ClerkStandIn) -> None:
    clerk_api.add_user("user_api", email="api@example.test")
    assert clerk.fetch_clerk_profile("user_api") == clerk.ClerkProfile(
        "api@example.test", "Ada Lovelace"
    )
    clerk_api.add_user("user_noemail", email=None, first=None)
    assert clerk.fetch_clerk_profile("user_noemail") == clerk.ClerkProfile(None, None)


def test_fetch_profile_errors(clerk_api: ClerkStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Unauthorized, match="no longer exists"):
        clerk.fetch_clerk_profile("user_unknown")
    clerk_api.add_user("user_x", email="x@example.test")
    clerk_api.fault_status = 503
    with pytest.raises(UpstreamUnavailable):
        clerk.fetch_clerk_profile("user_x")
    clerk_api.fault_status = None
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_wrong")
    config.reset_caches()
    clerk.reset_clerk()
    with pytest.raises(UpstreamError):
        clerk.fetch_clerk_profile("user_x")
    monkeypatch.delenv("CLERK_SECRET_KEY")
    clerk.reset_clerk()
    with pytest.raises(ConfigurationError, match="CLERK_SECRET_KEY"):
        clerk.fetch_clerk_profile("user_x")


def test_fetch_profile_timeout_is_a_503(clerk_api: ClerkStandIn) -> None:
    clerk_api.add_user("user_slow", email="s@example.test")
    clerk_api.fault_delay = 6.0  # longer than the client's 5 s timeout
    with pytest.raises(UpstreamUnavailable):
        clerk.fetch_clerk_profile("user_slow")
    clerk_api.fault_delay = 0.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {
                "email_addresses": [
                    {"id": "a", "email_address": "other@example.test"},
                    {"id": "b", "email_address": "primary@example.test"},
                ],
                "primary_email_address_id": "b",
                "first_name": "Ada",
                "last_name": None,
            },
            clerk.ClerkProfile("primary@example.test", "Ada"),
        ),
        (
            {
                "email_addresses": [{"id": "a", "email_address": "only@example.test"}],
                "username": "ada",
            },
            clerk.ClerkProfile("only@example.test", "ada"),
        ),
        (
            {"email_addresses": [], "phone_numbers": [{"phone_number": "+1555"}]},
            clerk.ClerkProfile(None, None),
        ),
        (
            {"email_addresses": "junk", "first_name": 7, "username": ["x"]},
            clerk.ClerkProfile(None, None),
        ),
        (
            {
                "email_addresses": [None, 3, {"email_address": "  "}],
                "primary_email_address_id": None,
            },
            clerk.ClerkProfile(None, None),
        ),
    ],
)
def test_profile_from_clerk_user_never_crashes(
    data: dict[str, object], expected: clerk.ClerkProfile
) -> None:
    assert clerk.profile_from_clerk_user(data) == expected
