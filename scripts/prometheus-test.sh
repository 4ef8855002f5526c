#!/usr/bin/env bash
# The Prometheus side of the monitoring: the chart's alerts and Grafana dashboard
# against promtool and a real Prometheus (Debian `prometheus`).
#
#   eval "$(scripts/k8s-testenv.sh up)"; scripts/prometheus-test.sh
#
# 1. Renders the chart's PrometheusRule (release `colloquy`, default values plus
#    monitoring.prometheusRule.enabled) and writes its `spec` as a plain rules
#    file: `promtool check rules` on it.
# 2. `promtool test rules tests/prometheus/*.yaml`: each alert firing and not
#    firing on realistic input series; plus the self-test of the expression
#    splitting of tests/prometheus/promcheck.py.
# 3. Live: a chat API (mock provider; migrated into a scratch database created
#    on the server of $DATABASE_URL when exported and dropped at the end, else on
#    a private PostgreSQL from scripts/pg.sh) and chat-controller (watching one
#    fresh namespace of the test control plane in $KUBECONFIG, with two
#    ChatBackends: the mock sample, never Ready without a kubelet, and one whose
#    migration Job the API server rejects, for reconcile errors) are scraped every
#    second by a private Prometheus that also loads the rules. After scripted
#    traffic (200, 400, upstream 502 via /mock-error; whole and streamed
#    turns, so the streaming metrics have data), every dashboard
#    expression and every alert's base expression must return data (not an
#    error, not empty, not only NaN) through /api/v1/query; every rule must be
#    loaded with health "ok". How expressions are derived (Grafana variables,
#    alert base expressions): the docstring of tests/prometheus/promcheck.py.
#
# The Prometheus targets carry the labels the Prometheus Operator would add for
# a ServiceMonitor (namespace, service, pod; job = the chart's metrics Service
# name for the controller), so the alerts' `by (namespace, service)` and
# `job=` selectors see what they see in a cluster.
#
# Needs: KUBECONFIG of a test plane with the ChatBackend CRD (applied here if
# missing), the plane's helm (HELM, else `scripts/k8s-testenv.sh env`), cargo.
# Never starts Debian's prometheus service (stopped and disabled if running).
# Stops everything it started (trap). ~30 s warm. Tunables: PROM_TEST_TRAFFIC_SECS
# (12), PROM_TEST_QUERY_DEADLINE (60), PROM_TEST_PG_PORT (55437, private PostgreSQL).
# Last line: `prometheus checks: N passed, M failed`; exit 1 when any failed.
# shellcheck disable=SC2317,SC2015 # functions run through check(); A && B || C is intended
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT" || exit 1

CHART=charts/colloquy
DASHBOARD="$CHART/dashboards/colloquy.json"
RELEASE=colloquy
TRAFFIC_SECS="${PROM_TEST_TRAFFIC_SECS:-12}"
QUERY_DEADLINE="${PROM_TEST_QUERY_DEADLINE:-60}"

say() { printf '\033[1;34m[prometheus-test]\033[0m %s\n' "$*" >&2; }
PASSED=0 FAILED=0 FAILURES=()
TMP="$(mktemp -d)"
PIDS=() NAMESPACE="" OWN_PG="" SCRATCH_DB="" ADMIN_URL="" PSQL=""

