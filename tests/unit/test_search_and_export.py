"""The export's Markdown escaping and file names, the search snippets' highlighting, the
search cursor and query, in-process: what a reader or a browser makes of text a user wrote."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from pydantic import TypeAdapter

from shared.domain.exports import ExportWindow
from shared.errors import ValidationFailed
from shared.http.cursors import decode_search_cursor, encode_search_cursor
from shared.http.exports import escape_markdown, headers, render
from shared.http.pages import highlighted
from shared.models import SearchText, Trip
from shared.store.search_rows import MARK_END, MARK_START

MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _text_of(markdown: str) -> list[list[str]]:
    """What a reader sees: per paragraph, its lines; anything but plain text fails."""
    paragraphs = []
    for token in MARKDOWN.parse(markdown):
        assert token.type in {"paragraph_open", "paragraph_close", "inline"}, token.type
        if token.type == "inline":
            lines, line = [], ""
            for child in token.children or []:
                assert child.type in {"text", "hardbreak"}, (child.type, markdown)
                if child.type == "hardbreak":
                    lines.append(line)
                    line = ""
                else:
                    line += child.content
            paragraphs.append([*lines, line])
    return paragraphs


@pytest.mark.parametrize(
    "text",
    [
        "# heading\n## another\n#no space",
        "- a\n+ b\n* c\n1. d\n2) e\n> quote\n>> nested",
        "```js\nalert(1)\n```\n~~~\nx\n~~~",
        "<script>alert(1)</script>\n<div onclick=x>hi</div>\n<!-- comment -->",
        "[link](javascript:alert(1)) ![img](x.png) <https://x.example> [ref]\n\n[ref]: /u",
        "*em* **strong** _em_ __strong__ `code` ~~struck~~ \\* \\\\",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "Title\n===\nOther\n---\n***\n___",
        "&amp; &#39; &copy; & plain",
        "C:\\temp\\ trailing backslash\\\nnext",
        "Lisbon & Porto: 3 days (May) — 50% off! #1 tip, 2+2=4",
    ],
)
def test_markdown_shows_the_text_as_written(text: str) -> None:
    shown = _text_of(escape_markdown(text))
    expected = [[line.strip() for line in p.split("\n")] for p in text.split("\n\n")]
    assert shown == expected


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"])))
def test_any_single_line_reads_as_itself(text: str) -> None:
    line = " ".join(text.split())
    if line:
        assert _text_of(escape_markdown(line)) == [[line]]


def test_plain_prose_stays_readable() -> None:
    prose = "Day 1: the castle (9:00), then lunch near the river. Budget 50€ - 60€."
    assert escape_markdown(prose) == prose


def _window(title: str | None, messages: int = 0) -> ExportWindow:
    trip = Trip(
        id="t1",
        title=title,
        user_id="u",
        thread_id="th",
        created_at=datetime(2026, 5, 1, tzinfo=UTC),
    )
    return ExportWindow(trip, messages, 0, [])


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Lisbon in May", "Lisbon-in-May-2026-05-01.md"),
        ("Évora & Sintra", "Évora-Sintra-2026-05-01.md"),
        ('../"x"\r\nSet-Cookie: a=b', "x-Set-Cookie-a-b-2026-05-01.md"),
        ("✈✈✈", "trip-2026-05-01.md"),
        (None, "trip-2026-05-01.md"),
    ],
)
def test_file_names_are_safe(title: str | None, name: str) -> None:
    download = render(_window(title), "md", datetime(2026, 5, 2, tzinfo=UTC))
    assert download.filename == name
    disposition = headers("t1", download, "md")["Content-Disposition"]
    ascii_part = disposition.split('filename="')[1].split('"')[0]
    assert ascii_part.isascii()
    assert all(c.isalnum() or c in "-_." for c in ascii_part)
    assert all(c.isascii() and c not in ' "\r\n' for c in disposition.split("filename*=")[1])


def test_highlighted_snippets_are_escaped_html() -> None:
    snippet = f"a <b>&'\"{MARK_START}ryokan{MARK_END} x {MARK_START}<i>{MARK_END}"
    assert highlighted(snippet) == (
        "a &lt;b&gt;&amp;&#x27;&quot;<mark>ryokan</mark> x <mark>&lt;i&gt;</mark>"
    )


def _forge(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_search_cursors_round_trip_for_their_own_query() -> None:
    at = datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    rank = 0.030396355316042900  # a float4 value, exactly
    cursor = encode_search_cursor((rank, at, "m1"), "ryokan kyoto")
    assert decode_search_cursor(cursor, " ryokan kyoto ") == (rank, at, "m1")
    with pytest.raises(ValidationFailed):
        decode_search_cursor(cursor, "ryokan")


@pytest.mark.parametrize(
    "rank",
    [0.1, -0.5, 1e-50, 1e39, True, 1, "0.5", None, float("inf"), float("nan")],
)
def test_search_cursors_refuse_ranks_float4_cannot_hold(rank: Any) -> None:
    good = decode_search_cursor(
        encode_search_cursor((0.5, datetime(2026, 1, 1, tzinfo=UTC), "m"), "q"), "q"
    )
    key = json.loads(base64.urlsafe_b64decode(encode_search_cursor(good, "q") + "=="))[3]
    with pytest.raises(ValidationFailed):
        decode_search_cursor(_forge([rank, "2026-01-01T00:00:00+00:00", "m", key]), "q")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("   ", "a word"),
        ("x" * 201, "at most 200"),
        ("ryo\x00kan", "NUL"),
        ("ryo\ud800kan", "lone surrogates"),
    ],
)
def test_search_text_refuses_what_cannot_be_searched(raw: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        TypeAdapter(SearchText).validate_python(raw)
    assert TypeAdapter(SearchText).validate_python("  ryokan  ") == "ryokan"
