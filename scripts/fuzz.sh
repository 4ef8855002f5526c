#!/usr/bin/env bash
# Runs the fuzz targets of services/chat-api/tests/fuzz.rs (request bodies,
# provider answers whole and streamed, bearer tokens) for longer than the
# test suite does: each target for SECONDS (default 60) or CASES cases.
#   scripts/fuzz.sh [SECONDS] [CASES]
# Needs DATABASE_URL (the request target runs against PostgreSQL), e.g.
#   eval "$(scripts/pg.sh start)"; export DATABASE_URL; scripts/fuzz.sh 120
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
: "${DATABASE_URL:?set DATABASE_URL (eval \"\$(scripts/pg.sh start)\")}"
export FUZZ_SECONDS="${1:-60}" FUZZ_CASES="${2:-1000000000}"
log "fuzzing each target for ${FUZZ_SECONDS}s (at most ${FUZZ_CASES} cases)"
cargo test -p chat-api --test fuzz -- --nocapture --test-threads 1
