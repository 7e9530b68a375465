"""A test client for the API functions: builds the API Gateway v2 event for each call and
invokes the handler template.yaml routes it to, as API Gateway would."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dev.stack.apigw import LambdaContext, http_event, response_json
from dev.stack.template import Handler, HttpRoute, http_routes


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
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("authorization", f"Bearer {self.token}")
        handler = _handler_for(method, path)
        event = http_event(method, path, body=body, headers=all_headers, query=query)
        context = LambdaContext()

        def invoke() -> Reply:
            response = handler(event, context)
            return Reply(
                response["statusCode"], response_json(response), response.get("headers") or {}
            )

        return invoke


@functools.cache
def _routes() -> list[HttpRoute]:
    return http_routes()


def _handler_for(method: str, path: str) -> Handler:
    """The handler template.yaml routes the request to. A method the path does not have goes
    to the function serving the path (it answers 405), an unknown path to the sessions
    function (it answers 404)."""
    routes = _routes()
    for route in routes:
        if route.match(method, path) is not None:
            return route.handler()
    for route in routes:
        if route.match(route.method, path) is not None:
            return route.handler()
    from functions.sessions.app import lambda_handler

    return lambda_handler
