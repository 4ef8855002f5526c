#!/usr/bin/env bash
# The node of the Kubernetes test plane: containerd (Debian) + kubelet + kube-scheduler + kube-proxy
# (iptables) + CNI (bridge, host-local, loopback, portmap) + CoreDNS, all on this machine.
# Called by `scripts/k8s-testenv.sh up --node` / `down`; not meant to be run by hand:
#
#   k8s-node.sh net-up  <run dir>                    bridges, routes, sysctls, forward guard
#   k8s-node.sh up      <run dir> <plane bin> <node bin>   daemons, node Ready, cluster DNS
#   k8s-node.sh healthy <run dir>                    exit 0 when every node daemon runs and the node is Ready
#   k8s-node.sh down    <run dir>                    undo all of it (processes, mounts, cgroups,
#                                                    iptables and ip6tables, links, routes, sysctls)
#
# What `down` restores is measured against what `net-up` recorded in <run dir>/baseline/, so the
# machine is left as it was found, not merely "clean".
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tools/k8s-testenv/node.env
. "$REPO_ROOT/tools/k8s-testenv/node.env"
TIMEOUT="${K8S_TESTENV_TIMEOUT:-120}"

log() { printf '[k8s-node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

RUN_DIR="${2:-}"
[ -n "$RUN_DIR" ] || die "usage: $0 net-up|up|healthy|down <run dir> ..."
NODE_DIR="$RUN_DIR/node"
BASE="$NODE_DIR/baseline"
CTRD_DIR="$NODE_DIR/containerd"
SOCK="$CTRD_DIR/containerd.sock"
# The kernel's machine-wide lock: one node per machine (bridges and routes are global).
OWNER_FILE=/run/colloquy-k8s-node.owner

# ---------------------------------------------------------------- helpers
pid_of() { cat "$NODE_DIR/$1.pid" 2>/dev/null || true; }
our_pid_alive() { # the process is alive and its command line names our run dir (no PID reuse)
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # No pipeline: with pipefail, `tr | grep -q` fails when grep exits before tr has written.
  local cmdline; cmdline="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$RUN_DIR"* ]]
}
start_daemon() { # start_daemon <name> <binary> args...
  local name="$1"; shift
  setsid "$@" </dev/null >"$NODE_DIR/logs/$name.log" 2>&1 &
  echo $! > "$NODE_DIR/$name.pid"
}
stop_pid() { # stop_pid <name> <pid>: TERM, wait up to 10 s, KILL
  local name="$1" pid="$2" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  log "$name (pid $pid) did not stop, sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
}
stop_daemon() {
  local pid; pid="$(pid_of "$1")"
  if our_pid_alive "$pid"; then log "stopping $1 (pid $pid)"; stop_pid "$1" "$pid"; fi
  rm -f "$NODE_DIR/$1.pid"
}
fail() { # fail <component> <message>
  log "ERROR: $1: $2; last lines of $NODE_DIR/logs/$1.log:"
  tail -n 40 "$NODE_DIR/logs/$1.log" >&2 2>/dev/null || true
  exit 1
}
wait_for() { # wait_for <component> <what> <command...>
  local comp="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + TIMEOUT ))
  until "$@"; do
    our_pid_alive "$(pid_of "$comp")" || fail "$comp" "process exited while waiting for $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$comp" "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Sysctls anything of ours may change: kubelet (vm.overcommit_memory, vm.panic_on_oom, kernel.panic,
# kernel.panic_on_oops, kernel.keys.*), the bridge plugin and we (ip_forward), kube-proxy
# (conntrack, route_localnet), br_netfilter.
SYSCTL_KEYS_RE='^(vm\.(overcommit_memory|panic_on_oom)|kernel\.(panic|panic_on_oops|keys\.root_max(keys|bytes))|net\.ipv4\.ip_forward|net\.ipv4\.conf\.(all|default)\.[a-z_]+|net\.ipv6\.conf\.(all|default)\.(forwarding|disable_ipv6)|net\.bridge\.[a-z_-]+|net\.netfilter\.nf_conntrack_(max|tcp_timeout_[a-z_]+)) '
sysctl_snapshot() { sysctl -a 2>/dev/null | grep -E "$SYSCTL_KEYS_RE" | sort || true; }

ipt_families() { local f; for f in iptables ip6tables; do command -v "$f" >/dev/null 2>&1 && echo "$f"; done; }

# ---------------------------------------------------------------- net-up
cmd_net_up() {
  if [ -e "$OWNER_FILE" ]; then
    local owner; owner="$(cat "$OWNER_FILE")"
    [ "$owner" = "$RUN_DIR" ] || die "another test node is running on this machine (state in $owner); stop it first: K8S_TESTENV_DIR=${owner%/} scripts/k8s-testenv.sh down"
  fi
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && die "link $NODE_BRIDGE exists but no node owns it (remove it: ip link del $NODE_BRIDGE)"
  ip link show "$POD_BRIDGE" >/dev/null 2>&1 && die "link $POD_BRIDGE exists but no node owns it (remove it: ip link del $POD_BRIDGE)"
  mkdir -p "$NODE_DIR/logs" "$BASE"
  echo "$RUN_DIR" > "$OWNER_FILE"

  # What the machine looked like, to restore and to compare with at `down`.
  sysctl_snapshot > "$BASE/sysctl"
  nft list tables 2>/dev/null | sort > "$BASE/nft-tables" || true
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d 2>/dev/null | sort > "$BASE/cgroups" || true
  local d; for d in /run/containerd /var/log/containers /var/log/pods /var/lib/kubelet /etc/cni /opt/cni; do
    [ -e "$d" ] && echo "$d"
  done > "$BASE/paths" || true

  log "node network: $NODE_BRIDGE $NODE_IP/32, $POD_BRIDGE $POD_GATEWAY ($POD_CIDR), route $SERVICE_CIDR -> $NODE_BRIDGE"
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  ip link add "$POD_BRIDGE" type bridge
  ip addr add "$POD_GATEWAY/${POD_CIDR#*/}" dev "$POD_BRIDGE"
  ip link set "$POD_BRIDGE" up
  # ClusterIPs are rewritten by kube-proxy; until then (or without endpoints) they go nowhere but here.
  ip route add "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"

  modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  [ -e /proc/sys/net/bridge/bridge-nf-call-ip6tables ] && sysctl -qw net.bridge.bridge-nf-call-ip6tables=1

  # Pods talk to pods, Services and this machine only: whatever the pod bridge would forward to
  # another interface (eth0...) is dropped. mangle/FORWARD runs before filter/FORWARD, where
  # kube-proxy and kubelet put their ACCEPT rules, and nobody else writes it.
  local f chain="${CHAIN_PREFIX}POD-EGRESS"
  for f in $(ipt_families); do
    "$f" -w -t mangle -N "$chain"
    "$f" -w -t mangle -A "$chain" -o "$POD_BRIDGE" -j RETURN
    "$f" -w -t mangle -A "$chain" -m comment --comment "colloquy test node: pods never leave this machine" -j DROP
    "$f" -w -t mangle -I FORWARD 1 -i "$POD_BRIDGE" -j "$chain"
  done
}

# ---------------------------------------------------------------- certificates and configs
gen_node_certs() {
  local d="$RUN_DIR/pki"
  (
    cd "$d"
    ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
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
    sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    sign kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
    sign kube-scheduler "/CN=system:kube-scheduler" clientAuth
    sign kube-proxy "/CN=system:kube-proxy" clientAuth
    sign coredns "/CN=colloquy:coredns" clientAuth
    chmod 600 ./*.key
  ) || die "node certificate generation failed"
}

kubeconfig() { # kubeconfig <file> <cert basename> <user>
  local b64; b64() { base64 -w0 < "$1"; }
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: colloquy-testenv
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
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

write_configs() {
  mkdir -p "$CTRD_DIR" "$NODE_DIR/cni/net.d" "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs"
  cat > "$NODE_DIR/containerd.toml" <<EOF
# containerd 1.6 (Debian), private to this test node: own root, state, socket, CNI dirs.
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$CTRD_DIR/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM withholds CAP_SYS_RESOURCE even from root: without this every pod fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CTRD_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$NODE_BIN/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
EOF
  cat > "$NODE_DIR/cni/net.d/10-colloquy.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "colloquy",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # What pods with dnsPolicy Default get: no upstream resolver (nothing leaves this machine).
  printf '# colloquy test node: no upstream DNS\noptions ndots:1\n' > "$NODE_DIR/resolv.conf"
  cat > "$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 on these machines: allowed explicitly since Kubernetes 1.35.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $RUN_DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $RUN_DIR/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN_DIR/pki/ca.crt}
authorization:
  mode: Webhook
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$CLUSTER_DNS]
resolvConf: $NODE_DIR/resolv.conf
podLogsDir: $NODE_DIR/pod-logs
failSwapOn: false
serializeImagePulls: false
# Test images are imported, never pulled: keep them however full the disk looks.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
EOF
  cat > "$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $NODE_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
# 0: leave the conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
EOF
  cat > "$NODE_DIR/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$DNS_HEALTH_PORT
    ready 127.0.0.1:$DNS_READY_PORT
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $NODE_DIR/coredns.kubeconfig colloquy-testenv
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
EOF
}

# Cluster objects the node needs: CoreDNS's read access and the kube-dns Service, which has no
# selector (CoreDNS runs on the host) and an EndpointSlice pointing at the node address.
cluster_objects() {
  cat <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "colloquy:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "colloquy:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "colloquy:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "colloquy:coredns"}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $CLUSTER_DNS
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: colloquy-test-node}
addressType: IPv4
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
  nodeName: $NODE_NAME
EOF
}

# ---------------------------------------------------------------- up
cmd_up() {
  PLANE_BIN="${3:?plane bin dir}" NODE_BIN="${4:?node bin dir}"
  # shellcheck disable=SC1091
  . "$RUN_DIR/ports.env"
  local t0; t0=$(date +%s)
  KUBELET_PORT=$(free_port); KUBELET_HEALTHZ_PORT=$(free_port)
  PROXY_HEALTHZ_PORT=$(free_port); PROXY_METRICS_PORT=$(free_port)
  SCHED_PORT=$(free_port); DNS_HEALTH_PORT=$(free_port); DNS_READY_PORT=$(free_port)
  cat > "$NODE_DIR/ports.env" <<EOF
KUBELET_PORT=$KUBELET_PORT
KUBELET_HEALTHZ_PORT=$KUBELET_HEALTHZ_PORT
PROXY_HEALTHZ_PORT=$PROXY_HEALTHZ_PORT
SCHED_PORT=$SCHED_PORT
DNS_READY_PORT=$DNS_READY_PORT
EOF
  gen_node_certs
  kubeconfig "$NODE_DIR/kubelet.kubeconfig" kubelet "system:node:$NODE_NAME"
  kubeconfig "$NODE_DIR/kube-scheduler.kubeconfig" kube-scheduler system:kube-scheduler
  kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" kube-proxy system:kube-proxy
  kubeconfig "$NODE_DIR/coredns.kubeconfig" coredns colloquy:coredns
  write_configs
  local kc=("$PLANE_BIN/kubectl" --kubeconfig="$RUN_DIR/kubeconfig" --request-timeout=20s)

  start_daemon containerd containerd --config "$NODE_DIR/containerd.toml"
  ctr_ok() { ctr --address "$SOCK" version >/dev/null 2>&1; }
  wait_for containerd "its socket" ctr_ok
  log "importing the sandbox image $PAUSE_IMAGE"
  bash "$REPO_ROOT/scripts/images.sh" pause-import "$SOCK" "$NODE_BIN/pause" >"$NODE_DIR/logs/pause-image.log" 2>&1 \
    || { tail -n 30 "$NODE_DIR/logs/pause-image.log" >&2; die "building/importing the pause image failed"; }

  "${kc[@]}" apply --server-side --force-conflicts --field-manager=colloquy-test-node -f - \
    >"$NODE_DIR/logs/cluster-objects.log" 2>&1 < <(cluster_objects) \
    || { cat "$NODE_DIR/logs/cluster-objects.log" >&2; die "creating the node's cluster objects failed"; }

  start_daemon kube-scheduler "$NODE_BIN/kube-scheduler" \
    --kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false
  start_daemon kube-proxy "$NODE_BIN/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml"
  start_daemon coredns "$NODE_BIN/coredns" -conf "$NODE_DIR/Corefile"
  start_daemon kubelet "$NODE_BIN/kubelet" \
    --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" --cert-dir="$NODE_DIR/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"

  node_ready() {
    [ "$("${kc[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
  }
  wait_for kubelet "node $NODE_NAME Ready" node_ready
  proxy_ok() { curl -sf --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz" >/dev/null 2>&1; }
  wait_for kube-proxy "kube-proxy /healthz" proxy_ok
  dns_ok() { curl -sf --max-time 2 "http://127.0.0.1:$DNS_READY_PORT/ready" >/dev/null 2>&1; }
  wait_for coredns "CoreDNS /ready" dns_ok
  sched_ok() { curl -sfk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz" >/dev/null 2>&1; }
  wait_for kube-scheduler "kube-scheduler /healthz" sched_ok
  touch "$NODE_DIR/.up"
  log "node $NODE_NAME Ready ($NODE_IP, pods $POD_CIDR, DNS $CLUSTER_DNS) in $(( $(date +%s) - t0 ))s"
}

cmd_healthy() {
  [ -f "$NODE_DIR/.up" ] || return 1
  local c; for c in containerd kubelet kube-proxy kube-scheduler coredns; do our_pid_alive "$(pid_of "$c")" || return 1; done
}

# ---------------------------------------------------------------- down
# Processes in the cgroups kubelet made for pods (containers and their children).
pod_pids() {
  local f
  for f in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/cpu/kubepods; do
    if [ -d "$f" ]; then find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -un
}
shim_pids() { # containerd shims started by our containerd (their command line names our socket)
  local p
  for p in $(pgrep -f containerd-shim 2>/dev/null); do
    [[ "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" == *"$CTRD_DIR"* ]] && echo "$p"
  done
  return 0
}

# Remove from one iptables family every chain whose name starts with KUBE-, CNI- or ours, and
# every rule that jumps to one (kubelet and kube-proxy leave both behind).
ipt_clean() {
  local f="$1"
  "$f-save" > "$NODE_DIR/$f.saved" 2>/dev/null || return 0
  grep -qE "(KUBE-|CNI-|$CHAIN_PREFIX)" "$NODE_DIR/$f.saved" || return 0
  python3 - "$CHAIN_PREFIX" "$NODE_DIR/$f.saved" > "$NODE_DIR/$f.restore" <<'PY'
import re, sys
ours = re.compile(r"^(KUBE-|CNI-|%s)" % re.escape(sys.argv[1]))
out = []
for line in open(sys.argv[2]).read().splitlines():
    if line.startswith(":"):
        if ours.match(line[1:].split()[0]):
            continue
    elif line.startswith("-A "):
        parts = line.split()
        if ours.match(parts[1]):
            continue
        if any(flag in parts and ours.match(parts[parts.index(flag) + 1]) for flag in ("-j", "-g")):
            continue
    out.append(line)
print("\n".join(out))
PY
  "$f-restore" -w < "$NODE_DIR/$f.restore" || log "warning: $f-restore failed; leftovers: $("$f-save" | grep -cE 'KUBE-|CNI-')"
}

# nftables tables (as `nft list tables` prints them) that hold no rule and no chain of their own.
nft_empty_tables() {
  nft -j list ruleset 2>/dev/null | python3 -c '
import json, sys
items = json.load(sys.stdin).get("nftables", [])
tables, busy = [], set()
for it in items:
    if "table" in it:
        tables.append((it["table"]["family"], it["table"]["name"]))
    elif "rule" in it:
        busy.add((it["rule"]["family"], it["rule"]["table"]))
    elif "chain" in it and "hook" not in it["chain"]:
        busy.add((it["chain"]["family"], it["chain"]["table"]))
    elif "set" in it or "map" in it:
        o = it.get("set") or it.get("map")
        busy.add((o["family"], o["table"]))
for t in tables:
    if t not in busy:
        print("table %s %s" % t)
'
}

cmd_down() {
  [ -d "$NODE_DIR" ] || return 0
  log "stopping the node"
  stop_daemon kubelet
  # Containers first (kill their processes), then the shims, then containerd.
  local p pids
  for _ in 1 2 3; do
    pids="$(pod_pids)"
    [ -z "$pids" ] && break
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    sleep 0.5
  done
  for p in $(shim_pids); do kill -TERM "$p" 2>/dev/null || true; done
  stop_daemon containerd
  sleep 0.3
  for p in $(shim_pids); do kill -KILL "$p" 2>/dev/null || true; done
  stop_daemon kube-proxy
  stop_daemon kube-scheduler
  stop_daemon coredns

  # Mounts under the node's dir: netns, overlay rootfs, secret tmpfs, shm (deepest first).
  local m
  for m in $(awk -v d="$NODE_DIR" 'index($2, d) == 1 {print $2}' /proc/self/mounts | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
  done

  # Cgroups created since net-up (kubepods and below), deepest first; they are empty now.
  if [ -f "$BASE/cgroups" ]; then
    local ctrl
    for ctrl in /sys/fs/cgroup/*/; do
      while read -r d; do
        grep -qxF "$d" "$BASE/cgroups" && continue
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || log "warning: could not remove cgroup $d"
      done < <(find "$ctrl" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort)
    done
  fi

  local f; for f in $(ipt_families); do ipt_clean "$f"; done
  # nftables tables that iptables-nft created for us and that are empty again.
  if command -v nft >/dev/null 2>&1 && [ -f "$BASE/nft-tables" ]; then
    local t
    while read -r t; do
      grep -qxF "$t" "$BASE/nft-tables" || nft delete $t 2>/dev/null || log "warning: could not delete nftables $t"
    done < <(nft_empty_tables)
  fi

  ip link del "$POD_BRIDGE" 2>/dev/null || true
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  # Leftover veths of pods whose network namespace is gone are removed with it; any other
  # veth still enslaved to nothing and named by the bridge plugin (vethXXXXXXXX) is not ours to judge.

  # Sysctls back to what net-up found.
  if [ -f "$BASE/sysctl" ]; then
    local key val cur
    while IFS= read -r line; do
      key="${line%% = *}"; val="${line#* = }"
      cur="$(sysctl -n "$key" 2>/dev/null)" || continue
      [ "$cur" = "$val" ] || sysctl -qw "$key=$val" 2>/dev/null || log "warning: could not restore $key=$val"
    done < "$BASE/sysctl"
  fi

  # Paths kubelet/containerd create outside our dir, when they were not there before.
  local path
  for path in /run/containerd /var/log/containers /var/log/pods /var/lib/kubelet /etc/cni /opt/cni; do
    [ -f "$BASE/paths" ] && grep -qxF "$path" "$BASE/paths" && continue
    [ -e "$path" ] && rm -rf "$path"
  done
  [ "$(cat "$OWNER_FILE" 2>/dev/null)" = "$RUN_DIR" ] && rm -f "$OWNER_FILE"
  log "node stopped and cleaned"
}

case "${1:-}" in
  net-up) cmd_net_up ;;
  up) cmd_up "$@" ;;
  healthy) cmd_healthy ;;
  down) cmd_down ;;
  *) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
