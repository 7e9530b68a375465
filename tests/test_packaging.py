"""The SAM template is valid, routes reach the handlers, and `make package` builds the
layout `sam deploy` needs, with arm64 / CPython 3.13 binaries in the layer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.devstack.template import REPO, http_routes, load_template
from tests.tools import package

ELF_MACHINE_AARCH64 = 183


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_template_lints_clean() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    if not cfn_lint.exists():
        pytest.skip("cfn-lint is not installed in this environment")
    result = subprocess.run(
        [str(cfn_lint), str(REPO / "template.yaml")],
        capture_output=True,
        text=True,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_settings() -> None:
    template = load_template()
    function = template["Globals"]["Function"]
    assert (function["Runtime"], function["Architectures"]) == ("python3.13", ["arm64"])
    text = (REPO / "template.yaml").read_text()
    # Secrets are only ever referenced by ARN, never written into the template.
    assert not re.search(r"whsec_[A-Za-z0-9+/=]{8,}|sk_(live|test)_\w+|postgres(ql)?://\S+@", text)
    variables = json.dumps(load_template()).upper()
    for name in (
        'BACKBOARD_API_KEY"',
        'CLERK_SECRET_KEY"',
        'CLERK_WEBHOOK_SIGNING_SECRET"',
        "DATABASE_URL",
    ):
        assert name not in variables


def test_every_template_route_reaches_a_handler_that_serves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared import config
    from tests.devstack.apigw import LambdaContext, http_event

    monkeypatch.setenv("CLERK_ISSUER", "https://clerk.example.test")
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_dGVzdA==")
    config.reset_caches()

    routes = http_routes()
    assert {r.route_key for r in routes} == {
        "POST /webhooks/clerk",
        "GET /sessions",
        "POST /sessions",
        "GET /sessions/{id}",
        "PATCH /sessions/{id}",
        "DELETE /sessions/{id}",
        "GET /sessions/{id}/messages",
        "POST /sessions/{id}/messages",
    }
    for route in routes:
        path = route.path.replace("{id}", "some-trip")
        response = route.handler()(http_event(route.method, path), LambdaContext())
        # Unauthenticated, unsigned: rejected, but by the route (never "no such route").
        assert response["statusCode"] in {400, 401}, (route.route_key, response)


@pytest.mark.slow
def test_package_builds_the_sam_layout(tmp_path: Path) -> None:
    built = package.package(tmp_path)
    for name in ("ClerkWebhookFunction", "SessionsFunction", "MessagesFunction", "MigrateFunction"):
        assert (tmp_path / name / "app.py").is_file()
        assert not (tmp_path / name / "shared").exists()  # shared/ comes from the layer
    layer = tmp_path / "SharedLayer"
    assert (layer / "python" / "shared" / "__init__.py").is_file()
    assert sorted(p.name for p in (layer / "sql").glob("*.sql")) == sorted(
        p.name for p in (REPO / "sql").glob("*.sql")
    )
    for package_dir in ("psycopg_binary", "pydantic_core"):
        binaries = list((layer / "python" / package_dir).rglob("*.so"))
        assert binaries, package_dir
        assert {_elf_machine(b) for b in binaries} == {ELF_MACHINE_AARCH64}
        assert all(
            "cpython-313" in b.name or "abi3" in b.name or package_dir == "psycopg_binary"
            for b in binaries
        )
    assert not (layer / "python" / "boto3").exists()  # the Lambda runtime provides it
    text = built.read_text()
    assert "CodeUri: SessionsFunction" in text
    assert "ContentUri: SharedLayer" in text
    assert "!GetAtt 'MigrateFunction.Arn'" in text or "!GetAtt MigrateFunction.Arn" in text
    cfn_lint = str(Path(sys.executable).parent / "cfn-lint")
    if Path(cfn_lint).exists():
        result = subprocess.run(
            [cfn_lint, str(built)],
            capture_output=True,
            text=True,
            env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert result.returncode == 0, result.stdout
