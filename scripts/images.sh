#!/usr/bin/env bash
# Container images for the test node, without a daemon or a registry: buildah (Debian, vfs
# storage under ~/.cache/colloquy/buildah) builds them, `ctr images import` loads them into the
# node's containerd, and pods run them with imagePullPolicy Never/IfNotPresent.
#
#   scripts/images.sh build [--no-cargo]   build (or reuse) every image the e2e suite needs; stdout:
#                                          KEY=value lines (image names and docker-archive paths)
#   scripts/images.sh import <containerd socket> <archive>...   load archives into namespace k8s.io
#   scripts/images.sh pause-import <containerd socket> <pause binary>   the sandbox image
#
# The chat API and controller images come from the project's own Dockerfile (`buildah bud
# --target chat-api|chat-controller`): the runtime stages users build with Docker are the ones
# tested. Only two build arguments change: DISTROLESS_IMAGE, a distroless-like base assembled
# here from Debian packages (glibc, libgcc, CA certificates, tzdata, netbase, user 65532), and
# BINARIES, an image holding the binaries CI already built (`cargo build` debug output in
# CARGO_TARGET_DIR) instead of the `builder` stage that compiles them again.
#
# Also built: `chat-api` with one more migration (for the e2e "new image, new migration" check;
# the migration is compiled into the binary, so it is a second build of the chat-api crate from a
# copy of the sources, sharing CARGO_TARGET_DIR so no dependency is rebuilt), and the e2e client
# (a static Go binary in a scratch image, used from inside the cluster).
#
# Every image is cached as a docker-archive under ~/.cache/colloquy/images, keyed by a hash of
# its inputs: a warm run rebuilds nothing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../tools/k8s-testenv/node.env
. "$REPO_ROOT/tools/k8s-testenv/node.env"

IMG_CACHE="$COLLOQUY_CACHE_DIR/images"
BUILDAH_DIR="$COLLOQUY_CACHE_DIR/buildah"
# Debian packages of the runtime base (what gcr.io/distroless/cc-debian12 holds).
BASE_DEBS=(libc6 libgcc-s1 ca-certificates tzdata netbase base-files)
# Bump when the way images are assembled changes.
FORMAT=1
mkdir -p "$IMG_CACHE"

bah() {
  buildah --root "$BUILDAH_DIR/storage" --runroot "$BUILDAH_DIR/run" --storage-driver vfs "$@"
}
sha() { sha256sum | cut -c1-12; }

# archive <image ref> <archive path>: write the image as a docker-archive (atomically).
archive() {
  rm -f "$2.tmp"
  bah push -q "$1" "docker-archive:$2.tmp:$1" >/dev/null
  mv "$2.tmp" "$2"
}
# have_local <image ref>: the image is in buildah's storage.
have_local() { bah inspect --type image "$1" >/dev/null 2>&1; }
# load_archive <image ref> <archive>: put a cached archive back into buildah's storage if missing.
load_archive() { have_local "$1" || bah pull -q "docker-archive:$2" >/dev/null; }

need_tools() {
  need_debs buildah containerd
}

# ---------------------------------------------------------------- the distroless-like base
build_base() {
  local versions key ref tar dir root
  candidates() { # "pkg=version" lines, one apt-cache call
    apt-cache policy "${BASE_DEBS[@]}" 2>/dev/null | awk '/^[^ ].*:$/{p=substr($1, 1, length($1)-1)} /Candidate:/{print p "=" $2}'
  }
  versions="$(candidates)"
  if [ "$(grep -cv '=(none)$' <<<"$versions")" != "${#BASE_DEBS[@]}" ]; then
    as_root apt-get update -qq >&2
    versions="$(candidates)"
  fi
  key="$(printf 'format=%s\n%s\n' "$FORMAT" "$versions" | sha)"
  ref="colloquy.local/distroless-cc:nonroot-$key"
  tar="$IMG_CACHE/distroless-cc-$key.tar"
  if [ -s "$tar" ]; then load_archive "$ref" "$tar"; echo "$ref"; return 0; fi
  log "assembling the runtime base image from Debian packages: $(tr '\n' ' ' <<<"$versions")"
  dir="$(mktemp -d)"; root="$dir/rootfs"; mkdir -p "$root" "$dir/debs"
  chmod 755 "$dir"; chmod 777 "$dir/debs"   # apt downloads as the _apt user
  (cd "$dir/debs" && apt-get download -q $(tr '\n' ' ' <<<"$versions") >&2) || die "apt-get download of ${BASE_DEBS[*]} failed"
  local deb; for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  # As distroless: the CA bundle, users root/nonroot(65532)/nobody, a writable /tmp, no docs.
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/root"
  find "$root/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat > "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$root/etc/group"
  chmod 1777 "$root/tmp"; chown 65532:65532 "$root/home/nonroot"; chmod 700 "$root/home/nonroot" "$root/root"
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/lintian" \
         "$root/usr/share/locale" "$root/usr/share/bug" "$root/etc/update-motd.d"
  local c; c="$(bah from -q scratch)"
  bah copy -q "$c" "$root/" / >/dev/null
  bah config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label org.opencontainers.image.description="distroless-like cc base assembled from Debian packages for tests" "$c"
  bah commit -q --rm "$c" "$ref" >/dev/null
  rm -rf "$dir"
  archive "$ref" "$tar"
  echo "$ref"
}

