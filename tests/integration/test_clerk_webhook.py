"""The Clerk webhook function, driven with API Gateway v2 events signed by the svix library."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from svix.webhooks import Webhook

from dev.stack.apigw import LambdaContext, http_event, response_json
from dev.stack.backboard_standin import BackboardStandIn
from functions.clerk_webhook.app import lambda_handler

Conn = psycopg.Connection[tuple[object, ...]]
SECRET = "whsec_" + base64.b64encode(b"tripchat-test-signing-secret-32b").decode()


@pytest.fixture
def webhook_env(
    clean_db: str, backboard: BackboardStandIn, monkeypatch: pytest.MonkeyPatch
) -> BackboardStandIn:
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
    return backboard


def clerk_user(
    clerk_id: str, *, email: str | None, updated_at: int, first: str = "Ada"
) -> dict[str, Any]:
    emails = (
        [
            {"id": "idn_other", "email_address": "old@example.test", "object": "email_address"},
            {"id": "idn_primary", "email_address": email, "object": "email_address"},
        ]
        if email
        else []
    )
    return {
        "id": clerk_id,
        "object": "user",
        "first_name": first,
        "last_name": "Lovelace",
        "username": None,
        "email_addresses": emails,
        "primary_email_address_id": "idn_primary" if email else None,
        "created_at": 1_700_000_000_000,
        "updated_at": updated_at,
    }


def delivery(
    event_type: str,
    data: dict[str, Any],
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    sent_at: datetime | None = None,
) -> tuple[str, dict[str, str]]:
    body = json.dumps(
        {"type": event_type, "object": "event", "data": data, "timestamp": 1_700_000_000_000}
    )
    msg_id = msg_id or f"msg_{secrets.token_hex(8)}"
    sent_at = sent_at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, sent_at, body)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(sent_at.timestamp())),
        "svix-signature": signature,
    }
    return body, headers


def post(body: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    event = http_event(
        "POST", "/webhooks/clerk", body=body, headers=headers, route_key="POST /webhooks/clerk"
    )
    response = lambda_handler(event, LambdaContext())
    return response["statusCode"], response_json(response), response.get("headers") or {}


def _users(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute('SELECT "clerkId", email, name FROM "User" ORDER BY "clerkId"').fetchall()


def test_signed_user_created_creates_the_user(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    status, body, _ = post(
        *delivery("user.created", clerk_user("user_1", email="ada@example.test", updated_at=1))
    )
    assert status == 200
    assert body == {"type": "user.created", "outcome": "created"}
    assert _users(admin_conn) == [("user_1", "ada@example.test", "Ada Lovelace")]
    assert len(webhook_env.assistants()) == 1


def _forgeries() -> list[tuple[str, str, dict[str, str]]]:
    """(kind, body, headers) for every way a delivery can be forged, each for user_forged."""
    data = clerk_user("user_forged", email="f@example.test", updated_at=1)
    body, headers = delivery("user.created", data)
    other_body = json.dumps({"type": "user.created", "data": {**data, "id": "user_evil"}})
    stale_body, stale_headers = delivery(
        "user.created", data, sent_at=datetime.now(UTC) - timedelta(minutes=10)
    )
    future_body, future_headers = delivery(
        "user.created", data, sent_at=datetime.now(UTC) + timedelta(minutes=10)
    )
    wrong_secret = "whsec_" + base64.b64encode(b"someone-elses-signing-secret-32b").decode()
    wrong_body, wrong_headers = delivery("user.created", data, secret=wrong_secret)
    random_sig = "v1," + base64.b64encode(secrets.token_bytes(32)).decode()
    return [
        ("tampered body", other_body, headers),
        ("stale timestamp", stale_body, stale_headers),
        ("future timestamp", future_body, future_headers),
        ("wrong secret", wrong_body, wrong_headers),
        ("random signature", body, {**headers, "svix-signature": random_sig}),
        ("garbage signature", body, {**headers, "svix-signature": "not-a-signature"}),
        ("garbage timestamp", body, {**headers, "svix-timestamp": "yesterday"}),
        ("other msg id", body, {**headers, "svix-id": "msg_other"}),
        (
            "v2 scheme only",
            body,
            {**headers, "svix-signature": headers["svix-signature"].replace("v1,", "v2,")},
        ),
    ]


@pytest.mark.parametrize("kind", [f[0] for f in _forgeries()])
def test_forged_deliveries_are_rejected_with_no_effect(
    webhook_env: BackboardStandIn, admin_conn: Conn, kind: str
) -> None:
    _, body, headers = next(f for f in _forgeries() if f[0] == kind)
    status, response, _ = post(body, headers)
    assert status == 401
    assert response["error"]["code"] == "invalid_signature"
    assert _users(admin_conn) == []
    assert webhook_env.calls("create_assistant") == 0


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature", "all"])
def test_unsigned_deliveries_are_a_bad_request(
    webhook_env: BackboardStandIn, admin_conn: Conn, missing: str
) -> None:
    body, headers = delivery(
        "user.created", clerk_user("user_x", email="x@example.test", updated_at=1)
    )
    headers = {} if missing == "all" else {k: v for k, v in headers.items() if k != missing}
    status, response, _ = post(body, headers)
    assert status == 400
    assert "svix" in response["error"]["message"]
    assert _users(admin_conn) == []
    assert webhook_env.calls("create_assistant") == 0


def test_ten_identical_deliveries_make_one_user_and_one_assistant(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    body, headers = delivery(
        "user.created", clerk_user("user_dup", email="d@example.test", updated_at=5)
    )
    outcomes = [post(body, headers)[1]["outcome"] for _ in range(10)]
    assert outcomes == ["created"] + ["ignored_stale"] * 9
    assert _users(admin_conn) == [("user_dup", "d@example.test", "Ada Lovelace")]
    assert len(webhook_env.assistants()) == 1


def test_updated_before_created_ends_with_the_newest_profile(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    updated = clerk_user("user_ooo", email="new@example.test", updated_at=2_000, first="Newer")
    created = clerk_user("user_ooo", email="first@example.test", updated_at=1_000)
    assert post(*delivery("user.updated", updated))[1]["outcome"] == "created"
    assert post(*delivery("user.created", created))[1]["outcome"] == "ignored_stale"
    assert _users(admin_conn) == [("user_ooo", "new@example.test", "Newer Lovelace")]
    assert len(webhook_env.assistants()) == 1


def test_deleted_before_created_leaves_nothing(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    deleted = {"id": "user_gone", "object": "user", "deleted": True}
    assert post(*delivery("user.deleted", deleted))[1]["outcome"] == "already_absent"
    created = clerk_user("user_gone", email="g@example.test", updated_at=1)
    assert post(*delivery("user.created", created))[1]["outcome"] == "ignored_deleted"
    assert _users(admin_conn) == []
    assert webhook_env.assistants() == {}


def test_user_deleted_erases_and_repeats_are_no_ops(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    for clerk_id in ("user_a", "user_b"):
        post(
            *delivery(
                "user.created", clerk_user(clerk_id, email=f"{clerk_id}@example.test", updated_at=1)
            )
        )
    deleted = delivery("user.deleted", {"id": "user_a", "object": "user", "deleted": True})
    assert post(*deleted)[1]["outcome"] == "erased"
    assert post(*deleted)[1]["outcome"] == "already_absent"
    assert [row[0] for row in _users(admin_conn)] == ["user_b"]
    assert len(webhook_env.assistants()) == 1


@pytest.mark.parametrize("assistant_delete_fails", [False, True], ids=["deleted", "left"])
def test_user_deleted_takes_the_assistants_memories_with_it(
    webhook_env: BackboardStandIn, admin_conn: Conn, assistant_delete_fails: bool
) -> None:
    for clerk_id in ("user_a", "user_b"):
        post(
            *delivery(
                "user.created", clerk_user(clerk_id, email=f"{clerk_id}@example.test", updated_at=1)
            )
        )
    rows = admin_conn.execute('SELECT "clerkId", "assistantId" FROM "User"').fetchall()
    assistants = {str(clerk_id): str(assistant_id) for clerk_id, assistant_id in rows}
    for clerk_id, assistant_id in assistants.items():
        webhook_env.add_memory(assistant_id, f"{clerk_id} travels with a dog")
        webhook_env.add_memory(assistant_id, f"{clerk_id} is vegetarian")
    if assistant_delete_fails:
        webhook_env.inject("delete_assistant", status=500, times=None)
    deleted = delivery("user.deleted", {"id": "user_a", "object": "user", "deleted": True})
    assert post(*deleted)[1]["outcome"] == "erased"
    # Forgotten before the assistant is deleted: gone even when its deletion fails and waits
    # for an operator.
    assert webhook_env.memories(assistants["user_a"]) == []
    assert (assistants["user_a"] in webhook_env.assistants()) is assistant_delete_fails
    assert [m["content"] for m in webhook_env.memories(assistants["user_b"])] == [
        "user_b travels with a dog",
        "user_b is vegetarian",
    ]


def test_user_without_email_is_stored_with_an_empty_email(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    data = clerk_user("user_phone", email=None, updated_at=1)
    data["phone_numbers"] = [{"id": "idn_phone", "phone_number": "+15555550100"}]
    status, body, _ = post(*delivery("user.created", data))
    assert (status, body["outcome"]) == (200, "created")
    assert _users(admin_conn) == [("user_phone", "", "Ada Lovelace")]


def test_unknown_event_types_are_acknowledged(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    status, body, _ = post(*delivery("session.created", {"id": "sess_1", "user_id": "user_1"}))
    assert (status, body) == (200, {"type": "session.created", "outcome": "ignored"})
    assert _users(admin_conn) == []


def test_backboard_down_is_a_retryable_503_and_the_redelivery_succeeds(
    webhook_env: BackboardStandIn, admin_conn: Conn
) -> None:
    webhook_env.inject("create_assistant", status=503, times=1)
    body, headers = delivery(
        "user.created", clerk_user("user_retry", email="r@example.test", updated_at=1)
    )
    status, response, response_headers = post(body, headers)
    assert status == 503
    assert response["error"]["code"] == "service_initialization_failed"
    assert int(response_headers["Retry-After"]) > 0
    assert _users(admin_conn) == []
    status, response, _ = post(body, headers)  # Svix redelivers the same message
    assert (status, response["outcome"]) == (200, "created")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 400),
        ('"just a string"', 422),
        ('{"data": {}}', 422),
        ('{"type": "user.created", "data": {}}', 422),
    ],
)
def test_signed_but_malformed_payloads_are_client_errors(
    webhook_env: BackboardStandIn, admin_conn: Conn, body: str, status: int
) -> None:
    msg_id, now = f"msg_{secrets.token_hex(4)}", datetime.now(UTC)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(SECRET).sign(msg_id, now, body),
    }
    got, response, _ = post(body, headers)
    assert got == status
    assert set(response["error"]) == {"code", "message"}
    assert _users(admin_conn) == []


def test_missing_signing_secret_is_a_bare_500_and_an_error_log(
    clean_db: str,
    backboard: BackboardStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("CLERK_WEBHOOK_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("CLERK_WEBHOOK_SIGNING_SECRET_SECRET_ARN", raising=False)
    caplog.set_level(logging.WARNING)
    status, body, _ = post(
        *delivery("user.created", clerk_user("u", email="u@example.test", updated_at=1))
    )
    # Svix retries a 5xx; the body names none of our settings.
    assert (status, body) == (
        500,
        {"error": {"code": "internal_error", "message": "Something went wrong on our side."}},
    )
    [record] = [r for r in caplog.records if r.getMessage() == "configuration error"]
    assert record.levelno == logging.ERROR
    assert "CLERK_WEBHOOK_SIGNING_SECRET" in record.__dict__["detail"]


def test_a_malformed_signing_secret_is_a_configuration_error(
    webhook_env: BackboardStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = delivery("user.created", clerk_user("u", email="u@example.test", updated_at=1))
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_not*base64")
    caplog.set_level(logging.WARNING)
    status, body, _ = post(*args)
    assert (status, body["error"]["code"]) == (500, "internal_error")
    [record] = [r for r in caplog.records if r.getMessage() == "configuration error"]
    assert "whsec_" in record.__dict__["detail"]


def test_wrong_method_and_path(webhook_env: BackboardStandIn) -> None:
    get = lambda_handler(http_event("GET", "/webhooks/clerk"), LambdaContext())
    assert get["statusCode"] == 405
    assert "POST" in get["headers"]["Allow"]
    other = lambda_handler(http_event("POST", "/webhooks/other", body={}), LambdaContext())
    assert other["statusCode"] == 404
    assert response_json(other)["error"]["code"] == "not_found"


def test_oversized_body_is_refused_before_verification(webhook_env: BackboardStandIn) -> None:
    body, headers = delivery("user.created", {"id": "u", "blob": "x" * 200_000})
    status, response, _ = post(body, headers)
    assert status == 413
    assert response["error"]["code"] == "payload_too_large"
