-- no-transaction
-- Listing a user's conversations, newest activity first
-- (GET /api/conversations): keyset order (activity, created_at,
-- conversation_id), read backwards, for one user and archived flag.
-- "Activity" is last_message_at, or created_at before the first message.
--
-- Built CONCURRENTLY (writes continue while it builds), hence no transaction
-- and one statement per file. If a build fails it leaves an INVALID index;
-- `chat-api migrate` drops such leftovers of pending migrations before retrying
-- (see db::migrate).
CREATE INDEX CONCURRENTLY IF NOT EXISTS chatbot_conversation_audit_user_list_idx
    ON chatbot_conversation_audit (user_id, archived, (COALESCE(last_message_at, created_at)), created_at, conversation_id);
