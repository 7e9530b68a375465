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

from shared import webhooks
from shared.api import create_app, resolve

logger = Logger(service="clerk-webhook")
metrics = Metrics(service="clerk-webhook")  # namespace: POWERTOOLS_METRICS_NAMESPACE
app = create_app()


@app.post("/webhooks/clerk", summary="Receive a Clerk webhook delivery (Svix-signed)")
def receive_clerk_webhook() -> dict[str, str]:
    event = app.current_event
    payload = webhooks.verify_delivery(event.decoded_body or "", event.headers)
    outcome = webhooks.apply_event(payload)
    metrics.add_metric(name=f"ClerkEvent_{outcome}", unit=MetricUnit.Count, value=1)
    return {"type": str(payload["type"]), "outcome": outcome}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Svix signs the webhook; there is no user token to check.
    return resolve(app, event, context, authenticated=False)