# ---------------------------------------------------------------- an image of binaries
# binaries_image <name> <dir>: an image holding <dir>/* under /out (the Dockerfile's BINARIES).
binaries_image() {
  local key ref c
  key="$( (cd "$2" && sha256sum ./* ) | sha)"
  ref="colloquy.local/$1:$key"
  have_local "$ref" && { echo "$ref"; return 0; }
  c="$(bah from -q scratch)"
  bah copy -q "$c" "$2/" /out/ >/dev/null
  bah commit -q --rm "$c" "$ref" >/dev/null
  echo "$ref"
}

# dockerfile_image <target> <binaries ref> <base ref> <image repository>: `buildah bud` of the
# project's Dockerfile. Prints "<ref> <archive>".
dockerfile_image() {
  local target="$1" bins="$2" base="$3" repo="$4" key ref tar
  key="$(printf '%s\n%s\n%s\n%s\n' "$FORMAT" "$target" "$bins" "$base" | cat - "$REPO_ROOT/Dockerfile" | sha)"
  ref="$repo:e2e-$key"
  tar="$IMG_CACHE/$(basename "$repo")-$key.tar"
  if [ ! -s "$tar" ]; then
    log "buildah bud --target $target (BINARIES=$bins, DISTROLESS_IMAGE=$base)"
    bah bud -q --pull=never --isolation=chroot --target "$target" \
      --build-arg "BINARIES=$bins" --build-arg "DISTROLESS_IMAGE=$base" \
      -t "$ref" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT" >/dev/null
    archive "$ref" "$tar"
  fi
  echo "$ref $tar"
}

# ---------------------------------------------------------------- binaries
# The chat API with one more migration, compiled from a copy of the sources (see the header).
# Prints the path of the binary.
E2E_MIGRATION_SQL='-- Added by scripts/images.sh to the e2e suite'"'"'s "next" chat-api image only: a new
-- migration the migration Job must apply before the Deployment gets the image. It fails at once
-- when the table already exists (the suite creates it to make this migration fail on purpose),
-- and otherwise takes a few seconds, so the suite sees the old pods serving while it runs.
CREATE TABLE colloquy_e2e_next (id integer PRIMARY KEY);
SELECT pg_sleep(4);
'
build_next_chat_api() {
  local src="$COLLOQUY_CACHE_DIR/e2e-next-src" last next f toml
  mkdir -p "$src"
  # Only changed files are written (checksums, no times), so an unchanged tree stays fresh for
  # cargo across runs and fresh clones; the two files made here are written only when they differ.
  need_debs rsync
  rsync -rlc --delete --exclude target --exclude '/services/chat-api/Cargo.toml' --exclude '/migrations/*_e2e_next.sql' \
    "$REPO_ROOT/Cargo.toml" "$REPO_ROOT/Cargo.lock" "$REPO_ROOT/services" "$REPO_ROOT/migrations" "$src/"
  last="$(find "$REPO_ROOT/migrations" -name '[0-9]*_*.sql' -printf '%f\n' | sort | tail -n 1)"
  next="$(printf '%04d' $(( 10#${last%%_*} + 1 )))"
  f="$src/migrations/${next}_e2e_next.sql"
  find "$src/migrations" -name '*_e2e_next.sql' ! -name "${next}_e2e_next.sql" -delete
  write_if_changed "$f" "$E2E_MIGRATION_SQL"
  # Another binary name, so cargo's copy to $CARGO_TARGET_DIR/debug/ does not replace the real chat-api.
  toml="$(sed '/^\[\[bin\]\]/,/^name/s/^name = "chat-api"$/name = "chat-api-e2e-next"/' "$REPO_ROOT/services/chat-api/Cargo.toml")"
  write_if_changed "$src/services/chat-api/Cargo.toml" "$toml"$'\n'
  log "building chat-api with migration $next (copy of the sources in $src)"
  (cd "$src" && nice -n 10 cargo build -q --locked -p chat-api --bin chat-api-e2e-next >&2) || die "building the next chat-api failed"
  echo "$CARGO_TARGET_DIR/debug/chat-api-e2e-next $next"
}

