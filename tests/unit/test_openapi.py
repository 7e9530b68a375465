"""The committed OpenAPI document is the one the handlers generate today."""

from __future__ import annotations

import json
import re

import pytest

from dev.stack.template import http_routes
from dev.tools import openapi


def test_committed_document_matches_the_code() -> None:
    committed = openapi.DOCUMENT.read_text(encoding="utf-8")
    assert committed == openapi.render(), "run `make openapi` and commit functions/openapi.json"


def test_document_describes_every_route_and_the_error_shape() -> None:
    doc = json.loads(openapi.render())
    operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert operations == {
        ("GET", "/sessions"),
        ("POST", "/sessions"),
        ("GET", "/sessions/{id}"),
        ("PATCH", "/sessions/{id}"),
        ("DELETE", "/sessions/{id}"),
        ("GET", "/sessions/{id}/messages"),
        ("POST", "/sessions/{id}/messages"),
        ("POST", "/sessions/{id}/messages/stream"),
        ("GET", "/sessions/{id}/messages/stream"),
        ("POST", "/sessions/{id}/messages/stream/stop"),
        ("GET", "/sessions/{id}/export"),
        ("GET", "/search"),
        ("GET", "/me"),
        ("GET", "/me/memories"),
        ("DELETE", "/me/memories"),
        ("DELETE", "/me/memories/{id}"),
        ("POST", "/webhooks/clerk"),
    }
    send = doc["paths"]["/sessions/{id}/messages"]["post"]
    assert {"401", "404", "409", "413", "415", "422", "429", "500", "502", "503"} <= set(
        send["responses"]
    )
    assert send["security"] == [{"clerkSession": []}]
    assert "security" not in doc["paths"]["/webhooks/clerk"]["post"]
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    for path, ops in doc["paths"].items():
        for method, operation in ops.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"
                    }, (method, path, status)


def test_paths_and_parameters_are_the_templates() -> None:
    """The document's operations are exactly API Gateway's routes, with the same path
    parameter names, so clients and API Gateway agree on the URL templates."""
    doc = json.loads(openapi.render())
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    # The stream function's own routes (its Function URL), as its ASGI app registers them.
    from starlette.routing import Route

    from functions.stream.app import app as stream_app

    streamed = {
        (method, route.path)
        for route in stream_app.routes
        if isinstance(route, Route) and route.path != "/healthz"  # the adapter's, not the API's
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert documented == {(route.method, route.path) for route in http_routes()} | streamed
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for operation in ops.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, declared)


# Each operation's success: its status and the schema of its body (None: no body).
SUCCESS = {
    ("get", "/sessions"): ("200", "TripPage"),
    ("post", "/sessions"): ("201", "TripOut"),
    ("get", "/sessions/{id}"): ("200", "TripOut"),
    ("patch", "/sessions/{id}"): ("200", "TripOut"),
    ("delete", "/sessions/{id}"): ("204", None),
    ("get", "/sessions/{id}/messages"): ("200", "MessagePage"),
    ("post", "/sessions/{id}/messages"): ("201", "TurnOut"),
    ("get", "/me"): ("200", "ProfileOut"),
    ("get", "/me/memories"): ("200", "MemoryPage"),
    ("delete", "/me/memories"): ("204", None),
    ("delete", "/me/memories/{id}"): ("204", None),
    ("post", "/webhooks/clerk"): ("200", "WebhookReceipt"),
}
# The stream routes: Server-Sent Events, or no body.
STREAMED = {
    ("post", "/sessions/{id}/messages/stream"): ["200"],
    ("get", "/sessions/{id}/messages/stream"): ["200", "204"],
    ("post", "/sessions/{id}/messages/stream/stop"): ["204"],
}


@pytest.mark.parametrize(("operation", "statuses"), STREAMED.items(), ids=str)
def test_stream_routes_answer_server_sent_events_or_nothing(
    operation: tuple[str, str], statuses: list[str]
) -> None:
    doc = json.loads(openapi.render())
    method, path = operation
    responses = doc["paths"][path][method]["responses"]
    assert [s for s in responses if s.startswith("2")] == statuses
    for status in statuses:
        content = responses[status].get("content")
        assert content is None if status == "204" else set(content) == {"text/event-stream"}


@pytest.mark.parametrize(("operation", "expected"), SUCCESS.items(), ids=str)
def test_every_success_response_is_documented_with_its_schema(
    operation: tuple[str, str], expected: tuple[str, str | None]
) -> None:
    doc = json.loads(openapi.render())
    method, path = operation
    status, schema = expected
    responses = doc["paths"][path][method]["responses"]
    assert [s for s in responses if s.startswith("2")] == [status]
    if schema is None:
        assert "content" not in responses[status]
    else:
        body = responses[status]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{schema}"}
        assert doc["components"]["schemas"][schema]["type"] == "object"


def test_created_trip_links_to_the_operations_on_it() -> None:
    doc = json.loads(openapi.render())
    created = doc["paths"]["/sessions"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]
    operation_ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    for link in created["links"].values():
        assert link["operationId"] in operation_ids
        assert link["parameters"] == {"id": "$response.body#/id"}
