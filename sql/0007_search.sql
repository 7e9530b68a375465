-- Full-text search over a user's trip titles and message contents (GET /search).
--
-- Expression indexes, not columns: the Prisma tables get no tsvector column (a Prisma client
-- generated from the seed's models must keep working unchanged), so the indexes are on the
-- very expressions the search statement uses (shared/store/search_rows.py); PostgreSQL uses
-- them only while the two match, configuration 'english' included. A change of either is a
-- new migration and a code change together.
--
-- Prisma: schema.prisma cannot describe an expression (or GIN expression) index, so
-- `prisma migrate dev` / `prisma migrate diff` / `prisma db push` run against this database
-- from the seed's models plan `DROP INDEX` for both, as for any index they do not know.
-- Nothing else breaks: search stays correct without them (it scans the user's own messages),
-- only slower for users with many messages; `make migrate-verify` reports them missing, and
-- running this file's two statements again restores them. Keep `prisma db push` away from a
-- database this backend migrates, or re-create them after it (README, "Search").
--
-- Built inside the migration's transaction, which blocks writes to "Message" while it runs
-- (seconds per million rows). On a large live table, create them beforehand with CREATE
-- INDEX CONCURRENTLY under the same names; this file then finds them and does nothing.

CREATE INDEX IF NOT EXISTS "Message_content_search_idx"
    ON "Message" USING GIN (to_tsvector('english'::regconfig, "content"));

CREATE INDEX IF NOT EXISTS "Session_title_search_idx"
    ON "Session" USING GIN (to_tsvector('english'::regconfig, COALESCE("title", '')));
