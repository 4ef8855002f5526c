-- Per-conversation turn claims: one turn at a time per conversation, so each
-- user message is stored immediately followed by its own answer and every
-- turn's context holds every turn committed before it (README, "Turn order").
--
-- A row per conversation that has had a turn. `token` is set while a turn
-- holds the claim and NULL when free; `expires_at` (database time) lets
-- another replica take over a claim whose holder died; `last_message_at` is
-- the time of the last message the latest holder stored, which tells a new
-- holder whether the snapshot it read the history in already had that turn.
--
-- UNLOGGED: claims are worth nothing after a crash (every turn in flight then
-- fails anyway), and a transaction that writes only unlogged tables commits
-- without waiting for a WAL flush, so claiming costs no fsync. After a crash
-- or a failover the table starts empty, which is a correct state. No foreign
-- key: its check would lock (and WAL-log) the conversation row at every claim.
CREATE UNLOGGED TABLE IF NOT EXISTS chatbot_turn_claims (
    conversation_id UUID PRIMARY KEY,
    user_id UUID NOT NULL,
    token UUID,
    claimed_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    last_message_at TIMESTAMPTZ
);
