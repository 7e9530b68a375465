"""Backboard, for synchronous handlers: a small facade over the official async SDK.

Lambda handlers are synchronous, the SDK is async (httpx.AsyncClient). One event loop runs in
a daemon thread for the life of the container and the SDK client lives on it, so warm
invocations reuse its connections and never meet "event loop is closed"; any thread may submit
a call and wait for it, bounded by the configured timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aws_lambda_powertools import Logger

from shared.config import get_settings, secret
from shared.container import PerContainer
from shared.errors import ConfigurationError, UpstreamError, UpstreamUnavailable

logger = Logger(child=True)
T = TypeVar("T")

MEMORY_MODE = "Auto"  # Backboard reads and writes the assistant's memory of the traveller


class BackboardGateway:
    """The Backboard operations this backend uses, as blocking calls with domain errors."""

    def __init__(self, api_key: str, base_url: str | None, timeout: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="backboard-loop", daemon=True
        )
        self._thread.start()
        kwargs: dict[str, Any] = {"api_key": api_key, "timeout": timeout}
        if base_url:
            kwargs["base_url"] = base_url
        # Imported on first use: the SDK costs ~0.1 s of cold start, and read-only requests
        # never call Backboard.
        from backboard import BackboardClient

        async def make_client() -> Any:
            # Created on the loop, so its httpx client belongs to that loop.
            return BackboardClient(**kwargs)

        self._client: Any = self._run(make_client(), "connect")

    def create_assistant(self, *, name: str, description: str, system_prompt: str) -> str:
        assistant = self._run(
            self._client.create_assistant(
                name=name, description=description, system_prompt=system_prompt
            ),
            "create_assistant",
        )
        return str(assistant.assistant_id)

    def find_assistants(self, name: str) -> list[str]:
        """Ids of the assistants with exactly this name (oldest first)."""
        found = self._run(self._client.list_assistants(name=name, limit=100), "list_assistants")
        ordered = sorted(found, key=lambda a: a.created_at)
        return [str(a.assistant_id) for a in ordered if a.name == name]

    def delete_assistant(self, assistant_id: str) -> None:
        self._run_delete(self._client.delete_assistant(assistant_id), "delete_assistant")

    def create_thread(self, assistant_id: str) -> str:
        thread = self._run(self._client.create_thread(assistant_id), "create_thread")
        return str(thread.thread_id)

    def delete_thread(self, thread_id: str) -> None:
        self._run_delete(self._client.delete_thread(thread_id), "delete_thread")

    def add_message(self, thread_id: str, content: str) -> str:
        """Send the traveller's message on the trip's thread and return the reply text."""
        settings = get_settings()
        response = self._run(
            self._client.add_message(
                thread_id,
                content=content,
                memory=MEMORY_MODE,
                stream=False,
                llm_provider=settings.backboard_llm_provider,
                model_name=settings.backboard_model_name,
            ),
            "add_message",
        )
        reply = getattr(response, "content", None)
        if not isinstance(reply, str) or not reply.strip():
            raise UpstreamError("The assistant returned an empty reply.")
        return reply

    def close(self) -> None:
        try:
            self._run(self._client.aclose(), "close")
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def _run_delete(self, call: Coroutine[Any, Any, Any], operation: str) -> None:
        # Deleting what is already gone is success: deletes are retried.
        with contextlib.suppress(_AlreadyGone):
            self._run(call, operation, missing_ok=True)

    def _run(self, call: Coroutine[Any, Any, T], operation: str, *, missing_ok: bool = False) -> T:
        from backboard.exceptions import BackboardError

        future = asyncio.run_coroutine_threadsafe(call, self._loop)
        try:
            # The SDK enforces the timeout per request; this bound only guards a stuck loop.
            return future.result(timeout=self._timeout + 5)
        except TimeoutError as exc:
            future.cancel()
            logger.warning("backboard call timed out", extra={"operation": operation})
            raise UpstreamUnavailable() from exc
        except BackboardError as exc:
            raise _domain_error(exc, operation, missing_ok=missing_ok) from exc


class _AlreadyGone(Exception):
    pass


def _domain_error(exc: Exception, operation: str, *, missing_ok: bool) -> Exception:
    from backboard.exceptions import (
        BackboardAPIError,
        BackboardNotFoundError,
        BackboardRateLimitError,
        BackboardServerError,
    )

    status = getattr(exc, "status_code", None)
    logger.warning(
        "backboard call failed",
        extra={"operation": operation, "status": status, "error": type(exc).__name__},
    )
    if missing_ok and isinstance(exc, BackboardNotFoundError):
        return _AlreadyGone()
    if isinstance(exc, BackboardRateLimitError | BackboardServerError):
        return UpstreamUnavailable()
    if isinstance(exc, BackboardAPIError) and status is None:  # timeout or connection error
        return UpstreamUnavailable()
    return UpstreamError()


def _open_gateway() -> BackboardGateway:
    api_key = secret("BACKBOARD_API_KEY")
    if not api_key:
        raise ConfigurationError("Set BACKBOARD_API_KEY or BACKBOARD_API_KEY_SECRET_ARN.")
    settings = get_settings()
    return BackboardGateway(
        api_key, settings.backboard_base_url, settings.backboard_timeout_seconds
    )


_gateway: PerContainer[BackboardGateway] = PerContainer(_open_gateway, close=BackboardGateway.close)


def get_backboard() -> BackboardGateway:
    """The container's gateway, created on first use from BACKBOARD_API_KEY (or its secret)."""
    return _gateway.get()


def reset_backboard() -> None:
    """Close the gateway so the next get_backboard() builds a fresh one (tests, key rotation)."""
    _gateway.reset()


def delete_quietly(kind: str, object_id: str) -> None:
    """Delete a thread or an assistant, best effort: a failure is logged with the id, so an
    operator can finish the job, and never fails the caller (the database is the truth)."""
    backboard = get_backboard()
    delete = backboard.delete_thread if kind == "thread" else backboard.delete_assistant
    try:
        delete(object_id)
    except (UpstreamError, UpstreamUnavailable) as exc:
        logger.error(
            f"could not delete Backboard {kind}; delete it by hand",
            extra={f"{kind}_id": object_id, "error": exc.code},
        )
