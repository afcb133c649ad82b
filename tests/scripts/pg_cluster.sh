#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the tests (issue 14: the index in PostgreSQL).
#   pg_cluster.sh start DIR     initdb in DIR (if not done yet), start it on 127.0.0.1 on a free port,
#                               wait until it accepts connections, write DIR/dsn
#   pg_cluster.sh stop DIR      stop it (fast: open sessions are cut) and remove DIR
#   pg_cluster.sh restart DIR   stop (fast) and start again on the same port and data
#   pg_cluster.sh halt DIR      stop (fast) and keep DIR: `start` brings it back on the same port
# Idempotent: start on a running cluster and stop on a missing one succeed. Runs as root too: the
# server then runs as the `postgres` system user (initdb and postgres refuse root), DIR owned by it.
#
# Settings: as a default installation, fsync and synchronous_commit on (what production runs, so
# timings measured against this cluster mean something). Only what a throwaway test server needs
# differs: trust authentication on 127.0.0.1 and the socket in DIR (no password, no system socket
# directory), no TCP on other interfaces, and max_connections raised to 200 (several daemons with
# their pools under test at once).
set -euo pipefail

BIN=/usr/lib/postgresql/15/bin
die() { echo "pg_cluster.sh: $*" >&2; exit 1; }

usage() { sed -n '2,7p' "$0" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac

for b in initdb pg_ctl pg_isready postgres; do
  [ -x "$BIN/$b" ] || die "$BIN/$b not found: install the Debian package postgresql (PostgreSQL 15)"
done

# The user the server runs as, and how to run a command as it.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  id -u postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user (the postgresql package creates it)"
  command -v runuser >/dev/null || die "runuser not found (package util-linux)"
  as_pg=(runuser -u postgres --)
fi
run_pg() { "${as_pg[@]}" "$@"; }

data="$dir/data"
log="$dir/server.log"

is_running() { [ -f "$data/postmaster.pid" ] && run_pg "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; }

free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  mkdir -p "$dir"
  if [ "${#as_pg[@]}" -gt 0 ]; then
    chown postgres: "$dir"
    # The server user must be able to reach DIR (a test's temp dir under a root-only parent fails
    # here, with a clear message rather than a server that cannot start).
    run_pg test -w "$dir" || die "the postgres user cannot write $dir (a parent directory is not searchable by it?)"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    run_pg "$BIN/initdb" -D "$data" --locale=C -E UTF8 -A trust -U postgres >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; die "initdb failed in $data"; }
  fi
  if is_running; then
    [ -f "$dir/dsn" ] || die "a server runs in $data but $dir/dsn is missing"
    return 0
  fi
  local port
  if [ -f "$dir/port" ]; then port=$(cat "$dir/port"); else port=$(free_port); fi
  # The socket's path must fit in sockaddr_un (107 bytes): in DIR if it fits, else no socket
  # (the tests connect over TCP).
  local sockets="$dir"
  [ $(( ${#dir} + 20 )) -lt 107 ] || sockets=""
  # Written into the data directory's own configuration, so that restart keeps them.
  cat >"$dir/port.conf.tmp" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockets'
max_connections = 200
fsync = on
synchronous_commit = on
logging_collector = off
EOF
  if [ "${#as_pg[@]}" -gt 0 ]; then chown postgres: "$dir/port.conf.tmp"; fi
  run_pg cp "$dir/port.conf.tmp" "$data/postgresql.auto.conf"
  rm -f "$dir/port.conf.tmp"
  if ! run_pg "$BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null; then
    tail -n 20 "$log" >&2 || true
    die "the server in $data did not start (port $port; log: $log)"
  fi
  local i
  for i in $(seq 1 100); do
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres && break
    [ "$i" -eq 100 ] && die "the server on 127.0.0.1:$port does not accept connections (log: $log)"
    sleep 0.1
  done
  echo "$port" >"$dir/port"
  echo "host=127.0.0.1 port=$port user=postgres dbname=postgres" >"$dir/dsn.tmp"
  mv "$dir/dsn.tmp" "$dir/dsn"
}

stop() {
  if [ -d "$data" ] && is_running; then
    run_pg "$BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null || die "pg_ctl stop failed for $data (log: $log)"
  fi
}

case "$cmd" in
  start) start ;;
  stop)
    stop
    rm -rf "$dir"
    ;;
  restart)
    [ -f "$data/PG_VERSION" ] || die "no cluster in $dir (start it first)"
    stop
    start
    ;;
  halt) stop ;;
  *) usage ;;
esac
