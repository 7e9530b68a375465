"""Hostile requests through the real handlers (security review, issue #10): bodies that are
not UTF-8, lone surrogates, forged cursors, deeply nested JSON, non-object bodies, and
configuration errors. Each is answered with the JSON error shape and a 4xx (or a generic 500
that names nothing), before any side effect; nothing is logged as an unhandled error."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from svix.webhooks import Webhook

from dev.stack.apiclient import Client, Reply
from dev.stack.apigw import LambdaContext, http_event, response_json
from dev.stack.backboard_standin import BackboardStandIn
from functions.clerk_webhook.app import lambda_handler as webhook_handler
from functions.sessions.app import lambda_handler as sessions_handler
from shared import config
from shared.gateways import auth

Conn = psycopg.Connection[tuple[object, ...]]
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"tripchat-hostile-signing-secret!").decode()
# 10 KB of nesting each: far deeper than json.loads can recurse (RecursionError).
DEEP_ARRAYS = "[" * 5_000 + "]" * 5_000
DEEP_OBJECTS = '{"a":' * 2_000 + "1" + "}" * 2_000


@pytest.fixture
def trip(api: Callable[[str], Client]) -> tuple[Client, str]:
    alice = api("user_alice")
    created = alice.call("POST", "/sessions", body={"title": "Kyoto"})
    assert created.status == 201
    return alice, str(created.body["id"])


def _counts(conn: Conn) -> tuple[int, ...]:
    row = conn.execute(
        'SELECT (SELECT count(*) FROM "User"), (SELECT count(*) FROM "Session"), '
        '(SELECT count(*) FROM "Message")'
    ).fetchone()
    assert row is not None
    return tuple(int(str(value)) for value in row)


def _error(reply: Reply, status: int) -> str:
    """The error code of a reply that must be `status` with exactly the JSON error shape."""
    assert reply.status == status, reply.body
    assert set(reply.body) == {"error"}
    assert set(reply.body["error"]) == {"code", "message"}
    return str(reply.body["error"]["code"])


def _logged_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """ERROR records (an unhandled exception logs one, with its traceback)."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def _signed(body: str) -> dict[str, str]:
    msg_id, now = f"msg_{secrets.token_hex(6)}", datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(WEBHOOK_SECRET).sign(msg_id, now, body),
    }


def _webhook(body: str | bytes, headers: dict[str, str] | None = None) -> Reply:
    event = http_event(
        "POST",
        "/webhooks/clerk",
        body=body,
        headers=headers or {},
        route_key="POST /webhooks/clerk",
    )
    response = webhook_handler(event, LambdaContext())
    return Reply(response["statusCode"], response_json(response), response.get("headers") or {})


# 1. Bodies that are not UTF-8

NOT_UTF8: list[str | bytes] = [
    b"\xff",  # API Gateway delivers it base64-encoded (isBase64Encoded: true)
    b'{"title": "\xc3\x28"}',  # an invalid two-byte sequence inside JSON
    "\udcff",  # a str body carrying a surrogate escape
    '{"title": "ok \udcff"}',
]


def _api_routes(trip_id: str) -> list[tuple[str, str]]:
    return [
        ("POST", "/sessions"),
        ("PATCH", f"/sessions/{trip_id}"),
        ("POST", f"/sessions/{trip_id}/messages"),
    ]


@pytest.mark.parametrize("body", NOT_UTF8, ids=["ff", "bad-sequence", "surrogate", "in-json"])
def test_bodies_that_are_not_utf8_are_400_on_every_json_route(
    trip: tuple[Client, str],
    admin_conn: Conn,
    backboard: BackboardStandIn,
    caplog: pytest.LogCaptureFixture,
    body: str | bytes,
) -> None:
    alice, trip_id = trip
    caplog.set_level(logging.WARNING)
    before, threads = _counts(admin_conn), backboard.calls("create_thread")
    for method, path in _api_routes(trip_id):
        assert _error(alice.call(method, path, body=body), 400) == "malformed_json"
    assert _error(_webhook(body), 400) == "malformed_json"  # no signature needed to get there
    assert (_counts(admin_conn), backboard.calls("create_thread")) == (before, threads)
    assert _logged_errors(caplog) == []  # not an unhandled error with a traceback
    # UTF-8 sent base64-encoded (as API Gateway sends binary bodies) is still read.
    renamed = alice.call("PATCH", f"/sessions/{trip_id}", body='{"title": "Kyōto ✈"}'.encode())
    assert (renamed.status, renamed.body["title"]) == (200, "Kyōto ✈")


