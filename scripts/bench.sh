#!/usr/bin/env bash
# Benchmark of the chat API's turn path, end to end on this machine:
#
#   * a private PostgreSQL at default settings (fsync on), via scripts/pg.sh,
#     on its own port and data directory, wiped at each run;
#   * a fake Azure OpenAI upstream that is never the bottleneck: Debian's nginx
#     answering a fixed, real-shaped chat completion (scripts/bench/nginx.conf.in);
#   * the release build of chat-api, provider azure-openai pointed at that nginx;
#   * wrk (scripts/bench/chat.lua): proxy-shape turns (X-API-Key + client_user_id),
#     half continuing seeded conversations, half starting new ones, after a warm-up;
#   * then pgbench (scripts/bench/turn.pgbench) doing one turn's writes per
#     transaction (the conversation update + two message inserts) at the same
#     concurrency: the PostgreSQL ceiling for this machine.
#
# turns/s is counted from rows actually stored (assistant messages), so errors
# are not throughput.
#
# Then the streaming run: with answers that take 10-60 s, the number of turns
# in flight, not turns per second, sizes a deployment:
#
#   * a fake Azure upstream that paces a stream (nginx cannot): the
#     `bench_stream_upstream` example of chat-api, 50 chunks over 10 s;
#   * a fresh chat-api process pointed at it;
#   * the `bench_stream_client` example starting streamed turns (new
#     conversations) at BENCH_STREAM_RATE per second for BENCH_STREAM_TURNS
#     turns, so rate x 10 s = 10,000 turns are in flight at once; the file
#     descriptor limit is raised for that (to the hard limit at most). Upstream,
#     chat-api speaks HTTP/2 (h2c: LLM_HTTP_VERSION=http2), as it does with
#     https:// providers, which negotiate HTTP/2: at most LLM_STREAMS_PER_CONNECTION
#     (100) streams per connection (BENCH_STREAM_UPSTREAM_HTTP=http1: one
#     HTTP/1.1 connection per turn, as with a plain-http server); the client speaks HTTP/2
#     (h2c) over BENCH_STREAM_H2_CONNECTIONS connections (64; 0: HTTP/1.1, a
#     connection per turn), as a proxying server or an ingress does: with
#     HTTP/1.1 on both sides chat-api would need two sockets per turn, more than
#     a 20,000 hard open-file limit allows at 10,000 turns;
#   * it prints chat-api's peak RSS and CPU, the time to the first delta and to
#     `done` added over the upstream's own (p50/p99), and failed turns.
#
# Then, when asked for (BENCH_RUNS=v1, or "turns stream v1"), the /v1 run:
# chat-api's OpenAI-compatible /v1/chat/completions next to LiteLLM's proxy,
# the gateway most teams would otherwise put in front of the same provider:
#
#   * the same nginx upstream, on its OpenAI-compatible path; chat-api with
#     LLM_PROVIDER=openai, LiteLLM (PyPI `litellm[proxy]`, pinned in
#     scripts/bench/litellm-requirements.txt, installed once into a venv under
#     ~/.cache/colloquy) with one model on it from a generated config.yaml: no
#     database, no UI, no callbacks, errors-only logs, uvicorn with
#     BENCH_LITELLM_WORKERS workers (2: one per core, so that each server can
#     use the whole machine; chat-api's runtime has a worker thread per core);
#   * wrk (scripts/bench/v1.lua) sends both the same non-streamed request bytes
#     (model gpt-4o-mini, a four-message conversation, the same Bearer key) at
#     the same connections and threads; after a warm-up each, each is measured
#     BENCH_DURATION seconds in two halves, in the order chat-api, LiteLLM,
#     LiteLLM, chat-api, so neither gets the quieter machine;
#   * it prints side by side: requests/s, p50/p99 latency (merged over the two
#     halves), non-2xx, peak RSS (LiteLLM: the sum over its workers) and CPU
#     seconds (LiteLLM: all its processes).
#
# Everything started here is stopped on exit.
#
#   scripts/bench.sh
#
# Environment: BENCH_DURATION (20 s), BENCH_CONNECTIONS (64), BENCH_WARMUP (5 s),
# BENCH_THREADS (2: wrk and pgbench threads), BENCH_SEED_CONVERSATIONS (1024),
# BENCH_PG_PORT (55434), DATABASE_MAX_CONNECTIONS (chat-api's pool; unset =
# the service default), RUST_LOG (warn), BENCH_SKIP_BUILD=1 (use the existing
# release binary), BENCH_BIN (benchmark this chat-api binary instead; no build),
# BENCH_SKIP_PGBENCH=1, BENCH_DB_SETTINGS (see below), BENCH_MIX (mixed: half
# new, half continuing; or new, continue: one kind only, to see what each costs),
# BENCH_RUNS ("turns stream": which runs; add v1 for the /v1 run),
# BENCH_STREAM_TURNS (10000), BENCH_STREAM_RATE (1000 turns started per second),
# BENCH_STREAM_CHUNKS (50),
# BENCH_STREAM_SECS (10: how long one upstream answer takes),
# BENCH_STREAM_H2_CONNECTIONS (64: client to chat-api; 0 for HTTP/1.1),
# BENCH_STREAM_UPSTREAM_HTTP (http2: chat-api to the upstream, LLM_HTTP_VERSION; http1),
# BENCH_STREAM_DB_MIN (DATABASE_MIN_CONNECTIONS of the streaming run: the pool size),
# BENCH_LITELLM_WORKERS (2),
# BENCH_LITELLM_START_SECS (300: how long LiteLLM may take to start).

# Process id lists ($(pg_pids), $pids, /proc fields) are split into words on purpose.
# shellcheck disable=SC2046,SC2086
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

DURATION="${BENCH_DURATION:-20}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
WARMUP="${BENCH_WARMUP:-5}"
THREADS="${BENCH_THREADS:-2}"
NCONV="${BENCH_SEED_CONVERSATIONS:-1024}"
BENCH_USER="7b0c5d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e"
API_KEY="bench-internal-api-key-0123456789"
HERE="$REPO_ROOT/scripts/bench"
API_RUST_LOG="${RUST_LOG:-warn}"

