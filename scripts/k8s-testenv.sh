#!/usr/bin/env bash
# A real Kubernetes control plane for tests, built from Go modules (no Docker).
#
#   scripts/k8s-testenv.sh build    build (or reuse) kube-apiserver, kube-controller-manager,
#                                   kubectl, etcd and helm into the version-keyed cache
#   scripts/k8s-testenv.sh build --node   also kubelet, kube-scheduler, kube-proxy, CoreDNS, the
#                                   CNI plugins and the pause binary (same cache key)
#   scripts/k8s-testenv.sh up       start etcd + kube-apiserver + kube-controller-manager on free
#                                   loopback ports, install the monitoring.coreos.com CRDs;
#                                   last (and only) stdout line: export KUBECONFIG=<path>
#   scripts/k8s-testenv.sh up --node   the same plane with a real node on this machine (root): the
#                                   API server on the node address, every controller, containerd,
#                                   kubelet, kube-scheduler, kube-proxy (iptables), CNI and CoreDNS
#                                   (scripts/k8s-node.sh; addresses in tools/k8s-testenv/node.env).
#                                   One node per machine. `down` undoes everything it changed.
#   scripts/k8s-testenv.sh smoke    run the smoke test (tools/k8s-testenv/smoke) against the plane
#   scripts/k8s-testenv.sh status   show the plane's processes and health (exit 1 if not healthy)
#   scripts/k8s-testenv.sh env      print export lines: KUBEBUILDER_ASSETS, K8S_TESTENV_BIN, PATH
#                                   (and KUBECONFIG when a plane is running)
#   scripts/k8s-testenv.sh down     stop the plane by PID and remove its state
#
# Typical use:
#   scripts/k8s-testenv.sh build && eval "$(scripts/k8s-testenv.sh up)" && scripts/k8s-testenv.sh smoke
#   ...tests...; scripts/k8s-testenv.sh down
#
# Environment:
#   COLLOQUY_CACHE_DIR   cache root (default ~/.cache/colloquy); binaries go to
#                        $COLLOQUY_CACHE_DIR/k8s-testenv/<key>/bin
#   K8S_TESTENV_NAME     name of the plane (default "default"); state in
#                        $COLLOQUY_CACHE_DIR/k8s-testenv/run/<name>/
#   K8S_TESTENV_DIR      explicit state dir (overrides K8S_TESTENV_NAME)
#   K8S_TESTENV_CONTROLLERS  --controllers of kube-controller-manager (default: all but the
#                        workload controllers, since no kubelet/scheduler runs)
#   K8S_TESTENV_TIMEOUT  seconds to wait for each component (default 120)
#   K8S_TESTENV_SERVICE_CIDR  Service range of the plane (default SERVICE_CIDR of tools/k8s-testenv/node.env, a /24)
#   K8S_TESTENV_APISERVER_ARGS  extra kube-apiserver flags (split on spaces), e.g. the controller
#                        bench's, which silence the API server's own periodic writes
#
# `up` when a plane is already running in the same state dir: if it is healthy it is reused
# (and the same KUBECONFIG line is printed); otherwise its leftovers are stopped and removed
# and a fresh plane is started.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TE_DIR="$REPO_ROOT/tools/k8s-testenv"
# shellcheck source=../tools/k8s-testenv/versions.env
. "$TE_DIR/versions.env"
# shellcheck source=../tools/k8s-testenv/node.env
. "$TE_DIR/node.env"
# The Service range of a plane: node.env's (a /24: 253 Services) unless overridden, e.g. by the
# controller bench, whose 1,000 ChatBackends each own a Service.
SERVICE_CIDR="${K8S_TESTENV_SERVICE_CIDR:-$SERVICE_CIDR}"
# Extra kube-apiserver flags (only a plane started with them has them).
read -r -a APISERVER_EXTRA_ARGS <<<"${K8S_TESTENV_APISERVER_ARGS:-}"

