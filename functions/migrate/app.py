"""Migrate function: applies the schema, reports status, detects drift.

Invoked three ways, all running the same code in `shared.store.migrations`:
- by hand: `{"action": "apply" | "status" | "verify"}` (default "apply");
- by CloudFormation on every deploy, as a custom resource (Create/Update apply, Delete is a
  no-op: a stack deletion never drops data);
- as a CLI: `python -m functions.migrate.app apply|status|verify` (the Makefile's migrate
  targets), exiting non-zero on failure or drift.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.config import (
    DATABASE_URL_VARIABLES,
    DIRECT_DATABASE_URL_VARIABLES,
    direct_database_url,
    get_settings,
)
from shared.errors import ConfigurationError
from shared.store import migrations

logger = Logger(service="migrate")

ACTIONS = ("apply", "status", "verify")
PHYSICAL_RESOURCE_ID = "tripchat-database-schema"


def run(action: str) -> dict[str, Any]:
    """Run one action and describe the outcome as JSON-ready data; `ok` is False on failure
    or drift, with `error` or `drift` saying why."""
    if action not in ACTIONS:
        return {"ok": False, "action": action, "error": f"Unknown action; use one of {ACTIONS}"}
    try:
        timeout = max(1, round(get_settings().db_connect_timeout_seconds))
        with migrations.connect(direct_database_url(), connect_timeout=timeout) as conn:
            if action == "apply":
                report = migrations.apply(conn)
                drift = migrations.verify(conn)
                return {"ok": not drift, "action": action, **asdict(report), "drift": drift}
            if action == "status":
                files = migrations.status(conn)
                return {
                    "ok": all(f.state == "applied" for f in files),
                    "action": action,
                    "files": [
                        {
                            **asdict(f),
                            "applied_at": f.applied_at.isoformat() if f.applied_at else None,
                        }
                        for f in files
                    ],
                }
            drift = migrations.verify(conn)
            return {"ok": not drift, "action": action, "drift": drift}
    except (migrations.MigrationError, ConfigurationError) as exc:
        logger.error("migration failed", extra={"action": action, "error": str(exc)})
        return {"ok": False, "action": action, "error": str(exc)}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "RequestType" in event:
        return _custom_resource(event, context)
    result = run(str(event.get("action", "apply")))
    logger.info("migrate finished", extra={"result": result})
    return result


def _custom_resource(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    """Answer CloudFormation: a migration that cannot be applied fails (and rolls back) the
    deploy. Drift alone does not: during a rollback the previous code runs with its older
    expected schema against a database that newer migrations already extended, and failing
    then would leave the stack stuck in UPDATE_ROLLBACK_FAILED. Drift is logged instead.

    Whatever goes wrong, CloudFormation gets an answer: without one the deploy hangs until
    the resource's ServiceTimeout and then fails with no hint of why."""
    try:
        if event["RequestType"] == "Delete":
            result: dict[str, Any] = {"ok": True, "action": "none"}
        else:
            result = run("apply")
    except Exception as exc:  # anything unmapped (a bug, a psycopg error, bad settings)
        result = {"ok": False, "action": "apply", "error": _unexpected(exc, context)}
    if result.get("drift"):
        logger.warning("schema differs from the expected one", extra={"drift": result["drift"]})
    reason = result.get("error") or "; ".join(result.get("drift", [])) or "ok"
    body = {
        "Status": "FAILED" if "error" in result else "SUCCESS",
        # Stack events are readable by more people than the logs: never a credential.
        "Reason": _redact(reason)[:1000],
        "PhysicalResourceId": event.get("PhysicalResourceId", PHYSICAL_RESOURCE_ID),
        "StackId": event.get("StackId", ""),
        "RequestId": event.get("RequestId", ""),
        "LogicalResourceId": event.get("LogicalResourceId", ""),
        "Data": {"Applied": ",".join(result.get("applied", []))},
    }
    _answer(event["ResponseURL"], body)
    logger.info("custom resource answered", extra={"status": body["Status"]})
    return result


# user:password@ in a connection URL (a psycopg parse error quotes the whole URL).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s/@]*@", re.IGNORECASE)


def _redact(text: str) -> str:
    """`text` without URL credentials nor the configured database password (psycopg's parse
    errors quote the offending token, which may be the password alone)."""
    for password in _configured_passwords():
        text = text.replace(password, "***")
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def _configured_passwords() -> list[str]:
    passwords = []
    for name in (*DATABASE_URL_VARIABLES, *DIRECT_DATABASE_URL_VARIABLES):
        # By hand, not urlsplit: the URL may be too malformed for it (that may be the error).
        netloc = (os.environ.get(name) or "").partition("://")[2].split("/", 1)[0]
        password = netloc.rpartition("@")[0].partition(":")[2]
        if password:
            passwords.append(password)
    return passwords


def _unexpected(exc: Exception, context: LambdaContext | None) -> str:
    """Log the failure (traceback, credentials redacted) and return a short reason that
    names only the error's type: its message may quote a URL, a secret or a value."""
    logger.error(
        "migration failed unexpectedly",
        extra={
            "error_type": type(exc).__name__,
            "traceback": _redact("".join(traceback.format_exception(exc))),
        },
    )
    kind = type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        kind += f", SQLSTATE {sqlstate}"
    where = (
        f"log stream {context.log_stream_name}, request {context.aws_request_id}"
        if context is not None
        else "the migrate function's logs"
    )
    return f"Migration failed unexpectedly ({kind}); see {where}."


ANSWER_ATTEMPTS = 3


def _answer(url: str, body: dict[str, Any]) -> None:
    """PUT the answer to the presigned URL, retrying transient failures: a lost answer costs
    the whole ServiceTimeout."""
    import httpx  # only deploys need it: keep it out of every other cold start

    for attempt in range(1, ANSWER_ATTEMPTS + 1):
        try:
            # The response URL is a presigned S3 URL: it must get an empty Content-Type.
            response = httpx.put(
                url, content=json.dumps(body), headers={"Content-Type": ""}, timeout=10
            )
            if response.status_code < 500 or attempt == ANSWER_ATTEMPTS:
                response.raise_for_status()
                return
        except httpx.TransportError:
            if attempt == ANSWER_ATTEMPTS:
                raise
        logger.warning("answering CloudFormation failed; retrying", extra={"attempt": attempt})
        time.sleep(attempt)


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "apply"
    result = run(action)
    print(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