# The benchmark's PostgreSQL: its own port and directory, wiped, fsync on.
export COLLOQUY_PG_PORT="${BENCH_PG_PORT:-55434}"
export COLLOQUY_PG_DIR="${BENCH_PG_DIR:-/var/tmp/colloquy-pg-bench-$COLLOQUY_PG_PORT}"
export COLLOQUY_PG_RESET=1
unset COLLOQUY_PG_FAST

need_debs postgresql nginx-light wrk curl ca-certificates
need_rust
PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# v1 is not in the default list: LiteLLM takes a minute to start on a busy
# 2-core machine, and the whole run took 155 s there (2 December 2026).
RUNS="${BENCH_RUNS:-turns stream}"
run_enabled() { case " $RUNS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  if [ -z "${BENCH_BIN:-}" ]; then
    log "building chat-api (release)"
    cargo build --release -p chat-api >&2
  fi
  if run_enabled stream; then
    log "building the streaming benchmark's upstream and client (release examples)"
    cargo build --release -p chat-api --example bench_stream_upstream --example bench_stream_client >&2
  fi
fi
BIN="${BENCH_BIN:-$CARGO_TARGET_DIR/release/chat-api}"
[ -x "$BIN" ] || die "no release binary at $BIN"
EXAMPLES="${BENCH_EXAMPLES:-$CARGO_TARGET_DIR/release/examples}"

WORK=$(mktemp -d /tmp/colloquy-bench.XXXXXX)
API_PID=""
NGINX_PID=""
STREAM_API_PID=""
STREAM_UP_PID=""
V1_API_PID=""
LITELLM_PID=""
LITELLM_VENV=""
PG_STARTED=""
# descendants PID: its children, their children, and so on.
descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}

# LiteLLM's supervisor stops its workers on SIGTERM (in about 10 s); any of its
# processes still running after 20 s (still our venv's python) are killed.
stop_litellm() {
  [ -n "$LITELLM_PID" ] || return 0
  local pids pid
  pids="$LITELLM_PID $(descendants "$LITELLM_PID")"
  kill -TERM "$LITELLM_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$LITELLM_PID" 2>/dev/null || break
    sleep 0.2
  done
  for pid in $pids; do
    grep -qF "$LITELLM_VENV" "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  done
  wait "$LITELLM_PID" 2>/dev/null || true
  LITELLM_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  stop_litellm
  for pid in "$API_PID" "$STREAM_API_PID" "$STREAM_UP_PID" "$V1_API_PID"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  fi
  if [ -n "$PG_STARTED" ]; then scripts/pg.sh stop >/dev/null 2>&1 || true; fi
  if { [ "$rc" -ne 0 ] || [ -n "${BENCH_KEEP_LOGS:-}" ]; } && [ -d "$WORK" ]; then
    log "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

psql_q() { "$PGBIN/psql" "$DATABASE_URL" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }
stored_turns() { psql_q -c "SELECT count(*) FROM chatbot_user_memory WHERE role = 'assistant'"; }

# CPU time (clock ticks, user + system) of the given processes and all their threads.
cpu_ticks() {
  local total=0 pid line
  for pid in "$@"; do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    line=${line##*) }
    # After "pid (comm) ": field 3 is state, so utime/stime (fields 14/15) are words 12/13.
    set -- $line
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
# Busy and total clock ticks of the whole machine (all cores), from /proc/stat.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# Report helpers: a key=value field of the current $line, microseconds as ms,
# clock ticks as cores busy over $elapsed seconds.
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<" $line"; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }
cores() { awk -v t="$1" -v s="$elapsed" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz / s }'; }
pg_pids() {
  local master; master=$(head -n 1 "$COLLOQUY_PG_DIR/data/postmaster.pid")
  echo "$master" $(pgrep -P "$master" || true)
}

# --- PostgreSQL ----------------------------------------------------------------
PG_STARTED=1
eval "$(scripts/pg.sh start | tail -n 1)"
export DATABASE_URL
log "applying migrations"
"$BIN" migrate >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; die "chat-api migrate failed"; }
# BENCH_DB_SETTINGS="name=value ...": database-level settings for experiments
# (e.g. plan_cache_mode=force_generic_plan); they apply to chat-api and pgbench alike.
for setting in ${BENCH_DB_SETTINGS:-}; do
  psql_q -c "ALTER DATABASE colloquy SET ${setting%%=*} = '${setting#*=}'"
done
# The fake upstream (nginx) shared by the turns and /v1 runs: started once, on
# first use; sets NGINX_PORT and NGINX_PID.
start_nginx() {
  [ -z "$NGINX_PID" ] || return 0
  NGINX_PORT=$(free_port)
  mkdir -p "$WORK/nginx"
  sed -e "s#@PREFIX@#$WORK/nginx#g" -e "s#@PORT@#$NGINX_PORT#g" "$HERE/nginx.conf.in" >"$WORK/nginx/nginx.conf"
  "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
  NGINX_PID=$!
}

# ===================================================================================
# Run 1: whole (non-streamed) turns
# ===================================================================================
turns_run() {
log "seeding $NCONV conversations"
psql_q -v nconv="$NCONV" -v user="$BENCH_USER" -f "$HERE/seed.sql" >"$WORK/ids"
[ "$(wc -l <"$WORK/ids")" -eq "$NCONV" ] || die "seeding produced $(wc -l <"$WORK/ids") ids, expected $NCONV"

# --- fake Azure OpenAI (nginx) ---------------------------------------------------
start_nginx

# --- chat-api ----------------------------------------------------------------------
PORT=$(free_port)
METRICS_PORT=$(free_port)
(
  export HOST=127.0.0.1 PORT METRICS_PORT INTERNAL_API_KEY="$API_KEY" \
    LLM_PROVIDER=azure-openai AZURE_OPENAI_ENDPOINT="http://127.0.0.1:$NGINX_PORT" \
    AZURE_OPENAI_DEPLOYMENT_NAME=bench AZURE_OPENAI_API_KEY=bench-azure-key \
    LOG_FORMAT=json RUST_LOG="$API_RUST_LOG"
  exec "$BIN" serve
) >"$WORK/chat-api.log" 2>&1 &
API_PID=$!

URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
  curl -fsS "$URL/readyz" >/dev/null 2>&1 && curl -fsS -o /dev/null -X POST \
    "http://127.0.0.1:$NGINX_PORT/openai/deployments/bench/chat/completions" 2>/dev/null && break
  kill -0 "$API_PID" 2>/dev/null || { cat "$WORK/chat-api.log" >&2; die "chat-api exited"; }
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx/error.log" >&2; die "nginx exited"; }
  sleep 0.1
done
curl -fsS "$URL/readyz" >/dev/null || { cat "$WORK/chat-api.log" >&2; die "chat-api did not become ready"; }

# One turn of each kind by hand, so a broken setup fails here with its answer shown.
turn() {
  curl -sS -X POST "$URL/api/ai/chat" -H 'Content-Type: application/json' -H "X-API-Key: $API_KEY" -d "$1" \
    -w '\n%{http_code}'
}
out=$(turn "{\"user_message\":\"Hello\",\"client_user_id\":\"$BENCH_USER\"}")
[ "${out##*$'\n'}" = 200 ] || die "new-conversation turn failed: $out"
out=$(turn "{\"conversation_id\":\"$(head -n 1 "$WORK/ids")\",\"user_message\":\"Hello again\",\"client_user_id\":\"$BENCH_USER\"}")
[ "${out##*$'\n'}" = 200 ] || die "continuing turn failed: $out"
case "$out" in *'"ai_response":"Here is a short summary'*) ;; *) die "unexpected answer: $out" ;; esac

