#!/usr/bin/env bash
# Command 2 of the README (and all that .ci/run does): set up every dependency
# and run the whole test suite: formatting, lints, unit and integration tests
# against a real PostgreSQL and a real Kubernetes API server, then the
# end-to-end suite on a real node (containerd, kubelet, images, Helm).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

started=$(date +%s)
# Each stage's wall time, printed at the end: what a CI run spends where.
timings=() stage_name="setup" stage_started=$started
stage() {
  local now; now=$(date +%s)
  timings+=("$stage_name $(( now - stage_started ))s")
  stage_name=$1 stage_started=$now
  [ -z "${2:-}" ] || log "$2"
}
need_debs postgresql openssl ca-certificates python3
need_rust
need_go
# The official OpenAI SDKs that the chat API's `openai_sdk` test drives (cached).
bash scripts/openai-sdk.sh setup

# A throwaway PostgreSQL for the tests: own port and data dir, wiped each run.
export COLLOQUY_PG_PORT="${COLLOQUY_TEST_PG_PORT:-55433}"
export COLLOQUY_PG_FAST=1 COLLOQUY_PG_RESET=1

cleanup() {
  set +e
  [ -n "${K8S_UP:-}" ] && bash scripts/k8s-testenv.sh down >/dev/null 2>&1
  scripts/pg.sh stop >/dev/null 2>&1
}
trap cleanup EXIT

stage fmt "checking formatting"
cargo fmt --all -- --check

eval "$(scripts/pg.sh start)"
export DATABASE_URL

stage k8s-plane "building (or reusing) the Kubernetes test control plane"
bash scripts/k8s-testenv.sh build
K8S_UP=1
up=$(bash scripts/k8s-testenv.sh up) && eval "$up"
export KUBECONFIG
eval "$(bash scripts/k8s-testenv.sh env)"   # KUBEBUILDER_ASSETS, and kubectl/helm on PATH
bash scripts/k8s-testenv.sh smoke

stage chart "chart, manifests and image checks"
bash scripts/chart-test.sh

stage prometheus "Prometheus: rules, promtool unit tests, dashboard and alert queries on a live Prometheus"
bash scripts/prometheus-test.sh

stage clippy "clippy"
cargo clippy --workspace --all-targets -- -D warnings

stage cargo-test "cargo test"
cargo test --workspace --no-fail-fast

stage schemathesis "schemathesis against the live chat API's OpenAPI document (scripts/schemathesis.sh)"
bash scripts/schemathesis.sh

# Last: the loopback plane gives way to the same plane with a real node (every controller runs
# there, which the controller's own tests above must not see), images are built from the
# Dockerfile with the binaries cargo just built, and the chart is installed for real.
stage e2e "end-to-end suite on a real node (scripts/e2e.sh)"
bash scripts/e2e.sh --no-cargo

stage done
log "stage timings: ${timings[*]}"
log "all tests passed in $(( $(date +%s) - started ))s"
