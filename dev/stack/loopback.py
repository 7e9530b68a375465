"""The HTTP server behind every local stand-in and the local API: threaded, served from a
background thread, stopped promptly."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


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
