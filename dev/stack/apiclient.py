"""A test client for the sessions and messages functions: builds the API Gateway v2 event
for each call and invokes the handler that serves the path, as API Gateway would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dev.stack.apigw import LambdaContext, http_event, response_json


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Client:
    """Calls the handlers as one signed-in user (or anonymously, with token None)."""

    token: str | None

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return self.prepare(method, path, body=body, query=query, headers=headers)()

    def prepare(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Callable[[], Reply]:
        """The request, built once: calling the result invokes the handler (benchmarks time
        only the invocation)."""
        from functions.messages.app import lambda_handler as messages_handler
        from functions.sessions.app import lambda_handler as sessions_handler

        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("authorization", f"Bearer {self.token}")
        handler = messages_handler if path.endswith("/messages") else sessions_handler
        event = http_event(method, path, body=body, headers=all_headers, query=query)
        context = LambdaContext()

        def invoke() -> Reply:
            response = handler(event, context)
            return Reply(
                response["statusCode"], response_json(response), response.get("headers") or {}
            )

        return invoke
