# Shared helpers for the project's scripts (sourced, not run).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Build caches live outside the work tree so a fresh clone on the same machine reuses them.
COLLOQUY_CACHE_DIR="${COLLOQUY_CACHE_DIR:-$HOME/.cache/colloquy}"
export COLLOQUY_CACHE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$COLLOQUY_CACHE_DIR/target}"

log() { printf '\033[1;34m[colloquy]\033[0m %s\n' "$*" >&2; }

# Waits up to 60 s until the CRD named $1 is Established, with the caller's
# `kc` (its kubectl and KUBECONFIG). Polled: `kubectl wait --for=condition`
# fails at once ("accessor error") when it reads a CRD the API server has not
# given any condition yet (seen in chart-test right after the CRD's create).
crd_established() {
  local _
  for _ in $(seq 1 120); do
    [ "$(kc get crd "$1" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ] \
      && return 0
    sleep 0.5
  done
  echo "CRD $1 not Established after 60 s" >&2
  return 1
}
die() { printf '\033[1;31m[colloquy] error:\033[0m %s\n' "$*" >&2; exit 1; }

# as_root CMD...: run as root (directly, or through sudo when we are not root).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

_apt_updated=""
# need_debs PKG...: installs the Debian packages that are missing.
need_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ -z "$_apt_updated" ]; then as_root apt-get update -qq >&2; _apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# need_rust: cargo with rustfmt and clippy.
need_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs) first"
  if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt >&2
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy >&2
  fi
}

# need_go: the Go toolchain (the Kubernetes test plane is built from Go modules).
need_go() {
  if ! command -v go >/dev/null; then
    [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH" && return 0
    # Debian's golang-go is far older than the 1.26 that Kubernetes 1.36 needs.
    command -v go >/dev/null || die "Go >= 1.21 is required (https://go.dev/dl); newer toolchains then come through GOTOOLCHAIN"
  fi
}

# free_port: an unused TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# need_py_venv NAME REQUIREMENTS_FILE: a Python venv under the cache with the
# pinned requirements installed; prints its directory. Keyed by the file's
# hash, so changing a pin builds a new one and an unchanged file costs nothing.
need_py_venv() {
  local name="$1" req="$2" key dir
  need_debs python3 python3-venv
  key=$(sha256sum "$req" | cut -c1-16)
  dir="$COLLOQUY_CACHE_DIR/venv-$name-$key"
  if [ ! -f "$dir/.done" ]; then
    log "creating the $name Python venv ($dir)"
    rm -rf "$dir"
    # Callers run this in $(...), where `set -e` does not hold: fail explicitly,
    # or a half-installed venv would be marked done and reused.
    python3 -m venv "$dir" >&2 || die "python3 -m venv $dir failed"
    "$dir/bin/pip" install --quiet --disable-pip-version-check --require-virtualenv -r "$req" >&2 \
      || { rm -rf "$dir"; die "pip install -r $req failed"; }
    touch "$dir/.done"
  fi
  printf '%s\n' "$dir"
}

# need_npm_dir NAME PROJECT_DIR: `npm ci` of PROJECT_DIR's package.json and
# package-lock.json into a directory under the cache (never into the clone);
# prints the directory whose node_modules holds them. Keyed by the lock's hash.
need_npm_dir() {
  local name="$1" project="$2" key dir
  command -v npm >/dev/null || need_debs nodejs npm
  key=$(cat "$project/package.json" "$project/package-lock.json" | sha256sum | cut -c1-16)
  dir="$COLLOQUY_CACHE_DIR/npm-$name-$key"
  if [ ! -f "$dir/.done" ]; then
    log "installing the $name npm packages ($dir)"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$project/package.json" "$project/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --silent --no-audit --no-fund >&2)
    touch "$dir/.done"
  fi
  printf '%s\n' "$dir"
}
