-- The OpenAI-compatible surface (/v1): a conversation's `metadata` (up to 16
-- string pairs, set by POST /v1/conversations and its update). Its own table
-- rather than a column on the seed's chatbot_conversation_audit, whose columns
-- stay the seed's; deleting a conversation deletes its metadata.
--
-- Response ids need nothing here: `resp_<uuid>` names the stored assistant
-- message `<uuid>` (chatbot_user_memory.id), which the service chooses before
-- storing it.
CREATE TABLE IF NOT EXISTS chatbot_conversation_metadata (
    conversation_id UUID PRIMARY KEY
        REFERENCES chatbot_conversation_audit(conversation_id) ON DELETE CASCADE,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb
);
