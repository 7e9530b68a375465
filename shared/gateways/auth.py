"""Clerk session tokens: verified in the function with PyJWT, no hand-written crypto.

RS256 only (so `alg: none`, HS256 and key-confusion tokens fail). The key is CLERK_JWT_KEY (a
PEM public key: no network; literal "\\n" sequences from env files are accepted) or else the
issuer's JWKS (CLERK_JWKS_URL, default <CLERK_ISSUER>/.well-known/jwks.json) through one
PyJWKClient per container: the key set is fetched once, kept for an hour, and refetched when a
token names an unknown key id (a key rotation) - at most once per JWKS_REFETCH_COOLDOWN_SECONDS,
so a flood of made-up key ids cannot flood the JWKS endpoint. `iss` must be CLERK_ISSUER, `exp`
present and `exp`/`nbf`/`iat` checked with CLERK_JWT_LEEWAY_SECONDS of leeway, `sub` a non-empty
string. `azp` (the origin of the page the token was issued to) must be one of
CLERK_AUTHORIZED_PARTIES; with none configured, only tokens without `azp` (native apps,
server-side tokens) pass, so a browser token is never accepted from just any origin. A v2
token's `sts` must be "active": Clerk treats a "pending" session (sign-in tasks left, such as
choosing an organization) as signed out. Bad tokens are 401s with a short reason; an
unreachable JWKS endpoint is a 503. Tokens are never logged.

Email and name come from optional session-token claims. Add them in the Clerk dashboard
(Sessions > Customize session token):
    {"email": "{{user.primary_email_address}}", "name": "{{user.full_name}}"}
Without them, a new user's email is fetched once from Clerk's Backend API (shared.gateways.clerk).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aws_lambda_powertools import Logger
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from shared.config import Settings, get_settings
from shared.container import PerContainer
from shared.errors import ConfigurationError, Unauthorized, UpstreamUnavailable

logger = Logger(child=True)

ALGORITHMS = ["RS256"]
# A made-up key id triggers a JWKS refetch at most this often (PyJWKClient's cooldown, which
# also starts at every successful fetch): a rotated key may be refused for this long by a
# container that fetched the key set moments before the rotation.
JWKS_REFETCH_COOLDOWN_SECONDS = 2.0
# Rotation is handled by the unknown-kid refetch; the lifespan only bounds how long a key
# Clerk withdrew is still trusted by a warm container.
JWKS_LIFESPAN_SECONDS = 3600.0
JWKS_TIMEOUT_SECONDS = 3.0
# API Gateway caps headers near 10 KB; anything longer is not a Clerk session token.
MAX_TOKEN_CHARS = 8192
MAX_SUBJECT_CHARS = 255

BEARER_HINT = "Send the Clerk session token as 'Authorization: Bearer <token>'."
UNAUTHORIZED_PARTY = "The session token was issued to an unauthorized party."


@dataclass(frozen=True)
class Identity:
    clerk_id: str
    email: str | None
    name: str | None


def authenticate(authorization_header: str | None) -> Identity:
    """The verified identity behind `Authorization: Bearer <Clerk session token>`.

    Raises Unauthorized (401) for a missing or bad token, UpstreamUnavailable (503) when the
    signing keys cannot be fetched, ConfigurationError when CLERK_ISSUER or the key is unset
    or malformed."""
    settings = get_settings()
    if not settings.clerk_issuer:
        raise ConfigurationError("Set CLERK_ISSUER to verify session tokens.")
    token = _bearer_token(authorization_header)
    cached = _verified.get(token)
    if cached is not None and time.time() < cached[0] + settings.clerk_jwt_leeway_seconds:
        return cached[1]
    identity, expires_at = _verify(token, settings, settings.clerk_issuer)
    with _verified_lock:
        if len(_verified) >= VERIFIED_CACHE_SIZE:
            _verified.pop(next(iter(_verified)))  # the oldest entry
        _verified[token] = (expires_at, identity)
    return identity


def reset_auth() -> None:
    """Forget the JWKS client and its keys, the parsed PEM key and the verified tokens (tests,
    and changed Clerk settings)."""
    _jwks_client.reset()
    _pem_key.cache_clear()
    with _verified_lock:
        _verified.clear()


# A front end sends the same session token with every request until it expires (Clerk's live
# a minute), so a warm container remembers the tokens it verified until their `exp`: only the
# byte-identical token maps to its identity, and the signature check is not repeated.
VERIFIED_CACHE_SIZE = 512
_verified: dict[str, tuple[float, Identity]] = {}
_verified_lock = threading.Lock()


def _bearer_token(authorization_header: str | None) -> str:
    scheme, _, token = (authorization_header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(BEARER_HINT)
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("The session token is too long.")
    return token


def _verify(token: str, settings: Settings, issuer: str) -> tuple[Identity, float]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized("The session token is malformed.") from exc
    # Checked before any key lookup, so a token Clerk cannot have signed costs no JWKS fetch.
    if header.get("alg") not in ALGORITHMS:
        raise Unauthorized("The session token's signing algorithm is not accepted.")
    key = _pem_key(settings.clerk_jwt_key) if settings.clerk_jwt_key else _jwks_key(header)
    bare = issuer.rstrip("/")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            # One configured with or without a trailing slash is the same issuer.
            issuer=[bare, f"{bare}/"],
            leeway=settings.clerk_jwt_leeway_seconds,
            options={"require": ["exp", "iss", "sub"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The session token has expired.") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Unauthorized("The session token is not valid yet.") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized("The session token was issued for another application.") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"The session token has no '{exc.claim}' claim.") from exc
    except jwt.InvalidSignatureError as exc:
        raise Unauthorized("The session token's signature is invalid.") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("The session token is invalid.") from exc
    _check_authorized_party(claims.get("azp"), settings.clerk_authorized_parties)
    if "sts" in claims and claims["sts"] != "active":
        raise Unauthorized("The session is not active yet: sign-in has steps left to complete.")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT_CHARS:
        raise Unauthorized("The session token has no valid subject.")
    identity = Identity(
        clerk_id=subject, email=_claim_text(claims, "email"), name=_claim_text(claims, "name")
    )
    return identity, float(claims["exp"])


def _check_authorized_party(azp: Any, parties: tuple[str, ...]) -> None:
    if parties:
        if azp not in parties:
            raise Unauthorized(UNAUTHORIZED_PARTY)
        return
    if azp is not None:
        # Clerk's guidance is an allowlist; the client is told only that it was refused (the
        # fix is the operator's), the log says what to set.
        logger.warning(
            "session token with an azp claim refused: set CLERK_AUTHORIZED_PARTIES (the "
            "ClerkAuthorizedParties parameter) to the front end's origins",
            extra={"azp": str(azp)[:200]},
        )
        raise Unauthorized(UNAUTHORIZED_PARTY)


def _claim_text(claims: dict[str, Any], name: str) -> str | None:
    # Template claims render as "" or null when the user has no such field.
    value = claims.get(name)
    return value.strip() or None if isinstance(value, str) else None


@functools.lru_cache(maxsize=2)
def _pem_key(pem: str) -> RSAPublicKey:
    """CLERK_JWT_KEY, parsed once: a PEM public key, possibly with literal "\\n" sequences (env
    files) or as its bare base64 body (what some dashboards copy)."""
    text = pem.strip().strip("\"'").replace("\\n", "\n").strip()
    if "-----BEGIN" not in text:
        body = "".join(text.split())
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        text = f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n"
    try:
        key = serialization.load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ConfigurationError("CLERK_JWT_KEY is not a PEM public key.") from exc
    if not isinstance(key, RSAPublicKey):
        raise ConfigurationError("CLERK_JWT_KEY must be an RSA public key (Clerk signs RS256).")
    return key


def _open_jwks_client() -> jwt.PyJWKClient:
    settings = get_settings()
    issuer = (settings.clerk_issuer or "").rstrip("/")
    url = settings.clerk_jwks_url or f"{issuer}/.well-known/jwks.json"
    try:
        return jwt.PyJWKClient(
            url,
            lifespan=JWKS_LIFESPAN_SECONDS,
            timeout=JWKS_TIMEOUT_SECONDS,
            cooldown_duration=JWKS_REFETCH_COOLDOWN_SECONDS,
        )
    except jwt.PyJWKClientError as exc:  # not an http(s) URL
        raise ConfigurationError(f"CLERK_JWKS_URL is not usable: {exc}") from exc


_jwks_client: PerContainer[jwt.PyJWKClient] = PerContainer(_open_jwks_client)


def _jwks_key(header: dict[str, Any]) -> RSAPublicKey:
    """The JWKS key the token's header names."""
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        # Clerk always names its key; without a kid there is nothing to look up or refetch.
        raise Unauthorized("The session token names no signing key.")
    client = _jwks_client.get()
    try:
        # The (cached) key set first: failures here are Clerk's or the configuration's, not
        # the token's, so they are 503s rather than 401s.
        client.get_signing_keys()
    except jwt.PyJWKClientConnectionError as exc:
        raise _unreachable(exc) from exc
    except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as exc:  # ValueError: not JSON
        raise _unusable_key_set(exc) from exc
    try:
        # An unknown kid refetches the set, unless one was fetched less than the cooldown
        # ago; a kid still unknown after that is the token's fault.
        jwk = client.get_signing_key(kid)
    except jwt.PyJWKClientConnectionError as exc:
        raise _unreachable(exc) from exc
    except (jwt.PyJWKSetError, ValueError) as exc:
        raise _unusable_key_set(exc) from exc
    except jwt.PyJWKClientError as exc:
        raise Unauthorized("The session token was signed with an unknown key.") from exc
    if not isinstance(jwk.key, RSAPublicKey):
        raise Unauthorized("The session token was signed with an unknown key.")
    return jwk.key


def _unreachable(exc: Exception) -> UpstreamUnavailable:
    logger.warning("JWKS unreachable", extra={"error": str(exc)[:200]})
    return UpstreamUnavailable("Sign-in keys could not be fetched; try again.")


def _unusable_key_set(exc: Exception) -> UpstreamUnavailable:
    logger.warning("JWKS unusable", extra={"error": str(exc)[:200]})
    return UpstreamUnavailable("Sign-in keys could not be read; try again.")
