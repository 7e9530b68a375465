"""The OpenAPI description of each route's responses: its success (status, schema, headers,
links to follow-up operations) next to the error contract of `shared.http.api`.

Route decorators pass `responses=documented(...)`; Powertools turns the pydantic models into
schemas. The committed functions/openapi.json is generated from them (dev/tools/openapi.py).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseContentModel,
    OpenAPIResponseContentSchema,
    OpenAPIResponseHeader,
)
from pydantic import BaseModel

from shared.http.api import ERROR_RESPONSES, ErrorBody

JSON = "application/json"


def error(description: str) -> OpenAPIResponse:
    return {"description": description, "content": {JSON: {"model": ErrorBody}}}


# Answers every route can give besides those of shared.http.api.ERROR_RESPONSES.
COMMON_ERRORS: dict[int, OpenAPIResponse] = {
    415: error("The request body is not JSON (Content-Type)"),
    500: error("An unexpected error or missing configuration; the message reveals nothing"),
}
API_ERRORS: dict[int, OpenAPIResponse] = {**ERROR_RESPONSES, **COMMON_ERRORS}


def documented(
    status: int,
    description: str,
    model: type[BaseModel] | None = None,
    *,
    headers: dict[str, OpenAPIResponseHeader] | None = None,
    links: dict[str, Any] | None = None,
    errors: dict[int, OpenAPIResponse] | None = None,
) -> dict[int, OpenAPIResponse]:
    """A route's `responses=`: the success `status` with `model` as its JSON body (None: no
    body, as for 204), then the errors (default: every API error)."""
    success: OpenAPIResponse = {"description": description}
    # Without "content" Powertools would describe the return annotation (Response[None]).
    success["content"] = {JSON: {"model": model}} if model is not None else {}
    if headers:
        success["headers"] = headers
    if links:
        success["links"] = links
    return {status: success, **(API_ERRORS if errors is None else errors)}


def download(
    description: str, media_types: dict[str, str], model: type[BaseModel]
) -> dict[int, OpenAPIResponse]:
    """A route's `responses=` for a file download: 200 in one of `media_types` (by format;
    the JSON one described by `model`, the others as text), with the download's headers."""
    content: dict[str, OpenAPIResponseContentSchema | OpenAPIResponseContentModel] = {
        media_type.split(";")[0]: {"model": model}
        if media_type.startswith(JSON)
        else {"schema": {"type": "string"}}
        for media_type in media_types.values()
    }

    def header(description: str) -> OpenAPIResponseHeader:
        return {"description": description, "schema": {"type": "string"}}

    success: OpenAPIResponse = {
        "description": description,
        "content": content,
        "headers": {
            "Content-Disposition": header("attachment, with a safe file name"),
            "Cache-Control": header("private, no-store"),
            "Link": header('the next part: <URL>; rel="next" (absent on the last part)'),
        },
    }
    return {200: success, **API_ERRORS}


def trip_links(id_expression: str) -> dict[str, Any]:
    """OpenAPI links from a response that names a trip to the operations on that trip (for
    readers, generated clients and stateful testers such as schemathesis)."""
    operations = {
        "GetTrip": "getTrip",
        "RenameTrip": "renameTrip",
        "DeleteTrip": "deleteTrip",
        "ListMessages": "listMessages",
        "SendMessage": "sendMessage",
        "ExportTrip": "exportTrip",
    }
    return {
        name: {"operationId": operation, "parameters": {"id": id_expression}}
        for name, operation in operations.items()
    }