def test_a_body_that_is_not_base64_is_400(trip: tuple[Client, str]) -> None:
    alice, _ = trip
    event = http_event(
        "POST", "/sessions", body=b"{}", headers={"authorization": f"Bearer {alice.token}"}
    )
    event["body"] = "%%% not base64 %%%"
    response = sessions_handler(event, LambdaContext())
    assert response["statusCode"] == 400
    assert response_json(response)["error"]["code"] == "malformed_json"


# 2. Lone surrogates in JSON strings


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83d", "\\ude00b"])
def test_lone_surrogates_are_422_before_any_side_effect(
    trip: tuple[Client, str], admin_conn: Conn, backboard: BackboardStandIn, escape: str
) -> None:
    alice, trip_id = trip
    before = _counts(admin_conn)
    calls = {name: backboard.calls(name) for name in ("create_thread", "add_message")}
    for method, path, field in [
        ("POST", "/sessions", "title"),
        ("PATCH", f"/sessions/{trip_id}", "title"),
        ("POST", f"/sessions/{trip_id}/messages", "content"),
    ]:
        reply = alice.call(method, path, body=f'{{"{field}": "{escape}"}}')
        assert _error(reply, 422) == "validation_error"
        assert "surrogate" in reply.body["error"]["message"]
    assert _counts(admin_conn) == before
    # Not even a Backboard thread created and deleted again.
    assert {name: backboard.calls(name) for name in calls} == calls
    assert backboard.calls("delete_thread") == 0
    # An escaped surrogate pair is one (astral) character, and welcome.
    pair = alice.call("PATCH", f"/sessions/{trip_id}", body='{"title": "\\ud83d\\ude00 trip"}')
    assert (pair.status, pair.body["title"]) == (200, "\U0001f600 trip")


# 3. Forged cursors (shared.http.cursors's own tests cover decode_cursor case by case)


