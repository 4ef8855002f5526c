#!/usr/bin/env bash
# Command 1 of the README: set up what is missing and run Colloquy's chat API
# locally on an embedded default: a private PostgreSQL started by scripts/pg.sh
# and the built-in offline mock LLM provider. Ctrl-C stops the API (PostgreSQL
# keeps running; `scripts/pg.sh stop` stops it).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

need_debs postgresql ca-certificates
need_rust

eval "$(scripts/pg.sh start)"
log "building chat-api"
cargo build --release -p chat-api >&2
BIN="$CARGO_TARGET_DIR/release/chat-api"

export DATABASE_URL
export INTERNAL_API_KEY="${INTERNAL_API_KEY:-dev-internal-api-key-change-me}"
export LLM_PROVIDER="${LLM_PROVIDER:-mock}"
export LOG_FORMAT="${LOG_FORMAT:-text}"
export PORT="${PORT:-8000}"
export METRICS_PORT="${METRICS_PORT:-9090}"
# No load balancer to drain in development: Ctrl-C stops at once.
export SHUTDOWN_DRAIN_SECS="${SHUTDOWN_DRAIN_SECS:-0}"

"$BIN" migrate

cat >&2 <<MSG

  Colloquy chat API on http://localhost:$PORT  (provider: $LLM_PROVIDER)
  API docs:  http://localhost:$PORT/docs  and  http://localhost:$PORT/redoc
  Metrics:   http://localhost:$METRICS_PORT/metrics

  Try it:
    curl -s -X POST http://localhost:$PORT/api/ai/chat \\
      -H "Content-Type: application/json" \\
      -H "X-API-Key: $INTERNAL_API_KEY" \\
      -d '{"user_message":"Hello","client_user_id":"2f1a4d4e-8c36-4c5c-9b1b-6a3b6a4a1b2c"}'

MSG
exec "$BIN" serve
