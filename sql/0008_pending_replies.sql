-- A trip's unfinished streamed replies, for the page of messages (GET /sessions/{id}/messages),
-- which lists them in its one statement: a JSON array, newest first, ten at most.
--
-- A function rather than a subquery of that statement for its plan alone. PL/pgSQL keeps the
-- plan of each statement it runs for the life of the server connection; a statement sent
-- from the client is planned again on every request unless it is a prepared statement, which
-- stays off behind transaction poolers (README, "Operating"). Inline, this subquery doubled
-- the page statement's planning (about 0.1 ms on every request, more than running it on a
-- trip with no reply in flight). Pooler-safe: the cache is per server connection, no state a
-- client relies on, and PostgreSQL drops a plan when a table it reads changes.
--
-- The status rule is that of shared/store/reply_rows.py (_SEEN_STATUS): a 'streaming' reply
-- whose turn lease ran out is reported 'failed' (the request writing it is gone). A change of
-- either is a new migration (CREATE OR REPLACE FUNCTION) and a code change together.
-- Additive only: the previous release never calls it.
CREATE FUNCTION tripchat.pending_replies(trip_id TEXT) RETURNS TEXT
    LANGUAGE plpgsql STABLE STRICT
AS $$
BEGIN
    RETURN (
        SELECT coalesce(json_agg(p ORDER BY p.started_at DESC), '[]')::text FROM (
            SELECT r.user_message_id, r.assistant_message_id, r.content, r.updated_at,
                   r.started_at,
                   CASE WHEN r.status = 'streaming'
                             AND (t.lease_until IS NULL OR t.lease_until <= now())
                        THEN 'failed' ELSE r.status END AS status
            FROM tripchat.reply_stream r
            JOIN tripchat.message_turn t
              ON t.user_id = r.user_id AND t.idempotency_key = r.idempotency_key
            WHERE r.session_id = pending_replies.trip_id AND r.status <> 'stopped'
            ORDER BY r.started_at DESC
            LIMIT 10
        ) p
    );
END
$$;
