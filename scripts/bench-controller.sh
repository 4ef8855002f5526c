#!/usr/bin/env bash
# The controller at scale, on a real API server (not part of scripts/test.sh):
#
#   * its own test control plane (scripts/k8s-testenv.sh, K8S_TESTENV_NAME=bench
#     unless set; a /16 Service range; kube-apiserver without its own periodic
#     writes, see below), stopped at exit unless it was already running;
#   * the release build of chat-controller (leader election off, one namespace,
#     BENCH_CONTROLLER_ARGS added to its flags), and of the bench driver
#     (services/chat-controller/examples/bench_controller.rs);
#   * N ChatBackends (BENCH_CHATBACKENDS, 1000) created at once; the driver plays
#     the kubelet and the Job/Deployment controllers (Job success, rolled-out
#     Deployments, as the integration tests do) and waits until all are Ready,
#     printing progress every 10 s, then the requests of the convergence by verb
#     and resource and each process's CPU time;
#   * then a steady-state window of BENCH_WINDOW seconds (the controller's
#     --resync-secs is BENCH_RESYNC, 30: every ChatBackend is reconciled in the
#     window) measured from the API server's apiserver_request_total and the
#     controller's reconcile counter, and the controller's peak RSS.
#
# The window counts only what the controller causes. apiserver_request_total has
# no client label, so the window is made quiet of every other client instead:
#   - kube-controller-manager (still catching up after the convergence: endpoint
#     slices and endpoints of 1,000 Services, PDB status, "NoPods" Events, at its
#     client rate limit of 20/s) is paused with SIGSTOP from the end of the
#     convergence to the end of the window, and resumed (SIGCONT) after it;
#   - kube-apiserver runs with --endpoint-reconciler-type=none and without the
#     APIServerIdentity feature (K8S_TESTENV_APISERVER_ARGS), so it does not write
#     its identity Lease and the `kubernetes` Service's endpoints every 10 s;
#   - the driver writes only in reaction to the controller's writes.
# The window starts once nobody has written for 10 s (the end of the convergence
# is not steady state; the driver prints what was written meanwhile). The
# controller runs throughout: every request it makes in the window is counted,
# and the driver prints the window's requests by verb and resource.
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
# The API server's own periodic writes (its identity Lease every 10 s; the `kubernetes`
# Service's endpoints every 10 s, which fail on a loopback address anyway) would be counted in
# the steady-state window: a plane started here runs without them.
export K8S_TESTENV_APISERVER_ARGS="${K8S_TESTENV_APISERVER_ARGS-"--endpoint-reconciler-type=none --feature-gates=APIServerIdentity=false,UnknownVersionInteroperabilityProxy=false"}"
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
up=$(bash scripts/k8s-testenv.sh up)
eval "$up"
export KUBECONFIG

controller_pid=""
kcm_pid=""
cleanup() {
  set +e
  # The driver pauses kube-controller-manager for the window; never leave it stopped.
  [ -n "$kcm_pid" ] && kill -CONT "$kcm_pid" 2>/dev/null
  [ -n "$controller_pid" ] && kill "$controller_pid" 2>/dev/null && wait "$controller_pid" 2>/dev/null
  [ "$was_up" = 0 ] && bash scripts/k8s-testenv.sh down >/dev/null 2>&1
}
trap cleanup EXIT

# The CRD (generated from the controller's types).
"$(bash scripts/k8s-testenv.sh env | sed -n 's/^export K8S_TESTENV_BIN=//p')/kubectl" apply --server-side --force-conflicts \
  -f manifests/crd/chatbackends.colloquy.dev.yaml >/dev/null

log "starting chat-controller (namespace $NS, resync ${RESYNC}s)"
read -r -a controller_args <<<"${BENCH_CONTROLLER_ARGS:-}"
RUST_LOG="${RUST_LOG:-warn}" "$OUT/chat-controller" \
  --namespace "$NS" --leader-election=false --resync-secs "$RESYNC" --image-resolve-secs 0 \
  --http-addr "127.0.0.1:$PORT" --log-format json --default-image registry.test/chat-api:bench \
  "${controller_args[@]}" \
  >"${TMPDIR:-/tmp}/bench-controller.log" 2>&1 &
controller_pid=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done

# The plane's processes, whose CPU time the driver reports per phase.
# (the plane's run directory is where k8s-testenv.sh wrote the KUBECONFIG and the pid files)
run_dir="$(dirname "$KUBECONFIG")"
cpu_pids=""
for c in etcd kube-apiserver kube-controller-manager; do
  [ -f "$run_dir/$c.pid" ] && cpu_pids="$cpu_pids${cpu_pids:+,}$c=$(cat "$run_dir/$c.pid")"
done
export BENCH_CPU_PIDS="$cpu_pids"
# Paused (SIGSTOP) from the settle phase to the end of the window, resumed after.
kcm_pid="$(cat "$run_dir/kube-controller-manager.pid" 2>/dev/null || true)"
export BENCH_PAUSE_PIDS="${kcm_pid:+kube-controller-manager=$kcm_pid}"

log "creating $COUNT ChatBackends; steady-state window ${WINDOW}s"
"$OUT/examples/bench_controller" "$COUNT" "http://127.0.0.1:$PORT/metrics" "$controller_pid" "$WINDOW" "$NS"
