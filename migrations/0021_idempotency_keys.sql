-- Idempotency-Key records of chat turns, shared by every replica.
--
-- A request claims (principal, key) before it runs; the turn it stores and
-- the response recorded here commit in one transaction, so a repeat either
-- finds the stored response or a claim whose turn was never stored.
CREATE TABLE colloquy_idempotency_keys (
    -- The caller the key belongs to: 'api-key:<client_user_id>' or 'bearer:<sub>'.
    principal             text        NOT NULL,
    idempotency_key       text        NOT NULL,
    -- SHA-256 of the method, route and (canonical JSON) body.
    request_hash          bytea       NOT NULL,
    -- The attempt holding the key; only it may complete or release it.
    claim                 uuid        NOT NULL,
    state                 text        NOT NULL CHECK (state IN ('in_progress', 'completed')),
    -- An in-progress claim older than this belongs to a request that died: it may be taken over.
    locked_until          timestamptz NOT NULL,
    response_status       smallint,
    response_content_type text,
    response_body         bytea,
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL,
    PRIMARY KEY (principal, idempotency_key),
    CHECK (state = 'in_progress' OR response_status IS NOT NULL)
);

-- The background sweep deletes expired keys oldest first.
CREATE INDEX colloquy_idempotency_keys_expires_at ON colloquy_idempotency_keys (expires_at);
