-- The seed service's schema, unchanged: conversations and their messages.
-- gen_random_uuid() is built into PostgreSQL 13+, so no extension is needed.

CREATE TABLE chatbot_conversation_audit (
    conversation_id UUID PRIMARY KEY,
    user_id UUID NOT NULL,
    title TEXT,
    conversation_summary TEXT,
    model TEXT,
    token_usage JSONB,
    status TEXT DEFAULT 'in-progress' NOT NULL,
    last_message_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    archived BOOLEAN DEFAULT FALSE NOT NULL
);

CREATE TABLE chatbot_user_memory (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id UUID NOT NULL REFERENCES chatbot_conversation_audit(conversation_id),
    user_id UUID NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
