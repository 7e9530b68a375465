"""Build the deployment artifact: the shared layer and each function, as Lambda runs them.

One recipe, two ways in:
- `sam build` uses the makefile builder: `layer/Makefile` (target build-SharedLayer) and
  `functions/Makefile` (build-<Function>) call `layer` and `function` here, on the copy of
  the resource's source sam made.
- `make package` (no Docker, no sam) calls `all`: every resource into .aws-sam/build with the
  same two functions, and .aws-sam/build/template.yaml pointing at them.

The layer's source is `layer/`: its `requirements.txt` (the lock, `make lock`) and the links
`shared -> ../shared` and `sql -> ../sql`; nothing else of the repository reaches it. Its
third-party packages are the lock's wheels for CPython 3.13 on manylinux aarch64 (Lambda's
arm64), installed with --require-hashes --no-deps --platform ... --only-binary, so nothing is
compiled for this machine and nothing outside the lock gets in. The Lambda runtime provides
boto3/botocore/s3transfer: the lock resolves them (so their dependencies stay in botocore's
ranges) but does not list them.

Every .py of the artifact is compiled by CPython 3.13 with unchecked-hash invalidation: /opt
and /var/task are read-only in Lambda, so without .pyc files every cold start compiles every
module it imports (~2.3 s vs ~0.9 s for the sessions handler). Without a python3.13 here
(PYTHON313, python3.13 on PATH, or pyenv's 3.13) the artifact is built without bytecode and
says so.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LAYER_SOURCE = REPO / "layer"
LOCK_NAME = "requirements.txt"

PYTHON_VERSION = "3.13"
# template.yaml's Architectures (a test keeps them equal). The lock has every wheel's hash, so
# the bench builds the same layer for this machine's architecture to import it here.
ARCHITECTURE = "arm64"
PIP_PLATFORMS = {
    "arm64": ["manylinux2014_aarch64", "manylinux_2_28_aarch64"],
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_28_x86_64"],
}
UV_PLATFORM = {"arm64": "aarch64-manylinux_2_28", "x86_64": "x86_64-manylinux_2_28"}[ARCHITECTURE]
# Lambda's Python runtime ships these: resolved by the lock (their ranges bind the rest), not in it.
PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer")
# Where Lambda mounts each part: the paths tracebacks show, baked into the .pyc files.
LAYER_MOUNT = "/opt"
FUNCTION_MOUNT = "/var/task"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")
# Third-party installs with their bytecode, by what decides their content (see install_site).
CACHE = REPO / "build" / "cache" / "site"


@functools.cache
def find_python313() -> str | None:
    """A CPython 3.13 interpreter: PYTHON313, python3.13 on PATH, or pyenv's (a pyenv shim
    on PATH fails unless its version is selected, hence the check that it runs)."""
    candidates = [os.environ.get("PYTHON313"), shutil.which("python3.13")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.13*/bin/python3.13"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.implementation.cache_tag)"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "cpython-313":
            return candidate
    return None


def compile_bytecode(root: Path, mount: str) -> bool:
    """Compile every .py under root for CPython 3.13, as if root were mounted at `mount`."""
    python = find_python313()
    if python is None:
        print(
            f"WARNING: no python3.13 found (set PYTHON313): {root.name} is built without "
            "bytecode, and every cold start will compile what it imports",
            file=sys.stderr,
        )
        return False
    # -j 0: all cores; -s/-p: the path Lambda sees; unchecked-hash: the .pyc is used as is,
    # never compared with its source (the artifact is immutable once deployed).
    result = subprocess.run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            mount,
            str(root),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"compileall failed for {root}:\n{result.stdout}{result.stderr}")
    return True


def pip_install(target: Path, *arguments: str) -> None:
    """pip install --target for CPython 3.13 from wheels only, no bytecode (compile_bytecode
    makes it, for the path Lambda mounts)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "--python-version",
            PYTHON_VERSION,
            "--only-binary=:all:",
            "--no-compile",
            *arguments,
        ],
        check=True,
    )


