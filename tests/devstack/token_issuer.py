"""A local Clerk-like token issuer, for tests and `make dev` / `make token`.

It signs RS256 session tokens with its own key (kept in a git-ignored PEM file so `make dev`
and `make token` agree), publishes the matching JWKS, and can mint every kind of bad token
the tests need. A development aid, never used in AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

LOCAL_ISSUER = "https://local-issuer.tripchat.invalid"
DEFAULT_KEY_FILE = Path(__file__).resolve().parents[2] / ".local" / "dev-issuer-key.pem"
REAL_CLERK_SETTINGS = ("CLERK_JWKS_URL", "CLERK_SECRET_KEY", "CLERK_SECRET_KEY_SECRET_ARN")


class LocalIssuer:
    def __init__(self, private_key: rsa.RSAPrivateKey, issuer: str = LOCAL_ISSUER) -> None:
        self._key = private_key
        self.issuer = issuer
        self.kid = f"local-{uuid.uuid5(uuid.NAMESPACE_OID, self.public_pem())}"[:32]

    @classmethod
    def generate(cls, issuer: str = LOCAL_ISSUER) -> LocalIssuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), issuer)

    @classmethod
    def load_or_create(cls, path: Path, issuer: str = LOCAL_ISSUER) -> LocalIssuer:
        if path.is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise TypeError(f"{path} does not hold an RSA private key")
            return cls(key, issuer)
        made = cls.generate(issuer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            made._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return made

    def public_pem(self) -> str:
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
        return {"keys": [self.jwk()]}

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
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A session token as Clerk issues them (RS256, kid header), with the optional email
        and name claims of the recommended session-token template."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub,
            "iss": issuer or self.issuer,
            "iat": now,
            "nbf": not_before if not_before is not None else now - 5,
            "exp": now + expires_in,
            "sid": f"sess_{uuid.uuid4().hex[:24]}",
        }
        if email is not None:
            claims["email"] = email
        if name is not None:
            claims["name"] = name
        if azp is not None:
            claims["azp"] = azp
        claims.update(extra or {})
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": kid or self.kid})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a bearer token from the local issuer.")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--key-file", type=Path, default=None)
    parser.add_argument("--expires-in", type=int, default=3600)
    args = parser.parse_args(argv)
    real = [name for name in REAL_CLERK_SETTINGS if os.environ.get(name)]
    issuer = os.environ.get("CLERK_ISSUER")
    if issuer and issuer != LOCAL_ISSUER:
        real.append("CLERK_ISSUER")
    if real:
        print(
            f"Refusing: real Clerk settings are configured ({', '.join(real)}). Local tokens "
            "are for `make dev` without Clerk; sign in through your front end instead.",
            file=sys.stderr,
        )
        return 2
    local = Path(os.environ.get("TRIPCHAT_LOCAL_DIR") or DEFAULT_KEY_FILE.parent)
    key_file = args.key_file or local / DEFAULT_KEY_FILE.name
    user = args.user.strip().lower()
    token = LocalIssuer.load_or_create(key_file).mint(
        f"user_local_{user}",
        email=f"{user}@example.test",
        name=user.title(),
        expires_in=args.expires_in,
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
