"""Round trips are the unit of cost: a read is one, a send one before Backboard and one after.

Counted from libpq's protocol trace of the pool's only connection, after a first request has
created the user (a new user takes the provisioning path, which costs more).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dev.stack.apiclient import Client
from dev.stack.roundtrips import RoundTrips, count_round_trips
from shared import config
from shared.store import db


def test_reads_take_one_round_trip_and_a_send_two(api: Callable[[str], Client]) -> None:
    alice = api("user_rt")
    created = alice.call("POST", "/sessions", body={"title": "Porto"})
    assert created.status == 201
    trip = created.body["id"]
    assert alice.call("POST", f"/sessions/{trip}/messages", body={"content": "Hi"}).status == 201

    def expect(status: int, method: str, path: str, **kwargs: object) -> Callable[[], None]:
        def request() -> None:
            reply = alice.call(method, path, **kwargs)  # type: ignore[arg-type]
            assert reply.status == status, reply.body

        return request

    one = RoundTrips(statements=1, pings=0)
    assert count_round_trips(expect(200, "GET", "/sessions")) == one
    assert count_round_trips(expect(200, "GET", f"/sessions/{trip}/messages")) == one
    assert count_round_trips(expect(200, "GET", f"/sessions/{trip}")) == one
    assert count_round_trips(expect(200, "GET", "/search", query={"q": "porto"})) == one
    for export_format in ("md", "json"):
        export = expect(200, "GET", f"/sessions/{trip}/export", query={"format": export_format})
        assert count_round_trips(export) == one
    # Someone else's trip: the same single statement finds nothing.
    assert count_round_trips(expect(404, "GET", "/sessions/not-a-trip/messages")) == RoundTrips(
        statements=2, pings=0
    )  # the 404 path also confirms the user exists (first-sight provisioning)
    # Begin the turn (1), Backboard, store the reply (1): the reply cannot be stored before.
    send = expect(201, "POST", f"/sessions/{trip}/messages", body={"content": "Again"})
    assert count_round_trips(send) == RoundTrips(statements=2, pings=0)


def test_a_first_reply_titles_in_one_more_and_me_reads_in_one(
    api: Callable[[str], Client],
) -> None:
    alice = api("user_rt")
    assert alice.call("GET", "/sessions").status == 200
    trip = alice.call("POST", "/sessions").body["id"]  # untitled: the first reply names it

    def send() -> None:
        assert alice.call("POST", f"/sessions/{trip}/messages", body={"content": "Lisbon"}).status

    # The send's two, then the title: lock and compare-and-set pipelined, ending in one Sync.
    assert count_round_trips(send) == RoundTrips(statements=3, pings=0)
    assert alice.call("GET", f"/sessions/{trip}").body["title"] == "Lisbon"
    one = RoundTrips(statements=1, pings=0)
    assert count_round_trips(lambda: alice.call("GET", "/me")) == one
    assert count_round_trips(lambda: alice.call("GET", "/me/memories")) == one
    assert count_round_trips(lambda: alice.call("DELETE", "/me/memories")) == one


def test_a_connection_idle_past_the_threshold_is_pinged_once(
    api: Callable[[str], Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = api("user_idle")
    assert alice.call("GET", "/sessions").status == 200
    monkeypatch.setenv("DB_IDLE_CHECK_SECONDS", "0")
    config.get_settings.cache_clear()
    try:
        counted = count_round_trips(lambda: alice.call("GET", "/sessions"))
    finally:
        db.close_pool()
    assert counted == RoundTrips(statements=1, pings=1)
