"""Clerk session-token verification: the real PyJWT (PyJWKClient included) against tokens
minted by a LocalIssuer and keys served by the loopback Clerk stand-in."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time

import jwt
import pytest

from dev.stack.clerk_standin import ClerkStandIn
from dev.stack.token_issuer import LocalIssuer
from shared import config
from shared.errors import ConfigurationError, Unauthorized, UpstreamUnavailable
from shared.gateways import auth
from tests.fixtures_clerk import *  # noqa: F403


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(data: dict[str, object]) -> str:
    return b64url(json.dumps(data).encode())


def refused(token: str) -> Unauthorized:
    """The 401 a token gets; its message never echoes the token or a piece of it."""
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate(bearer(token))
    error = caught.value
    assert error.status == 401
    for piece in (token, *token.split(".")):
        if len(piece) > 8:
            assert piece not in error.message
    return error


# Good tokens


def test_good_token_gives_the_identity_with_its_claims(clerk_issuer: LocalIssuer) -> None:
    token = clerk_issuer.mint("user_1", email=" a@example.test ", name="Ada L")
    assert auth.authenticate(bearer(token)) == auth.Identity("user_1", "a@example.test", "Ada L")


def test_good_token_without_email_and_name(clerk_issuer: LocalIssuer) -> None:
    assert auth.authenticate(bearer(clerk_issuer.mint("user_2"))) == auth.Identity(
        "user_2", None, None
    )
    # Template claims render as "" or null for users without them.
    token = clerk_issuer.mint("user_3", extra={"email": "", "name": None})
    assert auth.authenticate(bearer(token)) == auth.Identity("user_3", None, None)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "  Bearer"])
def test_bearer_scheme_is_case_insensitive(clerk_issuer: LocalIssuer, scheme: str) -> None:
    header = f"{scheme}   {clerk_issuer.mint('user_1')}  "
    assert auth.authenticate(header).clerk_id == "user_1"


def test_leeway_tolerates_small_clock_skew(clerk_issuer: LocalIssuer) -> None:
    now = int(time.time())
    assert auth.authenticate(bearer(clerk_issuer.mint("user_1", expires_in=-2))).clerk_id
    assert auth.authenticate(bearer(clerk_issuer.mint("user_2", not_before=now + 2))).clerk_id


def test_issuer_configured_with_a_trailing_slash_still_matches(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_ISSUER", f"{clerk_issuer.issuer}/")
    config.reset_caches()
    assert auth.authenticate(bearer(clerk_issuer.mint("user_1"))).clerk_id == "user_1"


# Bad headers and bad tokens


@pytest.mark.parametrize(
    "header", [None, "", "   ", "Bearer", "Bearer   ", "Token abc", "Basic dTpw", "abc.def.ghi"]
)
def test_missing_or_non_bearer_headers_are_unauthorized(
    clerk_env: ClerkStandIn, header: str | None
) -> None:
    with pytest.raises(Unauthorized, match="Bearer <token>"):
        auth.authenticate(header)
    assert clerk_env.jwks_fetches == 0


def _hs256(secret: bytes, header: dict[str, object], claims: dict[str, object]) -> str:
    """An HMAC-signed token, assembled by hand: PyJWT refuses to HMAC-sign with a PEM key,
    which is exactly the key-confusion attack (the public key as the HMAC secret)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', **header})}.{segment(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def bad_tokens(issuer: LocalIssuer) -> dict[str, tuple[str, str]]:
    """Each bad token with (a fragment of) the reason it must be refused for."""
    now = int(time.time())
    claims = issuer.claims("user_1")
    header, payload, signature = issuer.mint("user_1").split(".")
    forged = segment({**claims, "sub": "user_admin"})
    other_key = LocalIssuer.generate(issuer.issuer)
    return {
        "expired": (issuer.mint("user_1", expires_in=-60), "expired"),
        "not yet valid": (issuer.mint("user_1", not_before=now + 600), "not valid yet"),
        "issued in the future": (issuer.mint("user_1", extra={"iat": now + 600}), "not valid"),
        "wrong issuer": (issuer.mint("user_1", issuer="https://evil.example"), "another"),
        "no issuer": (_without(issuer, "iss"), "'iss'"),
        "no exp": (_without(issuer, "exp"), "'exp'"),
        "alg none": (issuer.mint("user_1", alg="none"), "algorithm"),
        "alg none, pyjwt": (jwt.encode(claims, "", algorithm="none"), "algorithm"),
        "hs256 with the public key": (
            _hs256(issuer.public_pem().encode(), {"kid": issuer.kid}, claims),
            "algorithm",
        ),
        "hs256 with a secret": (
            jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": issuer.kid}),
            "algorithm",
        ),
        "rs512, right key": (issuer.mint("user_1", alg="RS512"), "algorithm"),
        "ps256, right key": (issuer.mint("user_1", alg="PS256"), "algorithm"),
        "tampered payload": (f"{header}.{forged}.{signature}", "signature"),
        "stripped signature": (f"{header}.{payload}.", "signature"),
        "unknown kid": (issuer.mint("user_1", kid="nobody-knows"), "unknown key"),
        "no kid": (issuer.mint("user_1", kid=""), "no signing key"),
        "other key, same kid": (other_key.mint("user_1", kid=issuer.kid), "signature"),
        "malformed": ("not.a.jwt", "malformed"),
        "two segments": (f"{header}.{payload}", "malformed"),
        "garbage": ("%%%", "malformed"),
        "empty sub": (issuer.mint(""), "subject"),
        "blank sub": (issuer.mint("   "), "subject"),
        "numeric sub": (issuer.sign({**claims, "sub": 42}), "invalid"),
        "huge": ("a" * 9000, "too long"),
    }