run_wrk() { # DURATION
  wrk -t "$THREADS" -c "$CONNECTIONS" -d "${1}s" --timeout 10s -s "$HERE/chat.lua" "$URL" -- \
    "$WORK/ids" "$BENCH_USER" "$API_KEY" "$THREADS" "${BENCH_MIX:-mixed}"
}

if [ "$WARMUP" -gt 0 ]; then
  log "warm-up: ${WARMUP}s at $CONNECTIONS connections"
  run_wrk "$WARMUP" >"$WORK/warmup.txt"
fi

log "measuring: ${DURATION}s at $CONNECTIONS connections ($(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
before=$(stored_turns)
api_cpu0=$(cpu_ticks "$API_PID"); pg_cpu0=$(cpu_ticks $(pg_pids)); nginx_cpu0=$(cpu_ticks $(pgrep -P "$NGINX_PID") "$NGINX_PID")
read -r busy0 _ < <(machine_ticks)
t0=$(date +%s.%N)
TIMEFORMAT='%U %S'
{ time run_wrk "$DURATION" >"$WORK/wrk.txt" 2>&1; } 2>"$WORK/wrk.time"
t1=$(date +%s.%N)
api_cpu1=$(cpu_ticks "$API_PID"); pg_cpu1=$(cpu_ticks $(pg_pids)); nginx_cpu1=$(cpu_ticks $(pgrep -P "$NGINX_PID") "$NGINX_PID")
read -r busy1 _ < <(machine_ticks)
rss_now=$(awk '/^VmRSS:/ {print $2}' "/proc/$API_PID/status")
rss_peak=$(awk '/^VmHWM:/ {print $2}' "/proc/$API_PID/status")
sleep 0.5 # let turns still in flight when wrk stopped commit (at most one per connection)
after=$(stored_turns)
cat "$WORK/wrk.txt" >&2
history=$(psql_q -c "SELECT round(avg(n), 1) FROM (SELECT count(*) AS n FROM chatbot_user_memory
  WHERE conversation_id IN (SELECT conversation_id FROM chatbot_conversation_audit WHERE title LIKE 'Bench conversation %')
  GROUP BY conversation_id) s")

line=$(grep '^BENCH ' "$WORK/wrk.txt") || die "wrk printed no summary"
elapsed=$(awk -v a="$t0" -v b="$t1" -v d="$(field duration_us)" 'BEGIN { e = d / 1e6; if (e <= 0) e = b - a; printf "%.3f", e }')
turns=$((after - before))
tps=$(awk -v n="$turns" -v s="$elapsed" 'BEGIN { printf "%.0f", n / s }')
requests=$(field requests)
non2xx=$(field non2xx)
api_cpu="chat-api $(cores $((api_cpu1 - api_cpu0))), PostgreSQL $(cores $((pg_cpu1 - pg_cpu0))), nginx $(cores $((nginx_cpu1 - nginx_cpu0))), wrk $(awk -v s="$elapsed" '{ printf "%.2f", ($1 + $2) / s }' "$WORK/wrk.time"), whole machine $(cores $((busy1 - busy0))) (incl. anything else running)"
sock_errors=$(($(field connect_errors) + $(field read_errors) + $(field write_errors) + $(field timeouts)))

