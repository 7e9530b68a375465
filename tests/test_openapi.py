"""The committed OpenAPI document is the one the handlers generate today."""

from __future__ import annotations

import json

from tests.tools import openapi


def test_committed_document_matches_the_code() -> None:
    committed = openapi.DOCUMENT.read_text(encoding="utf-8")
    assert committed == openapi.render(), "run `make openapi` and commit functions/openapi.json"


def test_document_describes_every_route_and_the_error_shape() -> None:
    doc = json.loads(openapi.render())
    operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert operations == {
        ("GET", "/sessions"),
        ("POST", "/sessions"),
        ("GET", "/sessions/{trip_id}"),
        ("PATCH", "/sessions/{trip_id}"),
        ("DELETE", "/sessions/{trip_id}"),
        ("GET", "/sessions/{trip_id}/messages"),
        ("POST", "/sessions/{trip_id}/messages"),
        ("POST", "/webhooks/clerk"),
    }
    send = doc["paths"]["/sessions/{trip_id}/messages"]["post"]
    assert {"401", "404", "409", "413", "422", "429", "502", "503"} <= set(send["responses"])
    assert send["security"] == [{"clerkSession": []}]
    assert "security" not in doc["paths"]["/webhooks/clerk"]["post"]
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
