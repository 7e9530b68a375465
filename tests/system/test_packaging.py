"""The SAM template is valid, routes reach the handlers, and `make package` builds the
layout `sam deploy` needs, with arm64 / CPython 3.13 binaries in the layer."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    "MeRole": {"DatabaseSecretArn", "BackboardApiKeySecretArn", "ClerkSecretKeySecretArn"},
    "MigrateRole": {"DatabaseSecretArn"},
    "StreamRole": {"DatabaseSecretArn", "BackboardApiKeySecretArn", "ClerkSecretKeySecretArn"},
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
    assert re.fullmatch(pattern, "https://app.example.com,http://localhost:3000")
    # The HttpApi's and the stream URL's CORS origins are Fn::Split of it, which keeps spaces.
    spaced = "https://app.example.com, http://localhost:3000"
    for bad in ("", " ", "*", "https://app.example.com/", "app.example.com", spaced):
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
    functions = ("ClerkWebhookFunction", "SessionsFunction", "MessagesFunction", "StreamFunction")
    for name in (*functions, "MeFunction"):
        assert resources[name]["DependsOn"] == "DatabaseSchema"
    variables = resources["MigrateFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["MIGRATIONS_DIR"] == "/opt/sql"  # the layer's sql/, mounted at /opt


def _alarm_metrics(alarm: dict[str, Any]) -> dict[str, str]:
    """{metric id: function logical id} of a metric-math alarm over Lambda metrics."""
    watched = {}
    for query in alarm["Properties"]["Metrics"]:
        if "MetricStat" in query:
            (dimension,) = query["MetricStat"]["Metric"]["Dimensions"]
            watched[query["Id"]] = dimension["Value"]["Ref"]
    return watched


def test_alarms_watch_every_function() -> None:
    resources = load_template()["Resources"]
    functions = {k for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    # Functions clients call: through the HTTP API, or their own Function URL (streaming).
    api_functions = {
        k
        for k in functions
        if "FunctionUrlConfig" in resources[k]["Properties"]
        or any(
            e["Type"] == "HttpApi" for e in resources[k]["Properties"].get("Events", {}).values()
        )
    }
    errors = resources["FunctionErrorsAlarm"]
    assert set(_alarm_metrics(errors).values()) == functions
    assert set(_alarm_metrics(resources["FunctionThrottlesAlarm"]).values()) == api_functions
    # Each API function's p99 is measured against its own timeout: ms / (timeout_s * 10) is
    # the percentage of the timeout.
    duration = resources["FunctionDurationAlarm"]
    watched = _alarm_metrics(duration)
    assert set(watched.values()) == api_functions
    (expression,) = [
        q["Expression"] for q in duration["Properties"]["Metrics"] if "Expression" in q
    ]
    for metric_id, function in watched.items():
        timeout = resources[function]["Properties"]["Timeout"]
        assert f"{metric_id} / {timeout * 10}" in expression, (function, expression)
    for alarm in ("ApiServerErrorRateAlarm", "FunctionErrorsAlarm", "FunctionThrottlesAlarm"):
        properties = resources[alarm]["Properties"]
        assert properties["AlarmActions"]["Fn::If"][0] == "HasAlarmTopic", alarm
        # Every id the expression sums is one of the metrics (a function added to the list
        # but not to the sum would never alarm).
        (expression,) = [q["Expression"] for q in properties["Metrics"] if "Expression" in q]
        for query in properties["Metrics"]:
            if "MetricStat" in query:
                assert re.search(rf"\b{query['Id']}\b", expression), (alarm, query["Id"])


def test_reserved_concurrency_caps_every_function_only_when_set() -> None:
    template = load_template()
    cap = template["Globals"]["Function"]["ReservedConcurrentExecutions"]
    assert cap == {
        "Fn::If": [
            "HasReservedConcurrency",
            {"Ref": "ReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == 0
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            assert "ReservedConcurrentExecutions" not in resource["Properties"], logical_id


def test_api_access_logs_name_no_credentials() -> None:
    api = load_template()["Resources"]["HttpApi"]["Properties"]
    settings = api["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    record = json.loads(settings["Format"])  # one JSON object per request
    assert record["requestId"] == "$context.requestId"
    assert not re.search(r"authorization|header|authorizer", settings["Format"], re.IGNORECASE)


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
        "functions.me.app",
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
        "GET /me",
        "GET /me/memories",
        "DELETE /me/memories",
        "DELETE /me/memories/{id}",
    }
    for route in routes:
        path = route.path.replace("{id}", "some-trip")
        response = route.handler()(http_event(route.method, path), LambdaContext())
        # Unauthenticated, unsigned: rejected, but by the route (never "no such route").
        assert response["statusCode"] in {400, 401}, (route.route_key, response)


def _lock() -> dict[str, tuple[str, list[str]]]:
    """layer/requirements.txt as {normalized name: (version, hashes)}."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = (package.LAYER_SOURCE / package.LOCK_NAME).read_text()
    for line in re.sub(r"\\\n", " ", text).splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            spec, *options = requirement.split()
            name, version = spec.split("==")
            entries[canonicalize_name(name)] = (version, options)
    return entries


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = _lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, project["dependencies"]):
        name = str(canonicalize_name(dependency.name))
        if name in package.PROVIDED_BY_RUNTIME:
            assert name not in lock, name  # the runtime's copy is the one Lambda imports
            continue
        assert name in lock, name
        assert dependency.specifier.contains(lock[name][0], prereleases=True), (name, lock[name])
    for name, (_, hashes) in lock.items():
        assert hashes and all(h.startswith("--hash=sha256:") for h in hashes), name