# --- pgbench: PostgreSQL's ceiling for the same writes ------------------------------
ceiling=""
if [ "${BENCH_SKIP_PGBENCH:-}" != 1 ]; then
  log "pgbench: one turn's writes per transaction, ${DURATION}s at $CONNECTIONS clients"
  { time "$PGBIN/pgbench" -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "$DURATION" \
    -D nconv="$NCONV" -D user="$BENCH_USER" -f "$HERE/turn.pgbench" "$DATABASE_URL" >"$WORK/pgbench.txt" 2>&1; } \
    2>"$WORK/pgbench.time" &
  pgbench_job=$!
  # PostgreSQL's CPU over the middle of the run (its backends exist only while pgbench runs).
  pg_window=$((DURATION > 6 ? DURATION - 4 : 1))
  sleep 2
  pids=$(pg_pids); pg_cpu0=$(cpu_ticks $pids); read -r busy0 _ < <(machine_ticks); w0=$(date +%s.%N)
  sleep "$pg_window"
  pg_cpu1=$(cpu_ticks $pids); read -r busy1 _ < <(machine_ticks); w1=$(date +%s.%N)
  pg_window=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')
  wait "$pgbench_job" || { cat "$WORK/pgbench.txt" >&2; die "pgbench failed"; }
  pgbench_cpu="PostgreSQL $(elapsed=$pg_window cores $((pg_cpu1 - pg_cpu0))), pgbench $(awk -v s="$DURATION" '{ printf "%.2f", ($1 + $2) / s }' "$WORK/pgbench.time"), whole machine $(elapsed=$pg_window cores $((busy1 - busy0)))"
  grep -E '^(number of (transactions|failed)|latency|tps)' "$WORK/pgbench.txt" >&2 || true
  ceiling=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$WORK/pgbench.txt")
  [ -n "$ceiling" ] || { cat "$WORK/pgbench.txt" >&2; die "no tps in pgbench's output"; }
fi

cat <<EOF

== Colloquy chat API benchmark ($(nproc) cores, fsync on) ==
load:                  ${CONNECTIONS} connections, ${DURATION}s after ${WARMUP}s warm-up, turns: ${BENCH_MIX:-mixed} (mixed = half new / half continuing)
                       (${NCONV} seeded conversations, ${history} stored messages each on average at the end)
chat-api:              RUST_LOG=$API_RUST_LOG, DATABASE_MAX_CONNECTIONS=${DATABASE_MAX_CONNECTIONS:-default}${BENCH_DB_SETTINGS:+, database settings: $BENCH_DB_SETTINGS}
turns/s (stored rows): ${tps}   (${turns} turns in ${elapsed}s; wrk saw ${requests} responses)
latency p50/p90/p99:   $(ms "$(field p50_us)") / $(ms "$(field p90_us)") / $(ms "$(field p99_us)") ms   (max $(ms "$(field max_us)") ms)
non-2xx:               ${non2xx}   (socket errors/timeouts: ${sock_errors})
peak RSS:              $(awk -v k="$rss_peak" 'BEGIN { printf "%.1f", k / 1024 }') MB   (at end of run: $(awk -v k="$rss_now" 'BEGIN { printf "%.1f", k / 1024 }') MB)
CPU (cores busy):      ${api_cpu}
EOF
if [ -n "$ceiling" ]; then
  cat <<EOF
PostgreSQL ceiling (pgbench, same writes): $(printf '%.0f' "$ceiling") tx/s
CPU during pgbench:    ${pgbench_cpu}
ratio:                 $(awk -v a="$tps" -v b="$ceiling" 'BEGIN { printf "%.0f", 100 * a / b }') %
EOF
fi
}

# ===================================================================================
# Run 2: streamed turns in flight
# ===================================================================================
stream_run() {
  local turns="${BENCH_STREAM_TURNS:-10000}" rate="${BENCH_STREAM_RATE:-1000}"
  local chunks="${BENCH_STREAM_CHUNKS:-50}" secs="${BENCH_STREAM_SECS:-10}" h2="${BENCH_STREAM_H2_CONNECTIONS:-64}"
  # What https:// providers negotiate (ALPN) is HTTP/2; the fake upstream is
  # plain http, so http2 here is h2c by prior knowledge (LLM_HTTP_VERSION).
  local upstream_http="${BENCH_STREAM_UPSTREAM_HTTP:-http2}"
  # The pool opened at start-up, whole: a pod sized for a burst (the first
  # second of stored turns would otherwise open it, on the request path).
  local db_max="${DATABASE_MAX_CONNECTIONS:-16}" db_min
  db_min="${BENCH_STREAM_DB_MIN:-$db_max}"
  # Without HTTP/2, chat-api holds an upstream socket per turn, and one per turn downstream too.
  local want=1024 hard
  [ "$upstream_http" = http2 ] || want=$((want + turns))
  [ "$h2" -gt 0 ] || want=$((want + turns))
  if [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || true
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] || die "chat-api needs $want open files; the hard limit is $hard"
    ulimit -n "$want"
  fi
  local up_port api_port metrics_port
  up_port=$(free_port)
  "$EXAMPLES/bench_stream_upstream" --port "$up_port" --chunks "$chunks" --duration-ms "$((secs * 1000))" \
    >"$WORK/stream-upstream.log" 2>&1 &
  STREAM_UP_PID=$!
  api_port=$(free_port)
  metrics_port=$(free_port)
  (
    export HOST=127.0.0.1 PORT="$api_port" METRICS_PORT="$metrics_port" INTERNAL_API_KEY="$API_KEY" \
      LLM_PROVIDER=azure-openai AZURE_OPENAI_ENDPOINT="http://127.0.0.1:$up_port" \
      AZURE_OPENAI_DEPLOYMENT_NAME=bench AZURE_OPENAI_API_KEY=bench-azure-key \
      LOG_FORMAT=json RUST_LOG="$API_RUST_LOG" \
      MAX_IN_FLIGHT="$((turns + 1024))" LLM_HTTP_VERSION="$upstream_http" \
      DATABASE_MIN_CONNECTIONS="$db_min" DATABASE_MAX_CONNECTIONS="$db_max"
    # MAX_IN_FLIGHT: every turn of this run is in flight at once, by design;
    # the default cap (1024) would answer the rest 503 overloaded.
    exec "$BIN" serve
  ) >"$WORK/stream-chat-api.log" 2>&1 &
  STREAM_API_PID=$!
  local url="http://127.0.0.1:$api_port"
  for _ in $(seq 1 100); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && break
    kill -0 "$STREAM_API_PID" 2>/dev/null || { cat "$WORK/stream-chat-api.log" >&2; die "chat-api exited"; }
    sleep 0.1
  done
  # One streamed turn by hand, so a broken setup fails here with its answer shown.
  local out
  out=$(curl -sS -N --max-time $((secs + 20)) -X POST "$url/api/ai/chat" -H 'Content-Type: application/json' \
    -H "X-API-Key: $API_KEY" -d "{\"user_message\":\"Hello\",\"client_user_id\":\"$BENCH_USER\",\"stream\":true}")
  case "$out" in *'event: done'*) ;; *) die "streamed turn failed: $(tail -c 600 <<<"$out")" ;; esac

  log "streaming: $turns turns at $rate/s, each answer $chunks chunks over ${secs}s ($(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
  local cpu0 cpu1 up0 up1 busy0 busy1 t0 t1 rss_peak line elapsed stored
  cpu0=$(cpu_ticks "$STREAM_API_PID"); up0=$(cpu_ticks "$STREAM_UP_PID"); read -r busy0 _ < <(machine_ticks)
  t0=$(date +%s.%N)
  "$EXAMPLES/bench_stream_client" --url "$url" --api-key "$API_KEY" --user "$BENCH_USER" --turns "$turns" \
    --rate "$rate" --chunks "$chunks" --duration-ms "$((secs * 1000))" --h2-connections "$h2" >"$WORK/stream-client.txt" 2>&1 \
    || { cat "$WORK/stream-client.txt" >&2; die "the streaming client failed"; }
  t1=$(date +%s.%N)
  cpu1=$(cpu_ticks "$STREAM_API_PID"); up1=$(cpu_ticks "$STREAM_UP_PID"); read -r busy1 _ < <(machine_ticks)
  rss_peak=$(awk '/^VmHWM:/ {print $2}' "/proc/$STREAM_API_PID/status")
  # Connections chat-api opened to the upstream (still pooled, idle, now).
  local up_conns
  up_conns=$(awk -v p=":$(printf '%04X' "$up_port")" '$2 ~ p"$" && $4 == "01"' /proc/net/tcp | wc -l)
  line=$(grep '^STREAM ' "$WORK/stream-client.txt") || { cat "$WORK/stream-client.txt" >&2; die "no STREAM line"; }
  elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  stored=$(psql_q -c "SELECT count(*) FROM chatbot_conversation_audit WHERE title LIKE 'Benchmark turn %'")
  cat <<EOF

