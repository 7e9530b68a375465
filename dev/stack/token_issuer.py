"""A local Clerk-like token issuer, for tests and `make dev` / `make token`.

It signs RS256 session tokens with its own RSA key (kept in a git-ignored PEM file under
.local/ so `make dev` and `make token` agree), publishes the matching JWKS, and mints every
kind of bad token the tests need (expired, not yet valid, wrong issuer or azp, unknown kid,
other RSA algorithms, `alg: none`). A development aid: it refuses to run when real Clerk
settings are configured, and nothing deployed imports it.

Its tokens name an authorized party (`azp`) as a browser's would: `make dev` allows its own
origins (local_origins) in CLERK_AUTHORIZED_PARTIES, and the CLI mints for the first allowed
one (CLERK_AUTHORIZED_PARTIES if set, else http://localhost:$PORT, port 8787 by default).

    python -m dev.stack.token_issuer --user alice [--key-file PATH] [--issuer URL]
        [--azp ORIGIN]
    (what `make token AS=alice` runs)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

LOCAL_ISSUER = "https://local-issuer.tripchat.invalid"
DEFAULT_KEY_FILE = Path(__file__).resolve().parents[2] / ".local" / "dev-issuer-key.pem"
# Any of these means a real Clerk instance is configured: local tokens would be pointless there.
REAL_CLERK_SETTINGS = ("CLERK_JWKS_URL", "CLERK_SECRET_KEY", "CLERK_SECRET_KEY_SECRET_ARN")
# Algorithms mint() can sign with this issuer's RSA key (shared.gateways.auth accepts RS256).
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
USER_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def local_origins(port: int) -> tuple[str, str]:
    """The origins a browser on this machine uses for the local API: `make dev` allows both."""
    return f"http://localhost:{port}", f"http://127.0.0.1:{port}"


def default_azp(env: Mapping[str, str]) -> str:
    """The origin local tokens name: the first configured authorized party, else the local
    API's own origin (PORT, as `make dev` reads it)."""
    configured = [p.strip() for p in env.get("CLERK_AUTHORIZED_PARTIES", "").split(",")]
    if any(configured):
        return next(p for p in configured if p)
    from dev.stack.local_api import DEFAULT_PORT

    return local_origins(int(env.get("PORT") or DEFAULT_PORT))[0]


