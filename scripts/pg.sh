#!/usr/bin/env bash
# A private PostgreSQL for development, tests and benchmarks: Debian's
# postgresql, its own data directory and port, run as the `postgres` user
# (PostgreSQL refuses to run as root).
#
#   scripts/pg.sh start   # init (once) and start; prints `export DATABASE_URL=...` last
#   scripts/pg.sh stop    # stop it
#   scripts/pg.sh url     # print the URL
#   scripts/pg.sh status
#
# Environment: COLLOQUY_PG_PORT (default 55432), COLLOQUY_PG_DIR (default
# /var/tmp/colloquy-pg-$PORT), COLLOQUY_PG_FAST=1 (fsync off: tests only,
# never for benchmarks), COLLOQUY_PG_RESET=1 (wipe the data dir first),
# COLLOQUY_PG_LISTEN (listen_addresses, default 127.0.0.1; the test node adds its node address so
# pods reach the database), COLLOQUY_PG_ALLOW_CIDR (one more client range allowed to log in with
# the password, e.g. the test node's pod range).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PORT="${COLLOQUY_PG_PORT:-55432}"
DIR="${COLLOQUY_PG_DIR:-/var/tmp/colloquy-pg-$PORT}"
DATA="$DIR/data"
PASSWORD="colloquy"
DB="colloquy"
URL="postgres://postgres:$PASSWORD@127.0.0.1:$PORT/$DB"

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    need_debs postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$bin"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local bin; bin=$(pg_bin)
  if [ "${COLLOQUY_PG_RESET:-}" = 1 ] && [ -d "$DIR" ]; then
    stop || true
    rm -rf "$DIR"
  fi
  mkdir -p "$DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initialising PostgreSQL in $DATA"
    local pwfile="$DIR/.pw"
    printf '%s\n' "$PASSWORD" > "$pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$pwfile"
    as_pg "$bin/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
  fi
  if as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "PostgreSQL already running on port $PORT"
  else
    if [ -n "${COLLOQUY_PG_ALLOW_CIDR:-}" ] && ! grep -qF "$COLLOQUY_PG_ALLOW_CIDR" "$DATA/pg_hba.conf"; then
      printf 'host all all %s scram-sha-256\n' "$COLLOQUY_PG_ALLOW_CIDR" >> "$DATA/pg_hba.conf"
    fi
    local opts="-c listen_addresses=${COLLOQUY_PG_LISTEN:-127.0.0.1} -p $PORT -k $DIR -c max_connections=200"
    if [ "${COLLOQUY_PG_FAST:-}" = 1 ]; then
      opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    log "starting PostgreSQL on ${COLLOQUY_PG_LISTEN:-127.0.0.1}:$PORT"
    as_pg "$bin/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -o "$opts" -w -t 60 start >/dev/null ||
      { tail -n 30 "$DIR/postgres.log" >&2; die "PostgreSQL did not start"; }
  fi
  as_pg "$bin/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" |
    grep -q 1 || as_pg "$bin/createdb" -h "$DIR" -p "$PORT" -U postgres "$DB"
  echo "export DATABASE_URL=$URL"
}

stop() {
  local bin; bin=$(pg_bin)
  if [ -f "$DATA/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "stopping PostgreSQL on port $PORT"
    as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  status) as_pg "$(pg_bin)/pg_ctl" -D "$DATA" status ;;
  *) echo "usage: $0 start|stop|url|status" >&2; exit 2 ;;
esac
