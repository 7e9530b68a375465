"""Build the API's OpenAPI document from the functions' own resolvers.

The API functions each describe their routes (Powertools), the stream function in
functions/stream/docs.py; this merges them into one document, committed as
functions/openapi.json. `make openapi` rewrites it, and a test fails when the committed file
no longer matches the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from functions.clerk_webhook.app import app as webhook_app
from functions.me.app import app as me_app
from functions.messages.app import app as messages_app
from functions.sessions.app import app as sessions_app
from functions.stream import docs as stream_docs

DOCUMENT = Path(__file__).resolve().parents[2] / "functions" / "openapi.json"
TITLE = "Trip-planner chat API"
VERSION = "1.0.0"


def build() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for app in (sessions_app, messages_app, me_app, webhook_app):
        doc = json.loads(app.get_openapi_json_schema(title=TITLE, version=VERSION))
        if not merged:
            merged = doc
            continue
        for path, operations in doc.get("paths", {}).items():
            merged["paths"].setdefault(path, {}).update(operations)
        schemas = doc.get("components", {}).get("schemas", {})
        merged.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
    merged["components"]["securitySchemes"] = {
        "clerkSession": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    for path, operations in merged["paths"].items():
        for operation in operations.values():
            if not path.startswith("/webhooks/"):
                operation["security"] = [{"clerkSession": []}]
            for response in operation["responses"].values():
                # A bodiless answer (204) has no content at all, not an empty map.
                if response.get("content") == {}:
                    del response["content"]
    # The stream function is no Powertools resolver: its operations come described.
    stream_paths, stream_schemas = stream_docs.paths()
    merged["paths"].update(stream_paths)
    merged["components"]["schemas"].update(stream_schemas)
    merged["info"]["description"] = (
        "Trips and chat for the trip-planner app. Every route but the webhook needs a Clerk "
        "session token (Authorization: Bearer). Errors are "
        '{"error": {"code": "...", "message": "..."}}.'
    )
    return merged


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    DOCUMENT.write_text(render(), encoding="utf-8")
    print(f"wrote {DOCUMENT}")


if __name__ == "__main__":
    main()
