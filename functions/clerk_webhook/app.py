"""Clerk webhook function: POST /webhooks/clerk (user.created, user.updated, user.deleted).

Verifies the Svix signature, applies the event, answers 200 with what happened. A failure
Svix should retry (database or Backboard unavailable) is a 503, so Svix redelivers later.
"""

# No `from __future__ import annotations`: Powertools reads the route signatures at runtime.
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from shared.domain import webhooks
from shared.http.api import ERROR_RESPONSES, create_app, resolve
from shared.http.api_docs import COMMON_ERRORS, documented, error

logger = Logger(service="clerk-webhook")
metrics = Metrics(service="clerk-webhook")  # namespace: POWERTOOLS_METRICS_NAMESPACE
app = create_app()


class WebhookReceipt(BaseModel):
    type: str = Field(description="The Clerk event type, e.g. user.created")
    outcome: str = Field(
        description="created, updated, ignored_stale, ignored_deleted, erased, "
        "already_absent or ignored (an event type this endpoint does not handle)"
    )


# The webhook's own error contract: no user token, no trips, no rate limit.
WEBHOOK_ERRORS = {
    400: error("Missing Svix headers or a body that is not JSON"),
    401: error("The Svix signature does not verify (wrong secret, body or timestamp)"),
    **{status: ERROR_RESPONSES[status] for status in (413, 422, 502, 503)},
    **COMMON_ERRORS,
}


@app.post(
    "/webhooks/clerk",
    summary="Receive a Clerk webhook delivery (Svix-signed)",
    operation_id="receiveClerkWebhook",
    responses=documented(200, "Verified and applied", WebhookReceipt, errors=WEBHOOK_ERRORS),
)
def receive_clerk_webhook() -> WebhookReceipt:
    event = app.current_event
    payload = webhooks.verify_delivery(event.decoded_body or "", event.headers)
    outcome = webhooks.apply_event(payload)
    metrics.add_metric(name=f"ClerkEvent_{outcome}", unit=MetricUnit.Count, value=1)
    return WebhookReceipt(type=str(payload["type"]), outcome=outcome)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Svix signs the webhook; there is no user token to check.
    return resolve(app, event, context, authenticated=False)
