-- A thread whose creation timed out on our side may still be created by Backboard moments
-- later, with no trip pointing at it. When that happens the user's row says from when on to
-- look: the next trip they start after that time first deletes the threads of their assistant
-- created before it that no trip knows. Additive: the previous release ignores the column.
ALTER TABLE tripchat.rate_limit ADD COLUMN threads_check_at TIMESTAMPTZ;
