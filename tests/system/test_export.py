"""GET /sessions/{id}/export end to end: JSON that round-trips, Markdown that reads well, and
a 10,000-message trip within Lambda's 6 MB response limit, in parts."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from markdown_it import MarkdownIt

from dev.stack.apiclient import Client, Reply
from dev.stack.apigw import LambdaContext, http_event
from functions.sessions.app import lambda_handler
from shared.http.exports import LAMBDA_RESPONSE_LIMIT, PART_BYTES, payload_size

Conn = psycopg.Connection[tuple[object, ...]]

TRICKY = [
    "# Not a heading\n- nor a list\n1. nor this\n> nor a quote",
    "```\ncode?\n```\n<script>alert('x')</script> *not em* _nor this_ [a](http://b)",
    "Lisbon & Porto: 3 days — 50% off! C:\\temp\\ | a | b |\n---\n\n    indented\nÉvora ✈ 🍷",
]


def _trip(client: Client, title: str) -> str:
    created = client.call("POST", "/sessions", body={"title": title})
    assert created.status == 201, created.body
    return str(created.body["id"])


def _rows(conn: Conn, trip_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        'SELECT id, role, content, "createdAt" FROM "Message" WHERE "sessionId" = %s '
        'ORDER BY "createdAt", id',
        (trip_id,),
    ).fetchall()
    return [
        {"id": i, "role": r, "content": c, "createdAt": at.replace(tzinfo=UTC)}  # type: ignore[attr-defined]
        for i, r, c, at in rows
    ]


def _parsed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "createdAt": datetime.fromisoformat(m["createdAt"])} for m in messages]


def _export(client: Client, trip_id: str, **query: str) -> Reply:
    reply = client.call("GET", f"/sessions/{trip_id}/export", query=query)
    assert reply.status == 200, reply.body
    return reply


@pytest.fixture
def conversation(api: Callable[[str], Client]) -> tuple[Client, str]:
    alice = api("user_alice")
    trip = _trip(alice, 'Évora "wine" / trip')
    for content in TRICKY:
        sent = alice.call("POST", f"/sessions/{trip}/messages", body={"content": content})
        assert sent.status == 201
    return alice, trip


def test_json_round_trips(conversation: tuple[Client, str], admin_conn: Conn) -> None:
    alice, trip = conversation
    reply = _export(alice, trip, format="json")
    assert reply.headers["Content-Type"] == "application/json"
    disposition = reply.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="Evora-wine-trip-')
    assert disposition.endswith(".json")
    assert "filename*=UTF-8''%C3%89vora-wine-trip-" in disposition
    assert reply.headers["Cache-Control"] == "private, no-store"
    assert "Link" not in reply.headers
    part = reply.body
    row = admin_conn.execute('SELECT title, "createdAt" FROM "Session" WHERE id = %s', (trip,))
    title, created = row.fetchone() or (None, None)
    assert isinstance(created, datetime)
    assert part["trip"]["id"] == trip
    assert part["trip"]["title"] == title
    assert datetime.fromisoformat(part["trip"]["createdAt"]) == created.replace(tzinfo=UTC)
    assert (part["messageCount"], part["offset"], part["nextCursor"]) == (6, 0, None)
    assert _parsed(part["messages"]) == _rows(admin_conn, trip)
    assert [m["content"] for m in part["messages"][::2]] == TRICKY


def test_markdown_reads_well(conversation: tuple[Client, str], admin_conn: Conn) -> None:
    alice, trip = conversation
    reply = _export(alice, trip)  # Markdown by default
    assert reply.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert reply.headers["Content-Disposition"].split(";")[1].strip().endswith('.md"')
    text = reply.body
    assert text.startswith('# Évora "wine" / trip\n\nTrip started ')
    assert "· 6 messages · exported " in text.splitlines()[2]

    # What a reader sees, through a CommonMark parser (with GitHub's tables and strikethrough):
    # one title, then a heading per message in order, and each message as its own text.
    tokens = MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(text)
    blocks = [t for t in tokens if t.nesting >= 0 and t.level == 0]
    headings = [t for t in tokens if t.type == "heading_open"]
    assert [h.tag for h in headings] == ["h1"] + ["h2"] * 6
    rows = _rows(admin_conn, trip)
    titles = [tokens[tokens.index(h) + 1].content for h in headings]
    assert titles[0] == 'Évora "wine" / trip'
    assert titles[1:] == [
        f"{'Traveller' if r['role'] == 'user' else 'Assistant'} · "
        f"{r['createdAt']:%Y-%m-%d %H:%M} UTC"
        for r in rows
    ]
    # No list, quote, code, HTML, table or rule came from the messages' text.
    assert {t.type for t in blocks} <= {"heading_open", "paragraph_open", "inline"}
    inline_kinds = {c.type for t in tokens if t.type == "inline" for c in t.children or []}
    assert inline_kinds <= {"text", "hardbreak", "softbreak"}
    # Each user message reads as written: its lines, as lines (paragraphs kept).
    shown = _shown_messages(tokens)
    for original in TRICKY:
        expected = [[line.strip() for line in p.split("\n")] for p in original.split("\n\n")]
        assert expected in shown, (original, shown)


def _shown_messages(tokens: list[Any]) -> list[list[list[str]]]:
    """Per message heading, the text of its paragraphs, each as its lines."""
    messages: list[list[list[str]]] = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h2":
            messages.append([])
        elif token.type == "inline" and messages and tokens[i - 1].type == "paragraph_open":
            lines, line = [], ""
            for child in token.children or []:
                if child.type == "hardbreak":
                    lines.append(line)
                    line = ""
                else:
                    line += child.content
            messages[-1].append([*lines, line])
    return messages


@pytest.mark.slow
def test_a_10000_message_trip_comes_in_parts_within_lambdas_limit(
    api: Callable[[str], Client], admin_conn: Conn
) -> None:
    alice = api("user_alice")
    trip = _trip(alice, "Around the world")
    # ~700 bytes each, some non-ASCII and quotes (escaped in the payload): ~7 MB in all.
    admin_conn.execute(
        'INSERT INTO "Message" ("sessionId", "role", "content", "createdAt") '
        "SELECT %s, CASE WHEN i %% 2 = 0 THEN 'user' ELSE 'assistant' END, "
        "i || ': ' || repeat('Day plan \"é\" ✈ ', 45), "
        "timestamp '2026-01-01' + make_interval(secs => i / 3) "  # ties on createdAt
        "FROM generate_series(1, 10000) i",
        (trip,),
    )
    expected = _rows(admin_conn, trip)
    for export_format in ("json", "md"):
        collected: list[dict[str, Any]] = []
        headings, parts, query = 0, 0, {"format": export_format}
        while True:
            response = _invoke(alice, trip, query)
            assert response["statusCode"] == 200
            # What Lambda's runtime returns: the whole response as JSON (ASCII-escaped, the
            # largest encoding), within its limit; the body within a part's budget.
            assert len(json.dumps(response)) <= LAMBDA_RESPONSE_LIMIT
            body = response["body"]
            assert payload_size(body) <= PART_BYTES
            parts += 1
            if export_format == "json":
                part = json.loads(body)
                assert part["offset"] == len(collected)
                assert part["messageCount"] == 10_000
                collected += _parsed(part["messages"])
            else:
                headings += body.count("\n## ")
            link = response["headers"].get("Link")
            if link is None:
                break
            prefix = f"</sessions/{trip}/export?format={export_format}&cursor="
            assert link.startswith(prefix)
            assert link.endswith('>; rel="next"')
            query = {"format": export_format, "cursor": link[len(prefix) : -len('>; rel="next"')]}
        assert parts >= 2
        if export_format == "json":
            assert collected == expected
        else:
            assert headings == 10_000


def _invoke(client: Client, trip: str, query: dict[str, str]) -> dict[str, Any]:
    """The sessions function's raw response to an export request."""
    event = http_event(
        "GET",
        f"/sessions/{trip}/export",
        query=query,
        headers={"authorization": f"Bearer {client.token}"},
    )
    response: dict[str, Any] = lambda_handler(event, LambdaContext())
    return response


