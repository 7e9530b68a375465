"""The stream routes in the API's OpenAPI document. The stream function is not a Powertools
resolver, so its operations are described here, next to the app, from the same models and
error contract; dev/tools/openapi.py merges them in."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from shared.http.api import ERROR_RESPONSES, IDEMPOTENCY_KEY_PATTERN
from shared.http.ui_stream import STOP_PATH, STREAM_PATH
from shared.models import StreamMessageRequest

REF = "#/components/schemas/{model}"


def _errors(*statuses: int) -> dict[str, Any]:
    described = {
        **{status: response["description"] for status, response in ERROR_RESPONSES.items()},
        415: "The request body is not JSON (Content-Type)",
        500: "An unexpected error or missing configuration; the message reveals nothing",
    }
    return {
        str(status): {
            "description": described[status],
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
        }
        for status in statuses
    }


def _stream(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "text/event-stream": {
                # One Server-Sent Event.
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {
                            "type": "string",
                            "description": "A JSON chunk of the AI SDK's UI message stream "
                            "(start, data-turn, text-start, text-delta..., text-end, finish or "
                            "error), then [DONE]",
                        }
                    },
                }
            }
        },
        "headers": {
            "x-vercel-ai-ui-message-stream": {"schema": {"type": "string", "enum": ["v1"]}}
        },
    }


TRIP_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The trip's id",
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
}
SIGNED_IN: list[dict[str, list[str]]] = [{"clerkSession": []}]


def paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """The stream route's operations, and the schemas they refer to."""
    _, definitions = models_json_schema([(StreamMessageRequest, "validation")], ref_template=REF)
    send = {
        "operationId": "streamMessage",
        "summary": "Send a message; the assistant's reply streams as it is written",
        "description": "Every check of POST /sessions/{id}/messages runs before the stream "
        "opens. The body is {content} or the AI SDK DefaultChatTransport's default body "
        "(the last user message's text parts are the content).",
        "parameters": [
            TRIP_ID,
            {
                "name": "idempotency-key",
                "in": "header",
                "required": False,
                "description": "As for POST /sessions/{id}/messages; without it, the AI SDK "
                "user message's id is the key",
                "schema": {"type": "string", "maxLength": 255, "pattern": IDEMPOTENCY_KEY_PATTERN},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model="StreamMessageRequest")}}
            },
        },
        "responses": {
            "200": _stream("The reply, streamed (a retry of a finished turn replays it)"),
            **_errors(400, 401, 404, 409, 413, 415, 422, 429, 500, 503),
        },
        "security": SIGNED_IN,
    }
    resume = {
        "operationId": "resumeStream",
        "summary": "Resume the trip's reply in flight: what was written, then live",
        "parameters": [TRIP_ID],
        "responses": {
            "200": _stream("The reply in flight, replayed and followed to its end"),
            "204": {"description": "No reply in flight"},
            **_errors(401, 404, 422, 500, 503),
        },
        "security": SIGNED_IN,
    }
    stop = {
        "operationId": "stopStream",
        "summary": "Stop the trip's reply in flight (its text so far becomes the reply)",
        "parameters": [TRIP_ID],
        "responses": {
            "204": {"description": "Stopped, or nothing was in flight"},
            **_errors(401, 404, 422, 500, 503),
        },
        "security": SIGNED_IN,
    }
    operations = {STREAM_PATH: {"post": send, "get": resume}, STOP_PATH: {"post": stop}}
    return operations, definitions["$defs"]
