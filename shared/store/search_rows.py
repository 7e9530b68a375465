"""Full-text search over one user's trip titles and message contents, ranked, in one statement.

The conditions are exactly the expressions the GIN indexes of sql/0007_search.sql are built
on (`to_tsvector('english', ...)`): PostgreSQL uses an expression index only for the same
expression, so the two change together. The user's query is parsed by websearch_to_tsquery
(quoted phrases, `or`, `-word`; it never fails on syntax), written out in each place it is
used so the planner sees a constant and estimates its selectivity from the index's statistics.

Hits come in one order, (rank desc, createdAt desc, id desc): a title hit is ranked with
weight A, a message hit with weight D (ts_rank's defaults: 1.0 vs 0.1), so a trip whose title
matches comes before its messages. The keyset position names a hit's place in that order, so
a page is stable while new messages arrive. Snippets are ts_headline's, made for the page's
hits only, with MARK_START / MARK_END around each match (the edge turns them into markup).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import LiteralString

from shared.models import Role
from shared.store.common import db_timestamp, fetch_records
from shared.store.db import Connection

# A position in the hits' order: (rank, createdAt, id of the trip or message).
SearchKeyset = tuple[float, datetime, str]

# Private-use characters, which ts_headline puts around matches; stray ones in the text are
# removed first, so every mark in a snippet is ours.
MARK_START = "\ue000"
MARK_END = "\ue001"
_MARKS = f"StartSel={MARK_START}, StopSel={MARK_END}"
# Messages: up to two fragments of about 8-24 words around the matches; titles: whole.
MESSAGE_HEADLINE = f'{_MARKS}, MaxFragments=2, MaxWords=24, MinWords=8, FragmentDelimiter=" … "'
TITLE_HEADLINE = f"{_MARKS}, HighlightAll=true"

_QUERY: LiteralString = "websearch_to_tsquery('english', %(q)s)"
TITLE_VECTOR: LiteralString = "to_tsvector('english'::regconfig, COALESCE(s.\"title\", ''))"
_CONTENT: LiteralString = "to_tsvector('english'::regconfig, m.\"content\")"

SEARCH: LiteralString = (
    'SELECT q.terms, u."id" AS owner_id, p.trip_id, p.trip_title, p.message_id, p.role,'
    # float8: the float4 rank's exact value (as text, float4 would round to 9 digits).
    " p.created_at, p.hit_id, p.rank::float8 AS rank,"
    " CASE WHEN p.message_id IS NULL"
    f"  THEN ts_headline('english', translate(p.body, %(marks)s, ''), {_QUERY}, %(title_hl)s)"
    f"  ELSE ts_headline('english', translate(p.body, %(marks)s, ''), {_QUERY}, %(message_hl)s)"
    " END AS snippet"
    f" FROM (SELECT numnode({_QUERY}) AS terms) q"
    ' LEFT JOIN "User" u ON u."clerkId" = %(clerk)s'
    " LEFT JOIN LATERAL ("
    "  SELECT * FROM ("
    '   SELECT s."id" AS trip_id, s."title" AS trip_title, NULL::text AS message_id,'
    '    NULL::text AS role, s."createdAt" AS created_at, s."id" AS hit_id,'
    f"    ts_rank(setweight({TITLE_VECTOR}, 'A'), {_QUERY}) AS rank, s.\"title\" AS body"
    '   FROM "Session" s'
    f'   WHERE s."userId" = u."id" AND {TITLE_VECTOR} @@ {_QUERY}'
    "   UNION ALL"
    '   SELECT s."id", s."title", m."id", m."role", m."createdAt", m."id",'
    # Normalization 1: divided by 1 + log(length), so long replies do not win by size alone.
    f'    ts_rank({_CONTENT}, {_QUERY}, 1), m."content"'
    '   FROM "Message" m JOIN "Session" s ON s."id" = m."sessionId"'
    f'   WHERE s."userId" = u."id" AND {_CONTENT} @@ {_QUERY}'
    "  ) hits"
    "  WHERE %(after)s::boolean IS NOT TRUE"
    "   OR (rank, created_at, hit_id) < (%(rank)s::real, %(at)s, %(id)s)"
    "  ORDER BY rank DESC, created_at DESC, hit_id DESC LIMIT %(limit)s"
    " ) p ON true"
    " ORDER BY p.rank DESC, p.created_at DESC, p.hit_id DESC"
)


@dataclass(frozen=True)
class Hit:
    trip_id: str
    trip_title: str | None
    message_id: str | None  # None: the trip's title matched
    role: Role | None
    created_at: datetime  # the message's, or the trip's for a title hit
    position: SearchKeyset
    snippet: str  # the matching text around the matches, marked with MARK_START / MARK_END


@dataclass(frozen=True)
class SearchResult:
    searchable: bool  # False: the query has no words to search for (stop words, punctuation)
    owner_id: str | None  # None: no User row for this Clerk id (yet)
    hits: list[Hit]


def search_params(
    clerk_id: str, text: str, limit: int, after: SearchKeyset | None = None
) -> dict[str, object]:
    """SEARCH's parameters: the user's best `limit` hits for `text` after `after`."""
    rank, at, hit_id = after if after else (0.0, None, None)
    return {
        "q": text,
        "clerk": clerk_id,
        "limit": limit,
        "after": after is not None,
        "rank": rank,
        "at": db_timestamp(at) if at else None,
        "id": hit_id,
        "marks": MARK_START + MARK_END,
        "title_hl": TITLE_HEADLINE,
        "message_hl": MESSAGE_HEADLINE,
    }


def search_trips_of(
    conn: Connection, clerk_id: str, text: str, *, limit: int, after: SearchKeyset | None = None
) -> SearchResult:
    """The user's best `limit` hits for `text` after the position `after`: one statement."""
    rows = fetch_records(conn, SEARCH, search_params(clerk_id, text, limit, after))
    first = rows[0]  # the query row is always there
    owner = None if first["owner_id"] is None else str(first["owner_id"])
    hits = [
        Hit(
            trip_id=str(row["trip_id"]),
            trip_title=row["trip_title"],
            message_id=row["message_id"],
            role=row["role"],
            created_at=row["created_at"],
            position=(float(row["rank"]), row["created_at"], str(row["hit_id"])),
            snippet=row["snippet"] or "",
        )
        for row in rows
        if row["trip_id"] is not None
    ]
    return SearchResult(bool(first["terms"]), owner, hits)
