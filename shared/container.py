"""Per-container singletons: built on first use, kept for every warm invocation.

The pool, the Backboard gateway, the Clerk client and the JWKS cache are each created once per
Lambda container (never at import: a failure must fail a request, not the import) and reused
until reset (tests, or a broken resource that must be rebuilt).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerContainer(Generic[T]):
    def __init__(self, build: Callable[[], T], close: Callable[[T], None] | None = None) -> None:
        self._build = build
        self._close = close
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    def reset(self, only: T | None = None) -> None:
        """Drop (and close) the value, so the next get() builds a new one; with `only`, just
        when the current value is that one (a caller discarding what it found broken)."""
        with self._lock:
            value = self._value
            if value is None or (only is not None and value is not only):
                return
            self._value = None
        if self._close is not None:
            self._close(value)
