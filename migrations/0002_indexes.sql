-- Indexes for the real access paths:
-- * a turn reads a conversation's newest messages: (conversation_id, created_at);
-- * listing a user's conversations by recent activity: (user_id, last_message_at).
CREATE INDEX IF NOT EXISTS chatbot_user_memory_conversation_created_idx
    ON chatbot_user_memory (conversation_id, created_at);

CREATE INDEX IF NOT EXISTS chatbot_conversation_audit_user_activity_idx
    ON chatbot_conversation_audit (user_id, last_message_at DESC NULLS LAST);
