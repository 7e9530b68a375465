"""Me function: the signed-in traveller's profile, and what their assistant remembers of them.

GET /me, GET /me/memories, DELETE /me/memories (all), DELETE /me/memories/{id}. Every route
needs a Clerk session token; someone else's memory is answered exactly like one that does not
exist.
"""

# No `from __future__ import annotations`: Powertools reads the route signatures at runtime.
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

# Every request verifies a token: load the JWT library with the function, not on the first request.
import shared.gateways.auth  # noqa: F401
from shared.domain import account
from shared.gateways.backboard import SAFE_ID
from shared.http import pages
from shared.http.api import create_app, request_viewer, resolve
from shared.http.api_docs import API_ERRORS, documented, error
from shared.http.cursors import ListLimit, NextCursor, position_after
from shared.models import MemoryPage, ProfileOut, Totals

logger = Logger(service="me")
metrics = Metrics(service="me")  # namespace: POWERTOOLS_METRICS_NAMESPACE
app = create_app()

# Routes name it `id`, as template.yaml does; Powertools passes it by that name. The pattern
# keeps ids that could walk Backboard's URL path ("..") out (422).
MemoryId = Annotated[
    str, Path(pattern=f"^{SAFE_ID.pattern}$", description="The memory's id (from GET /me/memories)")
]
MEMORY_ERRORS = {**API_ERRORS, 404: error("No such memory (or it is someone else's)")}


@app.get(
    "/me",
    summary="My profile, with how many trips, messages and memories I have",
    operation_id="getMe",
    responses=documented(200, "My profile", ProfileOut),
)
def get_me() -> ProfileOut:
    found = account.profile(request_viewer(app))
    user = found.user
    return ProfileOut(
        id=user.id,
        email=user.email,
        name=user.name,
        created_at=user.created_at,
        totals=Totals(trips=found.trips, messages=found.messages, memories=found.memories),
    )


@app.get(
    "/me/memories",
    summary="What my assistant remembers of me, newest first",
    operation_id="listMemories",
    responses=documented(200, "A page of my memories, newest first", MemoryPage),
)
def list_memories(
    limit: ListLimit = 20,
    cursor: NextCursor = None,
) -> MemoryPage:
    return pages.memory_page(
        account.list_memories(request_viewer(app), limit=limit, after=position_after(cursor))
    )


@app.delete(
    "/me/memories/<id>",
    summary="Make my assistant forget one memory",
    operation_id="deleteMemory",
    responses=documented(204, "Forgotten", errors=MEMORY_ERRORS),
)
def delete_memory(id: MemoryId) -> Response[None]:
    account.forget_memory(request_viewer(app), id)
    metrics.add_metric(name="MemoryDeleted", unit=MetricUnit.Count, value=1)
    return Response(status_code=204, body=None)


@app.delete(
    "/me/memories",
    summary="Make my assistant forget everything it remembers of me",
    operation_id="deleteAllMemories",
    responses=documented(204, "Everything forgotten (also when there was nothing)"),
)
def delete_all_memories() -> Response[None]:
    account.forget_all_memories(request_viewer(app))
    metrics.add_metric(name="MemoriesReset", unit=MetricUnit.Count, value=1)
    return Response(status_code=204, body=None)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
