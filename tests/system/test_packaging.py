"""The SAM template is valid, routes reach the handlers, and `make package` builds the
layout `sam deploy` needs, with arm64 / CPython 3.13 binaries in the layer."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dev.stack.template import REPO, http_routes, load_template
from dev.tools import package

ELF_MACHINE_AARCH64 = 183

# The secrets each function may read (IAM), by the parameter naming them.
SECRETS_BY_ROLE = {
    "ClerkWebhookRole": {
        "DatabaseSecretArn",
        "ClerkWebhookSigningSecretArn",
        "BackboardApiKeySecretArn",
    },
    "SessionsRole": {"DatabaseSecretArn", "BackboardApiKeySecretArn", "ClerkSecretKeySecretArn"},
    "MessagesRole": {"DatabaseSecretArn", "BackboardApiKeySecretArn", "ClerkSecretKeySecretArn"},
    "MigrateRole": {"DatabaseSecretArn"},
}


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
    # Authorized parties are an allowlist of origins, always: no empty default (which the
    # functions would read as "no allowlist") and nothing that is not an origin.
    parties = template["Parameters"]["ClerkAuthorizedParties"]
    assert "Default" not in parties
    pattern = parties["AllowedPattern"]
    assert re.fullmatch(pattern, "https://app.example.com, http://localhost:3000")
    for bad in ("", " ", "*", "https://app.example.com/", "app.example.com"):
        assert not re.fullmatch(pattern, bad), bad


def _refs(node: Any) -> set[str]:
    """Every parameter or resource a piece of template names with Ref."""
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return {str(node["Ref"])}
        return set().union(*(_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def test_roles_grant_only_the_secrets_each_function_needs() -> None:
    resources = load_template()["Resources"]
    for role, secrets in SECRETS_BY_ROLE.items():
        statements = resources[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        readable = {
            ref
            for statement in statements
            if "secretsmanager:GetSecretValue" in json.dumps(statement["Action"])
            for ref in _refs(statement["Resource"])
        } - {"AWS::NoValue"}
        assert readable == secrets, role
        # The VPC policy only when the functions are in a VPC.
        (vpc_policy,) = resources[role]["Properties"]["ManagedPolicyArns"]
        assert vpc_policy["Fn::If"][0] == "HasVpc", role
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            assert "Policies" not in resource["Properties"], logical_id
            role = resource["Properties"]["Role"]["Fn::GetAtt"][0]
            assert role in SECRETS_BY_ROLE, logical_id


def test_migrations_run_before_the_api_functions_change() -> None:
    resources = load_template()["Resources"]
    schema = resources["DatabaseSchema"]["Properties"]
    assert schema["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    assert {"Ref": "SharedLayer"} in schema.values()  # a new layer (new sql/) re-runs it
    for name in ("ClerkWebhookFunction", "SessionsFunction", "MessagesFunction"):
        assert resources[name]["DependsOn"] == "DatabaseSchema"
    variables = resources["MigrateFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["MIGRATIONS_DIR"] == "/opt/sql"  # the layer's sql/, mounted at /opt


def _shape(path: str) -> str:
    """A route path with its parameters blanked: /sessions/{id} and /sessions/<trip_id> match."""
    return re.sub(r"\{\w+\}|<\w+>", "{}", path)


def test_template_routes_are_exactly_the_routes_each_module_registers() -> None:
    # Structural, by the Powertools resolver: calling the handlers cannot show this, since
    # authentication answers 401 before routing, for a missing route too.
    declared: dict[str, set[tuple[str, str]]] = {}
    for route in http_routes():
        declared.setdefault(route.module, set()).add((route.method, _shape(route.path)))
    assert set(declared) == {
        "functions.clerk_webhook.app",
        "functions.sessions.app",
        "functions.messages.app",
    }
    for module, routes in declared.items():
        app = importlib.import_module(module).app
        registered = {
            (route.method, _shape(route.path))
            for route in [*app._static_routes, *app._dynamic_routes]
        }
        assert registered == routes, module


def test_every_template_route_reaches_a_handler_that_serves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dev.stack.apigw import LambdaContext, http_event
    from shared import config

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
        "GET /sessions/{id}/export",
        "GET /search",
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
    assert (layer / "python" / "psycopg" / "__init__.py").is_file()
    assert (layer / "python" / "psycopg_pool" / "__init__.py").is_file()
    # The Lambda runtime provides the AWS SDK ...
    for provided in ("boto3", "botocore", "s3transfer"):
        assert not (layer / "python" / provided).exists(), provided
        assert not list((layer / "python").glob(f"{provided}-*.dist-info")), provided
    # ... and the layer, first on sys.path, must not shadow its dependencies with releases
    # botocore rejects (botocore: python-dateutil>=2.1,<3, jmespath<2, urllib3<3).
    for dist, below in (("python_dateutil", 3), ("jmespath", 2), ("urllib3", 3)):
        for dist_info in (layer / "python").glob(f"{dist}-*.dist-info"):
            major = int(dist_info.name.removeprefix(f"{dist}-").split(".")[0])
            assert major < below, dist_info.name
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
