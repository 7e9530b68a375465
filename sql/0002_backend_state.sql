-- State only this backend needs, kept in its own schema: a Prisma client generated from the
-- seed's models manages "public" and never sees (or drops, on `db push`) these tables.

CREATE SCHEMA IF NOT EXISTS tripchat;

-- Clerk sync state per Clerk user. Svix delivers at least once and in any order, so the
-- webhook applies an event only when it is newer than the last one applied (Clerk's
-- updated_at, in ms), and a deleted user stays deleted: Clerk never reuses user ids.
CREATE TABLE tripchat.clerk_user_state (
    clerk_id TEXT NOT NULL,
    last_event_at BIGINT NOT NULL DEFAULT 0,
    deleted_at TIMESTAMPTZ,

    CONSTRAINT clerk_user_state_pkey PRIMARY KEY (clerk_id)
);

-- One row per message send ("turn"), keyed by the client's Idempotency-Key (or a generated
-- one): a retry finds the turn and neither stores the user's message twice nor calls
-- Backboard again once the reply is stored. The message ids carry no foreign key: turns are
-- deleted with their messages, in the same transaction, children first.
CREATE TABLE tripchat.message_turn (
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    session_id TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    user_message_id TEXT NOT NULL,
    assistant_message_id TEXT,
    lease_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT message_turn_pkey PRIMARY KEY (user_id, idempotency_key),
    CONSTRAINT message_turn_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT message_turn_user_fkey FOREIGN KEY (user_id)
        REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    CONSTRAINT message_turn_session_fkey FOREIGN KEY (session_id)
        REFERENCES "Session"("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE INDEX message_turn_session_idx ON tripchat.message_turn (session_id);

-- Per-user message rate limit, one fixed one-minute window per user, shared by every
-- container because it lives in the database.
CREATE TABLE tripchat.rate_limit (
    user_id TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    request_count INTEGER NOT NULL,

    CONSTRAINT rate_limit_pkey PRIMARY KEY (user_id),
    CONSTRAINT rate_limit_user_fkey FOREIGN KEY (user_id)
        REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
