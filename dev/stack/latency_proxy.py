"""A loopback TCP proxy that delays each direction: network latency without `tc netem`.

Between Lambda and its database a round trip costs ~0.3-1 ms; on loopback it costs ~30 µs,
which hides what round trips cost. Every chunk read from one side is forwarded to the other
`delay` seconds after it arrived, in order, by a thread per direction that sleeps until the
chunk is due (thread sleeps are finer than an event loop's millisecond timers).

Run it in a process of its own (`LatencyProxy.spawn`, or `python -m
dev.stack.latency_proxy HOST PORT DELAY_MS`): inside the measured process its threads
would wait for the GIL behind the code being measured and add delays of their own.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType


class LatencyProxy:
    """Forwards 127.0.0.1:<port> to `target`, adding `delay` seconds each way."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> LatencyProxy:
        threading.Thread(target=self._accept, daemon=True, name="latency-proxy").start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            self._pipe(client, server)
            self._pipe(server, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def read() -> None:
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                chunks.put((time.perf_counter() + self.delay, data))
                if not data:
                    return

        def write() -> None:
            while True:
                due, data = chunks.get()
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()


@contextlib.contextmanager
def spawn(target: tuple[str, int], delay: float) -> Iterator[int]:
    """A LatencyProxy in a child process, for as long as the block runs; yields its port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dev.stack.latency_proxy",
            target[0],
            str(target[1]),
            str(delay * 1000),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str]) -> None:
    host, port, delay_ms = argv[0], int(argv[1]), float(argv[2])
    with LatencyProxy((host, port), delay_ms / 1000) as proxy:
        print(proxy.port, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
