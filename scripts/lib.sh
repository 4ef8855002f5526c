# Shared helpers for the project's scripts (sourced, not run).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Build caches live outside the work tree so a fresh clone on the same machine reuses them.
COLLOQUY_CACHE_DIR="${COLLOQUY_CACHE_DIR:-$HOME/.cache/colloquy}"
export COLLOQUY_CACHE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$COLLOQUY_CACHE_DIR/target}"

log() { printf '\033[1;34m[colloquy]\033[0m %s\n' "$*" >&2; }
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
