#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine with Colloquy installed by Helm, for trying it out:
#
#   scripts/cluster.sh up      the node (scripts/k8s-testenv.sh up --node), PostgreSQL on the host,
#                              the images built from the Dockerfile, `helm install colloquy` with the
#                              mock-provider ChatBackend `demo` in namespace colloquy-demo; prints
#                              commands to try, last line: export KUBECONFIG=<path>
#   scripts/cluster.sh down    undo all of it (release, node, PostgreSQL and its data)
#
#   eval "$(scripts/cluster.sh up)"; kubectl get cb -A; ...; scripts/cluster.sh down
#
# Needs root (the node changes bridges, iptables, routes) and about 25 min the first time on 2 cores
# (Go and Rust builds, all cached in ~/.cache/colloquy); about 1 min after that.
# Environment: COLLOQUY_CLUSTER_PG_PORT (default 55451).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# shellcheck source=../tools/k8s-testenv/node.env
. "$REPO_ROOT/tools/k8s-testenv/node.env"
cd "$REPO_ROOT"

export K8S_TESTENV_NAME=cluster
unset K8S_TESTENV_DIR
PG_PORT="${COLLOQUY_CLUSTER_PG_PORT:-55451}"
PG_DIR="/var/tmp/colloquy-pg-$PG_PORT"
NS=colloquy-demo
KEY=demo-internal-api-key-change-me

up() {
  local t0; t0=$(date +%s)
  need_go
  need_rust
  need_debs postgresql postgresql-client
  bash scripts/k8s-testenv.sh build --node
  local images; images="$(bash scripts/images.sh build)"
  eval "$images"
  local up; up="$(bash scripts/k8s-testenv.sh up --node)"
  eval "$up"
  export KUBECONFIG
  eval "$(bash scripts/k8s-testenv.sh env)"
  local sock; sock="$(dirname "$KUBECONFIG")/node/containerd/containerd.sock"
  COLLOQUY_PG_PORT="$PG_PORT" COLLOQUY_PG_LISTEN="127.0.0.1,$NODE_IP" COLLOQUY_PG_ALLOW_CIDR="$POD_CIDR" \
    scripts/pg.sh start >/dev/null
  bash scripts/images.sh import "$sock" "$CHAT_API_ARCHIVE" "$CONTROLLER_ARCHIVE" "$CLIENT_ARCHIVE"

  # PostgreSQL as a user has it: outside the cluster, behind a Service without selector.
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: v1
kind: Service
metadata: {name: postgres, namespace: $NS}
spec:
  ports: [{name: postgres, port: 5432, targetPort: $PG_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: postgres-host
  namespace: $NS
  labels: {kubernetes.io/service-name: postgres}
addressType: IPv4
ports: [{name: postgres, port: $PG_PORT, protocol: TCP}]
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
EOF
  local values; values="$(mktemp)"
  cat > "$values" <<EOF
controller:
  image: {repository: ${CONTROLLER_IMAGE%:*}, tag: ${CONTROLLER_IMAGE##*:}, pullPolicy: Never}
  logFormat: text
chatApi:
  image: {repository: ${CHAT_API_IMAGE%:*}, tag: ${CHAT_API_IMAGE##*:}}
chatBackends:
  - name: demo
    namespace: $NS
    spec:
      replicas: 2
      provider: {mock: {}}
      systemPrompt: You are the Colloquy demo.
    secrets:
      databaseUrl: postgres://postgres:colloquy@postgres.$NS.svc:5432/colloquy
      apiKey: $KEY
EOF
  log "helm install colloquy (namespace colloquy-system) with the ChatBackend demo in $NS"
  helm upgrade --install colloquy charts/colloquy -n colloquy-system --create-namespace -f "$values" --wait --timeout 180s >&2
  rm -f "$values"
  log "waiting for ChatBackend demo to be Ready (migration Job, then 2 chat pods)"
  kubectl -n "$NS" wait --for=condition=Ready --timeout=180s chatbackend/demo >&2
  local ip; ip="$(kubectl -n "$NS" get svc demo -o jsonpath='{.spec.clusterIP}')"
  cat >&2 <<EOF

Colloquy is running on a one-node cluster ($(( $(date +%s) - t0 ))s). Try:

  kubectl get nodes -o wide
  kubectl get chatbackends -A -o wide
  kubectl -n $NS get pods,jobs,svc,pdb
  kubectl -n colloquy-system logs deploy/colloquy-chat-controller
  curl -s http://$ip:8000/api/ai/chat -H 'X-API-Key: $KEY' -H 'Content-Type: application/json' \\
    -d '{"client_user_id": "00000000-0000-4000-8000-000000000001", "user_message": "Hello!"}'
  kubectl -n $NS patch cb demo --type merge -p '{"spec": {"systemPrompt": "Be brief."}}'   # rolls the pods
  psql postgres://postgres:colloquy@127.0.0.1:$PG_PORT/colloquy -c 'SELECT role, content FROM chatbot_user_memory'

kubectl and helm are the cluster's own ($(dirname "$(command -v kubectl)"), put first on PATH by
the lines below). Stop everything: scripts/cluster.sh down
EOF
  bash scripts/k8s-testenv.sh env | grep '^export PATH='
  echo "export KUBECONFIG=$KUBECONFIG"
}

down() {
  bash scripts/k8s-testenv.sh down
  COLLOQUY_PG_PORT="$PG_PORT" scripts/pg.sh stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  log "cluster removed (build caches stay in $COLLOQUY_CACHE_DIR)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
