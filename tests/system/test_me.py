"""The me function end to end: the profile with its totals, and the memory controls, through
the handlers, with the Backboard stand-in (which remembers what a traveller says with memory
Auto, one memory per message)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dev.stack.apiclient import Client
from dev.stack.backboard_standin import BackboardStandIn

ALICE = "user_alice"


def _assistant_of(backboard: BackboardStandIn, clerk_id: str) -> str:
    (found,) = [a for a, v in backboard.assistants().items() if v["name"].endswith(clerk_id)]
    return found


def _chat(client: Client, *contents: str) -> str:
    trip = client.call("POST", "/sessions", body={"title": "Somewhere"})
    assert trip.status == 201
    for content in contents:
        sent = client.call(
            "POST", f"/sessions/{trip.body['id']}/messages", body={"content": content}
        )
        assert sent.status == 201
    return str(trip.body["id"])


def _memories(client: Client, **query: str) -> tuple[int, dict[str, object]]:
    reply = client.call("GET", "/me/memories", query=query or None)
    return reply.status, reply.body


def _contents(client: Client) -> list[str]:
    status, body = _memories(client, limit="100")
    assert status == 200
    memories = body["memories"]
    assert isinstance(memories, list)
    return [str(m["content"]).removeprefix("The traveller said: ") for m in memories]


def test_a_new_user_sees_an_empty_profile_and_no_memories(
    api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice = api(ALICE)
    me = alice.call("GET", "/me")
    assert me.status == 200
    assert set(me.body) == {"id", "email", "name", "createdAt", "totals"}
    assert (me.body["email"], me.body["name"]) == ("user_alice@example.test", "Alice")
    assert me.body["totals"] == {"trips": 0, "messages": 0, "memories": 0}
    assert len(backboard.assistants()) == 1  # provisioned on first sight, like every route
    assert _memories(api("user_newcomer")) == (200, {"memories": [], "nextCursor": None})


def test_the_profile_counts_trips_messages_and_memories(
    api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice, bob = api(ALICE), api("user_bob")
    _chat(alice, "We love hiking", "No flights please")
    _chat(alice)
    _chat(bob, "Bob's only message")
    me = alice.call("GET", "/me").body
    # Each send stores two messages; each message with memory Auto left one memory.
    assert me["totals"] == {"trips": 2, "messages": 4, "memories": 2}
    assert api("user_bob").call("GET", "/me").body["totals"] == {
        "trips": 1,
        "messages": 2,
        "memories": 1,
    }


def test_memories_come_newest_first_a_page_at_a_time(api: Callable[[str], Client]) -> None:
    alice = api(ALICE)
    said = [f"fact {i}" for i in range(5)]
    _chat(alice, *said)
    seen: list[str] = []
    status, page = _memories(alice, limit="2")
    while True:
        assert status == 200
        memories = page["memories"]
        assert isinstance(memories, list) and len(memories) <= 2
        seen += [str(m["content"]).removeprefix("The traveller said: ") for m in memories]
        if page["nextCursor"] is None:
            break
        status, page = _memories(alice, limit="2", cursor=str(page["nextCursor"]))
    assert seen == said[::-1]


def test_deleting_while_paging_skips_nothing(api: Callable[[str], Client]) -> None:
    alice = api(ALICE)
    _chat(alice, *[f"fact {i}" for i in range(4)])
    _, first = _memories(alice, limit="2")
    memories = first["memories"]
    assert isinstance(memories, list)
    for memory in memories:  # what a "forget these" screen does
        assert alice.call("DELETE", f"/me/memories/{memory['id']}").status == 204
    _, second = _memories(alice, limit="2", cursor=str(first["nextCursor"]))
    rest = second["memories"]
    assert isinstance(rest, list)
    assert [m["content"] for m in rest] == [
        "The traveller said: fact 1",
        "The traveller said: fact 0",
    ]


def test_one_memory_is_deleted(api: Callable[[str], Client], backboard: BackboardStandIn) -> None:
    alice = api(ALICE)
    _chat(alice, "keep this", "forget this")
    _, page = _memories(alice)
    memories = page["memories"]
    assert isinstance(memories, list)
    target = next(m for m in memories if m["content"].endswith("forget this"))
    deleted = alice.call("DELETE", f"/me/memories/{target['id']}")
    assert (deleted.status, deleted.body) == (204, None)
    assert _contents(alice) == ["keep this"]
    again = alice.call("DELETE", f"/me/memories/{target['id']}")
    assert (again.status, again.body["error"]["code"]) == (404, "memory_not_found")
    assert alice.call("GET", "/me").body["totals"]["memories"] == 1


def test_all_memories_are_deleted_and_only_mine(
    api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice, bob = api(ALICE), api("user_bob")
    _chat(alice, "one", "two", "three")
    _chat(bob, "bob's")
    deleted = alice.call("DELETE", "/me/memories")
    assert (deleted.status, deleted.body) == (204, None)
    assert _contents(alice) == []
    assert _contents(bob) == ["bob's"]
    assert alice.call("DELETE", "/me/memories").status == 204  # nothing left: still 204
    # Forgetting is not erasing: the trips and their messages stay.
    assert alice.call("GET", "/me").body["totals"] == {"trips": 1, "messages": 6, "memories": 0}


def test_another_users_memory_is_a_404_and_stays(
    api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice, bob = api(ALICE), api("user_bob")
    _chat(bob, "bob's secret")
    _chat(alice, "alice's")
    (bobs,) = backboard.memories(_assistant_of(backboard, "user_bob"))
    stolen = alice.call("DELETE", f"/me/memories/{bobs['id']}")
    assert stolen.status == 404
    assert stolen.body["error"]["code"] == "memory_not_found"
    missing = alice.call("DELETE", "/me/memories/no-such-memory")
    assert (missing.status, missing.body) == (stolen.status, stolen.body)  # indistinguishable
    assert backboard.calls("delete_memory") == 0  # never even asked of Backboard
    assert _contents(bob) == ["bob's secret"]
    assert all("bob" not in c for c in _contents(alice))


@pytest.mark.parametrize("memory_id", ["..", ".", "%2e%2e", "a.b", "x" * 101])
def test_an_id_that_could_walk_backboards_url_is_refused(
    api: Callable[[str], Client], backboard: BackboardStandIn, memory_id: str
) -> None:
    alice = api(ALICE)
    _chat(alice, "something")
    reply = alice.call("DELETE", f"/me/memories/{memory_id}")
    assert (reply.status, reply.body["error"]["code"]) == (422, "validation_error")
    assert backboard.calls("delete_memory") == backboard.calls("delete_assistant") == 0
    assert _contents(alice) == ["something"]


@pytest.mark.parametrize(
    "query", [{"limit": "0"}, {"limit": "101"}, {"cursor": "not-a-cursor"}, {"cursor": "W10"}]
)
def test_bad_paging_is_a_422(api: Callable[[str], Client], query: dict[str, str]) -> None:
    reply = api(ALICE).call("GET", "/me/memories", query=query)
    assert (reply.status, reply.body["error"]["code"]) == (422, "validation_error")


def test_an_assistant_gone_at_backboard_remembers_nothing(
    api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice = api(ALICE)
    _chat(alice, "something")
    assistant_id = _assistant_of(backboard, ALICE)
    backboard.reset()  # Backboard lost everything, the assistant included
    assert _memories(alice) == (200, {"memories": [], "nextCursor": None})
    assert alice.call("GET", "/me").body["totals"]["memories"] == 0
    assert alice.call("DELETE", "/me/memories").status == 204
    assert alice.call("DELETE", "/me/memories/whatever").status == 404
    assert backboard.assistants() == {}  # not recreated just to be read
    assert assistant_id not in backboard.assistants()


def test_backboard_down_leaves_the_profile_without_a_memory_count(
    api: Callable[[str], Client], backboard: BackboardStandIn
) -> None:
    alice = api(ALICE)
    _chat(alice, "something")
    backboard.inject("memory_stats", status=503, times=None)
    backboard.inject("list_memories", status=503, times=None)
    backboard.inject("reset_memories", status=503, times=None)
    me = alice.call("GET", "/me")
    assert me.status == 200
    assert me.body["totals"] == {"trips": 1, "messages": 2, "memories": None}
    for method in ("GET", "DELETE"):
        reply = alice.call(method, "/me/memories")
        assert (reply.status, reply.body["error"]["code"]) == (503, "upstream_unavailable")
        assert "Retry-After" in reply.headers


def test_every_me_route_needs_a_token(backboard: BackboardStandIn, api_env: object) -> None:
    anonymous = Client(None)
    for method, path in [
        ("GET", "/me"),
        ("GET", "/me/memories"),
        ("DELETE", "/me/memories"),
        ("DELETE", "/me/memories/abc"),
    ]:
        reply = anonymous.call(method, path)
        assert (reply.status, reply.body["error"]["code"]) == (401, "unauthorized")
    assert backboard.calls("list_memories") == backboard.calls("reset_memories") == 0
