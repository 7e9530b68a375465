"""The HTTP server class behind every local stand-in and the local API."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    # The default listen backlog (5) drops bursts of concurrent clients; tests send 20+.
    request_queue_size = 128
    daemon_threads = True
