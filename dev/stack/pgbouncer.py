"""A real PgBouncer in transaction mode, on a free loopback port, for the pooler test run.

Transaction mode is what RDS Proxy, Neon / Vercel Postgres pooled URLs and Supabase's pooler
look like to a client: a server connection is lent for one transaction only, and startup
`options` are refused. The Debian package `pgbouncer` provides the binary (.ci/run installs
it); its config, log and pid file live in a directory of the caller's choosing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from dev.stack.loopback import free_port


def find_binary() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


class PgBouncer:
    """PgBouncer in front of the PostgreSQL server of `server_url`, for every database on it."""

    def __init__(self, server_url: str, directory: Path, *, pool_size: int = 10) -> None:
        binary = find_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        parts = urlsplit(server_url)
        self.binary = binary
        self.directory = directory
        self.user = parts.username or "postgres"
        self.server = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self.pool_size = pool_size
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "pgbouncer.ini"
        (self.directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        host, port = self.server
        config.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n"
            # What README's Operating section recommends for production: while the server
            # is down, a client waits at most a few seconds for it (default 120 s, which
            # turns an outage into hanging requests instead of fast 503s), and a database
            # that is back is logged into again within a second (default 15 s).
            "query_wait_timeout = 3\n"
            "server_connect_timeout = 2\n"
            "server_login_retry = 1\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        command = [self.binary, str(config)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; it drops to the server's own OS user.
            command[1:1] = ["-u", "postgres"]
            self.directory.chmod(0o777)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()[-2000:]}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=1) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:
                time.sleep(0.1)
            else:
                return
        raise RuntimeError(f"pgbouncer did not answer: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
