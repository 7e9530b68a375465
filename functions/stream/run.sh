#!/bin/bash
# The Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs this as the function's
# "handler": it starts the ASGI app on the adapter's port and turns each invocation into an
# HTTP request to it, streaming the response back (AWS_LWA_INVOKE_MODE=response_stream).
# The shared layer's packages are under /opt/python, as for the other functions.
PYTHONPATH="$PYTHONPATH:/opt/python:$LAMBDA_RUNTIME_DIR" \
    exec python3 -m uvicorn app:app --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" \
    --no-access-log --timeout-graceful-shutdown 2
