-- Backboard may still carry out a creation after our call timed out. Additive: the previous
-- release ignores both columns.
--
-- A thread with no trip pointing at it: the user's row says from when on to look, and the
-- next trip they start after that time first deletes the threads of their assistant created
-- before it that no trip knows.
ALTER TABLE tripchat.rate_limit ADD COLUMN threads_check_at TIMESTAMPTZ;
-- A second assistant for one user: after a timed-out creation, no new one is requested until
-- this time (a late one that lands before it is adopted, found by its name).
ALTER TABLE tripchat.clerk_user_state ADD COLUMN assistant_wait_until TIMESTAMPTZ;
