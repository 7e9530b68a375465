"""Messages function: a trip's conversation, and sending a message to the assistant.

GET /sessions/{id}/messages and POST /sessions/{id}/messages (optional Idempotency-Key).
"""

# No `from __future__ import annotations`: Powertools reads the route signatures at runtime.
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

# Every request verifies a token: load the JWT library with the function, not on the first request.
import shared.gateways.auth  # noqa: F401
from shared.domain import chat
from shared.http import pages
from shared.http.api import IDEMPOTENCY_KEY_PATTERN, create_app, request_viewer, resolve
from shared.http.api_docs import documented
from shared.models import MessageOut, MessagePage, SendMessageRequest, TurnOut

logger = Logger(service="messages")
metrics = Metrics(service="messages")  # namespace: POWERTOOLS_METRICS_NAMESPACE
app = create_app()

# Routes name it `id`, as template.yaml does; Powertools passes it by that name.
TripId = Annotated[str, Path(min_length=1, max_length=100, description="The trip's id")]
Cursor = Annotated[str | None, Query(max_length=200)]


@app.get(
    "/sessions/<id>/messages",
    summary="Read a trip's conversation, a page at a time",
    operation_id="listMessages",
    responses=documented(200, "A page of the conversation, oldest first", MessagePage),
)
def list_messages(
    id: TripId,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size")] = 50,
    before: Cursor = None,
    after: Cursor = None,
) -> Response[str]:
    before_key, after_key = pages.message_positions(before, after)
    window = chat.list_messages(
        request_viewer(app), id, limit=limit, before=before_key, after=after_key
    )
    # Serialized once, by pydantic, to the bytes the resolver would produce (ASCII, no
    # spaces); returning the model would have it validated, dumped to dicts and dumped again.
    # The documented response (MessagePage) is the OpenAPI description, not this annotation.
    body = pages.message_page(window).model_dump_json(by_alias=True, ensure_ascii=True)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=body)


@app.post(
    "/sessions/<id>/messages",
    summary="Send a message and get the assistant's reply",
    operation_id="sendMessage",
    responses=documented(
        201,
        "The stored message and the assistant's stored reply",
        TurnOut,
        headers={
            "Idempotent-Replayed": {
                "description": "true when this answers a retry with a finished Idempotency-Key",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    ),
)
def send_message(
    id: TripId,
    request: Annotated[SendMessageRequest, Body()],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="idempotency-key",
            max_length=255,
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="1-255 printable ASCII characters; retrying with the same key never "
            "sends the message twice",
        ),
    ] = None,
) -> Response[TurnOut]:
    turn = chat.send_message(request_viewer(app), id, request.content, idempotency_key)
    metrics.add_metric(
        name="MessageReplayed" if turn.replayed else "MessageSent", unit=MetricUnit.Count, value=1
    )
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=TurnOut(
            user_message=MessageOut.of(turn.user_message),
            assistant_message=MessageOut.of(turn.assistant_message),
        ),
        headers={"Idempotent-Replayed": "true"} if turn.replayed else None,
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
