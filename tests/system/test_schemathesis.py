"""Schemathesis against the real handlers behind the local HTTP front: every operation of the
committed OpenAPI document, with a valid Clerk session token, in all four phases (examples,
coverage, fuzzing, stateful: a created trip's links lead to the operations on it).

No answer may be a server error or differ from the document (status, content type, headers,
body schema), a schema-violating request must be refused, and a deleted trip must be gone.
The CLI's report of every distinct failure (with a curl line to reproduce each) is the
assertion message."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from dev.stack.local_api import LocalApi
from dev.stack.token_issuer import LocalIssuer
from dev.tools import openapi

pytestmark = pytest.mark.slow

# Per operation and phase: about 45 s of CPU in all, and enough to reach every documented
# status. The seed is fixed, so a failure reproduces with the same command.
MAX_EXAMPLES = 75
SEED = 20_261_125
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
)
# The phases (and fuzzing, the longest, by path) in runs of their own, which xdist runs in
# parallel: together they are the one run of all four phases over every operation.
RUNS = {
    "examples-coverage": ("examples,coverage", None, None),
    "fuzzing-trips": ("fuzzing", "^/sessions", None),
    "fuzzing-others": ("fuzzing", None, "^/sessions"),
    "stateful": ("stateful", None, None),
}


class AnyMethodApi(LocalApi):
    """The local front, also for methods http.server has no do_X for (TRACE, QUERY): it would
    answer those 501 itself, without reaching a handler. Routed like the others, the
    function answers 405 with Allow, as it does for PUT or OPTIONS."""

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._request_handler()
        serve = base.do_GET  # type: ignore[attr-defined]
        return type("AnyMethodHandler", (base,), {"do_TRACE": serve, "do_QUERY": serve})


@pytest.fixture
def local_api(api_env: LocalIssuer) -> Iterator[LocalApi]:
    """The local HTTP front on a free loopback port, with the API's test settings (the rate
    limits out of the way: a 429 is documented, but would hide everything after it)."""
    server = AnyMethodApi(port=0).start()
    yield server
    server.stop()


@pytest.mark.parametrize("run_name", list(RUNS))
def test_schemathesis_finds_no_server_errors_nor_schema_violations(
    run_name: str, local_api: LocalApi, issuer: LocalIssuer, tmp_path: Path
) -> None:
    phases, include, exclude = RUNS[run_name]
    token = issuer.mint("user_schemathesis", email="st@example.test", name="St", expires_in=3600)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(openapi.DOCUMENT),
        f"--url={local_api.base_url}",
        f"--header=Authorization: Bearer {token}",
        f"--checks={','.join(CHECKS)}",
        f"--phases={phases}",
        *([f"--include-path-regex={include}"] if include else []),
        *([f"--exclude-path-regex={exclude}"] if exclude else []),
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--request-timeout=10",
        "--generation-database=none",
        "--continue-on-failure",
        "--no-color",
    ]
    # cwd: schemathesis writes its files (cassettes, caches) where it runs, not in the repo.
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    output, exit_code = run.stdout + run.stderr, run.returncode
    # The phases' outcome and every failure, without the progress lines before them.
    report = output[output.find("Operations:") :] if "Operations:" in output else output
    assert exit_code == 0, report
    if phases == "stateful":  # sequences along the document's links, from a created trip on
        scenarios = re.search(r"Scenarios:\s+(\d+)", output)
        links = re.search(r"API Links:\s+(\d+) covered", output)
        assert scenarios and int(scenarios[1]) > 0, report
        assert links and int(links[1]) > 0, report
    else:  # every operation the run selects was exercised
        paths = json.loads(openapi.render())["paths"]
        operations = sum(
            len(ops)
            for path, ops in paths.items()
            if (not include or re.search(include, path))
            and not (exclude and re.search(exclude, path))
        )
        assert operations > 0
        assert f"Tested: {operations}" in output, report
