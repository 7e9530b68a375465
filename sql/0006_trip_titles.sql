-- Titles the traveller chose. A trip still carrying the default title ('New Trip') gets a short
-- title drawn from its conversation after its first reply, unless the traveller named it: at
-- creation, or by renaming it (even to 'New Trip' itself). A rename writes its row here in the
-- same statement as the title; the automatic title is written with a compare-and-set that reads
-- this table after taking the trip's row lock, so a rename racing it always wins.
--
-- No foreign key to "Session": a Prisma client deleting a trip knows nothing of this table and
-- must not be stopped by it (an orphaned row is harmless: trip ids are never reused). This
-- backend deletes the row with its trip.
CREATE TABLE tripchat.trip_title_chosen (
    session_id TEXT NOT NULL,
    chosen_at TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT trip_title_chosen_pkey PRIMARY KEY (session_id)
);
