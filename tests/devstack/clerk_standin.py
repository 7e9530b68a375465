"""A Clerk stand-in over loopback HTTP: the JWKS of one or more LocalIssuers, and the Backend
API's GET /v1/users/{id}, shaped so the official Clerk SDK parses it. Counts JWKS fetches,
rotates keys, injects faults. For tests only."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.devstack.loopback import LoopbackServer
from tests.devstack.token_issuer import LocalIssuer


def clerk_user_json(
    clerk_id: str, *, email: str | None, first: str | None = "Ada"
) -> dict[str, Any]:
    """A Backend API user object with every field the SDK's model requires."""
    now = int(time.time() * 1000)
    addresses = (
        [
            {
                "id": f"idn_{clerk_id}",
                "object": "email_address",
                "email_address": email,
                "reserved": False,
                "verification": None,
                "linked_to": [],
                "created_at": now,
                "updated_at": now,
            }
        ]
        if email
        else []
    )
    return {
        "id": clerk_id,
        "object": "user",
        "external_id": None,
        "primary_email_address_id": f"idn_{clerk_id}" if email else None,
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "username": None,
        "first_name": first,
        "last_name": "Lovelace" if first else None,
        "has_image": False,
        "public_metadata": {},
        "email_addresses": addresses,
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "password_enabled": False,
        "two_factor_enabled": False,
        "totp_enabled": False,
        "backup_code_enabled": False,
        "mfa_enabled_at": None,
        "mfa_disabled_at": None,
        "external_accounts": [],
        "saml_accounts": [],
        "enterprise_accounts": [],
        "last_sign_in_at": None,
        "banned": False,
        "locked": False,
        "lockout_expires_in_seconds": None,
        "verification_attempts_remaining": None,
        "updated_at": now,
        "created_at": now,
        "delete_self_enabled": True,
        "create_organization_enabled": True,
        "last_active_at": None,
        "legal_accepted_at": None,
    }


class ClerkStandIn:
    def __init__(self, issuers: list[LocalIssuer], secret_key: str = "sk_test_standin") -> None:
        self.issuers = list(issuers)
        self.secret_key = secret_key
        self.users: dict[str, dict[str, Any]] = {}
        self.jwks_fetches = 0
        self.user_fetches = 0
        self.fault_status: int | None = None  # answer every request with this status
        self.fault_delay = 0.0
        self._lock = threading.Lock()
        self._server = LoopbackServer(("127.0.0.1", 0), self._handler_class())

    def __enter__(self) -> ClerkStandIn:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def add_user(self, clerk_id: str, *, email: str | None, first: str | None = "Ada") -> None:
        self.users[clerk_id] = clerk_user_json(clerk_id, email=email, first=first)

    def _answer(self, method: str, path: str, authorization: str) -> tuple[int, Any]:
        if self.fault_delay:
            time.sleep(self.fault_delay)
        if self.fault_status is not None:
            return self.fault_status, {"errors": [{"message": "injected", "code": "fault"}]}
        if (method, path) == ("GET", "/.well-known/jwks.json"):
            with self._lock:
                self.jwks_fetches += 1
            return 200, {"keys": [issuer.jwk() for issuer in self.issuers]}
        if method == "GET" and path.startswith("/v1/users/"):
            with self._lock:
                self.user_fetches += 1
            if authorization != f"Bearer {self.secret_key}":
                return 401, {
                    "errors": [
                        {
                            "message": "Unauthorized",
                            "code": "authentication_invalid",
                            "long_message": "Invalid secret key",
                        }
                    ]
                }
            user = self.users.get(path.rsplit("/", 1)[1])
            if user is None:
                return 404, {
                    "errors": [
                        {
                            "message": "not found",
                            "code": "resource_not_found",
                            "long_message": "User not found",
                        }
                    ]
                }
            return 200, user
        return 404, {"errors": [{"message": "not found", "code": "resource_not_found"}]}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                status, payload = standin._answer(
                    "GET", urlsplit(self.path).path, self.headers.get("Authorization") or ""
                )
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
