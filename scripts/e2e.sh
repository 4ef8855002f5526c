#!/usr/bin/env bash
# The end-to-end suite on a real node (part of scripts/test.sh): the node
# (`scripts/k8s-testenv.sh up --node`), PostgreSQL on the host reachable from pods, the images built
# from the project's Dockerfile (scripts/images.sh) imported into the node's containerd, then
# `go test ./e2e/` (tools/k8s-testenv/e2e). At the end the node is stopped and the machine cleaned
# (`down`), unless E2E_KEEP=1.
#
#   scripts/e2e.sh [--no-cargo]    --no-cargo: take the chat-api/chat-controller binaries already in
#                                  $CARGO_TARGET_DIR/debug (test.sh, right after `cargo test`)
#
# Environment: K8S_TESTENV_NAME (the plane; with a node it runs every controller, so a plane of the
# same name without a node is restarted), COLLOQUY_E2E_PG_PORT (default 55450), E2E_KEEP=1,
# E2E_RUN (go test -run filter, default TestE2E).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# shellcheck source=../tools/k8s-testenv/node.env
. "$REPO_ROOT/tools/k8s-testenv/node.env"
cd "$REPO_ROOT"

t0=$(date +%s)
cargo_flag=()
[ "${1:-}" = --no-cargo ] && cargo_flag=(--no-cargo)
need_debs postgresql postgresql-client
need_go

PG_PORT="${COLLOQUY_E2E_PG_PORT:-55450}"
cleanup() {
  local rc=$?
  set +e
  COLLOQUY_PG_PORT="$PG_PORT" scripts/pg.sh stop >/dev/null 2>&1
  if [ "${E2E_KEEP:-}" = 1 ]; then log "E2E_KEEP=1: the node stays up"; else bash scripts/k8s-testenv.sh down; fi
  exit $rc
}
trap cleanup EXIT

log "node binaries"
bash scripts/k8s-testenv.sh build --node
t_build=$(date +%s)

log "images (buildah bud of the Dockerfile's runtime stages)"
images="$(bash scripts/images.sh build "${cargo_flag[@]}")"
eval "$images"
t_images=$(date +%s)

log "starting the node"
up="$(bash scripts/k8s-testenv.sh up --node)"
eval "$up"
export KUBECONFIG
eval "$(bash scripts/k8s-testenv.sh env)"
t_up=$(date +%s)
RUN_DIR="$(dirname "$KUBECONFIG")"
SOCK="$RUN_DIR/node/containerd/containerd.sock"

log "PostgreSQL for the cluster on $NODE_IP:$PG_PORT (pods reach it through a Service without selector)"
pg="$(COLLOQUY_PG_PORT="$PG_PORT" COLLOQUY_PG_FAST=1 COLLOQUY_PG_RESET=1 COLLOQUY_PG_LISTEN="127.0.0.1,$NODE_IP" \
  COLLOQUY_PG_ALLOW_CIDR="$POD_CIDR" scripts/pg.sh start)"
PG_URL="$(sed -n 's/^export DATABASE_URL=//p' <<<"$pg")"

log "importing the images into the node's containerd"
bash scripts/images.sh import "$SOCK" "$CHAT_API_ARCHIVE" "$CONTROLLER_ARCHIVE" "$CHAT_API_NEXT_ARCHIVE" "$CLIENT_ARCHIVE"
t_import=$(date +%s)

log "running the e2e suite (tools/k8s-testenv/e2e)"
(cd tools/k8s-testenv && \
  E2E_CHART="$REPO_ROOT/charts/colloquy" E2E_CHAT_API_IMAGE="$CHAT_API_IMAGE" E2E_CONTROLLER_IMAGE="$CONTROLLER_IMAGE" \
  E2E_CHAT_API_NEXT_IMAGE="$CHAT_API_NEXT_IMAGE" E2E_NEXT_MIGRATION="$CHAT_API_NEXT_MIGRATION" \
  E2E_CLIENT_IMAGE="$CLIENT_IMAGE" E2E_CONTAINERD_SOCK="$SOCK" E2E_PG_URL="$PG_URL" \
  E2E_PG_HOST="$NODE_IP" E2E_PG_PORT="$PG_PORT" \
  GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
  go test -count=1 -v -timeout 25m -run "${E2E_RUN:-TestE2E}" ./e2e/)
t_end=$(date +%s)
log "e2e timings: node binaries $((t_build - t0))s, images $((t_images - t_build))s, node up $((t_up - t_images))s, pg+import $((t_import - t_up))s, suite $((t_end - t_import))s, total $((t_end - t0))s"