CACHE_ROOT="${COLLOQUY_CACHE_DIR:-$HOME/.cache/colloquy}/k8s-testenv"
RUN_DIR="${K8S_TESTENV_DIR:-$CACHE_ROOT/run/${K8S_TESTENV_NAME:-default}}"
TIMEOUT="${K8S_TESTENV_TIMEOUT:-120}"
DEFAULT_CONTROLLERS='*,-deployment-controller,-replicaset-controller,-job-controller,-cronjob-controller,-statefulset-controller,-daemonset-controller'
CONTROLLERS="${K8S_TESTENV_CONTROLLERS:-$DEFAULT_CONTROLLERS}"
# CRDs of the Prometheus Operator installed by `up` (files of the prometheus-operator Go module).
PROM_CRDS=(servicemonitors podmonitors prometheusrules)
# Bump when the way binaries are built changes, so the cache key changes.
BUILD_FORMAT=1

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[k8s-testenv] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- dependencies
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"; fi
}

APT_UPDATED=0
ensure_cmd() { # ensure_cmd <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "$1 is missing and apt-get is not available"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update (to install $2)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "installing Debian package $2"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}

ensure_go() {
  command -v go >/dev/null 2>&1 && return 0
  [ -x /usr/local/go/bin/go ] && { export PATH="/usr/local/go/bin:$PATH"; return 0; }
  die "the Go toolchain (go 1.26+) is required to build the control plane"
}

# ---------------------------------------------------------------- cache key
hash_inputs() {
  {
    echo "format=$BUILD_FORMAT"
    (cd "$TE_DIR" && cat versions.env go.mod go.sum etcd/go.mod etcd/go.sum etcd/main.go helm/go.mod helm/go.sum \
       cni/go.mod cni/go.sum coredns/go.mod coredns/go.sum coredns/main.go)
  } | sha256sum | cut -c1-12
}

compute_key() {
  KEY="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_$(hash_inputs)"
  KEY_DIR="$CACHE_ROOT/$KEY"
  BIN_DIR="$KEY_DIR/bin"
  CRD_DIR="$KEY_DIR/crds"
  NODE_BIN_DIR="$KEY_DIR/node"
}

BINARIES=(kube-apiserver kube-controller-manager kubectl etcd helm)
built() {
  [ -f "$KEY_DIR/.complete" ] || return 1
  local b; for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
  local c; for c in "${PROM_CRDS[@]}"; do [ -s "$CRD_DIR/monitoring.coreos.com_$c.yaml" ] || return 1; done
}

# Binaries of the node (`build --node`, `up --node`): kubelet, kube-scheduler, kube-proxy and
# CoreDNS, the CNI plugins (in node/cni) and the sandbox ("pause") binary.
NODE_BINARIES=(kubelet kube-scheduler kube-proxy coredns pause cni/bridge cni/host-local cni/loopback cni/portmap)
node_built() {
  [ -f "$NODE_BIN_DIR/.complete" ] || return 1
  local b; for b in "${NODE_BINARIES[@]}"; do [ -x "$NODE_BIN_DIR/$b" ] || return 1; done
}

# ---------------------------------------------------------------- build
cmd_build() {
  local node=0
  [ "${1:-}" = --node ] && node=1
  cmd_build_plane
  if [ "$node" = 1 ]; then compute_key; node_built || cmd_build_node; fi
}

# The node's binaries, from the same Go module set (kubelet, kube-scheduler, kube-proxy are tools of
# go.mod like kube-apiserver), CNI plugins (cni/go.mod), CoreDNS with the plugins cluster DNS needs
# (coredns/), and the pause binary compiled from the C source in the k8s.io/kubernetes module.
cmd_build_node() {
  compute_key
  ensure_go
  ensure_cmd musl-gcc musl-tools
  mkdir -p "$CACHE_ROOT"
  exec 8>"$CACHE_ROOT/.build-node-$KEY.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 8
    if node_built; then log "node binaries built by a concurrent run (reusing $NODE_BIN_DIR)"; return 0; fi
  fi
  local start tmp minor kld p
  start=$(date +%s)
  tmp="$KEY_DIR/node.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp/cni"
  trap 'rm -rf "$tmp"' EXIT
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  kld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local gf="-mod=readonly -buildvcs=false"
  log "building kubelet, kube-scheduler, kube-proxy $KUBE_VERSION"
  (cd "$TE_DIR" && GOFLAGS="$gf" go build -trimpath -ldflags "$kld" -o "$tmp/" \
     k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy) \
    || die "go build of the node binaries of k8s.io/kubernetes $KUBE_VERSION failed"
  log "building CNI plugins (github.com/containernetworking/plugins)"
  (cd "$TE_DIR/cni" && GOFLAGS="$gf" go build -trimpath -ldflags "-s -w" -o "$tmp/cni/" \
     github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/main/loopback \
     github.com/containernetworking/plugins/plugins/ipam/host-local github.com/containernetworking/plugins/plugins/meta/portmap) \
    || die "go build of the CNI plugins failed"
  log "building CoreDNS"
  (cd "$TE_DIR/coredns" && GOFLAGS="$gf" go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" .) \
    || die "go build of CoreDNS failed"
  log "compiling the pause binary (k8s.io/kubernetes@$KUBE_VERSION build/pause/linux/pause.c) with musl-gcc -static"
  local src
  src="$(cd "$TE_DIR" && GOFLAGS="$gf" go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  [ -f "$src" ] || die "pause.c not found at $src"
  musl-gcc -Os -static -Wall -Werror -DVERSION="$KUBE_VERSION-colloquy" -o "$tmp/pause" "$src" || die "compiling pause.c failed"
  strip "$tmp/pause" 2>/dev/null || true
  rm -rf "$NODE_BIN_DIR"
  mv "$tmp" "$NODE_BIN_DIR"
  trap - EXIT
  printf 'built=%s seconds=%s\n' "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))" > "$NODE_BIN_DIR/.complete"
  log "node binaries built in $(( $(date +%s) - start ))s into $NODE_BIN_DIR"
}

cmd_build_plane() {
  compute_key
  if built; then log "binaries up to date (reusing $BIN_DIR)"; return 0; fi
  ensure_go
  ensure_cmd curl curl
  # A version bump in versions.env regenerates the replace block (normally done by hand and committed).
  local pinned
  pinned="$(cd "$TE_DIR" && GOFLAGS= go mod edit -json | awk -F'"' '/"Path": "k8s.io\/kubernetes"/{getline; print $4; exit}')"
  if [ "$pinned" != "$KUBE_VERSION" ]; then
    log "go.mod pins k8s.io/kubernetes ${pinned:-<none>}, versions.env says $KUBE_VERSION: regenerating replaces"
    "$TE_DIR/gen-replaces.sh"
    compute_key
    if built; then log "binaries up to date (reusing $BIN_DIR)"; return 0; fi
  fi

  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.build-$KEY.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 9
    if built; then log "binaries built by a concurrent run (reusing $BIN_DIR)"; return 0; fi
  fi

  local start tmp minor helm_k8s_minor
  start=$(date +%s)
  tmp="$KEY_DIR/bin.tmp.$$"
  rm -rf "$tmp" "$KEY_DIR/crds.tmp.$$"; mkdir -p "$tmp" "$KEY_DIR/crds.tmp.$$"
  trap 'rm -rf "$tmp" "$KEY_DIR/crds.tmp.$$"' EXIT
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local kld="-s -w"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done

  log "building kube-apiserver, kube-controller-manager, kubectl $KUBE_VERSION (cold: many minutes on 2 cores)"
  (cd "$TE_DIR" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "$kld" -o "$tmp/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl) \
    || die "go build of k8s.io/kubernetes $KUBE_VERSION failed (see above)"

  log "building etcd $ETCD_VERSION"
  (cd "$TE_DIR/etcd" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .) \
    || die "go build of go.etcd.io/etcd/server/v3 $ETCD_VERSION failed"

  log "building helm $HELM_VERSION"
  helm_k8s_minor="$(cd "$TE_DIR/helm" && GOFLAGS="-mod=readonly -buildvcs=false" go list -m -f '{{.Version}}' k8s.io/client-go)"
  helm_k8s_minor="${helm_k8s_minor#v0.}"; helm_k8s_minor="${helm_k8s_minor%%.*}"
  local hld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    hld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$helm_k8s_minor"
  done
  (cd "$TE_DIR/helm" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "$hld" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm) \
    || die "go build of helm.sh/helm/v3 $HELM_VERSION failed"

  log "fetching monitoring.coreos.com CRDs from github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION"
  local pdir c
  pdir="$(cd /tmp && GOFLAGS= go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" \
          | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [ -d "$pdir/example/prometheus-operator-crd" ] || die "prometheus-operator module $PROM_OPERATOR_VERSION has no example/prometheus-operator-crd"
  for c in "${PROM_CRDS[@]}"; do
    cp "$pdir/example/prometheus-operator-crd/monitoring.coreos.com_$c.yaml" "$KEY_DIR/crds.tmp.$$/"
  done

  rm -rf "$BIN_DIR" "$CRD_DIR"
  mv "$tmp" "$BIN_DIR"
  mv "$KEY_DIR/crds.tmp.$$" "$CRD_DIR"
  trap - EXIT
  printf 'kube=%s etcd=%s helm=%s prometheus-operator=%s built=%s seconds=%s\n' \
    "$KUBE_VERSION" "$ETCD_VERSION" "$HELM_VERSION" "$PROM_OPERATOR_VERSION" "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))" \
    > "$KEY_DIR/.complete"
  log "built in $(( $(date +%s) - start ))s into $BIN_DIR"
  # Old keys are left in place; remove $CACHE_ROOT/<old key> by hand to reclaim space.
}

# ---------------------------------------------------------------- running plane
pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }

# Our process: alive and its command line mentions our run dir (guards against PID reuse).
our_pid_alive() {
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # No pipeline: with pipefail, `tr | grep -q` fails when grep exits before tr has written.
  local cmdline; cmdline="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$RUN_DIR"* ]]
}