def _without(issuer: LocalIssuer, claim: str) -> str:
    claims = issuer.claims("user_1")
    del claims[claim]
    return issuer.sign(claims)


BAD_KINDS = list(bad_tokens(LocalIssuer.generate()))


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_tokens_are_unauthorized(clerk_issuer: LocalIssuer, kind: str) -> None:
    token, reason = bad_tokens(clerk_issuer)[kind]
    assert reason in refused(token).message


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_tokens_are_unauthorized_with_a_pem_key_too(
    clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("CLERK_JWT_KEY", clerk_issuer.public_pem())
    config.reset_caches()
    token, reason = bad_tokens(clerk_issuer)[kind]
    if kind in ("unknown kid", "no kid"):
        # The one configured key verifies whatever key id the token names.
        assert auth.authenticate(bearer(token)).clerk_id == "user_1"
    else:
        assert reason in refused(token).message


def test_tokens_clerk_cannot_have_signed_cost_no_jwks_fetch(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer
) -> None:
    tokens = bad_tokens(clerk_issuer)
    for kind in ("alg none", "hs256 with the public key", "hs256 with a secret", "malformed"):
        refused(tokens[kind][0])
    assert clerk_env.jwks_fetches == 0


def test_authorized_parties_are_enforced(
    clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "https://app.example.com, http://localhost:3000")
    config.reset_caches()
    ok = clerk_issuer.mint("user_1", azp="http://localhost:3000")
    assert auth.authenticate(bearer(ok)).clerk_id == "user_1"
    for token in (
        clerk_issuer.mint("user_1", azp="https://evil.example"),
        clerk_issuer.mint("user_1", azp="https://app.example.com/"),  # exact origins only
        clerk_issuer.mint("user_1"),  # no azp at all
    ):
        assert "unauthorized party" in refused(token).message


def test_without_configured_parties_a_token_naming_one_is_refused(
    clerk_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """The safe default: with no allowlist, a browser token (its azp names the page's origin)
    from any origin is refused; the client learns nothing of our settings, the log does."""
    caplog.set_level(logging.WARNING)
    error = refused(clerk_issuer.mint("user_1", azp="https://anything.example"))
    assert error.message == "The session token was issued to an unauthorized party."
    assert "CLERK_AUTHORIZED_PARTIES" not in error.message
    [warning] = [r for r in caplog.records if "CLERK_AUTHORIZED_PARTIES" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["azp"] == "https://anything.example"
    # Tokens without azp (native apps, server-side tokens) name no origin to check.
    assert auth.authenticate(bearer(clerk_issuer.mint("user_2"))).clerk_id == "user_2"


# Session status (v2 tokens)


@pytest.mark.parametrize("status", ["pending", "ended", "", None, 2])
def test_a_session_that_is_not_active_is_refused(clerk_issuer: LocalIssuer, status: object) -> None:
    """Clerk treats a pending session (sign-in tasks left) as signed out: so do we."""
    token = clerk_issuer.mint("user_1", extra={"v": 2, "sts": status})
    assert "not active" in refused(token).message
    # An active v2 session passes, and so does a v1 token (it has no sts claim).
    active = clerk_issuer.mint("user_2", extra={"v": 2, "sts": "active"})
    assert auth.authenticate(bearer(active)).clerk_id == "user_2"
    assert auth.authenticate(bearer(clerk_issuer.mint("user_3"))).clerk_id == "user_3"


# The JWKS: fetched once, refetched on rotation, never flooded


def test_jwks_is_fetched_once_across_many_verifications(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer
) -> None:
    for i in range(25):
        assert auth.authenticate(bearer(clerk_issuer.mint(f"user_{i}"))).clerk_id == f"user_{i}"
    assert clerk_env.jwks_fetches == 1


def test_rotated_key_is_fetched_on_its_first_token_and_flooding_kids_is_rate_limited(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer
) -> None:
    assert auth.authenticate(bearer(clerk_issuer.mint("user_1"))).clerk_id == "user_1"
    assert clerk_env.jwks_fetches == 1
    # A flood of made-up key ids right after a fetch: refused, and no refetch at all.
    for i in range(30):
        refused(clerk_issuer.mint("user_1", kid=f"made-up-{i}"))
    assert clerk_env.jwks_fetches == 1

    rotated = clerk_env.rotate()
    new_token = rotated.mint("user_1")
    time.sleep(auth.JWKS_REFETCH_COOLDOWN_SECONDS + 0.2)
    # The new kid triggers one refetch, and the new key then verifies.
    assert auth.authenticate(bearer(new_token)).clerk_id == "user_1"
    assert clerk_env.jwks_fetches == 2
    assert auth.authenticate(bearer(rotated.mint("user_2"))).clerk_id == "user_2"
    assert auth.authenticate(bearer(clerk_issuer.mint("user_3"))).clerk_id == "user_3"
    assert clerk_env.jwks_fetches == 2

    # Once the cooldown has passed, an unknown kid refetches once - and still fails.
    time.sleep(auth.JWKS_REFETCH_COOLDOWN_SECONDS + 0.2)
    for i in range(10):
        assert "unknown key" in refused(rotated.mint("user_1", kid=f"other-{i}")).message
    assert clerk_env.jwks_fetches == 3


def test_a_withdrawn_key_is_refused_after_the_refetch(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer
) -> None:
    rotated = clerk_env.rotate(keep_old=False)
    # This container has never fetched: the first fetch already has only the new key.
    assert auth.authenticate(bearer(rotated.mint("user_1"))).clerk_id == "user_1"
    assert "unknown key" in refused(clerk_issuer.mint("user_1")).message


def test_jwks_url_defaults_to_the_issuers_well_known_path(
    clerk_env: ClerkStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = LocalIssuer.generate(clerk_env.base_url)  # the stand-in serves the issuer's path
    clerk_env.issuers.append(issuer)
    monkeypatch.setenv("CLERK_ISSUER", issuer.issuer)
    monkeypatch.delenv("CLERK_JWKS_URL")
    config.reset_caches()
    auth.reset_auth()
    assert auth.authenticate(bearer(issuer.mint("user_1"))).clerk_id == "user_1"
    assert clerk_env.paths == ["/.well-known/jwks.json"]


# The JWKS endpoint failing: 503, not 401


@pytest.mark.parametrize("status", [500, 502, 503, 404])
def test_jwks_errors_are_503(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer, status: int
) -> None:
    clerk_env.fail(status, route="jwks")
    token = clerk_issuer.mint("user_1")
    with pytest.raises(UpstreamUnavailable) as caught:
        auth.authenticate(bearer(token))
    assert caught.value.status == 503
    assert caught.value.retry_after
    assert token not in caught.value.message


@pytest.mark.parametrize(
    "body", [b"<html>cdn error</html>", b"[]", b'{"keys": []}', b'{"keys": [{"kty": "nope"}]}']
)
def test_unusable_jwks_is_503_and_not_cached(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer, body: bytes
) -> None:
    clerk_env.fail(200, route="jwks", body=body, times=1)
    with pytest.raises(UpstreamUnavailable):
        auth.authenticate(bearer(clerk_issuer.mint("user_1")))
    # Nothing bad was cached: the next request fetches the real key set.
    assert auth.authenticate(bearer(clerk_issuer.mint("user_1"))).clerk_id == "user_1"
    assert clerk_env.jwks_fetches == 2


def test_unreachable_jwks_is_503(
    clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ClerkStandIn([clerk_issuer]) as gone:
        url = gone.jwks_url
    monkeypatch.setenv("CLERK_JWKS_URL", url)  # nothing listens there any more
    config.reset_caches()
    auth.reset_auth()
    with pytest.raises(UpstreamUnavailable):
        auth.authenticate(bearer(clerk_issuer.mint("user_1")))


def test_jwks_outage_after_the_first_fetch_does_not_affect_known_keys(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer
) -> None:
    auth.authenticate(bearer(clerk_issuer.mint("user_1")))
    clerk_env.fail(503, route="jwks")
    assert auth.authenticate(bearer(clerk_issuer.mint("user_2"))).clerk_id == "user_2"
    assert clerk_env.jwks_fetches == 1


def test_tokens_are_never_logged(
    clerk_env: ClerkStandIn,
    clerk_issuer: LocalIssuer,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [clerk_issuer.mint("user_1"), *(t for t, _ in bad_tokens(clerk_issuer).values())]
    clerk_env.fail(503, route="jwks", times=1)
    for token in tokens:
        with contextlib.suppress(Unauthorized, UpstreamUnavailable):
            auth.authenticate(bearer(token))
    logged = caplog.text + "".join(capfd.readouterr())
    assert "JWKS unreachable" in logged  # the outage was logged...
    for token in tokens:
        for piece in token.split("."):
            if len(piece) > 8:
                assert piece not in logged  # ...and no token, nor any part of one


# The verified-token cache


def test_verified_tokens_are_remembered_only_until_they_expire(
    clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_JWT_LEEWAY_SECONDS", "0")
    config.reset_caches()
    token = clerk_issuer.mint("user_cached", expires_in=1)
    assert auth.authenticate(bearer(token)).clerk_id == "user_cached"
    clerk_env.fail(503, route="jwks")  # the cache answers without the key set
    assert auth.authenticate(bearer(token)).clerk_id == "user_cached"
    clerk_env.clear_faults()
    time.sleep(1.2)
    assert "expired" in refused(token).message
    # A different token for the same user is verified on its own (here: forged, refused).
    header, payload, _ = clerk_issuer.mint("user_cached").split(".")
    refused(f"{header}.{payload}.AAAA")


def test_reset_auth_forgets_the_key_set(clerk_env: ClerkStandIn, clerk_issuer: LocalIssuer) -> None:
    auth.authenticate(bearer(clerk_issuer.mint("user_1")))
    auth.reset_auth()
    auth.authenticate(bearer(clerk_issuer.mint("user_2")))
    assert clerk_env.jwks_fetches == 2


# CLERK_JWT_KEY: networkless


@pytest.mark.parametrize(
    "shape", ["pem", "escaped newlines", "quoted and escaped", "bare base64 body"]
)
def test_pem_key_verifies_without_any_network(
    clerk_env: ClerkStandIn,
    clerk_issuer: LocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    pem = clerk_issuer.public_pem()
    body = "".join(line for line in pem.splitlines() if "-----" not in line)
    value = {
        "pem": pem,
        "escaped newlines": pem.replace("\n", "\\n"),  # as env files often carry it
        "quoted and escaped": '"' + pem.replace("\n", "\\n") + '"',
        "bare base64 body": body,
    }[shape]
    monkeypatch.setenv("CLERK_JWT_KEY", value)
    clerk_env.fail(503)  # any network use would fail
    config.reset_caches()
    auth.reset_auth()
    assert auth.authenticate(bearer(clerk_issuer.mint("user_pem"))).clerk_id == "user_pem"
    other = LocalIssuer.generate(clerk_issuer.issuer)
    assert "signature" in refused(other.mint("user_pem", kid=clerk_issuer.kid)).message
    assert clerk_env.paths == []


@pytest.mark.parametrize("value", ["not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END"])
def test_malformed_pem_key_is_a_configuration_error(
    clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CLERK_JWT_KEY", value)
    config.reset_caches()
    with pytest.raises(ConfigurationError, match="CLERK_JWT_KEY"):
        auth.authenticate(bearer(clerk_issuer.mint("user_1")))


def test_non_rsa_pem_key_is_a_configuration_error(
    clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    monkeypatch.setenv("CLERK_JWT_KEY", ec_pem)
    config.reset_caches()
    with pytest.raises(ConfigurationError, match="RSA"):
        auth.authenticate(bearer(clerk_issuer.mint("user_1")))


# Configuration


def test_missing_issuer_is_a_configuration_error(
    clerk_env: ClerkStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLERK_ISSUER")
    config.reset_caches()
    with pytest.raises(ConfigurationError, match="CLERK_ISSUER"):
        auth.authenticate("Bearer x.y.z")


def test_non_http_jwks_url_is_a_configuration_error(
    clerk_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_JWKS_URL", "file:///etc/passwd")
    config.reset_caches()
    auth.reset_auth()
    with pytest.raises(ConfigurationError, match="CLERK_JWKS_URL"):
        auth.authenticate(bearer(clerk_issuer.mint("user_1")))
