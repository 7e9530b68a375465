"""The template wires the Parameters and Secrets extension as shared/config.py expects: the
layer and its port come together, from one parameter, and the port is the variable the code
reads. Without the parameter, neither is there (Powertools Parameters is used)."""

from __future__ import annotations

from dev.stack.template import load_template
from shared import config


def test_the_extension_layer_and_its_port_come_together_from_one_parameter() -> None:
    template = load_template()
    condition = template["Conditions"]["HasSecretsExtension"]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SecretsExtensionLayerArn"}, ""]}]}
    assert template["Parameters"]["SecretsExtensionLayerArn"]["Default"] == ""

    function = template["Globals"]["Function"]
    when = ["HasSecretsExtension", {"Ref": "SecretsExtensionLayerArn"}, {"Ref": "AWS::NoValue"}]
    assert {"Fn::If": when} in function["Layers"]
    port = function["Environment"]["Variables"][config.SECRETS_EXTENSION_PORT_VARIABLE]
    assert port == {"Fn::If": ["HasSecretsExtension", "2773", {"Ref": "AWS::NoValue"}]}