def test_the_layer_and_functions_are_built_from_their_own_folders() -> None:
    resources = load_template()["Resources"]
    layer = resources["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "layer/"
    # The wheels the recipe installs are for the architecture the functions run on.
    assert load_template()["Globals"]["Function"]["Architectures"] == [package.ARCHITECTURE]
    assert layer["Properties"]["CompatibleArchitectures"] == [package.ARCHITECTURE]
    assert layer["Metadata"]["BuildArchitecture"] == package.ARCHITECTURE
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    # What sam copies and hashes for the layer: the lock, its recipe, and the two links.
    assert {p.name for p in package.LAYER_SOURCE.iterdir()} == {
        "Makefile",
        "requirements.txt",
        "shared",
        "sql",
    }
    assert (package.LAYER_SOURCE / "shared").resolve() == REPO / "shared"
    assert (package.LAYER_SOURCE / "sql").resolve() == REPO / "sql"
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            # functions/Makefile adds the bytecode, for every function.
            assert resource["Metadata"] == {"BuildMethod": "makefile", "ContextPath": "functions"}
            assert str(resource["Properties"]["CodeUri"]).startswith("functions/"), logical_id


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make package`'s artifact, built once for the tests below."""
    build_dir = tmp_path_factory.mktemp("aws-sam-build")
    return package.package(build_dir)


@pytest.mark.slow
def test_package_builds_the_sam_layout(built: Path) -> None:
    tmp_path = built.parent
    functions = ("ClerkWebhookFunction", "SessionsFunction", "MessagesFunction", "MeFunction")
    for name in (*functions, "MigrateFunction"):
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
    # The stream function: the Web Adapter runs run.sh, which starts uvicorn from the layer.
    assert (tmp_path / "StreamFunction" / "run.sh").stat().st_mode & 0o111
    for served_by in ("uvicorn", "starlette"):
        assert (layer / "python" / served_by / "__init__.py").is_file()
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


def _distributions(site: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dist_info in site.glob("*.dist-info"):
        name, version = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)
        found[canonicalize_name(name)] = version
    return found


@pytest.mark.slow
def test_the_layer_ships_exactly_the_lock_and_shared(built: Path) -> None:
    site = built.parent / "SharedLayer" / "python"
    assert _distributions(site) == {name: version for name, (version, _) in _lock().items()}
    # Every top-level entry belongs to a locked distribution's RECORD, or is shared/: nothing
    # from .venv, .local, tests/ or dev/, no console scripts.
    recorded = {"shared", "__pycache__"}  # __pycache__: bytecode of top-level modules (six.py)
    for record in site.glob("*.dist-info/RECORD"):
        recorded |= {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    assert {p.name for p in site.iterdir()} <= recorded
    assert not (site / "bin").exists()
    # ... nor their RECORD lines: pip writes its own launcher into them, and the artifact must
    # be the same whichever pip (sam's, the venv's) built it.
    assert not [r for r in site.glob("*.dist-info/RECORD") if "../../bin/" in r.read_text()]
    assert {p.name for p in (built.parent / "SharedLayer").iterdir()} == {"python", "sql"}
    shipped = {p.relative_to(site / "shared") for p in (site / "shared").rglob("*.py")}
    assert shipped == {p.relative_to(REPO / "shared") for p in (REPO / "shared").rglob("*.py")}


@pytest.mark.slow
def test_the_artifact_carries_cpython_313_bytecode(built: Path) -> None:
    if package.find_python313() is None:
        pytest.skip("no python3.13 here: the artifact is built without bytecode")
    build_dir = built.parent
    sources = [p for p in build_dir.rglob("*.py") if p.parent.name != "__pycache__"]
    assert len(sources) > 500  # the layer's packages, shared/ and the handlers
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        assert pyc.is_file(), source
    assert not [p for p in build_dir.rglob("*.pyc") if ".cpython-313." not in p.name]
    # Unchecked hash-based .pyc (PEP 552: flags 0b01): used as is in read-only /opt and
    # /var/task, never compared with the source; tracebacks name the paths Lambda mounts.
    for pyc, mounted in (
        (
            build_dir / "SharedLayer/python/shared/__pycache__/config.cpython-313.pyc",
            "/opt/python/shared/config.py",
        ),
        (build_dir / "SessionsFunction/__pycache__/app.cpython-313.pyc", "/var/task/app.py"),
    ):
        header = pyc.read_bytes()[:16]
        assert int.from_bytes(header[4:8], "little") == 0b01, pyc
        assert mounted.encode() in pyc.read_bytes(), pyc
    for name in ("ClerkWebhookFunction", "SessionsFunction", "MessagesFunction", "MigrateFunction"):
        assert {p.name for p in (build_dir / name).iterdir()} == {
            "__init__.py",
            "app.py",
            "__pycache__",
        }, name


def test_the_stream_function_starts_from_its_artifact(tmp_path: Path) -> None:
    """run.sh, as the Web Adapter runs it in /var/task: the function's folder alone (shared/
    and the packages come from the layer, here the venv's), uvicorn answering /healthz."""
    import socket
    import time
    import urllib.request

    artifact = tmp_path / "StreamFunction"
    package.build_function(REPO / "functions" / "stream", artifact)
    layer = tmp_path / "opt" / "python"  # the layer's shared/, ahead of the venv's
    layer.mkdir(parents=True)
    (layer / "shared").symlink_to(REPO / "shared")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",  # python3: this venv's
        "HOME": str(tmp_path),
        "PYTHONPATH": str(layer),
        "AWS_LWA_PORT": str(port),
        "LAMBDA_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    server = subprocess.Popen(
        [str(artifact / "run.sh")],
        cwd=artifact,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while status is None and server.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.2)
        output = server.communicate()[0] if server.poll() is not None else "no answer"
        assert status == 204, output
    finally:
        server.terminate()
        server.wait(timeout=10)
