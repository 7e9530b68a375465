"""Where `make dev` keeps its state and reads its settings: .local/ and .env (both movable by
environment variable, as the tests do), shared by the server and `make token`."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

from dev.stack.template import REPO


def local_dir() -> Path:
    """Local state (embedded database, dev signing key, stand-in state); TRIPCHAT_LOCAL_DIR
    moves it (tests do)."""
    return Path(os.environ.get("TRIPCHAT_LOCAL_DIR") or REPO / ".local")


def env_file() -> Path:
    return Path(os.environ.get("TRIPCHAT_ENV_FILE") or REPO / ".env")


def load_env_file(path: Path | None = None) -> dict[str, str]:
    """Read .env (python-dotenv's syntax: quotes, comments, `export`, ${VAR}) into the
    environment without overriding what is already set there; returns what it added."""
    before = set(os.environ)
    load_dotenv(path or env_file(), override=False)
    return {key: os.environ[key] for key in set(os.environ) - before}