write_if_changed() { # write_if_changed <file> <content>
  if [ ! -f "$1" ] || [ "$(cat "$1"; printf x)" != "$2"x ]; then printf '%s' "$2" > "$1"; fi
}

build_client() { # the e2e client binary (static Go), printed path
  need_go
  local out="$IMG_CACHE/bin/e2e-client"
  mkdir -p "$(dirname "$out")"
  (cd "$REPO_ROOT/tools/k8s-testenv" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
     go build -trimpath -ldflags "-s -w" -o "$out.tmp" ./e2e/client) || die "building the e2e client failed"
  mv "$out.tmp" "$out"
  echo "$out"
}

cmd_build() {
  local cargo=1
  [ "${1:-}" = --no-cargo ] && cargo=0
  need_tools
  local t0; t0=$(date +%s)
  local base; base="$(build_base)"
  if [ "$cargo" = 1 ]; then
    log "cargo build (debug) of chat-api and chat-controller"
    nice -n 10 cargo build -q --locked -p chat-api -p chat-controller --bin chat-api --bin chat-controller >&2
  fi
  local b; for b in chat-api chat-controller; do
    [ -x "$CARGO_TARGET_DIR/debug/$b" ] || die "$CARGO_TARGET_DIR/debug/$b missing (run cargo build)"
  done
  local d; d="$(mktemp -d)"
  mkdir -p "$d/now" "$d/next" "$d/client"
  cp "$CARGO_TARGET_DIR/debug/chat-api" "$CARGO_TARGET_DIR/debug/chat-controller" "$d/now/"
  local bins; bins="$(binaries_image binaries "$d/now")"
  local api ctl; api="$(dockerfile_image chat-api "$bins" "$base" colloquy.local/chat-api)"
  ctl="$(dockerfile_image chat-controller "$bins" "$base" colloquy.local/chat-controller)"

  local next_bin next_ver; read -r next_bin next_ver < <(build_next_chat_api)
  cp "$next_bin" "$d/next/chat-api"
  cp "$CARGO_TARGET_DIR/debug/chat-controller" "$d/next/"
  local next; next="$(dockerfile_image chat-api "$(binaries_image binaries "$d/next")" "$base" colloquy.local/chat-api)"

  cp "$(build_client)" "$d/client/e2e-client"
  local ckey cref ctar; ckey="$(sha < "$d/client/e2e-client")"
  cref="colloquy.local/e2e-client:$ckey"; ctar="$IMG_CACHE/e2e-client-$ckey.tar"
  if [ ! -s "$ctar" ]; then
    local c; c="$(bah from -q scratch)"
    bah copy -q "$c" "$d/client/e2e-client" /e2e-client >/dev/null
    bah config --user 65532:65532 --entrypoint '["/e2e-client"]' "$c"
    bah commit -q --rm "$c" "$cref" >/dev/null
    archive "$cref" "$ctar"
  fi
  rm -rf "$d"
  log "images ready in $(( $(date +%s) - t0 ))s"
  set -- $api; echo "CHAT_API_IMAGE=$1"; echo "CHAT_API_ARCHIVE=$2"
  set -- $ctl; echo "CONTROLLER_IMAGE=$1"; echo "CONTROLLER_ARCHIVE=$2"
  set -- $next; echo "CHAT_API_NEXT_IMAGE=$1"; echo "CHAT_API_NEXT_ARCHIVE=$2"; echo "CHAT_API_NEXT_MIGRATION=$((10#$next_ver))"
  echo "CLIENT_IMAGE=$cref"; echo "CLIENT_ARCHIVE=$ctar"
}

cmd_import() {
  local sock="$1"; shift
  local a
  for a in "$@"; do
    ctr --address "$sock" -n k8s.io images import "$a" >/dev/null \
      || die "ctr images import $a failed"
  done
}

cmd_pause_import() { # <socket> <pause binary>
  local sock="$1" bin="$2" key tar
  need_tools
  key="$(sha < "$bin")"
  tar="$IMG_CACHE/pause-$key.tar"
  if [ ! -s "$tar" ]; then
    local c; c="$(bah from -q scratch)"
    bah copy -q "$c" "$bin" /pause >/dev/null
    bah config --user 65535:65535 --entrypoint '["/pause"]' "$c"
    bah commit -q --rm "$c" "$PAUSE_IMAGE" >/dev/null
    archive "$PAUSE_IMAGE" "$tar"
  fi
  cmd_import "$sock" "$tar"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0   # sourced: functions only
case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  import) shift; cmd_import "$@" ;;
  pause-import) shift; cmd_pause_import "$@" ;;
  base) need_tools; build_base ;;
  *) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