== Colloquy chat API streaming benchmark ($(nproc) cores, fsync on) ==
load:                  $(field turns) streamed turns started at ${rate}/s; upstream answer: ${chunks} chunks over ${secs}s
connections:           client to chat-api: $([ "$h2" -gt 0 ] && echo "HTTP/2 (h2c) over $h2" || echo "HTTP/1.1, one per turn"); chat-api to upstream: $([ "$upstream_http" = http2 ] && echo "HTTP/2 (h2c)" || echo "HTTP/1.1"), ${up_conns} connections
database pool:         DATABASE_MAX_CONNECTIONS=${db_max}, DATABASE_MIN_CONNECTIONS=${db_min} (opened at start-up)
in flight at once:     $(field peak_in_flight) (peak, counted by the client)
failed turns:          $(field failed)   (turns stored: ${stored})
chat-api peak RSS:     $(awk -v k="$rss_peak" 'BEGIN { printf "%.1f", k / 1024 }') MiB
chat-api CPU:          $(cores $((cpu1 - cpu0))) cores (average over ${elapsed}s)
CPU of the rest:       fake upstream $(cores $((up1 - up0))), client $(cores "$(field cpu_ticks)"), whole machine $(cores $((busy1 - busy0))) of $(nproc) cores (PostgreSQL is most of the difference)
conversation event:    p50 $(ms "$(field conv_p50_us)") ms, p99 $(ms "$(field conv_p99_us)") ms, max $(ms "$(field conv_max_us)") ms  (chat-api's first byte, sent before it calls the upstream)
added first byte:      p50 $(ms "$(field ttfb_p50_us)") ms, p99 $(ms "$(field ttfb_p99_us)") ms, max $(ms "$(field ttfb_max_us)") ms  (first delta; the upstream's first chunk is at 0)
added last byte:       p50 $(ms "$(field last_p50_us)") ms, p99 $(ms "$(field last_p99_us)") ms, max $(ms "$(field last_max_us)") ms  (done, over the upstream's last chunk)
EOF
  sed -n 's/^STREAM-BY-SECOND /first byte p99 by second of start (ms): /p' "$WORK/stream-client.txt"
  line=$(grep '^FLOOR ' "$WORK/stream-client.txt") &&
    echo "machine floor:         loopback TCP round trip between two threads, 10 ms apart: p50 $(ms "$(field rtt_p50_us)") ms, p99 $(ms "$(field rtt_p99_us)") ms, max $(ms "$(field rtt_max_us)") ms (before the turns; a first delta crosses at least two)"
  sed -n 's/^STREAM failures: /failures by reason:    /p' "$WORK/stream-client.txt"
}

if run_enabled turns; then turns_run; fi

# --- Limits and idempotency: what they cost per turn (issue 11) -----------------------
# Two runs back to back on the same database and chat-api build: new-conversation
# turns spread over BENCH_USERS users (default 1000), first with no limits and no
# keys, then with RATE_LIMIT_RPM/RATE_LIMIT_TPM set far above the load (every check
# runs, none refuses) and a unique Idempotency-Key on every turn. Prints turns/s,
# latency and the CPU per turn of chat-api and PostgreSQL for both, and the
# difference: the per-turn cost of the feature. BENCH_SKIP_RESILIENCE=1 skips it;
# BENCH_RESILIENCE_DURATION (default 10 s) sets the length of each run.
if run_enabled turns && [ "${BENCH_SKIP_RESILIENCE:-}" != 1 ]; then
  R_DURATION="${BENCH_RESILIENCE_DURATION:-10}"
  R_USERS="${BENCH_USERS:-1000}"

  resilience_api() { # VAR=VALUE ...: (re)start chat-api with these extra settings
    if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
      kill -TERM "$API_PID" 2>/dev/null || true
      wait "$API_PID" 2>/dev/null || true
    fi
    (
      export HOST=127.0.0.1 PORT METRICS_PORT INTERNAL_API_KEY="$API_KEY" \
        LLM_PROVIDER=azure-openai AZURE_OPENAI_ENDPOINT="http://127.0.0.1:$NGINX_PORT" \
        AZURE_OPENAI_DEPLOYMENT_NAME=bench AZURE_OPENAI_API_KEY=bench-azure-key \
        LOG_FORMAT=json RUST_LOG="$API_RUST_LOG" SHUTDOWN_DRAIN_SECS=0 SHUTDOWN_GRACE_SECS=5
      for setting in "$@"; do export "${setting?}"; done
      exec "$BIN" serve
    ) >>"$WORK/chat-api-resilience.log" 2>&1 &
    API_PID=$!
    for _ in $(seq 1 100); do
      curl -fsS "$URL/readyz" >/dev/null 2>&1 && return 0
      kill -0 "$API_PID" 2>/dev/null || break
      sleep 0.1
    done
    cat "$WORK/chat-api-resilience.log" >&2
    die "chat-api did not become ready for the limits/idempotency runs"
  }

  resilience_run() { # LABEL KEYS(keys|none): one measured run; sets R_TPS R_P50 R_P99 R_NON2XX R_API_US R_PG_US
    local label=$1 keys=$2 out="$WORK/resilience-$1.txt"
    wrk -t "$THREADS" -c "$CONNECTIONS" -d 2s --timeout 10s -s "$HERE/resilience.lua" "$URL" -- \
      "$API_KEY" "$R_USERS" "$keys" "warm-$label" >/dev/null 2>&1 || true
    local before after a0 a1 p0 p1 t0 t1 line
    before=$(stored_turns)
    a0=$(cpu_ticks "$API_PID"); p0=$(cpu_ticks $(pg_pids)); t0=$(date +%s.%N)
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${R_DURATION}s" --timeout 10s -s "$HERE/resilience.lua" "$URL" -- \
      "$API_KEY" "$R_USERS" "$keys" "run-$label" >"$out" 2>&1
    t1=$(date +%s.%N); a1=$(cpu_ticks "$API_PID"); p1=$(cpu_ticks $(pg_pids))
    sleep 0.5
    after=$(stored_turns)
    line=$(grep '^BENCH ' "$out") || die "wrk printed no summary for the $label run"
    local elapsed turns hz
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    turns=$((after - before))
    hz=$(getconf CLK_TCK)
    R_TPS=$(awk -v n="$turns" -v s="$elapsed" 'BEGIN { printf "%.0f", n / s }')
    R_P50=$(ms "$(sed -n 's/.* p50_us=\([0-9]*\).*/\1/p' <<<" $line")")
    R_P99=$(ms "$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' <<<" $line")")
    R_NON2XX=$(sed -n 's/.* non2xx=\([0-9]*\).*/\1/p' <<<" $line")
    R_API_US=$(awk -v t="$((a1 - a0))" -v hz="$hz" -v n="$turns" 'BEGIN { printf "%.0f", n ? t / hz / n * 1e6 : 0 }')
    R_PG_US=$(awk -v t="$((p1 - p0))" -v hz="$hz" -v n="$turns" 'BEGIN { printf "%.0f", n ? t / hz / n * 1e6 : 0 }')
  }

  log "limits and idempotency: four ${R_DURATION}s runs (off, limits, keys, both; $R_USERS users, new conversations)"
  LIMITS=(RATE_LIMIT_RPM=100000000 RATE_LIMIT_TPM=2000000000)
  rows=""
  for mode in off limits keys both; do
    case $mode in
      off) resilience_api; keys=none ;;
      limits) resilience_api "${LIMITS[@]}"; keys=none ;;
      keys) resilience_api; keys=keys ;;
      both) resilience_api "${LIMITS[@]}"; keys=keys ;;
    esac
    resilience_run "$mode" "$keys"
    [ "$mode" = off ] && { off_tps=$R_TPS off_api=$R_API_US off_pg=$R_PG_US; }
    rows+=$(printf '%-24s %7s   %6s / %-7s %7s   %5s / %-5s µs   %s' "$mode" "$R_TPS" "$R_P50" "$R_P99" "$R_NON2XX" \
      "$R_API_US" "$R_PG_US" "$(awk -v a="$off_tps" -v b="$R_TPS" -v da="$((R_API_US - off_api))" -v dp="$((R_PG_US - off_pg))" \
        'BEGIN { if (a > 0 && b > 0) printf "%+.0f%% turns/s, +%.0f µs per turn at saturation; CPU %+d µs chat-api, %+d µs PostgreSQL", 100 * (b - a) / a, 1e6 / b - 1e6 / a, da, dp }')")$'\n'
  done
  cat <<EOF2

