-- Rate limits over any 60-second window, for messages and for new trips.
--
-- The per-minute counter of 0002 let twice the limit through across a minute boundary. Each
-- row now keeps the times of the user's requests in the last minute (at most the limit of
-- them): a request is accepted when fewer than the limit fall within the 60 seconds before it.
-- Additive only, so code of the previous release keeps working while a deploy rolls out: the
-- old counter columns stay, with defaults, and are no longer read.
ALTER TABLE tripchat.rate_limit
    ADD COLUMN recent_messages TIMESTAMPTZ[] NOT NULL DEFAULT '{}',
    ADD COLUMN recent_trips TIMESTAMPTZ[] NOT NULL DEFAULT '{}',
    ALTER COLUMN window_start SET DEFAULT now(),
    ALTER COLUMN request_count SET DEFAULT 0;
