"""The stream function's deployment: the Lambda Web Adapter in response-stream mode behind a
Function URL in RESPONSE_STREAM mode, with the API's CORS origins."""

from __future__ import annotations

from dev.stack.template import REPO, load_template


def test_stream_function_runs_behind_the_web_adapter_and_a_streaming_url() -> None:
    template = load_template()
    props = template["Resources"]["StreamFunction"]["Properties"]
    variables = props["Environment"]["Variables"]
    assert props["Handler"] == "run.sh"
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert variables["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert variables["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    url = props["FunctionUrlConfig"]
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    # The same origins as the HttpApi (and the tokens' azp).
    assert url["Cors"]["AllowOrigins"] == {"Fn::Split": [",", {"Ref": "ClerkAuthorizedParties"}]}
    assert "idempotency-key" in url["Cors"]["AllowHeaders"]
    # The adapter layer: a parameter, or AWS's layer in the stack's own region.
    (layer,) = props["Layers"]
    condition, own, published = layer["Fn::If"]
    assert condition == "HasOwnWebAdapterLayer"
    assert own == {"Ref": "LambdaWebAdapterLayerArn"}
    assert "${AWS::Region}" in published["Fn::Sub"]
    assert "LambdaAdapterLayerArm64" in published["Fn::Sub"]
    run = (REPO / "functions" / "stream" / "run.sh").read_text()
    assert "uvicorn app:app" in run
    assert "AWS_LWA_PORT" in run
