"""The template wires the Parameters and Secrets extension as shared/config.py expects: the
layer and its port come together, from one parameter, and the port is the variable the code
reads. Without the parameter, neither is there (Powertools Parameters is used)."""

from __future__ import annotations

import re

from dev.stack.template import load_template
from shared import config

EXTENSION_ARN = (
    "arn:aws:lambda:us-east-1:177933569100:layer:"
    "AWS-Parameters-and-Secrets-Lambda-Extension-Arm64:12"
)


def test_the_extension_layer_and_its_port_come_together_from_one_parameter() -> None:
    template = load_template()
    condition = template["Conditions"]["HasSecretsExtension"]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SecretsExtensionLayerArn"}, ""]}]}
    parameter = template["Parameters"]["SecretsExtensionLayerArn"]
    assert parameter["Default"] == ""
    # CloudFormation matches AllowedPattern against the whole value.
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch(EXTENSION_ARN)
    assert not pattern.fullmatch(EXTENSION_ARN.replace("Arm64", ""))  # x86_64: not our arch
    assert not pattern.fullmatch("arn:aws:secretsmanager:us-east-1:123456789012:secret:x")

    function = template["Globals"]["Function"]
    when = ["HasSecretsExtension", {"Ref": "SecretsExtensionLayerArn"}, {"Ref": "AWS::NoValue"}]
    assert {"Fn::If": when} in function["Layers"]
    port = function["Environment"]["Variables"][config.SECRETS_EXTENSION_PORT_VARIABLE]
    assert port == {"Fn::If": ["HasSecretsExtension", "2773", {"Ref": "AWS::NoValue"}]}
    # Its own cache off, so a secret is never older than SECRETS_MAX_AGE_SECONDS.
    ttl = function["Environment"]["Variables"]["SECRETS_MANAGER_TTL"]
    assert ttl == {"Fn::If": ["HasSecretsExtension", "0", {"Ref": "AWS::NoValue"}]}