def install_site(
    target: Path, mount: str, arguments: Sequence[str], cache: Path | None = None
) -> None:
    """pip_install(target, *arguments) and its bytecode for `mount`. With a cache folder, an
    install made before with the same arguments, requirement files and python3.13 is copied
    instead: the result is the same bytes (wheels by hash, unchecked-hash .pyc), without
    unpacking and compiling ~3,000 files again (`make package` twice, the bench, the tests)."""
    if cache is None:
        _install_and_compile(target, mount, arguments)
        return
    entry = cache / _site_key(mount, arguments)
    if not entry.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".building-"))
        try:
            _install_and_compile(scratch / "site", mount, arguments)
            # Atomic: a reader never sees half an install; when two builds race, one wins.
            os.rename(scratch / "site", entry)
        except OSError:
            if not entry.is_dir():
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    # Hard links: nothing writes into an installed file afterwards (the layer adds shared/
    # beside them), so the copy costs no disk and ~0.1 s instead of seconds.
    shutil.copytree(entry, target, dirs_exist_ok=True, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _site_key(mount: str, arguments: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in (mount, str(find_python313()), *arguments):
        digest.update(part.encode() + b"\0")
        if Path(part).is_file():  # a requirement file: its content decides the install
            digest.update(Path(part).read_bytes())
    digest.update(Path(__file__).read_bytes())  # the recipe itself
    return digest.hexdigest()[:32]


def _install_and_compile(target: Path, mount: str, arguments: Sequence[str]) -> None:
    pip_install(target, *arguments)
    # Console scripts: nothing runs them in Lambda, and pip writes this machine's interpreter
    # (and its own launcher) into them: gone, with their RECORD lines, so the artifact is the
    # same whichever pip built it.
    shutil.rmtree(target / "bin", ignore_errors=True)
    for record in target.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(line for line in lines if not line.startswith("../../bin/")))
    compile_bytecode(target, mount)


def build_layer(
    target: Path,
    source: Path = LAYER_SOURCE,
    architecture: str = ARCHITECTURE,
    cache: Path | None = None,
) -> None:
    """python/ (the locked wheels and shared/) and sql/: the layout Lambda mounts at /opt.
    `sam build` passes no cache (it has its own, --cached); `make package` and the bench do."""
    if target.exists():
        shutil.rmtree(target)
    python = target / "python"
    install_site(
        python,
        f"{LAYER_MOUNT}/python",
        [
            *(arg for platform in PIP_PLATFORMS[architecture] for arg in ("--platform", platform)),
            "--implementation",
            "cp",
            "--no-deps",
            "--require-hashes",
            "--requirement",
            str(source / LOCK_NAME),
        ],
        cache,
    )
    shutil.copytree(source / "shared", python / "shared", ignore=SKIP)
    shutil.copytree(source / "sql", target / "sql", ignore=SKIP)
    compile_bytecode(python / "shared", f"{LAYER_MOUNT}/python/shared")


def build_function(source: Path, target: Path) -> None:
    """The handler's folder and its bytecode (its imports come from the layer)."""
    if target.resolve() != source.resolve():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=SKIP)
    compile_bytecode(target, FUNCTION_MOUNT)


def lock(upgrade: bool) -> None:
    """Rewrite layer/requirements.txt from pyproject's [project].dependencies with uv: exact
    versions and hashes for CPython 3.13 on manylinux aarch64."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run(
        [
            uv,
            "pip",
            "compile",
            "--quiet",
            "pyproject.toml",
            "--python-version",
            PYTHON_VERSION,
            "--python-platform",
            UV_PLATFORM,
            "--generate-hashes",
            "--custom-compile-command",
            "make lock",
            *(["--upgrade"] if upgrade else []),
            *(arg for name in PROVIDED_BY_RUNTIME for arg in ("--no-emit-package", name)),
            "--output-file",
            str(LAYER_SOURCE.relative_to(REPO) / LOCK_NAME),
        ],
        cwd=REPO,
        check=True,
    )


def _represent_dict(dumper: Any, data: dict[str, Any]) -> Any:
    """Writes {"Ref": x} / {"Fn::X": y} back as !Ref / !X, as CloudFormation expects."""
    if len(data) == 1:
        ((key, value),) = data.items()
        if key == "Ref" or key.startswith("Fn::"):
            tag = "!Ref" if key == "Ref" else "!" + key[4:]
            if key == "Fn::GetAtt" and isinstance(value, list):
                return dumper.represent_scalar(tag, ".".join(value))
            if isinstance(value, list):
                return dumper.represent_sequence(tag, value)
            if isinstance(value, dict):
                return dumper.represent_mapping(tag, value)
            return dumper.represent_scalar(tag, str(value))
    return dumper.represent_dict(data)


def package(build_dir: Path) -> Path:
    # Imported here: `sam build` runs `layer` and `function` with a bare python3 without PyYAML.
    import yaml

    from dev.stack.template import load_template

    class CfnDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # CloudFormation does not accept YAML anchors and aliases

    CfnDumper.add_representer(dict, _represent_dict)
    template = load_template()
    build_dir.mkdir(parents=True, exist_ok=True)
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            build_function(REPO / str(props["CodeUri"]), build_dir / logical_id)
            props["CodeUri"] = logical_id
            resource.pop("Metadata", None)  # already built
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            build_layer(build_dir / logical_id, REPO / str(props["ContentUri"]), cache=CACHE)
            props["ContentUri"] = logical_id
            resource.pop("Metadata", None)
    built = build_dir / "template.yaml"
    built.write_text(yaml.dump(template, Dumper=CfnDumper, sort_keys=False, width=100))
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    all_cmd = sub.add_parser("all", help="every function and the layer, plus the template")
    all_cmd.add_argument("--build-dir", type=Path, default=REPO / ".aws-sam" / "build")
    layer_cmd = sub.add_parser("layer", help="the layer (sam build: layer/Makefile)")
    layer_cmd.add_argument("source", type=Path)
    layer_cmd.add_argument("artifacts_dir", type=Path)
    function_cmd = sub.add_parser("function", help="one function (sam build: functions/Makefile)")
    function_cmd.add_argument("source", type=Path)
    function_cmd.add_argument("artifacts_dir", type=Path)
    lock_cmd = sub.add_parser("lock", help="rewrite layer/requirements.txt (needs uv)")
    lock_cmd.add_argument("--upgrade", action="store_true", help="newest allowed releases")
    args = parser.parse_args(argv)
    if args.command == "layer":
        build_layer(args.artifacts_dir, args.source)
    elif args.command == "function":
        build_function(args.source, args.artifacts_dir)
    elif args.command == "lock":
        lock(args.upgrade)
    else:
        print(f"wrote {package(args.build_dir)}; deploy with: sam deploy")


if __name__ == "__main__":
    main()
