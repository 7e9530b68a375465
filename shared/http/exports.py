"""A trip's export as a download: Markdown or JSON, one part per response, each part sized to
fit what Lambda can return.

Lambda returns at most 6 MB (6,291,456 bytes) of response, measured on the invocation's JSON
payload, in which the body is itself a JSON string. Each part's body is measured exactly as
that string with every non-ASCII character escaped (the largest it can be) and kept within
PART_BYTES, which leaves over a megabyte for the status, the headers and the envelope. A trip
that does not fit in one part (about 5 MB: thousands of long messages) comes in consecutive
parts, each a readable file of its own: the response's `Link: <…>; rel="next"` header (and,
in JSON, `nextCursor`) names the next one. A single message too large for a part (only a
client other than this API can store one: ours are at most 8,000 characters) is refused with
a 422 `export_too_large`.

Markdown: the trip's title as the heading, then each message under a `##` heading with its
author and time. Message text is shown as written, never as markup: every character Markdown
or HTML would act on is backslash-escaped, line breaks are kept as hard breaks, so a message
that looks like a heading, a list, a link or a <script> tag reads as the text it is.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote, urlencode

from shared.domain.exports import ExportWindow
from shared.errors import ValidationFailed
from shared.http.cursors import encode_cursor
from shared.models import ExportPart, Message, MessageOut, TripOut

ExportFormat = Literal["md", "json"]

LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
PART_BYTES = 5_000_000  # a part's body, as Lambda's payload encodes it
PART_MESSAGES = 10_000  # at most per part: bounds the work of one response
# Room for the part's own lines (heading, counts, JSON envelope) beyond the messages.
_HEADER_ROOM = 4_096

MEDIA_TYPES: dict[ExportFormat, str] = {
    "md": "text/markdown; charset=utf-8",
    "json": "application/json",
}
AUTHORS = {"user": "Traveller", "assistant": "Assistant"}


class ExportTooLarge(ValidationFailed):
    code = "export_too_large"
    default_message = "A message of this trip is too large to export in one response."


@dataclass(frozen=True)
class Download:
    body: str
    media_type: str
    filename: str
    next_cursor: str | None


def payload_size(text: str) -> int:
    """The bytes `text` takes as a JSON string in Lambda's response payload, at most: with
    every non-ASCII character escaped (the quotes around it not counted)."""
    return len(json.dumps(text)) - 2


def render(window: ExportWindow, export_format: ExportFormat, exported_at: datetime) -> Download:
    """The part of the export `window` starts: as many of its messages as fit in PART_BYTES."""
    chunks = [
        _md_message(m) if export_format == "md" else _json_message(m) for m in window.messages
    ]
    budget = PART_BYTES - _HEADER_ROOM - payload_size(window.trip.title or "") * 2
    kept, used = 0, 0
    for chunk in chunks:
        used += payload_size(chunk) + 1  # + the separator
        if used > budget:
            break
        kept += 1
    if window.messages and kept == 0:
        raise ExportTooLarge()
    messages = window.messages[:kept]
    more = window.offset + kept < window.message_count
    last = messages[-1] if messages else None
    cursor = encode_cursor(last.created_at, last.id) if more and last else None
    if export_format == "md":
        body = _md_header(window, kept, exported_at) + "".join(chunks[:kept])
    else:
        body = _json_part(window, chunks[:kept], cursor, exported_at)
    return Download(
        body, MEDIA_TYPES[export_format], _filename(window, kept, export_format), cursor
    )


def headers(trip_id: str, download: Download, export_format: ExportFormat) -> dict[str, str]:
    """Content-Disposition (a safe file name, RFC 6266), no caching of private data, and the
    next part's URL when there is one (RFC 8288)."""
    ascii_name = _ascii_filename(download.filename)
    result = {
        "Content-Disposition": (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(download.filename)}"
        ),
        "Cache-Control": "private, no-store",
    }
    if download.next_cursor:
        query = urlencode({"format": export_format, "cursor": download.next_cursor})
        result["Link"] = f'</sessions/{quote(trip_id, safe="")}/export?{query}>; rel="next"'
    return result


