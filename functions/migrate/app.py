"""Migrate function: applies the schema, reports status, detects drift.

Invoked three ways, all running the same code in `shared.migrations`:
- by hand: `{"action": "apply" | "status" | "verify"}` (default "apply");
- by CloudFormation on every deploy, as a custom resource (Create/Update apply, Delete is a
  no-op: a stack deletion never drops data);
- as a CLI: `python -m functions.migrate.app apply|status|verify` (the Makefile's migrate
  targets), exiting non-zero on failure or drift.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared import migrations
from shared.config import direct_database_url, get_settings
from shared.errors import ConfigurationError

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
        return _custom_resource(event)
    result = run(str(event.get("action", "apply")))
    logger.info("migrate finished", extra={"result": result})
    return result


def _custom_resource(event: dict[str, Any]) -> dict[str, Any]:
    """Answer CloudFormation: a migration that cannot be applied fails (and rolls back) the
    deploy. Drift alone does not: during a rollback the previous code runs with its older
    expected schema against a database that newer migrations already extended, and failing
    then would leave the stack stuck in UPDATE_ROLLBACK_FAILED. Drift is logged instead."""
    if event["RequestType"] == "Delete":
        result: dict[str, Any] = {"ok": True, "action": "none"}
    else:
        result = run("apply")
    if result.get("drift"):
        logger.warning("schema differs from the expected one", extra={"drift": result["drift"]})
    body = {
        "Status": "FAILED" if "error" in result else "SUCCESS",
        "Reason": (result.get("error") or "; ".join(result.get("drift", [])) or "ok")[:1000],
        "PhysicalResourceId": event.get("PhysicalResourceId", PHYSICAL_RESOURCE_ID),
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": {"Applied": ",".join(result.get("applied", []))},
    }
    import httpx  # only deploys need it: keep it out of every other cold start

    # The response URL is a presigned S3 URL: it must get an empty Content-Type.
    response = httpx.put(
        event["ResponseURL"], content=json.dumps(body), headers={"Content-Type": ""}, timeout=10
    )
    response.raise_for_status()
    logger.info("custom resource answered", extra={"status": body["Status"]})
    return result


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "apply"
    result = run(action)
    print(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
