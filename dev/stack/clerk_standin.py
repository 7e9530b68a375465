"""A Clerk stand-in over loopback HTTP, for tests only.

Serves the JWKS of one or more LocalIssuers (`GET /.well-known/jwks.json`, counted, so tests
can assert caching and refetching; keys can be rotated) and the Backend API subset the
official SDK's `users.get` calls (`GET /v1/users/{user_id}`, with the secret key checked and
Clerk-shaped errors). Faults (status codes, bodies, headers, delays) can be injected per route.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from dev.stack.loopback import LoopbackServer
from dev.stack.token_issuer import LocalIssuer

Route = Literal["jwks", "users", "any"]

JWKS_PATH = "/.well-known/jwks.json"
USERS_PREFIX = "/v1/users/"


def clerk_error(code: str, message: str, long_message: str) -> dict[str, Any]:
    """An error body as Clerk's Backend API sends it (the SDK's ClerkErrors model)."""
    return {
        "errors": [{"message": message, "long_message": long_message, "code": code}],
        "clerk_trace_id": uuid.uuid4().hex,
    }


def clerk_email_json(address_id: str, email: str) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": address_id,
        "object": "email_address",
        "email_address": email,
        "reserved": False,
        "verification": {"status": "verified", "strategy": "email_code", "attempts": 1,
                         "expire_at": now + 600_000, "object": "verification_otp"},
        "linked_to": [],
        "created_at": now,
        "updated_at": now,
    }  # fmt: skip


def clerk_user_json(
    clerk_id: str,
    *,
    email: str | None,
    first: str | None = "Ada",
    last: str | None = None,
    username: str | None = None,
    other_emails: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A Backend API user object with every field the SDK's `User` model requires. The other
    addresses come first, so only primary_email_address_id picks `email`."""
    now = int(time.time() * 1000)
    addresses = [
        clerk_email_json(f"idn_{clerk_id}_other{i}", address)
        for i, address in enumerate(other_emails)
    ]
    if email:
        addresses.append(clerk_email_json(f"idn_{clerk_id}", email))
    return {
        "id": clerk_id,
        "object": "user",
        "external_id": None,
        "primary_email_address_id": f"idn_{clerk_id}" if email else None,
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "username": username,
        "first_name": first,
        "last_name": last if last is not None else ("Lovelace" if first else None),
        "has_image": False,
        "image_url": "https://img.clerk.com/placeholder",
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
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


@dataclass
class Fault:
    """What a matching request gets instead of the normal answer."""

    route: Route = "any"
    status: int | None = None  # None: the normal answer (after the delay)
    delay: float = 0.0
    body: bytes | None = None  # None: a Clerk-shaped error for `status`
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None  # None: every matching request until cleared


class ClerkStandIn:
    """`with ClerkStandIn([issuer]) as clerk:` — or start()/stop(). Thread-safe."""

    def __init__(self, issuers: list[LocalIssuer], secret_key: str = "sk_test_standin") -> None:
        self._initial = list(issuers)
        self.issuers = list(issuers)  # whose keys the JWKS publishes (append/remove to rotate)
        self.secret_key = secret_key
        self.users: dict[str, dict[str, Any]] = {}  # raw JSON served by GET /v1/users/{id}
        self.jwks_fetches = 0
        self.user_fetches = 0
        self.paths: list[str] = []  # every request's raw path, in order
        # Simple global faults (kept for existing callers): every request gets this status,
        # after this delay. fail() injects finer-grained ones.
        self.fault_status: int | None = None
        self.fault_delay = 0.0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(("127.0.0.1", 0), self._handler_class())
        self._running = False

    # lifecycle

    def start(self) -> ClerkStandIn:
        if not self._running:
            self._server.start()
            self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._server.stop()

    def __enter__(self) -> ClerkStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}{JWKS_PATH}"

    @property
    def api_url(self) -> str:
        """What CLERK_API_URL takes (Clerk's own is https://api.clerk.com/v1)."""
        return f"{self.base_url}/v1"

    # state

    def reset(self) -> None:
        """Back to the constructor's keys, no users, no faults, counters at zero."""
        with self._lock:
            self.issuers = list(self._initial)
            self.users.clear()
            self.jwks_fetches = 0
            self.user_fetches = 0
            self.paths.clear()
            self._faults.clear()
            self.fault_status = None
            self.fault_delay = 0.0

    def add_user(
        self,
        clerk_id: str,
        *,
        email: str | None,
        first: str | None = "Ada",
        last: str | None = None,
        username: str | None = None,
        other_emails: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        user = clerk_user_json(
            clerk_id,
            email=email,
            first=first,
            last=last,
            username=username,
            other_emails=other_emails,
        )
        with self._lock:
            self.users[clerk_id] = user
        return user

    def rotate(self, *, keep_old: bool = True) -> LocalIssuer:
        """Publish a new signing key for the same issuer (as Clerk does on rotation), keeping
        the old ones published unless `keep_old` is False. Returns the new issuer."""
        issuer = self.issuers[-1].issuer if self.issuers else self._initial[0].issuer
        new = LocalIssuer.generate(issuer)
        with self._lock:
            self.issuers = [*self.issuers, new] if keep_old else [new]
        return new

    def fail(
        self,
        status: int | None = None,
        *,
        route: Route = "any",
        delay: float = 0.0,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> Fault:
        """Inject a fault for `route` ("jwks", "users" or "any"): the first matching fault
        answers (with `status`, `body`, `headers`) after `delay` seconds, `times` times."""
        fault = Fault(route, status, delay, body, dict(headers or {}), times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self.fault_status = None
            self.fault_delay = 0.0

    # serving

    def _take_fault(self, route: Route) -> Fault | None:
        with self._lock:
            if self.fault_status is not None or self.fault_delay:
                return Fault(status=self.fault_status, delay=self.fault_delay)
            for fault in self._faults:
                if fault.route in ("any", route):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _answer(
        self, method: str, raw_path: str, authorization: str
    ) -> tuple[int, bytes, dict[str, str]]:
        path = urlsplit(raw_path).path
        route: Route = "jwks" if path == JWKS_PATH else "users"
        with self._lock:
            self.paths.append(raw_path)
            if route == "jwks":
                self.jwks_fetches += 1
            elif path.startswith(USERS_PREFIX):
                self.user_fetches += 1
        fault = self._take_fault(route)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                body = fault.body
                if body is None:
                    body = _json(clerk_error("fault", "injected", "Injected fault"))
                return fault.status, body, fault.headers
        if method != "GET":
            return 405, _json(clerk_error("method_not_allowed", "no", "Use GET")), {}
        if route == "jwks":
            with self._lock:
                keys = [issuer.jwk() for issuer in self.issuers]
            return 200, _json({"keys": keys}), {}
        return self._user_answer(path, authorization)

    def _user_answer(self, path: str, authorization: str) -> tuple[int, bytes, dict[str, str]]:
        user_id = unquote(path.removeprefix(USERS_PREFIX))
        if not path.startswith(USERS_PREFIX) or not user_id or "/" in user_id:
            return 404, _json(clerk_error("resource_not_found", "not found", "No route")), {}
        if authorization != f"Bearer {self.secret_key}":
            return (
                401,
                _json(
                    clerk_error(
                        "authentication_invalid",
                        "Unauthorized request",
                        "The provided secret key is invalid.",
                    )
                ),
                {},
            )
        with self._lock:
            user = self.users.get(user_id)
        if user is None:
            return (
                404,
                _json(clerk_error("resource_not_found", "not found", "User not found")),
                {},
            )
        return 200, _json(user), {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx client expects

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, body, headers = standin._answer(
                    self.command, self.path, self.headers.get("Authorization") or ""
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()
