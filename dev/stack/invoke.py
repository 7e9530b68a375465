"""`make invoke FN=<function> EVENT=events/<file>.json`: run one handler in-process on a
sample event, as `sam local invoke -e` would in Docker, and print its response.

Sample events carry placeholders where a live value is needed: a Clerk session token
(replaced by a local issuer's token) and a Svix signature (re-signed with the configured
webhook secret and a fresh timestamp, since Svix rejects deliveries older than 5 minutes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dev.stack.apigw import LambdaContext, response_json

TOKEN_PLACEHOLDER = "REPLACE_WITH_CLERK_SESSION_TOKEN"
FUNCTIONS = ("clerk_webhook", "sessions", "messages", "migrate")


def prepare_event(
    event: dict[str, Any], *, token: str | None, webhook_secret: str | None
) -> dict[str, Any]:
    """The event with its placeholders filled in (a copy)."""
    event = json.loads(json.dumps(event))
    headers = event.get("headers") or {}
    if token and TOKEN_PLACEHOLDER in headers.get("authorization", ""):
        headers["authorization"] = f"Bearer {token}"
    if webhook_secret and "svix-signature" in headers:
        from svix.webhooks import Webhook

        now = datetime.now(UTC)
        headers["svix-timestamp"] = str(int(now.timestamp()))
        headers["svix-signature"] = Webhook(webhook_secret).sign(
            headers["svix-id"], now, event.get("body") or ""
        )
    return event


def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
    module = importlib.import_module(f"functions.{function}.app")
    result: dict[str, Any] = module.lambda_handler(event, LambdaContext(function_name=function))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("function", choices=FUNCTIONS)
    parser.add_argument("event", type=Path)
    args = parser.parse_args(argv)
    from dev.stack.dev import prepare_environment

    event = json.loads(args.event.read_text(encoding="utf-8"))
    with ExitStack() as stack:
        token = prepare_environment(stack)
        event = prepare_event(
            event, token=token, webhook_secret=os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET")
        )
        result = invoke(args.function, event)
    if "statusCode" in result:
        shown = {**result, "body": response_json(result)}
        print(json.dumps(shown, indent=2, default=str))
        return 0 if int(result["statusCode"]) < 500 else 1
    print(json.dumps(result, indent=2, default=str))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