def test_a_message_too_large_for_one_response_is_refused_clearly(
    api: Callable[[str], Client], admin_conn: Conn
) -> None:
    alice = api("user_alice")
    trip = _trip(alice, "Huge")
    # Only another client of the database can store this: the API takes 8,000 characters.
    admin_conn.execute(
        'INSERT INTO "Message" ("sessionId", "role", "content") VALUES (%s, %s, %s)',
        (trip, "assistant", "x" * (PART_BYTES + 1)),
    )
    reply = alice.call("GET", f"/sessions/{trip}/export", query={"format": "json"})
    assert reply.status == 422
    assert reply.body["error"]["code"] == "export_too_large"


def test_another_users_trip_and_bad_input(
    conversation: tuple[Client, str], api: Callable[[str], Client]
) -> None:
    _, trip = conversation
    bob = api("user_bob")
    theirs = bob.call("GET", f"/sessions/{trip}/export")
    missing = bob.call("GET", "/sessions/no-such-trip/export")
    assert (theirs.status, theirs.body["error"]["code"]) == (404, "session_not_found")
    assert (missing.status, missing.body) == (theirs.status, theirs.body)
    for query in ({"format": "pdf"}, {"cursor": "forged"}):
        bad = bob.call("GET", f"/sessions/{trip}/export", query=query)
        assert (bad.status, bad.body["error"]["code"]) == (422, "validation_error")


def test_file_names_are_safe(api: Callable[[str], Client], admin_conn: Conn) -> None:
    alice = api("user_alice")
    trip = _trip(alice, "x")
    admin_conn.execute(
        'UPDATE "Session" SET title = %s WHERE id = %s',
        ('../../etc/"passwd"\r\nX-Injected: 1; filename=evil.exe', trip),
    )
    disposition = _export(alice, trip).headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition
    assert "/" not in disposition.split("filename*=")[0]
    ascii_name = disposition.split('filename="')[1].split('"')[0]
    assert ascii_name.startswith("etc-passwd-X-Injected-1-filename-evil-exe-")
    assert ascii_name.endswith(".md")


def test_a_trip_without_messages_exports_its_title_and_dates(
    api: Callable[[str], Client],
) -> None:
    alice = api("user_alice")
    trip = _trip(alice, "Someday: Patagonia")
    markdown = _export(alice, trip).body
    assert markdown.startswith("# Someday: Patagonia\n\nTrip started ")
    assert "· 0 messages · exported " in markdown
    assert "\n## " not in markdown
    part = _export(alice, trip, format="json").body
    assert (part["messageCount"], part["offset"], part["messages"], part["nextCursor"]) == (
        0,
        0,
        [],
        None,
    )
