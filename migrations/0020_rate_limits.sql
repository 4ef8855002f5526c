-- Per-user rate limits shared by every replica (RATE_LIMIT_RPM, RATE_LIMIT_TPM).
--
-- One row per user, updated by one statement per request: the generic cell
-- rate algorithm (GCRA, a token bucket kept as a "theoretical arrival time").
-- A request is admitted when pushing the user's TAT forward by its cost
-- leaves it at most one minute ahead of the database clock. No row is shared
-- by all users, and all time arithmetic uses the database's now().
--
-- UNLOGGED: the counters are written on every request but are worth nothing
-- after a minute, so they skip the WAL (no fsync per request). A crash or a
-- failover empties the table, which gives every user a fresh minute.
CREATE UNLOGGED TABLE colloquy_rate_limits (
    user_id          uuid        PRIMARY KEY,
    -- Theoretical arrival time of the requests bucket.
    requests_tat     timestamptz NOT NULL,
    -- Theoretical arrival time of the tokens bucket.
    tokens_tat       timestamptz NOT NULL,
    -- Tokens the user's last turn really used: the next turn reserves at least this.
    last_turn_tokens bigint      NOT NULL DEFAULT 0,
    -- Tokens the last check asked for, and whether it was admitted (read back by that check).
    last_cost        bigint      NOT NULL DEFAULT 0,
    admitted         boolean     NOT NULL DEFAULT true
) WITH (fillfactor = 70); -- room for HOT updates: the row changes on every request
