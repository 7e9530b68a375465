-- The physical schema Prisma creates from the seed's User, Session and Message models
-- (same table, column, constraint and index names), so a Prisma client generated from those
-- models works unchanged on this database. What Prisma cannot express is added on top:
-- database-side id defaults, the role CHECK, and the indexes for the hot reads.
-- No cascades: every foreign key is ON DELETE RESTRICT; erasure deletes children explicitly.

CREATE TABLE "User" (
    "id" TEXT NOT NULL DEFAULT gen_random_uuid()::text,
    "clerkId" TEXT NOT NULL,
    "assistantId" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "name" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "Session" (
    "id" TEXT NOT NULL DEFAULT gen_random_uuid()::text,
    "title" TEXT DEFAULT 'New Trip',
    "userId" TEXT NOT NULL,
    "threadId" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Session_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "Message" (
    "id" TEXT NOT NULL DEFAULT gen_random_uuid()::text,
    "role" TEXT NOT NULL,
    "content" TEXT NOT NULL,
    "sessionId" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Message_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "Message_role_check" CHECK ("role" IN ('user', 'assistant'))
);

-- Prisma implements @unique as a unique index named <Model>_<field>_key.
CREATE UNIQUE INDEX "User_clerkId_key" ON "User"("clerkId");
CREATE UNIQUE INDEX "User_assistantId_key" ON "User"("assistantId");

-- Hot reads: a trip's messages in order, and a user's trips newest first. The id column makes
-- both keyset orders total, so pagination is stable when timestamps are equal.
CREATE INDEX "Message_sessionId_createdAt_id_idx" ON "Message"("sessionId", "createdAt", "id");
CREATE INDEX "Session_userId_createdAt_id_idx" ON "Session"("userId", "createdAt", "id");

ALTER TABLE "Session" ADD CONSTRAINT "Session_userId_fkey"
    FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

ALTER TABLE "Message" ADD CONSTRAINT "Message_sessionId_fkey"
    FOREIGN KEY ("sessionId") REFERENCES "Session"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
