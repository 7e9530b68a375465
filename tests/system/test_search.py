"""GET /search end to end: the user's own trips only, ranked, keyset-paged, highlighted."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from dev.stack.apiclient import Client

Conn = psycopg.Connection[tuple[object, ...]]


def _trip(client: Client, title: str) -> str:
    created = client.call("POST", "/sessions", body={"title": title})
    assert created.status == 201, created.body
    return str(created.body["id"])


def _add(conn: Conn, trip_id: str, content: str, role: str = "user", second: int = 0) -> str:
    """A message as any client of the database (a Prisma front end too) may store it."""
    row = conn.execute(
        'INSERT INTO "Message" ("sessionId", "role", "content", "createdAt") '
        "VALUES (%s, %s, %s, timestamp '2026-01-01' + make_interval(secs => %s)) RETURNING id",
        (trip_id, role, content, second),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _search(client: Client, q: str, **query: str) -> Any:
    reply = client.call("GET", "/search", query={"q": q, **query})
    assert reply.status == 200, reply.body
    return reply.body


def test_finds_a_word_from_a_message_in_another_trip_and_never_another_users(
    api: Callable[[str], Client], admin_conn: Conn
) -> None:
    alice, bob = api("user_alice"), api("user_bob")
    kyoto = _trip(alice, "Kyoto in April")
    lisbon = _trip(alice, "Lisbon")
    sent = alice.call("POST", f"/sessions/{lisbon}/messages", body={"content": "Any good ryokan?"})
    assert sent.status == 201
    theirs = _trip(bob, "Ryokan weekend")
    _add(admin_conn, theirs, "The ryokan in Hakone had an onsen")

    found = _search(alice, "ryokan")
    # The user's message, and the stand-in's reply, which quotes it; nothing of Bob's.
    assert {hit["trip"]["id"] for hit in found["hits"]} == {lisbon}
    ids = {hit["messageId"] for hit in found["hits"]}
    assert sent.body["userMessage"]["id"] in ids
    mine = next(h for h in found["hits"] if h["messageId"] == sent.body["userMessage"]["id"])
    assert mine["trip"] == {"id": lisbon, "title": "Lisbon"}
    assert mine["role"] == "user"
    assert mine["createdAt"] == sent.body["userMessage"]["createdAt"]
    assert "<mark>ryokan</mark>" in mine["snippet"]
    assert found["nextCursor"] is None
    assert _search(alice, "onsen")["hits"] == []  # only in Bob's trip
    assert _search(alice, "weekend")["hits"] == []  # only in Bob's title

    # Bob finds his own title (first: titles weigh more) and message, never Alice's.
    bobs = _search(bob, "ryokan")["hits"]
    assert [(h["trip"]["id"], h["messageId"] is None) for h in bobs] == [
        (theirs, True),
        (theirs, False),
    ]
    assert bobs[0]["snippet"] == "<mark>Ryokan</mark> weekend"
    assert _search(alice, "kyoto")["hits"][0]["trip"] == {"id": kyoto, "title": "Kyoto in April"}


def test_a_new_user_is_provisioned_and_finds_nothing(
    api: Callable[[str], Client], admin_conn: Conn
) -> None:
    assert _search(api("user_carol"), "ryokan") == {"hits": [], "nextCursor": None}
    row = admin_conn.execute('SELECT count(*) FROM "User" WHERE "clerkId" = %s', ("user_carol",))
    assert row.fetchone() == (1,)


def test_ranked_pages_cover_every_hit_once(api: Callable[[str], Client], admin_conn: Conn) -> None:
    alice = api("user_alice")
    trips = [_trip(alice, f"Trip {i}") for i in range(3)]
    expected = set()
    for i in range(25):
        # Some messages say it twice (a higher rank), many share a rank and a timestamp.
        content = "ryokan near the station" if i % 3 else "ryokan, ryokan: which ryokan?"
        expected.add(_add(admin_conn, trips[i % 3], content, second=i // 4))
    _add(admin_conn, trips[0], "a hotel near the station")

    seen: list[str] = []
    ranks: list[tuple[bool, str]] = []
    page = _search(alice, "ryokan", limit="10")
    while True:
        seen += [h["messageId"] for h in page["hits"]]
        ranks += [("which" in h["snippet"], h["createdAt"]) for h in page["hits"]]
        if page["nextCursor"] is None:
            break
        cursor = page["nextCursor"]
        _add(admin_conn, trips[1], "ryokan again, added while paging", second=99)
        page = _search(alice, "ryokan", limit="10", cursor=cursor)
    assert len(seen) == len(set(seen))
    assert expected <= set(seen)
    # The messages naming it three times first; within a rank, newest first.
    triple = [r for r in ranks if r[0]]
    assert ranks[: len(triple)] == triple
    assert [at for _, at in triple] == sorted((at for _, at in triple), reverse=True)


def test_web_search_syntax(api: Callable[[str], Client], admin_conn: Conn) -> None:
    alice = api("user_alice")
    trip = _trip(alice, "Osaka")
    market = _add(admin_conn, trip, "The food markets of Osaka are famous")
    both = _add(admin_conn, trip, "Food first, then the fish market")
    tourist = _add(admin_conn, trip, "A tourist market by the castle")

    def ids(q: str) -> set[str]:
        return {h["messageId"] for h in _search(alice, q)["hits"]}

    assert ids("market") == {market, both, tourist}  # "markets" too: English stemming
    assert ids('"food market"') == {market}  # a phrase
    assert ids("market -tourist") == {market, both}
    assert ids("castle or famous") == {market, tourist}


def test_snippets_are_escaped_html_with_marked_matches(
    api: Callable[[str], Client], admin_conn: Conn
) -> None:
    alice = api("user_alice")
    trip = _trip(alice, "Hakone")
    _add(
        admin_conn,
        trip,
        "Book the ryokan & pay < 200 \"yen\" 'now' \ue000x\ue001 <img src=x onerror=alert(1)>",
    )
    [hit] = _search(alice, "ryokan")["hits"]
    snippet = hit["snippet"]
    assert "<mark>ryokan</mark>" in snippet
    # Text is escaped; the only tags are our marks (ts_headline also drops tags it parses).
    assert snippet.replace("<mark>", "").replace("</mark>", "").count("<") == 0
    assert "&amp;" in snippet
    assert "&lt; 200" in snippet
    assert "&quot;yen&quot;" in snippet
    assert "\ue000" not in snippet
    assert snippet.count("<mark>") == snippet.count("</mark>") == 1


def _forge(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q must contain a word"),
        ({"q": "x" * 201}, "q"),
        ({"q": "the"}, "no words to search for"),
        ({"q": "!!! ((("}, "no words to search for"),
        ({"q": "ryo\x00kan"}, "NUL"),
        ({"q": "ryokan", "limit": "0"}, "limit"),
        ({"q": "ryokan", "limit": "51"}, "limit"),
        ({"q": "ryokan", "cursor": "nope"}, "cursor"),
        (
            {"q": "ryokan", "cursor": _forge([1e-50, "2026-01-01T00:00:00+00:00", "i", "x"])},
            "cursor",
        ),
        (
            {"q": "ryokan", "cursor": _forge([True, "2026-01-01T00:00:00+00:00", "i", "x"])},
            "cursor",
        ),
    ],
)
def test_bad_queries_are_422(
    api: Callable[[str], Client], query: dict[str, str], message: str
) -> None:
    reply = api("user_alice").call("GET", "/search", query=query)
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "validation_error"
    assert message in reply.body["error"]["message"]


def test_a_cursor_is_for_its_own_query(api: Callable[[str], Client], admin_conn: Conn) -> None:
    alice = api("user_alice")
    trip = _trip(alice, "Nara")
    for i in range(3):
        _add(admin_conn, trip, f"deer park visit {i}", second=i)
    cursor = _search(alice, "deer", limit="1")["nextCursor"]
    assert cursor
    assert _search(alice, " deer ", limit="1", cursor=cursor)["hits"]  # the same query
    other = alice.call("GET", "/search", query={"q": "park", "cursor": cursor})
    assert other.status == 422
    assert "for this q" in other.body["error"]["message"]