def _forged(stamp: Any, row_id: Any) -> str:
    raw = json.dumps([stamp, row_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode().rstrip("=")


FORGED_CURSORS = {
    "year 1 east of UTC": _forged("0001-01-01T00:00:00+05:00", "x"),  # OverflowError
    "year 9999 west of UTC": _forged("9999-12-31T23:00:00-05:00", "x"),  # OverflowError
    "NUL in the id": _forged("2024-05-01T10:00:00+00:00", "a\x00b"),  # DataError
    "lone surrogate in the id": _forged("2024-05-01T10:00:00+00:00", "\ud800"),  # encoding
}


@pytest.mark.parametrize("kind", list(FORGED_CURSORS))
def test_forged_cursors_are_422_on_both_lists(
    trip: tuple[Client, str], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    alice, trip_id = trip
    caplog.set_level(logging.WARNING)
    cursor = FORGED_CURSORS[kind]
    for path, name in [
        ("/sessions", "cursor"),
        (f"/sessions/{trip_id}/messages", "before"),
        (f"/sessions/{trip_id}/messages", "after"),
    ]:
        reply = alice.call("GET", path, query={name: cursor})
        assert _error(reply, 422) == "validation_error"
        assert reply.body["error"]["message"] == f"{name} is not a cursor this API returned."
    assert _logged_errors(caplog) == []


# 4. Deeply nested JSON


@pytest.mark.parametrize("body", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
def test_deeply_nested_json_is_400_on_every_json_route(
    trip: tuple[Client, str],
    admin_conn: Conn,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    body: str,
) -> None:
    alice, trip_id = trip
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", WEBHOOK_SECRET)
    caplog.set_level(logging.WARNING)
    before = _counts(admin_conn)
    for method, path in _api_routes(trip_id):
        assert _error(alice.call(method, path, body=body), 400) == "malformed_json"
    assert _error(_webhook(body), 400) == "malformed_json"
    assert _error(_webhook(body, _signed(body)), 400) == "malformed_json"  # even when signed
    assert _counts(admin_conn) == before
    assert _logged_errors(caplog) == []
    # Brackets inside strings (escaped quotes and backslashes around them) are not nesting.
    content = '\\"[{' * 1_500 + "\\\\"
    sent = alice.call("POST", f"/sessions/{trip_id}/messages", body=f'{{"content": "{content}"}}')
    assert sent.status == 201, sent.body
    assert sent.body["userMessage"]["content"] == '"[{' * 1_500 + "\\"
    # Clerk nests user metadata a few levels deep: well within the limit.
    metadata: Any = {"level": 0}
    for level in range(1, 25):
        metadata = {"level": level, "inner": [metadata]}
    data = {"id": "user_meta", "email_addresses": [], "public_metadata": metadata}
    signed = json.dumps({"type": "user.created", "data": data, "timestamp": 1})
    reply = _webhook(signed, _signed(signed))
    assert (reply.status, reply.body["outcome"]) == (200, "created")


# 9. The body must be a JSON object


@pytest.mark.parametrize(
    "body", ['[{"title": "x"}]', '[{"title": "x"}, 1]', "null", '"x"', "[]", "42"]
)
def test_a_body_that_is_not_an_object_creates_no_trip(
    api: Callable[[str], Client], admin_conn: Conn, backboard: BackboardStandIn, body: str
) -> None:
    alice = api("user_alice")
    alice.call("GET", "/sessions")  # provisioned first: only the trip is in question
    reply = alice.call("POST", "/sessions", body=body)
    assert _error(reply, 422) == "validation_error"
    assert "JSON object" in reply.body["error"]["message"]
    assert _counts(admin_conn) == (1, 0, 0)
    assert backboard.calls("create_thread") == 0


def test_array_wrapped_bodies_are_422_on_the_other_routes(
    trip: tuple[Client, str], admin_conn: Conn, backboard: BackboardStandIn
) -> None:
    alice, trip_id = trip
    before, sent = _counts(admin_conn), backboard.calls("add_message")
    renamed = alice.call("PATCH", f"/sessions/{trip_id}", body='[{"title": "Mine"}]')
    assert _error(renamed, 422) == "validation_error"
    message = alice.call("POST", f"/sessions/{trip_id}/messages", body='[{"content": "hi"}]')
    assert _error(message, 422) == "validation_error"
    assert (_counts(admin_conn), backboard.calls("add_message")) == (before, sent)
    assert alice.call("GET", f"/sessions/{trip_id}").body["title"] == "Kyoto"
    # An empty body still means "no title".
    untitled = alice.call("POST", "/sessions")
    assert (untitled.status, untitled.body["title"]) == (201, "New Trip")


# 5. Configuration errors name nothing to clients; the log has the detail

GENERIC_500 = {"error": {"code": "internal_error", "message": "Something went wrong on our side."}}


def _config_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage() == "configuration error"
    ]


@mock_aws
def test_an_unreadable_secret_is_a_generic_500_and_an_error_log(
    clean_db: str,
    backboard: BackboardStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("CLERK_WEBHOOK_SIGNING_SECRET", raising=False)
    created = boto3.client("secretsmanager").create_secret(Name="gone", SecretString="x")
    boto3.client("secretsmanager").delete_secret(
        SecretId=created["ARN"], ForceDeleteWithoutRecovery=True
    )
    arn = str(created["ARN"])
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET_SECRET_ARN", arn)
    config.reset_caches()
    caplog.set_level(logging.WARNING)
    body = json.dumps({"type": "user.created", "data": {"id": "user_1"}})
    reply = _webhook(body, _signed(body))
    assert (reply.status, reply.body) == (500, GENERIC_500)  # no ARN, no account id, no AWS text
    [record] = _config_errors(caplog)
    assert arn in record.__dict__["detail"]
    assert "ResourceNotFoundException" in record.__dict__["detail"]


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CLERK_ISSUER", None, "CLERK_ISSUER"),  # raised while authenticating, before routing
        ("MAX_BODY_BYTES", "lots", "MAX_BODY_BYTES"),  # raised while checking the body
        ("CLERK_JWT_KEY", "not a key", "CLERK_JWT_KEY"),
    ],
)
def test_missing_or_bad_settings_are_a_generic_500_and_an_error_log(
    api: Callable[[str], Client],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str | None,
    named: str,
) -> None:
    alice = api("user_alice")
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)
    config.reset_caches()
    auth.reset_auth()
    caplog.set_level(logging.WARNING)
    reply = alice.call("POST", "/sessions", body={"title": "x"})
    assert (reply.status, reply.body) == (500, GENERIC_500)
    [record] = _config_errors(caplog)
    assert named in record.__dict__["detail"]
