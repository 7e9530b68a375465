"""The HTTP server behind every local stand-in and the local API: threaded, served from a
background thread, stopped promptly."""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer


def free_port() -> int:
    """A loopback port nothing listens on just now (for a server started next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoopbackServer(ThreadingHTTPServer):
    # The default listen backlog (5) drops bursts of concurrent clients; tests send 20+.
    request_queue_size = 128
    daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve from a daemon thread (short poll, so stop() returns at once)."""
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
