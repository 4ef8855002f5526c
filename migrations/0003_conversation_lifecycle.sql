-- Conversation lifecycle: summaries, where a title came from, and the
-- background tasks (summaries, generated titles) replicas claim from here.
--
-- Adding nullable columns, or columns with a constant default, only touches the
-- catalog (PostgreSQL 11+: no table rewrite, no scan), and the new CHECK is
-- NOT VALID (existing rows all hold the default). ALTER TABLE still takes a brief
-- ACCESS EXCLUSIVE lock: give up after 5 s instead of queueing behind a long
-- transaction while every write queues behind us; `chat-api migrate` fails
-- and the migration Job retries.
SET LOCAL lock_timeout = '5s';

ALTER TABLE chatbot_conversation_audit
    -- When conversation_summary was last written.
    ADD COLUMN IF NOT EXISTS summary_updated_at TIMESTAMPTZ,
    -- created_at of the newest message folded into conversation_summary: the
    -- context of a turn is the summary, then the messages after this instant.
    ADD COLUMN IF NOT EXISTS summary_through TIMESTAMPTZ,
    -- 'first-message' (the first user message), 'provider' (generated,
    -- TITLES=provider) or 'user' (renamed through PATCH: never replaced).
    ADD COLUMN IF NOT EXISTS title_source TEXT NOT NULL DEFAULT 'first-message';

ALTER TABLE chatbot_conversation_audit
    ADD CONSTRAINT chatbot_conversation_audit_title_source_check
    CHECK (title_source IN ('first-message', 'provider', 'user')) NOT VALID;

-- Work done off the request path. One row per (conversation, kind): asking
-- again while a row exists bumps `requests`, so a worker that finishes an older
-- request knows to run once more. `due_at` is also the claim's lease: a claimed
-- row is due again when its worker died without finishing.
CREATE TABLE IF NOT EXISTS chatbot_conversation_tasks (
    conversation_id UUID NOT NULL
        REFERENCES chatbot_conversation_audit(conversation_id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('summary', 'title')),
    due_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    requests BIGINT NOT NULL DEFAULT 1,
    claim UUID,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, kind)
);

-- A new, empty table: a plain CREATE INDEX is instant here.
CREATE INDEX IF NOT EXISTS chatbot_conversation_tasks_due_idx ON chatbot_conversation_tasks (due_at);