# JSON


def _json_message(message: Message) -> str:
    return MessageOut.of(message).model_dump_json(by_alias=True)


def _json_part(
    window: ExportWindow, messages: list[str], cursor: str | None, exported_at: datetime
) -> str:
    """The part's JSON: the envelope serialized by its model, then the messages, already
    serialized (to be measured), as its last member."""
    envelope = ExportPart(
        trip=TripOut.of(window.trip),
        exported_at=exported_at,
        message_count=window.message_count,
        offset=window.offset,
        messages=[],
        next_cursor=cursor,
    ).model_dump_json(by_alias=True, exclude={"messages"})
    return f'{envelope[:-1]},"messages":[{",".join(messages)}]}}'


# Markdown

# What Markdown (CommonMark, GitHub's) or HTML would act on anywhere in a line; an '&' only
# where it starts a character reference (&amp; &#39;).
_INLINE = re.compile(r"([\\`*_\[\]<>|~$])|&(?=#?\w+;)")
# And what only at a line's start: headings, lists, setext underlines.
_LINE_START = re.compile(r"^(?:([-=+#])|(\d{1,9})([.)]))")


def _escape_inline(match: re.Match[str]) -> str:
    return "\\" + match.group(0)


def _escape_line_start(match: re.Match[str]) -> str:
    if match.group(1):
        return "\\" + match.group(1)
    return f"{match.group(2)}\\{match.group(3)}"


def escape_markdown(text: str) -> str:
    """`text` as Markdown that renders as exactly that text: no headings, lists, code, links,
    emphasis, tables or HTML; line breaks kept (as hard breaks), paragraphs kept."""
    out: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = line.lstrip(" \t")
        # Four spaces of indentation would make a code block, where escapes show as written.
        indent = min(len(line) - len(stripped), 3) * " " if stripped else ""
        out.append(
            indent + _LINE_START.sub(_escape_line_start, _INLINE.sub(_escape_inline, stripped))
        )
    # A backslash at the end of a line is a hard break: lines of a message stay lines.
    lines = [
        f"{line}\\" if line and i + 1 < len(out) and out[i + 1] else line
        for i, line in enumerate(out)
    ]
    return "\n".join(lines).strip("\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _md_message(message: Message) -> str:
    author = AUTHORS.get(message.role, message.role)
    return f"## {author} · {_stamp(message.created_at)}\n\n{escape_markdown(message.content)}\n\n"


def _md_header(window: ExportWindow, kept: int, exported_at: datetime) -> str:
    title = escape_markdown(_one_line(window.trip.title or "Untitled trip"))
    total = window.message_count
    if window.offset == 0 and kept == total:
        scope = f"{total} message{'s' if total != 1 else ''}"
    else:
        scope = f"messages {window.offset + 1} to {window.offset + kept} of {total}"
    heading = f"# {title}" + (" (continued)" if window.offset else "")
    return (
        f"{heading}\n\n"
        f"Trip started {_stamp(window.trip.created_at)} · {scope} · "
        f"exported {_stamp(exported_at)}\n\n"
    )


# File names

_UNSAFE = re.compile(r"[^\w-]+")


def _filename(window: ExportWindow, kept: int, export_format: ExportFormat) -> str:
    """`<title>-<trip date>.<ext>`, with `-messages-<first>-<last>` for a part that is not
    the whole trip: letters, digits, '-' and '_' only (no path, quote or control character)."""
    slug = _UNSAFE.sub("-", unicodedata.normalize("NFKC", window.trip.title or "")).strip("-_")
    name = f"{slug[:60].strip('-_') or 'trip'}-{window.trip.created_at:%Y-%m-%d}"
    if not (window.offset == 0 and kept == window.message_count):
        name += f"-messages-{window.offset + 1}-{window.offset + kept}"
    return f"{name}.{export_format}"


def _ascii_filename(name: str) -> str:
    """The file name in ASCII, for clients that ignore filename* (accents dropped)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem, _, ext = ascii_name.rpartition(".")
    stem = _UNSAFE.sub("-", stem).strip("-_") or "trip"
    return f"{stem}.{ext}"