cleanup() {
  set +e
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null && wait "${PIDS[$i]}" 2>/dev/null
  done
  [ -n "$SCRATCH_DB" ] && "$PSQL" "$ADMIN_URL" -qtAc "DROP DATABASE IF EXISTS $SCRATCH_DB WITH (FORCE)" >/dev/null 2>&1
  [ -n "$NAMESPACE" ] && "$KUBECTL" delete namespace "$NAMESPACE" --wait=false --ignore-not-found >/dev/null 2>&1
  if [ -n "$OWN_PG" ]; then
    COLLOQUY_PG_PORT="$OWN_PG" scripts/pg.sh stop >/dev/null 2>&1
    rm -rf "/var/tmp/colloquy-pg-$OWN_PG"
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { PASSED=$((PASSED + 1)); say "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); say "FAIL $1"; }
# check <name> <command...>: runs the command, its output shown on failure.
check() {
  local name="$1"; shift
  if "$@" >"$TMP/check.log" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/       | /' "$TMP/check.log" | tail -n 40 >&2; fi
}
finish() {
  [ "$FAILED" -gt 0 ] && say "failed: ${FAILURES[*]}"
  echo "prometheus checks: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]; exit
}
# wait_http <url> <seconds> [pid]: until the URL answers 2xx (or the process died).
wait_http() {
  local url="$1" n="$(($2 * 5))" pid="${3:-}"
  while [ "$n" -gt 0 ]; do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.2; n=$((n - 1))
  done
  return 1
}
show_log() { say "last lines of $1:"; tail -n 30 "$1" | sed 's/^/       | /' >&2; }

# ---------------------------------------------------------------- tools
need_debs prometheus python3 curl ca-certificates
# The Debian package enables a system service; this test runs its own process only.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  say "stopping and disabling Debian's prometheus service"
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
elif command -v service >/dev/null && service prometheus status >/dev/null 2>&1; then
  say "stopping Debian's prometheus service"
  as_root service prometheus stop >/dev/null 2>&1 || true
fi
PROMETHEUS=/usr/bin/prometheus PROMTOOL=/usr/bin/promtool
[ -x "$PROMETHEUS" ] && [ -x "$PROMTOOL" ] || die "prometheus/promtool missing after installing the Debian package"

# python3 with PyYAML (Debian's python3-yaml, else a venv under the cache).
PY=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  venv="$COLLOQUY_CACHE_DIR/tools/pyyaml-venv"
  if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    say "installing PyYAML into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q --disable-pip-version-check pyyaml >&2 \
      || die "could not install PyYAML (pip install pyyaml into $venv)"
  fi
  PY="$venv/bin/python"
fi
PROMCHECK=tests/prometheus/promcheck.py

TE_BIN="$(scripts/k8s-testenv.sh env 2>/dev/null | sed -n 's/^export K8S_TESTENV_BIN=//p')"
HELM="${HELM:-${TE_BIN:+$TE_BIN/helm}}"
KUBECTL="${KUBECTL:-${TE_BIN:+$TE_BIN/kubectl}}"
[ -n "$HELM" ] && [ -x "$HELM" ] || HELM="$(command -v helm || true)"
[ -n "$HELM" ] || die "helm not found: run scripts/k8s-testenv.sh build (or set HELM)"

# ---------------------------------------------------------------- 1. rules from the chart
RULES="$TMP/colloquy-rules.yaml"
render_rules() {
  "$HELM" template "$RELEASE" "$CHART" --namespace monitoring --set monitoring.prometheusRule.enabled=true \
    >"$TMP/rendered.yaml" || return 1
  "$PY" "$PROMCHECK" rules "$TMP/rendered.yaml" "$RULES" >"$TMP/job" || return 1
  echo "controller job label: $(cat "$TMP/job")"
}
check "PrometheusRule rendered from the chart and extracted" render_rules
[ -s "$RULES" ] || finish
CONTROLLER_JOB="$(cat "$TMP/job")"
check "promtool check rules (chart PrometheusRule)" "$PROMTOOL" check rules "$RULES"

# ---------------------------------------------------------------- 2. unit tests
unit_tests() {
  local f names=()
  for f in tests/prometheus/*.yaml; do cp "$f" "$TMP/" && names+=("$(basename "$f")") || return 1; done
  # The tests name their rules file `colloquy-rules.yaml`, relative to themselves.
  (cd "$TMP" && "$PROMTOOL" test rules "${names[@]}")
}
check "promtool test rules tests/prometheus/*.yaml" unit_tests
# Every alert of the chart must be exercised by the unit tests.
alerts_covered() {
  local a bad=0
  for a in $(sed -n 's/^ *- alert: *//p' "$RULES"); do
    grep -q "alertname: $a\$" tests/prometheus/*.yaml || { echo "no unit test for $a"; bad=1; }
  done
  return "$bad"
}
check "every alert has promtool unit tests" alerts_covered
check "alert base-expression splitting (promcheck.py selftest)" "$PY" "$PROMCHECK" selftest
check "dashboard is valid JSON with expressions" bash -c "'$PY' '$PROMCHECK' exprs '$RULES' '$DASHBOARD' >'$TMP/exprs.jsonl' && test -s '$TMP/exprs.jsonl'"

# ---------------------------------------------------------------- 3. live stack
if [ -z "${KUBECONFIG:-}" ] || [ ! -f "${KUBECONFIG:-}" ]; then
  # shellcheck disable=SC2016 # literal command for the user
  say 'KUBECONFIG is not set (or missing): the live checks need the test control plane for chat-controller; run eval "$(scripts/k8s-testenv.sh up)" first'
  fail "KUBECONFIG of a test control plane"
  finish
fi
[ -n "$KUBECTL" ] && [ -x "$KUBECTL" ] || KUBECTL="$(command -v kubectl || true)"
[ -n "$KUBECTL" ] || die "kubectl not found: run scripts/k8s-testenv.sh build (or set KUBECTL)"
kc() { "$KUBECTL" --request-timeout=30s "$@"; }
kc get --raw /readyz >/dev/null 2>&1 || { fail "API server of $KUBECONFIG ready"; finish; }

say "building chat-api and chat-controller"
cargo build -q -p chat-api -p chat-controller || { fail "cargo build -p chat-api -p chat-controller"; finish; }
CHAT_API="$CARGO_TARGET_DIR/debug/chat-api" CONTROLLER="$CARGO_TARGET_DIR/debug/chat-controller"

# PostgreSQL: a scratch database on the server of an exported DATABASE_URL (the
# suite's; that database itself when one cannot be created), else a private server.
if [ -n "${DATABASE_URL:-}" ]; then
  PSQL="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1)"
  db="colloquy_prometheus_test_$$"
  if [ -n "$PSQL" ] && [[ "$DATABASE_URL" != *\?* ]] \
    && "$PSQL" "$DATABASE_URL" -qtAc "CREATE DATABASE $db" >/dev/null 2>&1; then
    SCRATCH_DB="$db" ADMIN_URL="$DATABASE_URL"
    DATABASE_URL="${DATABASE_URL%/*}/$db"
  else
    say "using DATABASE_URL's database itself (could not create a scratch database)"
  fi
else
  OWN_PG="${PROM_TEST_PG_PORT:-55437}"
  pg_out="$(COLLOQUY_PG_PORT="$OWN_PG" COLLOQUY_PG_FAST=1 COLLOQUY_PG_RESET=1 scripts/pg.sh start)" \
    || { fail "PostgreSQL started"; finish; }
  eval "$(tail -n 1 <<<"$pg_out")"
fi
export DATABASE_URL

API_PORT="$(free_port)" METRICS_PORT="$(free_port)" CTRL_PORT="$(free_port)" PROM_PORT="$(free_port)"
API_KEY="prometheus-test-key-$RANDOM$RANDOM"
api_env=(env DATABASE_URL="$DATABASE_URL" INTERNAL_API_KEY="$API_KEY" LLM_PROVIDER=mock HOST=127.0.0.1
  PORT="$API_PORT" METRICS_PORT="$METRICS_PORT" LOG_FORMAT=json RUST_LOG=warn SHUTDOWN_DRAIN_SECS=0)
check "chat-api migrate" "${api_env[@]}" "$CHAT_API" migrate
"${api_env[@]}" "$CHAT_API" serve >"$TMP/chat-api.log" 2>&1 &
PIDS+=($!)
if wait_http "http://127.0.0.1:$METRICS_PORT/metrics" 60 "${PIDS[-1]}"; then pass "chat-api serving (metrics on :$METRICS_PORT)"
else fail "chat-api serving"; show_log "$TMP/chat-api.log"; finish; fi

# chat-controller on one fresh namespace: the mock sample (never Ready here: no
# kubelet runs its pods) and `broken`, whose resource requests exceed its limits:
# the CRD accepts it, the API server rejects its migration Job (422), so the
# controller counts reconcile errors (reason="invalid").
setup_namespace() {
  kc get crd chatbackends.colloquy.dev >/dev/null 2>&1 || kc apply -f manifests/crd/ || return 1
  crd_established chatbackends.colloquy.dev || return 1
  NAMESPACE="prom-test-$(date +%s)-$RANDOM"
  kc create namespace "$NAMESPACE" || return 1
  kc apply -n "$NAMESPACE" -f manifests/samples/mock.yaml || return 1
  kc apply -n "$NAMESPACE" -f - <<'YAML'
apiVersion: colloquy.dev/v1alpha1
kind: ChatBackend
metadata:
  name: broken
spec:
  replicas: 1
  provider:
    mock: {}
  databaseUrlSecretRef: {name: demo-database, key: url}
  apiKeySecretRef: {name: demo-api-key, key: key}
  resources:
    requests: {cpu: "2", memory: 64Mi}
    limits: {cpu: "1", memory: 64Mi}
YAML
}
check "namespace with ChatBackends demo and broken" setup_namespace
[ -n "$NAMESPACE" ] || finish
"$CONTROLLER" --namespace "$NAMESPACE" --leader-election=false --http-addr "127.0.0.1:$CTRL_PORT" \
  --log-format json >"$TMP/controller.log" 2>&1 &
PIDS+=($!)
if wait_http "http://127.0.0.1:$CTRL_PORT/readyz" 60 "${PIDS[-1]}"; then pass "chat-controller running (metrics on :$CTRL_PORT)"
else fail "chat-controller running"; show_log "$TMP/controller.log"; finish; fi

# Prometheus: own config, storage and port; the chart's rules loaded.
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $RULES
scrape_configs:
  - job_name: $NAMESPACE-demo
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
        labels: {namespace: "$NAMESPACE", service: demo, pod: demo-0}
  - job_name: $CONTROLLER_JOB
    static_configs:
      - targets: ["127.0.0.1:$CTRL_PORT"]
        labels: {namespace: colloquy-system, service: $CONTROLLER_JOB, pod: chat-controller-0}
EOF
check "promtool check config" "$PROMTOOL" check config "$TMP/prometheus.yml"
"$PROMETHEUS" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PIDS+=($!)
PROM="http://127.0.0.1:$PROM_PORT"
if wait_http "$PROM/-/ready" 60 "${PIDS[-1]}"; then pass "Prometheus ready on :$PROM_PORT"
else fail "Prometheus ready"; show_log "$TMP/prometheus.log"; finish; fi

# Scripted traffic: successful chats, 400s (empty message) and upstream 502s,
# whole and streamed (a streamed /mock-error ends in an `error` event).
traffic() {
  local end=$(($(date +%s) + TRAFFIC_SECS)) i=0 msg code stream
  : >"$TMP/codes"
  while [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1))
    case $((i % 4)) in
      0) msg="" ;;
      1) msg="/mock-error please fail" ;;
      *) msg="hello number $i" ;;
    esac
    case $((i % 8)) in 2 | 5 | 6) stream=true ;; *) stream=false ;; esac
    code="$(curl -s -N -o /dev/null -w '%{http_code}' --max-time 10 -X POST "http://127.0.0.1:$API_PORT/api/ai/chat" \
      -H 'Content-Type: application/json' -H "X-API-Key: $API_KEY" \
      -d "{\"user_message\":\"$msg\",\"client_user_id\":\"2f1a4d4e-8c36-4c5c-9b1b-6a3b6a4a1b2c\",\"stream\":$stream}")"
    echo "$code" >>"$TMP/codes"
    sleep 0.1
  done
  curl -s -o /dev/null "http://127.0.0.1:$API_PORT/health"
  echo "status codes: $(sort "$TMP/codes" | uniq -c | tr '\n' ' ')"
  grep -qx 200 "$TMP/codes" && grep -qx 400 "$TMP/codes" && grep -qx 502 "$TMP/codes"
}
say "sending chat traffic for ${TRAFFIC_SECS}s"
check "traffic produced 200, 400 and 502 (upstream error) responses" traffic

# Every expression, until all return data or the deadline passes.
say "querying $(wc -l <"$TMP/exprs.jsonl") expressions (waiting up to ${QUERY_DEADLINE}s for data)"
"$PY" "$PROMCHECK" query "$PROM" "$TMP/exprs.jsonl" "$QUERY_DEADLINE" >"$TMP/query.out" 2>&1
while IFS= read -r line; do
  case "$line" in
    "ok   "*) pass "query ${line#ok   }" ;;
    FAIL*) fail "query ${line#FAIL }" ;;
  esac
done <"$TMP/query.out"
grep -qE '^[0-9]+ [0-9]+$' "$TMP/query.out" || { fail "promcheck.py query ran"; sed 's/^/       | /' "$TMP/query.out" >&2; }
if grep -q '^FAIL' "$TMP/query.out"; then
  say "series Prometheus has:"
  curl -s "$PROM/api/v1/label/__name__/values" | tr ',' '\n' | sed 's/^/       | /' >&2
  show_log "$TMP/controller.log"
fi
check "every rule loaded by Prometheus with health ok" "$PY" "$PROMCHECK" rules-health "$PROM" "$RULES"
scrape_health() {
  curl -fsS "$PROM/api/v1/targets" | "$PY" -c '
import json, sys
ts = json.load(sys.stdin)["data"]["activeTargets"]
for t in ts: print(t["labels"]["job"], t["health"], t.get("lastError", ""))
sys.exit(0 if ts and all(t["health"] == "up" for t in ts) else 1)'
}
check "both targets scraped (health up)" scrape_health

finish
