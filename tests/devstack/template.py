"""Read template.yaml: the HTTP routes it gives each function, so the local server serves
exactly what API Gateway will (one source of truth)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class CloudFormationLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation's short-form tags (!Ref, !GetAtt, !Sub, ...)
    as {"Ref": ...} / {"Fn::X": ...} mappings instead of failing on them."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node {node!r}")
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=CloudFormationLoader)  # noqa: S506 (a SafeLoader subclass)
    return data


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str  # as in the template, e.g. /sessions/{id}
    function: str  # logical id, e.g. SessionsFunction
    module: str  # e.g. functions.sessions.app

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when this route serves the request, else None."""
        if method.upper() != self.method:
            return None
        pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        found = re.fullmatch(pattern, path)
        return found.groupdict() if found else None

    def handler(self) -> Handler:
        module = importlib.import_module(self.module)
        handler: Handler = module.lambda_handler
        return handler


def http_routes(template: dict[str, Any] | None = None) -> list[HttpRoute]:
    template = template or load_template()
    routes = []
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        code_uri = str(props.get("CodeUri", "")).strip("/")
        module = code_uri.replace("/", ".") + "." + str(props.get("Handler", "app.x")).split(".")[0]
        for event in (props.get("Events") or {}).values():
            if event.get("Type") == "HttpApi":
                spec = event["Properties"]
                routes.append(
                    HttpRoute(str(spec["Method"]).upper(), str(spec["Path"]), logical_id, module)
                )
    return routes