== Limits and idempotency: cost per turn ($(nproc) cores; ${CONNECTIONS} connections, ${R_DURATION}s each, new conversations over ${R_USERS} users) ==
(limits: RATE_LIMIT_RPM and RATE_LIMIT_TPM far above the load, so every check runs and none refuses; keys: a unique Idempotency-Key per turn)
mode                     turns/s   p50 / p99 ms     non-2xx   CPU per turn: chat-api / PostgreSQL   against off
${rows}
EOF2
fi
if run_enabled stream; then stream_run; fi

# ===================================================================================
# Run 4 (v1): /v1/chat/completions next to LiteLLM's proxy, same upstream and load
# ===================================================================================
v1_run() {
  local started=$SECONDS model=gpt-4o-mini key=sk-bench-internal-api-key-0123456789
  local workers="${BENCH_LITELLM_WORKERS:-2}" body="$WORK/v1-body.json" api_url ll_url
  LITELLM_VENV=$(need_py_venv litellm "$HERE/litellm-requirements.txt")
  local version
  version=$("$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')
  start_nginx
  # One non-streamed request, the same bytes to both: a short conversation.
  printf '%s' '{"model":"'"$model"'","messages":[{"role":"system","content":"You are a concise assistant for a platform engineering team."},{"role":"user","content":"We are rolling out the new cluster in three stages."},{"role":"assistant","content":"Understood: staging first, then a canary region, then the rest."},{"role":"user","content":"Can you summarise where we are with the Kubernetes rollout and what is still open?"}]}' >"$body"

  # chat-api, provider openai, on the fake upstream's OpenAI-compatible path.
  local api_port metrics_port ll_port
  api_port=$(free_port)
  metrics_port=$(free_port)
  (
    export HOST=127.0.0.1 PORT="$api_port" METRICS_PORT="$metrics_port" INTERNAL_API_KEY="$key" \
      LLM_PROVIDER=openai OPENAI_BASE_URL="http://127.0.0.1:$NGINX_PORT/v1" OPENAI_MODEL="$model" \
      OPENAI_API_KEY=bench-openai-key LOG_FORMAT=json RUST_LOG="$API_RUST_LOG"
    exec "$BIN" serve
  ) >"$WORK/v1-chat-api.log" 2>&1 &
  V1_API_PID=$!
  api_url="http://127.0.0.1:$api_port"

  # LiteLLM's proxy: one model on the same upstream; no database (DATABASE_URL
  # unset), no UI, no callbacks, no spend or error logs, errors-only logging,
  # the bundled model cost map (no fetch at start-up); the master key is the key
  # chat-api takes, so both get the same request bytes. Its uvicorn supervisor
  # kills workers that do not answer its health check within 5 s, which a worker
  # still importing LiteLLM on a busy 2-core machine does not: hence the long
  # --timeout_worker_healthcheck.
  ll_port=$(free_port)
  mkdir -p "$WORK/litellm"
  cat >"$WORK/litellm/config.yaml" <<EOF2
model_list:
  - model_name: $model
    litellm_params:
      model: openai/$model
      api_base: http://127.0.0.1:$NGINX_PORT/v1
      api_key: bench-openai-key
litellm_settings:
  telemetry: false
  set_verbose: false
  callbacks: []
general_settings:
  master_key: $key
  disable_spend_logs: true
  disable_error_logs: true
EOF2
  (
    cd "$WORK/litellm"
    exec env -u DATABASE_URL LITELLM_MODE=PRODUCTION LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True \
      DISABLE_ADMIN_UI=True "$LITELLM_VENV/bin/litellm" --config config.yaml --host 127.0.0.1 --port "$ll_port" \
      --num_workers "$workers" --timeout_worker_healthcheck 600
  ) >"$WORK/litellm/litellm.log" 2>&1 &
  LITELLM_PID=$!
  ll_url="http://127.0.0.1:$ll_port"

  log "/v1: starting chat-api and LiteLLM $version ($workers workers; a minute or more on a busy machine)"
  local deadline=$((SECONDS + ${BENCH_LITELLM_START_SECS:-300}))
  until curl -fsS "$api_url/readyz" >/dev/null 2>&1; do
    kill -0 "$V1_API_PID" 2>/dev/null || { cat "$WORK/v1-chat-api.log" >&2; die "chat-api exited"; }
    [ "$SECONDS" -lt "$deadline" ] || die "chat-api did not become ready"
    sleep 0.1
  done
  # Ready when it answers and every worker has loaded the config (each prints this once).
  until curl -fsS "$ll_url/health/liveliness" >/dev/null 2>&1 &&
    [ "$(grep -c 'Proxy initialized with Config' "$WORK/litellm/litellm.log")" -ge "$workers" ]; do
    kill -0 "$LITELLM_PID" 2>/dev/null || { tail -n 50 "$WORK/litellm/litellm.log" >&2; die "LiteLLM exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 50 "$WORK/litellm/litellm.log" >&2; die "LiteLLM did not become ready"; }
    sleep 0.5
  done

  # One request each by hand, so a broken setup fails here with its answer shown.
  local name url out
  for name in chat-api LiteLLM; do
    url=$api_url; [ "$name" = LiteLLM ] && url=$ll_url
    out=$(curl -sS -X POST "$url/v1/chat/completions" -H 'Content-Type: application/json' \
      -H "Authorization: Bearer $key" -H "X-Client-User-Id: $BENCH_USER" --data-binary @"$body" -w '\n%{http_code}')
    case "$out" in *'"content":"Here is a short summary'*$'\n'200) ;; *) die "$name's /v1/chat/completions failed: $out" ;; esac
  done

  v1_wrk() { # URL SECONDS OUT [QUANTILES_FILE]
    BENCH_V1_QUANTILES="${4:-}" wrk -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" --timeout 10s -s "$HERE/v1.lua" "$1" -- \
      "$body" "$key" "$BENCH_USER" >"$3" 2>&1
  }
  if [ "$WARMUP" -gt 0 ]; then
    log "/v1 warm-up: ${WARMUP}s each at $CONNECTIONS connections"
    v1_wrk "$api_url" "$WARMUP" "$WORK/v1-warmup-api.txt"
    v1_wrk "$ll_url" "$WARMUP" "$WORK/v1-warmup-litellm.txt"
  fi

  # Each gets DURATION seconds in two halves, in the order chat-api, LiteLLM,
  # LiteLLM, chat-api, so neither gets the quieter machine.
  local h1=$((DURATION / 2)) h2 segments
  h2=$((DURATION - h1))
  if [ "$h1" -gt 0 ]; then
    segments="chat-api:$h1 LiteLLM:$h1 LiteLLM:$h2 chat-api:$h2"
  else
    segments="chat-api:$DURATION LiteLLM:$DURATION"
  fi
  local load_before load_after
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  log "/v1: measuring ${DURATION}s each ($segments; $(nproc) cores; load average $load_before)"
  declare -A req=() dur=() non2xx=() sock=() ticks=() busy=() wall=() quant=()
  local seg i=0 secs pids c0 c1 b0 b1 t0 t1 out_file line
  for seg in $segments; do
    name=${seg%%:*} secs=${seg##*:} i=$((i + 1))
    if [ "$name" = chat-api ]; then url=$api_url pids=$V1_API_PID; else url=$ll_url pids="$LITELLM_PID $(descendants "$LITELLM_PID")"; fi
    out_file="$WORK/v1-$i-$name.txt"
    c0=$(cpu_ticks $pids); read -r b0 _ < <(machine_ticks); t0=$(date +%s%N)
    v1_wrk "$url" "$secs" "$out_file" "$WORK/v1-$i-$name.quantiles"
    c1=$(cpu_ticks $pids); read -r b1 _ < <(machine_ticks); t1=$(date +%s%N)
    line=$(grep '^BENCH ' "$out_file") || { cat "$out_file" >&2; die "wrk printed no summary for $name"; }
    req[$name]=$((${req[$name]:-0} + $(field requests)))
    dur[$name]=$((${dur[$name]:-0} + $(field duration_us)))
    non2xx[$name]=$((${non2xx[$name]:-0} + $(field non2xx)))
    sock[$name]=$((${sock[$name]:-0} + $(field connect_errors) + $(field read_errors) + $(field write_errors) + $(field timeouts)))
    ticks[$name]=$((${ticks[$name]:-0} + c1 - c0))
    busy[$name]=$((${busy[$name]:-0} + b1 - b0))
    wall[$name]=$((${wall[$name]:-0} + (t1 - t0) / 1000))
    quant[$name]+="$WORK/v1-$i-$name.quantiles:$(field requests) "
  done
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)

  # Percentile P (ms) of runs merged from their quantile files, each weighted by its request count.
  merged_ms() { # P FILE:REQUESTS...
    local p=$1 spec
    shift
    for spec in "$@"; do
      awk -v n="${spec##*:}" '{ print $2, ($1 - prev) / 100 * n; prev = $1 }' "${spec%:*}"
    done | sort -n | awk -v p="$p" '{ v[NR] = $1; w[NR] = $2; t += $2 }
      END { for (i = 1; i <= NR; i++) { c += w[i]; if (c >= t * p / 100 - 1e-9) { printf "%.1f", v[i] / 1000; exit } } print "-" }'
  }
  hwm_kib() { local pid t=0; for pid in "$@"; do t=$((t + $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0))); done; echo "$t"; }
  local ll_workers="" pid
  for pid in $(descendants "$LITELLM_PID"); do
    grep -qF spawn_main "/proc/$pid/cmdline" 2>/dev/null && ll_workers+="$pid "
  done
  declare -A rss=()
  rss[chat-api]=$(hwm_kib "$V1_API_PID")
  rss[LiteLLM]=$(hwm_kib $ll_workers)
  local ll_super; ll_super=$(hwm_kib "$LITELLM_PID")
  local hz; hz=$(getconf CLK_TCK)
  row() { printf '%-32s %22s %22s\n' "$@"; }
  cell() { # NAME: the row values for one server, in the order printed below
    local n=$1 s
    s=$(awk -v d="${dur[$n]}" 'BEGIN { printf "%.3f", d / 1e6 }')
    V_RPS=$(awk -v r="${req[$n]}" -v s="$s" 'BEGIN { printf "%.0f", r / s }')
    # shellcheck disable=SC2086 # a list of FILE:REQUESTS words
    V_LAT="$(merged_ms 50 ${quant[$n]}) / $(merged_ms 99 ${quant[$n]})"
    V_ERR="${non2xx[$n]} (${sock[$n]})"
    V_RSS=$(awk -v k="${rss[$n]}" 'BEGIN { printf "%.1f", k / 1024 }')
    V_CPU=$(awk -v t="${ticks[$n]}" -v hz="$hz" -v r="${req[$n]}" 'BEGIN { printf "%.1f (%.2f)", t / hz, r ? t / hz / r * 1000 : 0 }')
    V_BUSY=$(awk -v t="${busy[$n]}" -v hz="$hz" -v w="${wall[$n]}" 'BEGIN { printf "%.2f", t / hz / (w / 1e6) }')
  }
  cell chat-api; local a=("$V_RPS" "$V_LAT" "$V_ERR" "$V_RSS" "$V_CPU" "$V_BUSY")
  cell LiteLLM; local b=("$V_RPS" "$V_LAT" "$V_ERR" "$V_RSS" "$V_CPU" "$V_BUSY")
  cat <<EOF2

