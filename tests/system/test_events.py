"""Every sample event in events/ runs through its handler (what `make invoke` and
`sam local invoke -e` do), and every route in template.yaml has a sample event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.stack.apigw import response_json
from dev.stack.backboard_standin import BackboardStandIn
from dev.stack.invoke import invoke, prepare_event
from dev.stack.response_url import ResponseUrl
from dev.stack.template import http_routes
from dev.stack.token_issuer import LocalIssuer
from shared import config
from shared.gateways import auth

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_TRIP = "3f9a6c2e-1b7d-4e0a-9c55-2d8e7f41a6b0"
SAMPLE_MEMORY = "8d1c2b7a-5e4f-4a3b-9c2d-1e0f6a7b8c9d"
SECRET = "whsec_ZXZlbnRzLXRlc3Qtc2lnbmluZy1zZWNyZXQtMzItYnl0ZXM="

# In the order a real session would produce them; the trip events get a real trip's id, the
# memory event the id of the memory the send left.
API_EVENTS = [
    ("sessions", "sessions_list.json", 200),
    ("sessions", "sessions_create.json", 201),
    ("sessions", "sessions_get.json", 200),
    ("sessions", "sessions_rename.json", 200),
    ("messages", "messages_send.json", 201),
    ("messages", "messages_list.json", 200),
    ("sessions", "sessions_export.json", 200),
    ("sessions", "sessions_search.json", 200),
    ("me", "me_get.json", 200),
    ("me", "me_memories_list.json", 200),
    ("me", "me_memories_delete.json", 204),
    ("me", "me_memories_delete_all.json", 204),
    ("sessions", "sessions_delete.json", 204),
]
WEBHOOK_EVENTS = [
    ("clerk_user_created.json", "created"),
    ("clerk_user_updated.json", "updated"),
    ("clerk_user_deleted.json", "erased"),
]


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


@pytest.fixture
def local_env(
    clean_db: str, backboard: BackboardStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    issuer = LocalIssuer.load_or_create(tmp_path / "key.pem")
    monkeypatch.setenv("CLERK_ISSUER", issuer.issuer)
    monkeypatch.setenv("CLERK_JWT_KEY", issuer.public_pem())
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
    config.reset_caches()
    auth.reset_auth()
    yield issuer.mint("user_local_alice", email="alice@example.test", name="Alice")
    auth.reset_auth()


def test_every_route_in_the_template_has_a_sample_event() -> None:
    sampled = {
        _load(f.name)["routeKey"] for f in EVENTS.glob("*.json") if "routeKey" in _load(f.name)
    }
    assert sampled == {route.route_key for route in http_routes()}


def test_every_api_event_runs_through_its_handler(local_env: str) -> None:
    trip_id, memory_id = SAMPLE_TRIP, SAMPLE_MEMORY
    for function, name, expected in API_EVENTS:
        raw = json.dumps(_load(name)).replace(SAMPLE_TRIP, trip_id)
        event = prepare_event(
            json.loads(raw.replace(SAMPLE_MEMORY, memory_id)), token=local_env, webhook_secret=None
        )
        response = invoke(function, event)
        assert response["statusCode"] == expected, (name, response)
        if name == "sessions_create.json":
            trip_id = response_json(response)["id"]
        if name == "me_memories_list.json":
            memory_id = response_json(response)["memories"][0]["id"]


def test_every_webhook_event_runs_through_its_handler(local_env: str) -> None:
    for name, outcome in WEBHOOK_EVENTS:
        event = prepare_event(_load(name), token=None, webhook_secret=SECRET)
        response = invoke("clerk_webhook", event)
        assert response["statusCode"] == 200, (name, response)
        assert response_json(response)["outcome"] == outcome


def test_unsigned_sample_webhook_is_rejected(local_env: str) -> None:
    # The committed placeholder signature must never verify.
    response = invoke("clerk_webhook", _load("clerk_user_created.json"))
    assert response["statusCode"] == 401


def test_migrate_events_run_through_the_handler(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database)
    config.reset_caches()
    for name in ("migrate_status.json", "migrate_apply.json", "migrate_verify.json"):
        result = invoke("migrate", _load(name))
        assert result["action"] == _load(name)["action"]
    assert invoke("migrate", _load("migrate_verify.json"))["ok"] is True

    with ResponseUrl() as response_url:
        event = _load("migrate_cloudformation_create.json")
        event["ResponseURL"] = response_url.url
        assert invoke("migrate", event)["ok"] is True
        assert response_url.answers[-1]["Status"] == "SUCCESS"
        assert response_url.answers[-1]["LogicalResourceId"] == "DatabaseSchema"
