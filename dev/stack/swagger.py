"""Swagger UI for `make dev` only: Powertools' own, on one function's resolver, showing the
whole API.

Each function's resolver knows only its own routes, so the UI is given the merged document
that `make openapi` writes (built from all the resolvers, live). Deployed functions never call
this: the route exists only in the local server's worker process.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge


def enable_swagger(app: APIGatewayHttpResolver, path: str) -> None:
    """Serve the Swagger UI (and `?format=json`, the document) at `path` on `app`."""
    from dev.tools import openapi

    document = openapi.build()
    merged = OpenAPIMerge(
        title=openapi.TITLE, version=openapi.VERSION, description=document["info"]["description"]
    )
    merged.add_schema(document)
    # Powertools' Swagger route serves a merged document when the resolver holds one. Its
    # public configure_openapi_merge() can only find resolvers built by a constructor call in
    # the handler file, and ours come from shared.http.api.create_app(), so attach it directly.
    app._openapi_merge = merged
    app.enable_swagger(path=path, title=openapi.TITLE, version=openapi.VERSION)
