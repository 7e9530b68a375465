"""The Vercel AI SDK's UI message stream (`ai` v5+), what `useChat` reads: Server-Sent Events,
each `data:` line one JSON chunk, ending with `data: [DONE]`.

A reply goes out as `start` (the assistant message's id), `data-turn` (our ids: the trip, the
user's message, the assistant's message, and how the turn ended), `text-start`, one
`text-delta` per piece of text, `text-end`, then `finish`, or `error` when the reply broke off.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from shared.domain.streaming import Delta, Ended, Event, Replayed, StreamIds

# The stream routes (the stream function serves them, its OpenAPI description names them). Here,
# in the layer, because Lambda runs the function from its own folder: no `functions` package.
STREAM_PATH = "/sessions/{id}/messages/stream"
STOP_PATH = f"{STREAM_PATH}/stop"

HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",  # no proxy buffering (nginx and alike)
}
DONE = b"data: [DONE]\n\n"
# The AI SDK's finish reasons: a stopped reply is neither "stop" (complete) nor an error.
FINISH_REASONS = {"completed": "stop", "stopped": "other", "failed": "error"}


def chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _turn_part(ids: StreamIds, status: str) -> bytes:
    # One data part, updated in place by its id when the turn ends (useChat replaces a data
    # part that has the same type and id).
    return chunk(
        {
            "type": "data-turn",
            "id": f"turn-{ids.assistant_message_id}",
            "data": {
                "tripId": ids.trip_id,
                "userMessageId": ids.user_message_id,
                "assistantMessageId": ids.assistant_message_id,
                "status": status,
            },
        }
    )


async def encode(ids: StreamIds, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    """The chunks of one reply, from its events."""
    text_id = f"text-{ids.assistant_message_id}"
    yield chunk({"type": "start", "messageId": ids.assistant_message_id})
    yield _turn_part(ids, "streaming")
    yield chunk({"type": "text-start", "id": text_id})
    async for event in events:
        if isinstance(event, Delta):
            yield chunk({"type": "text-delta", "id": text_id, "delta": event.text})
        elif isinstance(event, Ended):
            yield chunk({"type": "text-end", "id": text_id})
            yield _turn_part(ids, event.status)
            if event.status == "failed":
                message = event.error.message if event.error else "The reply broke off."
                yield chunk({"type": "error", "errorText": message})
            else:
                yield chunk({"type": "finish", "finishReason": FINISH_REASONS[event.status]})
            break
    yield DONE


async def replay(replayed: Replayed) -> AsyncIterator[bytes]:
    """A finished turn's stored reply, as one stream."""

    async def events() -> AsyncIterator[Event]:
        yield Delta(replayed.reply)
        yield Ended(replayed.status)

    async for part in encode(replayed.ids, events()):
        yield part
