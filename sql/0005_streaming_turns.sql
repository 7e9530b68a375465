-- Replies streamed as they are written (POST /sessions/{id}/messages/stream). Until a reply
-- is complete it lives here, not in "Message": a Prisma client reading "Message" never sees
-- half a reply. One row per streamed turn, written at a bounded rate while the reply grows,
-- so a reload (GET messages) or another container (the resume GET) can show it.
--
-- status: 'streaming' while a request holds the turn's lease and writes; 'failed' when
-- Backboard broke off (the partial text is kept; a retry with the same Idempotency-Key
-- resumes the turn and starts the reply afresh); 'stopped' when the traveller stopped it
-- (the partial text was stored as the assistant's message, assistant_message_id). A reply
-- that completes is moved to "Message" and its row deleted in the same statement.
-- Additive only: the previous release never reads it.
CREATE TABLE tripchat.reply_stream (
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_message_id TEXT NOT NULL,
    -- The id the reply gets in "Message" once complete (or stopped), known from the start so
    -- the stream can name it.
    assistant_message_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'streaming',
    content TEXT NOT NULL DEFAULT '',
    run_id TEXT,
    writes INTEGER NOT NULL DEFAULT 0,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT reply_stream_pkey PRIMARY KEY (user_id, idempotency_key),
    CONSTRAINT reply_stream_status CHECK (status IN ('streaming', 'failed', 'stopped')),
    CONSTRAINT reply_stream_turn_fkey FOREIGN KEY (user_id, idempotency_key)
        REFERENCES tripchat.message_turn (user_id, idempotency_key)
        ON DELETE RESTRICT ON UPDATE CASCADE,
    CONSTRAINT reply_stream_session_fkey FOREIGN KEY (session_id)
        REFERENCES "Session"("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
-- A trip's replies in flight (resume, GET messages), newest first.
CREATE INDEX reply_stream_session_idx ON tripchat.reply_stream (session_id, started_at);
-- A stopped reply, by the message it became (a replayed turn says it was stopped).
CREATE INDEX reply_stream_assistant_message_idx ON tripchat.reply_stream (assistant_message_id);
