"""Package the functions for `sam deploy` without Docker or a python3.13 interpreter.

Writes what `sam build` would: .aws-sam/build/<LogicalId>/ for each function and for the
shared layer, and .aws-sam/build/template.yaml pointing at them. The layer's dependencies
are wheels for CPython 3.13 on manylinux aarch64 (Lambda's arm64), fetched by pip with
--platform/--python-version/--only-binary, so nothing is compiled for this machine.
Also the `build-SharedLayer` target of `sam build`'s makefile builder: `layer ARTIFACTS_DIR`.

boto3 is left out of the layer: Lambda's python3.13 runtime ships boto3/botocore (newer than
pyproject's boto3>=1.34), and shipping them would add ~30 MB. It is still part of the pip
resolution, then removed: otherwise an unbounded dependency (svix's python-dateutil) resolves
to a release botocore rejects (dateutil>=3), and the layer's copy, first on sys.path, would
break the runtime's botocore. Everything left in the layer satisfies botocore's own ranges.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

PLATFORM = ["--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64"]
PYTHON_VERSION = "3.13"
# Lambda's Python runtime ships these (boto3 and what only boto3 needs): resolved, not shipped.
PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer")


def runtime_requirements() -> list[str]:
    """[project].dependencies from pyproject.toml: the one list of what the layer needs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def _remove_distribution(site: Path, name: str) -> None:
    """Delete one installed distribution by its RECORD, the files pip wrote for it."""
    normalized = name.replace("-", "_").lower()
    for dist_info in site.glob("*.dist-info"):
        if dist_info.name.split("-")[0].lower() != normalized:
            continue
        folders: set[Path] = set()
        for line in (dist_info / "RECORD").read_text().splitlines():
            path = (site / line.split(",")[0]).resolve()
            if path.is_file() and path.is_relative_to(site.resolve()):
                path.unlink()
                folders.update(p for p in path.parents if p.is_relative_to(site.resolve()))
        shutil.rmtree(dist_info, ignore_errors=True)
        # Folders the removal left empty, deepest first (a longer path is never a parent).
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder != site.resolve() and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def build_layer(target: Path) -> None:
    """python/ (dependencies and shared/) and sql/, the layout Lambda mounts at /opt."""
    if target.exists():
        shutil.rmtree(target)
    python = target / "python"
    python.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(python),
            *PLATFORM,
            "--implementation",
            "cp",
            "--python-version",
            PYTHON_VERSION,
            "--only-binary=:all:",
            "--no-compile",
            *runtime_requirements(),
        ],
        check=True,
    )
    for name in PROVIDED_BY_RUNTIME:
        _remove_distribution(python, name)
    shutil.copytree(
        REPO / "shared", python / "shared", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "sql", target / "sql")


def build_function(code_uri: str, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO / code_uri, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


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
    # Imported here: `sam build` runs the layer command with a bare python3 without PyYAML.
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
            build_function(str(props["CodeUri"]), build_dir / logical_id)
            props["CodeUri"] = logical_id
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            build_layer(build_dir / logical_id)
            props["ContentUri"] = logical_id
            resource.pop("Metadata", None)  # already built
    built = build_dir / "template.yaml"
    built.write_text(yaml.dump(template, Dumper=CfnDumper, sort_keys=False, width=100))
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    all_cmd = sub.add_parser("all", help="every function and the layer, plus the template")
    all_cmd.add_argument("--build-dir", type=Path, default=REPO / ".aws-sam" / "build")
    layer_cmd = sub.add_parser("layer", help="only the layer (sam build's makefile builder)")
    layer_cmd.add_argument("artifacts_dir", type=Path)
    sub.add_parser("requirements", help="print the layer's requirements (from pyproject.toml)")
    args = parser.parse_args(argv)
    if args.command == "requirements":
        print("\n".join(runtime_requirements()))
    elif args.command == "layer":
        build_layer(args.artifacts_dir)
    else:
        print(f"wrote {package(args.build_dir)}; deploy with: sam deploy --guided")


if __name__ == "__main__":
    main()
