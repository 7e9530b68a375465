"""The local HTTP front (dev/stack/local_api.py) over real loopback HTTP: one container per
function like Lambda, API Gateway's CORS, Lambda-like logs, Swagger UI for `make dev` only."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from dev.stack.apiclient import Client
from dev.stack.apigw import LambdaContext, http_event
from dev.stack.backboard_standin import BackboardStandIn
from dev.stack.local_api import LocalApi
from dev.stack.token_issuer import LocalIssuer
from functions.clerk_webhook.app import lambda_handler as webhook_handler

FRONT_END = "http://localhost:3000"


@contextmanager
def serving(*, swagger: bool = False) -> Iterator[str]:
    """The local server on a free port (its functions start with the environment as it is
    now); yields its base URL."""
    with running(swagger=swagger) as server:
        yield server.base_url


@contextmanager
def running(*, swagger: bool = False) -> Iterator[LocalApi]:
    server = LocalApi("127.0.0.1", 0, swagger=swagger).start()
    try:
        yield server
    finally:
        server.stop()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_answer(api: Callable[[str], Client]) -> None:
    tokens = {who: api(f"user_{who}").token for who in ("alice", "bob")}
    with serving() as base, httpx.Client(base_url=base, timeout=60) as client:
        trips = {}
        for who, token in tokens.items():
            made = client.post("/sessions", json={"title": f"{who}'s"}, headers=bearer(token))
            assert made.status_code == 201, made.text
            trips[who] = made.json()["id"]

        def request(i: int) -> tuple[str, str, int, str]:
            who = ("alice", "bob")[i % 2]
            path = ("/sessions", f"/sessions/{trips[who]}", f"/sessions/{trips[who]}/messages")[
                i % 3
            ]
            reply = client.get(path, headers=bearer(tokens[who]))
            return who, path, reply.status_code, reply.text

        # Switching threads every microsecond makes a request context shared between threads
        # show up in every run (the issue saw it in 1 of 80 requests).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            with ThreadPoolExecutor(max_workers=16) as pool:
                answers = list(pool.map(request, range(300)))
        finally:
            sys.setswitchinterval(interval)

    def belongs(who: str, path: str, body: dict[str, Any]) -> bool:
        if path == "/sessions":
            return bool([s["id"] for s in body["sessions"]] == [trips[who]])
        if path.endswith("/messages"):  # someone else's trip would be a 404
            return bool(body["messages"] == [])
        return bool(body["id"] == trips[who])

    wrong = [
        (who, path, status, text[:200])
        for who, path, status, text in answers
        if status != 200 or not belongs(who, path, json.loads(text))
    ]
    assert wrong == []


def test_logs_from_shared_carry_the_function_service_and_correlation_id(
    api: Callable[[str], Client],
    backboard: BackboardStandIn,
    capfd: pytest.CaptureFixture[str],
) -> None:
    token = api("user_alice").token
    with serving() as base:
        assert httpx.get(f"{base}/sessions", headers=bearer(token)).status_code == 200
        backboard.inject("create_thread", status=500)
        failed = httpx.post(f"{base}/sessions", json={}, headers=bearer(token))
    assert failed.status_code == 503  # Backboard's 500 is "unavailable, retry"
    request_id = failed.headers["apigw-requestid"]
    records = []
    for line in capfd.readouterr().out.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    # shared/api.py logs 5xx answers through its child logger; in Lambda it lands in the
    # function's own Logger, with its service name and the API Gateway request id.
    failure = [r for r in records if r.get("message") == "request failed"]
    assert len(failure) == 1, records
    assert failure[0]["service"] == "sessions"
    assert failure[0]["correlation_id"] == request_id
    assert failure[0]["function_name"] == "SessionsFunction"
    assert failure[0]["status"] == 503


def test_swagger_ui_is_served_by_the_dev_front_only(api: Callable[[str], Client]) -> None:
    with serving(swagger=True) as base:
        page = httpx.get(f"{base}/swagger", timeout=30)
        document = httpx.get(f"{base}/swagger", params={"format": "json"}, timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text
    # The whole API (every function's routes), as `make openapi` documents it.
    operations = {(m.upper(), p) for p, ops in document.json()["paths"].items() for m in ops}
    assert {
        ("GET", "/sessions"),
        ("POST", "/sessions/{id}/messages"),
        ("POST", "/webhooks/clerk"),
    } <= operations
    assert "clerkSession" in document.json()["components"]["securitySchemes"]
    # The deployed function (imported as Lambda imports it) has no such route.
    deployed = webhook_handler(http_event("GET", "/swagger"), LambdaContext())
    assert deployed["statusCode"] == 404


def test_preflight_and_cors_headers_follow_the_authorized_parties(
    api: Callable[[str], Client], issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", f"https://app.example.com,{FRONT_END}")
    token = issuer.mint("user_alice", email="alice@example.test", azp=FRONT_END)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
    }
    with serving() as base:
        # Answered before any function: without a token, and on a path with no OPTIONS route.
        allowed = httpx.options(
            f"{base}/sessions/abc/messages", headers={"Origin": FRONT_END, **preflight}
        )
        stranger = httpx.options(
            f"{base}/sessions", headers={"Origin": "https://evil.example", **preflight}
        )
        created = httpx.post(
            f"{base}/sessions", json={}, headers={"Origin": FRONT_END, **bearer(token)}
        )
        refused = httpx.get(f"{base}/sessions", headers={"Origin": FRONT_END})
        foreign = httpx.get(f"{base}/sessions", headers={"Origin": "https://evil.example"})

    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == FRONT_END
    methods = set(allowed.headers["access-control-allow-methods"].split(","))
    assert {"GET", "POST", "PATCH", "DELETE", "OPTIONS"} <= methods
    headers = set(allowed.headers["access-control-allow-headers"].lower().split(","))
    assert {"authorization", "content-type", "idempotency-key"} <= headers
    assert int(allowed.headers["access-control-max-age"]) > 0
    assert stranger.status_code == 204
    assert "access-control-allow-origin" not in stranger.headers

    assert created.status_code == 201, created.text
    assert created.headers["access-control-allow-origin"] == FRONT_END
    exposed = set(created.headers["access-control-expose-headers"].split(","))
    assert {"Retry-After", "Idempotent-Replayed", "Location"} <= exposed
    # Errors carry the headers too, so the front end can read them.
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == FRONT_END
    assert foreign.status_code == 401
    assert "access-control-allow-origin" not in foreign.headers


def test_no_cross_origin_access_when_no_authorized_parties_are_set(
    api: Callable[[str], Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allowlist is the same for CORS and azp: none configured allows no browser origin
    (template.yaml makes the parameter required)."""
    monkeypatch.delenv("CLERK_AUTHORIZED_PARTIES", raising=False)
    token = api("user_alice").token
    with serving() as base:
        preflight = httpx.options(
            f"{base}/sessions",
            headers={"Origin": FRONT_END, "Access-Control-Request-Method": "GET"},
        )
        listed = httpx.get(f"{base}/sessions", headers={"Origin": FRONT_END, **bearer(token)})
    assert preflight.status_code == 204
    assert "access-control-allow-origin" not in preflight.headers
    assert listed.status_code == 200  # a token without azp, from no browser
    assert "access-control-allow-origin" not in listed.headers


def test_a_dead_function_container_is_a_500_then_replaced(api: Callable[[str], Client]) -> None:
    token = api("user_alice").token
    with running() as server:
        sessions = server.workers["SessionsFunction"]
        first_pid = sessions.pid
        assert first_pid is not None
        assert httpx.get(f"{server.base_url}/sessions", headers=bearer(token)).status_code == 200
        os.kill(first_pid, signal.SIGKILL)  # as when Lambda's container dies mid-invocation
        lost = httpx.get(f"{server.base_url}/sessions", headers=bearer(token), timeout=60)
        again = httpx.get(f"{server.base_url}/sessions", headers=bearer(token), timeout=60)
        other = httpx.get(f"{server.base_url}/sessions/x/messages", headers=bearer(token))
        assert sessions.pid not in (None, first_pid)
    # What API Gateway answers when the function fails; then a fresh container serves.
    assert (lost.status_code, lost.json()) == (500, {"message": "Internal Server Error"})
    assert again.status_code == 200
    assert other.status_code == 404  # the other functions never noticed
