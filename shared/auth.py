"""Clerk session tokens: verified in the function with PyJWT, no hand-written crypto.

RS256 only (so `alg: none` and HS256 tokens fail); keys from CLERK_JWT_KEY (a PEM public
key: no network) or the issuer's JWKS (CLERK_JWKS_URL, default <issuer>/.well-known/jwks.json),
fetched once per container and refetched when a token names an unknown key id; `iss` must be
CLERK_ISSUER, `azp` one of CLERK_AUTHORIZED_PARTIES when that is set, `exp`/`nbf` checked with
CLERK_JWT_LEEWAY_SECONDS of leeway.

Email and name come from optional session-token claims. Add them in the Clerk dashboard
(Sessions > Customize session token):
    {"email": "{{user.primary_email_address}}", "name": "{{user.full_name}}"}
Without them, a new user's email is fetched once from Clerk's Backend API.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aws_lambda_powertools import Logger

from shared.config import Settings, get_settings
from shared.container import PerContainer
from shared.errors import ConfigurationError, Unauthorized, UpstreamUnavailable

logger = Logger(child=True)

ALGORITHMS = ["RS256"]
# An unknown key id triggers a JWKS refetch at most this often, so a flood of tokens with
# made-up key ids cannot turn into a flood of requests to the JWKS endpoint.
JWKS_REFETCH_COOLDOWN_SECONDS = 5.0


@dataclass(frozen=True)
class Identity:
    clerk_id: str
    email: str | None
    name: str | None


def _open_jwks_client() -> jwt.PyJWKClient:
    settings = get_settings()
    issuer = settings.clerk_issuer or ""
    url = settings.clerk_jwks_url or f"{issuer.rstrip('/')}/.well-known/jwks.json"
    return jwt.PyJWKClient(
        url, lifespan=3600, timeout=5, cooldown_duration=JWKS_REFETCH_COOLDOWN_SECONDS
    )


_jwks_client: PerContainer[jwt.PyJWKClient] = PerContainer(_open_jwks_client)


def _signing_key(token: str) -> Any:
    """The JWKS key the token names: the key set is fetched once per container and refetched
    (rate-limited) when a token names a key id it does not have, as after a key rotation."""
    try:
        return _jwks_client.get().get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError as exc:
        logger.warning("JWKS unreachable", extra={"error": str(exc)})
        raise UpstreamUnavailable("Sign-in keys could not be fetched; try again.") from exc
    except (jwt.PyJWKClientError, jwt.PyJWTError) as exc:
        # An unknown key id, a malformed token header, or a key set without usable keys.
        raise Unauthorized("The session token is invalid.") from exc


def reset_auth() -> None:
    """Forget the cached key set and verified tokens (tests, and changed Clerk settings)."""
    _jwks_client.reset()
    _verified.clear()


def authenticate(authorization: str | None) -> Identity:
    """The verified identity behind `Authorization: Bearer <Clerk session token>`."""
    settings = get_settings()
    issuer = settings.clerk_issuer
    if not issuer:
        raise ConfigurationError("Set CLERK_ISSUER to verify session tokens.")
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send the Clerk session token as 'Authorization: Bearer <token>'.")
    token = token.strip()
    cached = _verified.get(token)
    if cached is not None and time.time() < cached[0] + settings.clerk_jwt_leeway_seconds:
        return cached[1]
    identity, expires_at = _verify(token, settings, issuer)
    with _verified_lock:
        if len(_verified) >= VERIFIED_CACHE_SIZE:
            _verified.pop(next(iter(_verified)))  # the oldest entry
        _verified[token] = (expires_at, identity)
    return identity


# A front end sends the same session token with every request until it expires (Clerk's last
# a minute), so a warm container remembers the tokens it verified, until their `exp`: only
# the byte-identical token maps to its identity, and the signature check is not repeated.
VERIFIED_CACHE_SIZE = 512
_verified: dict[str, tuple[float, Identity]] = {}
_verified_lock = threading.Lock()


def _verify(token: str, settings: Settings, issuer: str) -> tuple[Identity, float]:
    key: Any = (
        settings.clerk_jwt_key.replace("\\n", "\n")
        if settings.clerk_jwt_key
        else _signing_key(token)
    )
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            issuer=issuer,
            leeway=settings.clerk_jwt_leeway_seconds,
            options={"require": ["exp", "iat", "sub", "iss"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The session token has expired.") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Unauthorized("The session token is not valid yet.") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized("The session token was issued for another application.") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("The session token is invalid.") from exc
    parties = settings.clerk_authorized_parties
    if parties and claims.get("azp") not in parties:
        raise Unauthorized("The session token was issued to an unauthorized party.")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("The session token has no subject.")
    email, name = claims.get("email"), claims.get("name")
    identity = Identity(
        clerk_id=subject,
        email=email.strip() or None if isinstance(email, str) else None,
        name=name.strip() or None if isinstance(name, str) else None,
    )
    return identity, float(claims["exp"])
