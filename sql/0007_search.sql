-- Full-text search over a user's trip titles and message contents (GET /search).
--
-- Expression indexes, not columns: the Prisma tables get no tsvector column (a Prisma client
-- generated from the seed's models must keep working unchanged), so the indexes are on the
-- very expressions the search statement uses (shared/store/search_rows.py); PostgreSQL uses
-- them only while the two match, configuration 'english' included. A change of either is a
-- new migration and a code change together. Plain GIN on core PostgreSQL only: no extension
-- (btree_gin would let the message index hold the trip too, but the embedded PostgreSQL of
-- `make dev` has no contrib extensions).
--
-- Prisma: schema.prisma cannot describe an expression (or GIN expression) index, so
-- `prisma migrate dev` / `prisma migrate diff` / `prisma db push` run against this database
-- from the seed's models plan `DROP INDEX` for both, as for any index they do not know.
-- Nothing else breaks: search stays correct without them (it scans the user's own messages),
-- only slower for users with many messages; `make migrate-verify` reports them missing, and
-- running this file's CREATE INDEX statements again restores them. Keep `prisma db push` away
-- from a database this backend migrates, or re-create them after it (README, "Database").
--
-- Built inside the migration's transaction, which blocks writes to "Message" while it runs
-- (about a minute per million rows on a small server). On a large live table, create them
-- beforehand with CREATE INDEX CONCURRENTLY under the same names; this file then skips them.

CREATE INDEX IF NOT EXISTS "Message_content_search_idx"
    ON "Message" USING GIN (to_tsvector('english'::regconfig, "content"));

CREATE INDEX IF NOT EXISTS "Session_title_search_idx"
    ON "Session" USING GIN (to_tsvector('english'::regconfig, COALESCE("title", '')));