== /v1/chat/completions: chat-api next to LiteLLM's proxy ($(nproc) cores) ==
load:        ${CONNECTIONS} connections, ${THREADS} wrk threads, ${DURATION}s each after ${WARMUP}s warm-up each, in turns ($segments)
request:     the same $(wc -c <"$body") bytes to both (model $model, 4 messages, non-streamed); the same nginx upstream
LiteLLM:     $version, uvicorn with $workers workers, no database, no callbacks, LITELLM_LOG=ERROR
chat-api:    LLM_PROVIDER=openai, RUST_LOG=$API_RUST_LOG
machine:     load average $load_before before, $load_after after
EOF2
  row "" "chat-api" "LiteLLM $version"
  row "requests/s" "${a[0]}" "${b[0]}"
  row "latency p50 / p99 (ms)" "${a[1]}" "${b[1]}"
  row "non-2xx (socket errors)" "${a[2]}" "${b[2]}"
  row "peak RSS (MiB)" "${a[3]}" "${b[3]}"
  row "CPU s (ms per request)" "${a[4]}" "${b[4]}"
  row "whole machine busy (cores)" "${a[5]}" "${b[5]}"
  echo "(LiteLLM's RSS is the sum over its $workers workers' peaks; its supervisor, which serves no request, held $(awk -v k="$ll_super" 'BEGIN { printf "%.1f", k / 1024 }') MiB more; CPU counts all its processes)"
  log "/v1 run took $((SECONDS - started)) s"
  stop_litellm
  kill -TERM "$V1_API_PID" 2>/dev/null || true
  wait "$V1_API_PID" 2>/dev/null || true
  V1_API_PID=""
}
if run_enabled v1; then v1_run; fi