class LocalIssuer:
    """An RSA signing key, the issuer URL its tokens carry, and the key id they name."""

    def __init__(
        self, private_key: rsa.RSAPrivateKey, issuer: str = LOCAL_ISSUER, kid: str | None = None
    ) -> None:
        self._key = private_key
        self.issuer = issuer
        # Derived from the public key, so a persisted key keeps its kid across runs.
        digest = hashlib.sha256(self.public_pem().encode()).hexdigest()
        self.kid = kid or f"local-{digest[:24]}"

    @classmethod
    def generate(cls, issuer: str = LOCAL_ISSUER) -> LocalIssuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), issuer)

    @classmethod
    def load_or_create(cls, path: Path, issuer: str = LOCAL_ISSUER) -> LocalIssuer:
        """The issuer whose private key is kept in `path` (PKCS#8 PEM, mode 0600), created on
        first use. Concurrent first uses (`make dev` and `make token`) agree on one key."""
        if not path.is_file():
            made = cls.generate(issuer)
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = made._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # Written privately under a temporary name, then linked into place: the key is
            # never readable by others, never half-written, and a racing creator loses cleanly.
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(pem)
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError(f"{path} does not hold an RSA private key")
        return cls(key, issuer)

    def public_pem(self) -> str:
        """The public key as PEM (what CLERK_JWT_KEY takes)."""
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key())
        )
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def jwks(self) -> dict[str, Any]:
        """The JWKS document Clerk serves at <issuer>/.well-known/jwks.json."""
        return {"keys": [self.jwk()]}

    def claims(
        self,
        sub: str,
        *,
        email: str | None = None,
        name: str | None = None,
        azp: str | None = None,
        expires_in: int = 600,
        not_before: int | None = None,
        issuer: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The claims of a Clerk session token (for tests that assemble tokens by hand)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub,
            "iss": self.issuer if issuer is None else issuer,
            "iat": now,
            "nbf": now - 5 if not_before is None else not_before,
            "exp": now + expires_in,
            "sid": f"sess_{uuid.uuid4().hex[:24]}",
        }
        optional = {"email": email, "name": name, "azp": azp}
        claims.update({key: value for key, value in optional.items() if value is not None})
        claims.update(extra or {})
        return claims

    def mint(
        self,
        sub: str,
        *,
        email: str | None = None,
        name: str | None = None,
        azp: str | None = None,
        expires_in: int = 600,
        not_before: int | None = None,
        issuer: str | None = None,
        kid: str | None = None,
        alg: str = "RS256",
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A session token as Clerk issues them (RS256, kid header), with the optional email
        and name claims of the recommended session-token template. `expires_in` may be
        negative (expired), `not_before` in the future, `issuer`/`kid`/`azp` wrong (`kid=""`:
        none); `alg` may be another RSA algorithm or "none" (unsigned). `extra` claims
        override the others."""
        claims = self.claims(
            sub,
            email=email,
            name=name,
            azp=azp,
            expires_in=expires_in,
            not_before=not_before,
            issuer=issuer,
            extra=extra,
        )
        return self.sign(claims, kid=kid, alg=alg)

    def sign(self, claims: Mapping[str, Any], *, kid: str | None = None, alg: str = "RS256") -> str:
        """Any claims, signed as given (missing or ill-typed ones included: PyJWT's
        jwt.encode would refuse some), naming this key's kid, or `kid` ("" for no kid)."""
        kid = self.kid if kid is None else kid
        headers = {"kid": kid} if kid else {}
        payload = json.dumps(claims, separators=(",", ":")).encode()
        if alg == "none":
            return jwt.api_jws.encode(payload, "", algorithm="none", headers=headers)  # "": no key
        if alg not in RSA_ALGORITHMS:
            raise ValueError(
                f"LocalIssuer signs with an RSA key: use one of {RSA_ALGORITHMS} or 'none' "
                "(HMAC tokens: sign with PyJWT or hmac directly)"
            )
        return jwt.api_jws.encode(payload, self._key, algorithm=alg, headers=headers)


def refusal(env: Mapping[str, str], issuer: str) -> str | None:
    """Why local tokens must not be minted in this environment, or None."""
    real = [name for name in REAL_CLERK_SETTINGS if env.get(name)]
    configured = env.get("CLERK_ISSUER")
    if configured and configured.rstrip("/") != issuer.rstrip("/"):
        real.insert(0, "CLERK_ISSUER")
    if not real:
        return None
    return (
        f"Refusing: real Clerk settings are configured ({', '.join(real)}). Local tokens are "
        "for `make dev` without Clerk; sign in through your front end instead, or unset them."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print a bearer token from the local development issuer (never for AWS)."
    )
    parser.add_argument("--user", default="alice", help="clerk id user_local_<user>")
    parser.add_argument("--key-file", type=Path, default=None, help="PEM private key")
    parser.add_argument("--issuer", default=LOCAL_ISSUER, help="the token's iss claim")
    parser.add_argument("--expires-in", type=int, default=3600, help="seconds")
    parser.add_argument(
        "--azp",
        default=None,
        help="the token's azp (origin) claim; default: the first CLERK_AUTHORIZED_PARTIES "
        "entry, else http://localhost:$PORT; '' for none",
    )
    args = parser.parse_args(argv)
    from dev.stack.env import load_env_file

    load_env_file()  # the settings `make dev` runs with
    reason = refusal(os.environ, args.issuer)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    user = args.user.strip().lower()
    if not USER_PATTERN.fullmatch(user):
        parser.error("--user takes letters, digits, '_' and '-' (at most 64)")
    local = Path(os.environ.get("TRIPCHAT_LOCAL_DIR") or DEFAULT_KEY_FILE.parent)
    key_file = args.key_file or local / DEFAULT_KEY_FILE.name
    token = LocalIssuer.load_or_create(key_file, args.issuer).mint(
        f"user_local_{user}",
        email=f"{user}@example.test",
        name=user.replace("_", " ").replace("-", " ").title(),
        azp=default_azp(os.environ) if args.azp is None else (args.azp or None),
        expires_in=args.expires_in,
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
