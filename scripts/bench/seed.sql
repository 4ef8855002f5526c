-- Seeds scripts/bench.sh's existing conversations: :nconv conversations owned
-- by :'user', each with one prior turn (user + assistant message). Conversation
-- n gets the id 00000000-0000-4000-8000-<n as 12 hex digits> (turn.pgbench relies on it).
INSERT INTO chatbot_conversation_audit (conversation_id, user_id, title, model, token_usage, last_message_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, :'user'::uuid, 'Bench conversation ' || n,
       'gpt-4o-2024-08-06',
       '{"prompt_tokens": 412, "completion_tokens": 68, "total_tokens": 480, "turns": 1}'::jsonb,
       now() - interval '1 hour'
FROM generate_series(1, :nconv) AS n;

INSERT INTO chatbot_user_memory (conversation_id, user_id, role, content, created_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, :'user'::uuid, r.role,
       jsonb_build_object('text', r.text), now() - interval '1 hour' + r.off
FROM generate_series(1, :nconv) AS n,
     (VALUES ('user', 'Hello, can you help me plan the Kubernetes rollout?', interval '0'),
             ('assistant', 'Of course. Let us start with the stages and the checks between them.', interval '1 microsecond'))
       AS r(role, text, off);

ANALYZE chatbot_conversation_audit;
ANALYZE chatbot_user_memory;

SELECT conversation_id FROM chatbot_conversation_audit WHERE user_id = :'user'::uuid ORDER BY conversation_id;
