"""Sessions function: the signed-in user's trips.

GET /sessions, POST /sessions, GET/PATCH/DELETE /sessions/{id}, GET /sessions/{id}/export and
GET /search. Every route needs a Clerk session token; someone else's trip is answered exactly
like a trip that does not exist.

Search and export live here rather than in functions of their own: like the other routes here
they read the user's trips in one statement, need the same permissions (the database, no
Backboard call) and no import the function does not already load, so they add no cold start,
no role and no log group.
"""

# No `from __future__ import annotations`: Powertools reads the route signatures at runtime.
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

# Every request verifies a token: load the JWT library with the function, not on the first request.
import shared.gateways.auth  # noqa: F401
from shared.domain import search, trips
from shared.domain.exports import export_window
from shared.http import exports, pages
from shared.http.api import create_app, request_viewer, resolve
from shared.http.api_docs import documented, download, trip_links
from shared.http.cursors import (
    MAX_CURSOR_LENGTH,
    ListLimit,
    NextCursor,
    decode_cursor,
    position_after,
)
from shared.models import (
    QUERY_MAX,
    CreateTripRequest,
    ExportPart,
    RenameTripRequest,
    SearchPage,
    SearchText,
    TripOut,
    TripPage,
)

logger = Logger(service="sessions")
metrics = Metrics(service="sessions")  # namespace: POWERTOOLS_METRICS_NAMESPACE
app = create_app()

# Routes name it `id`, as template.yaml does; Powertools passes it by that name.
TripId = Annotated[str, Path(min_length=1, max_length=100, description="The trip's id")]


@app.get(
    "/sessions",
    summary="List my trips, newest first",
    operation_id="listTrips",
    responses=documented(200, "A page of my trips, newest first", TripPage),
)
def list_sessions(
    limit: ListLimit = 20,
    cursor: NextCursor = None,
) -> TripPage:
    return pages.trip_page(
        trips.list_trips(request_viewer(app), limit=limit, after=position_after(cursor))
    )


@app.post(
    "/sessions",
    summary="Start a trip (a new assistant thread)",
    operation_id="createTrip",
    responses=documented(
        201,
        "The new trip",
        TripOut,
        headers={"Location": {"description": "The trip's URL", "schema": {"type": "string"}}},
        links=trip_links("$response.body#/id"),
    ),
)
def create_session(
    request: Annotated[CreateTripRequest | None, Body()] = None,
) -> Response[TripOut]:
    session = trips.create_trip(request_viewer(app), request.title if request else None)
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=TripOut.of(session),
        headers={"Location": f"/sessions/{session.id}"},
    )


@app.get(
    "/sessions/<id>",
    summary="Get one of my trips",
    operation_id="getTrip",
    responses=documented(200, "The trip", TripOut),
)
def get_session(id: TripId) -> TripOut:
    return TripOut.of(trips.get_trip(request_viewer(app), id))


@app.patch(
    "/sessions/<id>",
    summary="Rename one of my trips",
    operation_id="renameTrip",
    responses=documented(200, "The renamed trip", TripOut),
)
def rename_session(id: TripId, request: Annotated[RenameTripRequest, Body()]) -> TripOut:
    return TripOut.of(trips.rename_trip(request_viewer(app), id, request.title))


@app.delete(
    "/sessions/<id>",
    summary="Delete one of my trips with its messages",
    operation_id="deleteTrip",
    responses=documented(204, "Deleted, with its messages and its assistant thread"),
)
def delete_session(id: TripId) -> Response[None]:
    trips.delete_trip(request_viewer(app), id)
    return Response(status_code=204, body=None)


@app.get(
    "/sessions/<id>/export",
    summary="Download a trip's conversation as Markdown or JSON",
    operation_id="exportTrip",
    responses=download(
        "The conversation (title, dates, messages in order) as a file; a trip larger than one "
        "response comes in parts, each naming the next in its Link header",
        {"md": exports.MEDIA_TYPES["md"], "json": exports.MEDIA_TYPES["json"]},
        ExportPart,
    ),
)
def export_session(
    id: TripId,
    export_format: Annotated[
        exports.ExportFormat, Query(alias="format", description="md (Markdown) or json")
    ] = "md",
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="the next part's cursor (Link header)"),
    ] = None,
) -> Response[str]:
    window = export_window(
        request_viewer(app),
        id,
        after=decode_cursor(cursor) if cursor else None,
        max_bytes=exports.PART_BYTES,
        max_messages=exports.PART_MESSAGES,
    )
    part = exports.render(window, export_format, datetime.now(UTC))
    return Response(
        status_code=200,
        content_type=part.media_type,
        body=part.body,
        headers=exports.headers(id, part, export_format),
    )


@app.get(
    "/search",
    summary="Search the titles and messages of my trips",
    operation_id="searchTrips",
    responses=documented(200, "My best hits first, each with a highlighted snippet", SearchPage),
)
def search_trips(
    q: Annotated[
        SearchText,
        Query(
            min_length=1,
            max_length=QUERY_MAX,
            description='Words to find; "a phrase", or, -word as in web search engines',
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=50, description="Page size")] = 20,
    cursor: NextCursor = None,
) -> SearchPage:
    after = pages.search_position(cursor, q)
    return pages.search_page(search.search(request_viewer(app), q, limit=limit, after=after), q)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
