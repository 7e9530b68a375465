"""Read template.yaml: the HTTP routes it gives each function, each function's service name and
the HTTP API's CORS configuration, so the local server serves exactly what API Gateway will
(one source of truth)."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
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


@dataclass(frozen=True)
class FunctionSpec:
    """What a local container needs to run one function like Lambda does."""

    logical_id: str  # e.g. SessionsFunction
    module: str  # e.g. functions.sessions.app
    service: str  # its POWERTOOLS_SERVICE_NAME, so shared/'s child loggers find their parent


def http_functions(template: dict[str, Any] | None = None) -> dict[str, FunctionSpec]:
    """logical id -> spec of every function that serves HTTP API routes."""
    template = template or load_template()
    resources = template["Resources"]
    specs = {}
    for route in http_routes(template):
        variables = (
            resources[route.function].get("Properties", {}).get("Environment", {}).get("Variables")
        ) or {}
        service = str(variables.get("POWERTOOLS_SERVICE_NAME") or route.function)
        specs[route.function] = FunctionSpec(route.function, route.module, service)
    return specs


@dataclass(frozen=True)
class CorsRules:
    """The HttpApi's CorsConfiguration, resolved: what API Gateway answers preflights with and
    adds to every response for an allowed origin."""

    allow_origins: tuple[str, ...]
    allow_headers: tuple[str, ...]
    allow_methods: tuple[str, ...]
    expose_headers: tuple[str, ...]
    max_age: int | None
    allow_credentials: bool

    def allows(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin in self.allow_origins


def cors_rules(
    template: dict[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> CorsRules | None:
    """The HTTP API's CORS configuration with its parameters taken from the environment
    variables the template passes them to the functions as (ClerkAuthorizedParties is
    CLERK_AUTHORIZED_PARTIES), or None when the template configures no CORS."""
    template = template or load_template()
    apis = [
        r for r in template["Resources"].values() if r.get("Type") == "AWS::Serverless::HttpApi"
    ]
    config = apis[0].get("Properties", {}).get("CorsConfiguration") if apis else None
    if not config:
        return None
    evaluate = _Evaluator(template, os.environ if environ is None else environ)
    resolved: dict[str, Any] = evaluate(config)

    def names(key: str) -> tuple[str, ...]:
        return tuple(str(v).strip() for v in resolved.get(key) or () if str(v).strip())

    max_age = resolved.get("MaxAge")
    return CorsRules(
        allow_origins=names("AllowOrigins"),
        allow_headers=names("AllowHeaders"),
        allow_methods=names("AllowMethods"),
        expose_headers=names("ExposeHeaders"),
        max_age=None if max_age is None else int(max_age),
        allow_credentials=bool(resolved.get("AllowCredentials", False)),
    )


_NO_VALUE = object()  # AWS::NoValue: the property is dropped
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "Fn::Split": lambda args: str(args[1]).split(str(args[0])),
    "Fn::Join": lambda args: str(args[0]).join(str(v) for v in args[1]),
    "Fn::Equals": lambda args: args[0] == args[1],
    "Fn::Not": lambda args: not args[0],
    "Fn::And": all,
    "Fn::Or": any,
}


class _Evaluator:
    """The few intrinsic functions a CORS setting may use (Ref, If, Split, Join, Equals, Not,
    And, Or, Condition), with each parameter's value read from the environment variable the
    template maps it to (its Default when unset). Not a CloudFormation engine."""

    def __init__(self, template: dict[str, Any], environ: Mapping[str, str]) -> None:
        self._template = template
        self._environ = environ
        # Parameter -> environment variable, from the functions' `VAR: !Ref Parameter` lines.
        self._variables: dict[str, str] = {}
        for resource in template["Resources"].values():
            variables = resource.get("Properties", {}).get("Environment", {}).get("Variables") or {}
            for name, value in variables.items():
                if isinstance(value, dict) and set(value) == {"Ref"}:
                    self._variables.setdefault(str(value["Ref"]), str(name))

    def __call__(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self(item) for item in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self._parameter(str(arg))
            if key == "Condition":
                return self._condition(str(arg))
            if key.startswith("Fn::"):
                return self._function(key, arg)
        return {k: v for k, v in ((k, self(v)) for k, v in node.items()) if v is not _NO_VALUE}

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self(when_true if self._condition(str(name)) else when_false)
        if key not in _FUNCTIONS:
            raise ValueError(f"the local server cannot evaluate {key} in template.yaml")
        return _FUNCTIONS[key](self(arg))

    def _condition(self, name: str) -> bool:
        return bool(self(self._template["Conditions"][name]))

    def _parameter(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        variable = self._variables.get(name)
        if variable is not None and variable in self._environ:
            return self._environ[variable]
        parameter = self._template.get("Parameters", {}).get(name)
        if parameter is not None and "Default" in parameter:
            return parameter["Default"]
        if variable is not None:
            return ""  # a required parameter left unset: the functions see it empty too
        raise ValueError(f"template parameter {name} has no local value")