apiserver_ready() {
  [ -f "$RUN_DIR/ports.env" ] || return 1
  # shellcheck disable=SC1091
  . "$RUN_DIR/ports.env"
  curl -sf --max-time 5 --cacert "$RUN_DIR/pki/ca.crt" --cert "$RUN_DIR/pki/admin.crt" --key "$RUN_DIR/pki/admin.key" \
    "https://${APISERVER_HOST:-127.0.0.1}:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

plane_healthy() {
  local c; for c in etcd kube-apiserver kube-controller-manager; do our_pid_alive "$(pid_of "$c")" || return 1; done
  [ -f "$RUN_DIR/.up" ] && [ -f "$RUN_DIR/kubeconfig" ] && apiserver_ready || return 1
  if [ -d "$RUN_DIR/node" ]; then bash "$REPO_ROOT/scripts/k8s-node.sh" healthy "$RUN_DIR"; fi
}
# The running plane has the node (`up --node`).
plane_has_node() { [ -f "$RUN_DIR/node/.up" ]; }

stop_plane() {
  local c pid i
  # The node first (its pods, network and kernel state), while the API server still answers.
  if [ -d "$RUN_DIR/node" ]; then bash "$REPO_ROOT/scripts/k8s-node.sh" down "$RUN_DIR" || log "warning: node tear-down reported errors"; fi
  for c in kube-controller-manager kube-apiserver etcd; do
    pid="$(pid_of "$c")"
    if our_pid_alive "$pid"; then
      log "stopping $c (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then log "$c did not stop, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  done
}

free_port() {
  local p tries=0
  while :; do
    # Below the kernel's ephemeral range (32768-60999 here): a port an outgoing connection
    # holds refuses connections but cannot be bound, which killed etcd now and then.
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && [[ " ${USED_PORTS:-} " != *" $p "* ]]; then
      USED_PORTS="${USED_PORTS:-} $p"; echo "$p"; return 0
    fi
    tries=$((tries + 1)); [ "$tries" -lt 200 ] || die "no free port found"
  done
}

fail_start() { # fail_start <component> <message>
  log "ERROR: $1: $2; last lines of $RUN_DIR/logs/$1.log:"
  tail -n 40 "$RUN_DIR/logs/$1.log" >&2 2>/dev/null || true
  stop_plane
  exit 1
}

start_daemon() { # start_daemon <name> <binary> args...
  local name="$1"; shift
  # stdin/stdout/stderr detached so that `eval "$(... up)"` does not wait for the daemons.
  setsid "$@" </dev/null >"$RUN_DIR/logs/$name.log" 2>&1 &
  echo $! > "$RUN_DIR/$name.pid"
}

wait_for() { # wait_for <component> <description> <command...>
  local comp="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + TIMEOUT ))
  until "$@"; do
    our_pid_alive "$(pid_of "$comp")" || fail_start "$comp" "process exited while waiting for $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail_start "$comp" "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

gen_certs() {
  local d="$RUN_DIR/pki"
  mkdir -p "$d"; chmod 700 "$d"
  (
    cd "$d"
    ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
    ec ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=colloquy-k8s-testenv-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out ca.crt 2>/dev/null
    sign() { # sign <name> <subject> <extendedKeyUsage> [subjectAltName]
      ec "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        [ -z "${4:-}" ] || echo "subjectAltName=$4"
      } > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" serverAuth \
      "IP:127.0.0.1,IP:${SERVICE_CIDR%.*}.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign admin "/O=system:masters/CN=colloquy-admin" clientAuth
    sign controller-manager "/CN=system:kube-controller-manager" clientAuth
    # kube-apiserver -> kubelet (logs, exec, port-forward).
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  ) || die "certificate generation with openssl failed"
}

write_kubeconfig() { # write_kubeconfig <file> <client cert/key basename> <user>
  local b64; b64() { base64 -w0 < "$1"; }
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: colloquy-testenv
  cluster:
    server: https://$APISERVER_HOST:$APISERVER_PORT
    certificate-authority-data: $(b64 "$RUN_DIR/pki/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(b64 "$RUN_DIR/pki/$2.crt")
    client-key-data: $(b64 "$RUN_DIR/pki/$2.key")
contexts:
- name: colloquy-testenv
  context:
    cluster: colloquy-testenv
    user: $3
current-context: colloquy-testenv
EOF
  chmod 600 "$1"
}

cmd_up() {
  local node=0
  [ "${1:-}" = --node ] && node=1
  ensure_cmd openssl openssl
  ensure_cmd curl curl
  ensure_cmd setsid util-linux
  compute_key
  built || cmd_build_plane
  compute_key
  if [ "$node" = 1 ]; then
    node_built || cmd_build_node
    node_deps
  fi
  local t0; t0=$(date +%s)

  if plane_healthy; then
    if [ "$node" = 1 ] && ! plane_has_node; then
      log "the plane in $RUN_DIR has no node: restarting it with one"
    elif [ "$node" = 0 ] && plane_has_node; then
      log "the plane in $RUN_DIR has a node (all controllers run): restarting it without"
    else
      log "a healthy plane is already running in $RUN_DIR: reusing it"
      echo "export KUBECONFIG=$RUN_DIR/kubeconfig"
      return 0
    fi
  fi
  if [ -d "$RUN_DIR" ]; then
    log "removing leftovers of a previous plane in $RUN_DIR"
    stop_plane
    rm -rf "$RUN_DIR"
  fi
  mkdir -p "$RUN_DIR/logs"
  echo "$BIN_DIR" > "$RUN_DIR/bin-dir"

  USED_PORTS=""
  ETCD_PORT=$(free_port); ETCD_PEER_PORT=$(free_port); APISERVER_PORT=$(free_port)
  # With a node the API server listens on the node address: pods reach it through the
  # `kubernetes` Service, which kube-proxy rewrites to the advertised address.
  APISERVER_HOST=127.0.0.1
  local node_flags=() controllers="$CONTROLLERS"
  if [ "$node" = 1 ]; then
    APISERVER_HOST="$NODE_IP"
    controllers="${K8S_TESTENV_CONTROLLERS:-*}"
  fi
  cat > "$RUN_DIR/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
APISERVER_HOST=$APISERVER_HOST
EOF
  log "state in $RUN_DIR; etcd :$ETCD_PORT, kube-apiserver :$APISERVER_PORT"
  gen_certs
  if [ "$node" = 1 ]; then
    bash "$REPO_ROOT/scripts/k8s-node.sh" net-up "$RUN_DIR" || { stop_plane; die "setting up the node network failed"; }
    node_flags=(
      --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
      --kubelet-client-certificate="$RUN_DIR/pki/apiserver-kubelet-client.crt"
      --kubelet-client-key="$RUN_DIR/pki/apiserver-kubelet-client.key"
      --kubelet-certificate-authority="$RUN_DIR/pki/ca.crt"
      --kubelet-preferred-address-types=InternalIP,Hostname
    )
  else
    node_flags=(--authorization-mode=RBAC)
  fi

  start_daemon etcd "$BIN_DIR/etcd" \
    --name=testenv --data-dir="$RUN_DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="testenv=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn
  etcd_ok() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; }
  wait_for etcd "etcd /health" etcd_ok

  start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --secure-port="$APISERVER_PORT" --bind-address="$APISERVER_HOST" --advertise-address="$APISERVER_HOST" \
    --cert-dir="$RUN_DIR/apiserver-certs" \
    --tls-cert-file="$RUN_DIR/pki/apiserver.crt" --tls-private-key-file="$RUN_DIR/pki/apiserver.key" \
    --client-ca-file="$RUN_DIR/pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$RUN_DIR/pki/sa.pub" \
    --service-account-signing-key-file="$RUN_DIR/pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allow-privileged=true "${node_flags[@]}" "${APISERVER_EXTRA_ARGS[@]}"
  wait_for kube-apiserver "kube-apiserver /readyz" apiserver_ready

  write_kubeconfig "$RUN_DIR/kubeconfig" admin colloquy-admin
  write_kubeconfig "$RUN_DIR/controller-manager.kubeconfig" controller-manager system:kube-controller-manager

  start_daemon kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$RUN_DIR/controller-manager.kubeconfig" \
    --secure-port=0 --leader-elect=false \
    --service-account-private-key-file="$RUN_DIR/pki/sa.key" \
    --root-ca-file="$RUN_DIR/pki/ca.crt" \
    --cluster-signing-cert-file="$RUN_DIR/pki/ca.crt" --cluster-signing-key-file="$RUN_DIR/pki/ca.key" \
    --use-service-account-credentials=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --controllers="$controllers"
  local kc=("$BIN_DIR/kubectl" --kubeconfig="$RUN_DIR/kubeconfig" --request-timeout=10s)
  # The service-account controller creating "default" in "default" shows the controller manager works.
  kcm_ok() { "${kc[@]}" -n default get serviceaccount default >/dev/null 2>&1; }
  wait_for kube-controller-manager "the default ServiceAccount (created by kube-controller-manager)" kcm_ok

  log "installing monitoring.coreos.com CRDs (${PROM_CRDS[*]}) from prometheus-operator $PROM_OPERATOR_VERSION"
  "${kc[@]}" apply --server-side --force-conflicts -f "$CRD_DIR" >"$RUN_DIR/logs/crds.log" 2>&1 \
    || { tail -n 20 "$RUN_DIR/logs/crds.log" >&2; stop_plane; die "installing the CRDs failed"; }
  local c
  # Polled rather than `kubectl wait`, which errors out on a CRD whose status has no conditions yet.
  crd_established() {
    [ "$("${kc[@]}" get "crd/$1" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>>"$RUN_DIR/logs/crds.log")" = True ]
  }
  for c in "${PROM_CRDS[@]}"; do
    wait_for kube-apiserver "CRD $c.monitoring.coreos.com Established" crd_established "$c.monitoring.coreos.com"
  done

  if [ "$node" = 1 ]; then
    bash "$REPO_ROOT/scripts/k8s-node.sh" up "$RUN_DIR" "$BIN_DIR" "$NODE_BIN_DIR" || { stop_plane; die "starting the node failed (logs: $RUN_DIR/node/logs)"; }
  fi
  touch "$RUN_DIR/.up"
  log "control plane $KUBE_VERSION$([ "$node" = 1 ] && echo " with node $NODE_NAME") up in $(( $(date +%s) - t0 ))s (logs: $RUN_DIR/logs)"
  echo "export KUBECONFIG=$RUN_DIR/kubeconfig"
}

cmd_down() {
  if [ ! -d "$RUN_DIR" ]; then log "no plane in $RUN_DIR"; return 0; fi
  stop_plane
  rm -rf "$RUN_DIR"
  log "stopped; removed $RUN_DIR"
}

# Debian packages the node runs on.
node_deps() {
  ensure_cmd containerd containerd
  ensure_cmd runc runc
  ensure_cmd iptables iptables
  ensure_cmd nft nftables
  ensure_cmd buildah buildah
  ensure_cmd python3 python3
  [ -e /sys/fs/cgroup/memory ] || [ -e /sys/fs/cgroup/cgroup.controllers ] || die "no cgroup hierarchy mounted"
}

cmd_status() {
  compute_key
  if built; then log "binaries: $BIN_DIR"; else log "binaries: not built (key $KEY)"; fi
  if [ ! -d "$RUN_DIR" ]; then log "plane: not running ($RUN_DIR absent)"; return 1; fi
  local c pid
  for c in etcd kube-apiserver kube-controller-manager; do
    pid="$(pid_of "$c")"
    if our_pid_alive "$pid"; then log "$c: running (pid $pid)"; else log "$c: NOT running"; fi
  done
  if plane_healthy; then
    log "plane: healthy, kube-apiserver https://127.0.0.1:$APISERVER_PORT, KUBECONFIG=$RUN_DIR/kubeconfig"
  else
    log "plane: NOT healthy (see $RUN_DIR/logs)"; return 1
  fi
}

cmd_env() {
  compute_key
  built || log "warning: binaries not built yet; run: scripts/k8s-testenv.sh build"
  echo "export KUBEBUILDER_ASSETS=$BIN_DIR"
  echo "export K8S_TESTENV_BIN=$BIN_DIR"
  echo "export PATH=\"$BIN_DIR:\$PATH\""
  if plane_healthy; then echo "export KUBECONFIG=$RUN_DIR/kubeconfig"; fi
}

cmd_smoke() {
  ensure_go
  compute_key
  built || die "binaries not built; run: scripts/k8s-testenv.sh build"
  local kcfg="${KUBECONFIG:-}"
  if [ -z "$kcfg" ] || [ ! -f "$kcfg" ]; then
    plane_healthy || die "no KUBECONFIG set and no healthy plane in $RUN_DIR; run: eval \"\$(scripts/k8s-testenv.sh up)\""
    kcfg="$RUN_DIR/kubeconfig"
  fi
  log "running smoke test against $kcfg"
  (cd "$TE_DIR" && KUBECONFIG="$kcfg" K8S_TESTENV_BIN="$BIN_DIR" K8S_TESTENV_KUBE_VERSION="$KUBE_VERSION" \
     GOFLAGS="-mod=readonly -buildvcs=false" go test -count=1 -v ./smoke/ >&2)
  log "smoke test passed"
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  smoke) cmd_smoke ;;
  *) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
