"""The search statement against PostgreSQL: it uses the GIN expression indexes of
sql/0007_search.sql (the two must name the same expressions), and its statement stays one
round trip whatever the user's data."""

from __future__ import annotations

import psycopg

from shared.store import db, search_rows, trip_rows, user_rows

Conn = psycopg.Connection[tuple[object, ...]]


def test_the_search_statement_uses_the_search_indexes(clean_db: str, admin_conn: Conn) -> None:
    with db.connection() as conn:
        user = user_rows.insert_user(
            conn, clerk_id="user_s", assistant_id="asst-s", email="s@example.test", name=None
        )
        trip = trip_rows.insert_trip(conn, user_id=user.id, thread_id="th", title="Kyoto")
    admin_conn.execute(
        'INSERT INTO "Message" ("sessionId", role, content) '
        "SELECT %s, 'user', 'day ' || i FROM generate_series(1, 500) i",
        (trip.id,),
    )
    admin_conn.execute('ANALYZE "Message"; ANALYZE "Session"')
    with admin_conn.transaction():
        # Only an index can avoid scanning: the plan shows which ones the expressions match.
        admin_conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            str(row[0])
            for row in admin_conn.execute(
                "EXPLAIN " + search_rows.SEARCH, search_rows.search_params("user_s", "ryokan", 21)
            )
        )
        # A user's few trips are read by "userId" and filtered; the title's expression must
        # still be the index's, for users with thousands of trips.
        titles = "\n".join(
            str(row[0])
            for row in admin_conn.execute(
                'EXPLAIN SELECT 1 FROM "Session" s WHERE '
                + search_rows.TITLE_VECTOR
                + " @@ websearch_to_tsquery('english', %(q)s)",
                {"q": "kyoto"},
            )
        )
    assert 'Bitmap Index Scan on "Message_content_search_idx"' in plan, plan
    assert 'Bitmap Index Scan on "Session_title_search_idx"' in titles, titles


def test_search_trips_of_reads_only_the_users_rows(clean_db: str, admin_conn: Conn) -> None:
    with db.connection() as conn:
        alice = user_rows.insert_user(
            conn, clerk_id="user_a", assistant_id="asst-a", email="a@example.test", name=None
        )
        bob = user_rows.insert_user(
            conn, clerk_id="user_b", assistant_id="asst-b", email="b@example.test", name=None
        )
        mine = trip_rows.insert_trip(conn, user_id=alice.id, thread_id="t1", title="Onsen")
        theirs = trip_rows.insert_trip(conn, user_id=bob.id, thread_id="t2", title="Onsen")
    for trip_id in (mine.id, theirs.id):
        admin_conn.execute(
            'INSERT INTO "Message" ("sessionId", role, content) VALUES (%s, %s, %s)',
            (trip_id, "assistant", "An onsen with a view"),
        )
    with db.connection() as conn:
        found = search_rows.search_trips_of(conn, "user_a", "onsen", limit=10)
        unknown = search_rows.search_trips_of(conn, "user_nobody", "onsen", limit=10)
        empty = search_rows.search_trips_of(conn, "user_a", "the and of", limit=10)
    assert found.owner_id == alice.id and found.searchable
    assert {hit.trip_id for hit in found.hits} == {mine.id}
    assert [hit.message_id is None for hit in found.hits] == [True, False]  # title first
    assert (unknown.owner_id, unknown.hits, unknown.searchable) == (None, [], True)
    assert (empty.searchable, empty.hits) == (False, [])
