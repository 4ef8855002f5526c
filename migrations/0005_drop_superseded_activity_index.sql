-- no-transaction
-- 0002's (user_id, last_message_at DESC NULLS LAST) index is superseded by
-- 0004's listing index (same leading column, the order listings use). Dropping
-- it CONCURRENTLY does not block reads or writes, and saves its upkeep on
-- every turn.
DROP INDEX CONCURRENTLY IF EXISTS chatbot_conversation_audit_user_activity_idx;
