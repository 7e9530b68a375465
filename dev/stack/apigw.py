"""API Gateway HTTP API (payload v2) events and Lambda contexts, as AWS sends them.

Used by the tests, `make invoke` and the local server, so all three drive the handlers with the
same event shape that `sam local invoke` and API Gateway produce.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str = "tripchat-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/tripchat-local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def http_event(
    method: str,
    path: str,
    *,
    body: str | bytes | Mapping[str, Any] | list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    route_key: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTP API v2 event. A dict or list body is sent as JSON; bytes are base64-encoded."""
    all_headers = {
        "accept": "application/json",
        "host": "api.tripchat.local",
        "user-agent": "tripchat-tests/1.0",
        "x-forwarded-proto": "https",
        "x-amzn-trace-id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
    }
    encoded = False
    raw_body: str | None
    if body is None:
        raw_body = None
    elif isinstance(body, bytes):
        raw_body, encoded = base64.b64encode(body).decode(), True
    elif isinstance(body, str):
        raw_body = body
    else:
        raw_body = json.dumps(body)
    if raw_body is not None:
        all_headers["content-type"] = "application/json"
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key or "$default",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": all_headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": all_headers["host"],
            "domainPrefix": "api",
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": all_headers["user-agent"],
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key or "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if raw_body is not None:
        event["body"] = raw_body
    return event


def response_json(response: Mapping[str, Any]) -> Any:
    """The decoded JSON body of a handler's response (None for an empty body); a body of
    another media type (a Markdown download) as its text."""
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    media_type = headers.get("content-type", "application/json").split(";")[0].strip()
    if media_type != "application/json":
        return body
    return json.loads(body) if body else None
