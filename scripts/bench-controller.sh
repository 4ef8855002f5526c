#!/usr/bin/env bash
# The controller at scale, on a real API server (not part of scripts/test.sh):
#
#   * its own test control plane (scripts/k8s-testenv.sh, K8S_TESTENV_NAME=bench
#     unless set), stopped at exit unless it was already running;
#   * the release build of chat-controller (leader election off, one namespace),
#     and of the bench driver (services/chat-controller/examples/bench_controller.rs);
#   * N ChatBackends (BENCH_CHATBACKENDS, 1000) created at once; the driver plays
#     the kubelet and the Job/Deployment controllers (Job success, rolled-out
#     Deployments, as the integration tests do) and waits until all are Ready;
#   * then a steady-state window of BENCH_WINDOW seconds (the controller's
#     --resync-secs is BENCH_RESYNC, 30: every ChatBackend is reconciled in the
#     window) measured from the API server's apiserver_request_total and the
#     controller's reconcile counter, and the controller's peak RSS.
#
#   scripts/bench-controller.sh
#
# Targets: all Ready in < 60 s, 0 writes and <= 2 requests per steady-state
# reconcile. Last line:
#   controller bench: N ChatBackends Ready in S s; steady-state requests per reconcile R; writes per reconcile W; peak RSS M MiB
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

COUNT="${BENCH_CHATBACKENDS:-1000}"
RESYNC="${BENCH_RESYNC:-30}"
WINDOW="${BENCH_WINDOW:-$((RESYNC + 10))}"
PORT="${BENCH_CONTROLLER_PORT:-18080}"
NS="colloquy-bench-$(date +%s)"
export K8S_TESTENV_NAME="${K8S_TESTENV_NAME:-bench}"
# Each ChatBackend owns a ClusterIP Service: the default /24 range holds 253 of them, and the
# rest would fail with "range is full" (only a plane started here gets this range).
export K8S_TESTENV_SERVICE_CIDR="${K8S_TESTENV_SERVICE_CIDR:-10.0.0.0/16}"
TARGET="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
# BENCH_PROFILE=dev measures the dev build (dependencies at opt-level 1): quicker to build.
PROFILE="${BENCH_PROFILE:-release}"
OUT="$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building chat-controller and the bench driver ($PROFILE)"
  nice -n 10 cargo build --profile "$PROFILE" -q -p chat-controller --bin chat-controller --example bench_controller
fi

was_up=0
if bash scripts/k8s-testenv.sh status >/dev/null 2>&1; then was_up=1; fi
up=$(bash scripts/k8s-testenv.sh up) && eval "$up"
export KUBECONFIG

controller_pid=""
cleanup() {
  set +e
  [ -n "$controller_pid" ] && kill "$controller_pid" 2>/dev/null && wait "$controller_pid" 2>/dev/null
  [ "$was_up" = 0 ] && bash scripts/k8s-testenv.sh down >/dev/null 2>&1
}
trap cleanup EXIT

# The CRD (generated from the controller's types).
"$(bash scripts/k8s-testenv.sh env | sed -n 's/^export K8S_TESTENV_BIN=//p')/kubectl" apply --server-side --force-conflicts \
  -f manifests/crd/chatbackends.colloquy.dev.yaml >/dev/null

log "starting chat-controller (namespace $NS, resync ${RESYNC}s)"
RUST_LOG="${RUST_LOG:-warn}" "$OUT/chat-controller" \
  --namespace "$NS" --leader-election=false --resync-secs "$RESYNC" --image-resolve-secs 0 \
  --http-addr "127.0.0.1:$PORT" --log-format json --default-image registry.test/chat-api:bench \
  >"${TMPDIR:-/tmp}/bench-controller.log" 2>&1 &
controller_pid=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done

log "creating $COUNT ChatBackends; steady-state window ${WINDOW}s"
"$OUT/examples/bench_controller" "$COUNT" "http://127.0.0.1:$PORT/metrics" "$controller_pid" "$WINDOW" "$NS"
