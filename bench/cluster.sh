#!/usr/bin/env bash
# Cluster benchmark (issue 14): the figures docs/scaling.md builds its capacity model on, measured
# on this machine in one run.
#   1. ingest of the same CT slices via storescu, 1 and 4 associations, Nagle off, analysis off:
#      one pacsnode on SQLite, one pacsnode on PostgreSQL (a throwaway PostgreSQL 15 cluster on this
#      machine, tests/scripts/pg_cluster.sh: fsync and synchronous_commit on), and 3 pacsnode nodes
#      on that PostgreSQL with one shared storage root (the 4 associations spread round robin over
#      the 3 nodes' ports; the single association goes to the first node). Every setup runs RUNS
#      times (default 3) into a fresh root and a fresh database, alternating; the best run of each
#      is compared, the spread printed. Ratios PG/SQLite and 3-node/1-node PG.
#   2. database cost, on one node on PostgreSQL with statement logging (log_statement = 'all' for
#      its database only): statements (each one libpq round trip: PQexecParams, BEGIN and COMMIT
#      included) and transactions per instance ingested and per analysis job (study completion,
#      job claim, series runs, results and their delivery to one destination, a storescp), apart
#      from the node's idle background (heartbeats, polls) measured over an idle window before;
#      pg_stat_database xact_commit deltas beside the count from the log.
#   3. analysis seconds per series of the same CT (ct-chest), from the daemon's "analysed in" line,
#      one job per cost run.
#   4. what one durable file write and one PostgreSQL commit cost on this disk.
# Exits non-zero if any run loses an instance (rows in the index or files in the spool).
#
# Usage: bench/cluster.sh [BUILD_DIR] [SLICES] [SIZE]     (defaults: build 300 512; RUNS=3)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}; slices=${2:-300}; size=${3:-512}; runs=${RUNS:-3}
bin=$build/scp/pacsnode
pgc=$here/tests/scripts/pg_cluster.sh
pgbin=/usr/lib/postgresql/15/bin
# ../shared beside the checkout (beside the main checkout when this is a git worktree)
shared=$here/../shared
[ -d "$shared" ] || shared=$(cd "$(git -C "$here" rev-parse --git-common-dir)/../.." 2>/dev/null && pwd)/shared
[ -x "$bin" ] || { echo "no $bin: build the pacsnode target first" >&2; exit 2; }
work=$(mktemp -d /tmp/pacsnode-bench-cluster-XXXXXX)
chmod 711 "$work"  # the postgres user (the server when run as root) must reach $work/pg
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  kill $(jobs -p) 2>/dev/null || true
  "$pgc" stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export TCP_NODELAY=1

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_echo() { for _ in $(seq 400); do echoscu -aec "$2" 127.0.0.1 "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no C-ECHO on $1" >&2; exit 1; }
now() { date +%s.%N; }
fail() { echo "bench/cluster.sh: $*" >&2; exit 1; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), nproc $(nproc)"
echo "making $slices CT slices of ${size}x${size} ..."
/usr/bin/python3 "$shared/tools/make_ct_phantom.py" "$work/ct" --slices "$slices" --size "$size" >/dev/null
for i in 0 1 2 3; do mkdir -p "$work/part$i"; done
n=0; for f in "$work"/ct/*.dcm; do ln -s "$f" "$work/part$((n % 4))/"; n=$((n+1)); done

echo "starting a throwaway PostgreSQL 15 ..."
"$pgc" start "$work/pg" >/dev/null
pgport=$(cat "$work/pg/port")
# (our own queries are not logged: only the daemons' statements are counted)
psql_() { PGOPTIONS='-c client_min_messages=warning -c log_statement=none' "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
dsn_for() { echo "host=127.0.0.1 port=$pgport user=postgres dbname=$1"; }
new_db() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null; }
drop_db() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null; }
# Prefix every server log line with its time, backend pid and database (for the cost count).
psql_ -d postgres -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %d '" -c "SELECT pg_reload_conf()" >/dev/null

# write_config FILE PORT ROOT NAME BACKEND DSN ANALYSIS LEVEL [SINK_PORT]
write_config() {
  local file=$1 port=$2 root=$3 name=$4 backend=$5 dsn=$6 analysis=$7 level=$8 sink=${9:-}
  if [ -n "$sink" ]; then printf '[[destination]]\nname = "sink"\nae_title = "SINK"\nhost = "127.0.0.1"\nport = %s\n' "$sink"; fi > "$file"
  cat >> "$file" <<TOML
[node]
port = $port
name = "$name"
[index]
backend = "$backend"
dsn = "$dsn"
[storage]
root = "$root"
min_free_mb = 0
[study]
quiet_seconds = 3
[analysis]
enabled = $analysis
[log]
level = "$level"
TOML
}

# start_node CONFIG LOG PORT: starts a daemon, waits for C-ECHO, appends its pid to pids.
start_node() {
  "$bin" run --config "$1" >"$2" 2>&1 & pids+=($!)
  wait_echo "$3" PACSNODE
}
stop_nodes() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# send K PORT... : K associations, association i to the (i mod #ports)-th port -> seconds
send() {
  local k=$1 start end i; shift
  local ports=("$@")
  start=$(now)
  if [ "$k" = 1 ]; then
    storescu -aec PACSNODE +sd 127.0.0.1 "${ports[0]}" "$work/ct"
  else
    for i in $(seq 0 $((k-1))); do storescu -aec PACSNODE +sd 127.0.0.1 "${ports[$((i % ${#ports[@]}))]}" "$work/part$i" & done
    wait
  fi
  end=$(now)
  echo "$end - $start" | bc -l
}

# check_counts ROOT WHAT [DB]: every slice has its file, and its row in the index.
check_counts() {
  local root=$1 what=$2 db=${3:-} files rows
  files=$(find "$root/incoming" -name '*.dcm' | wc -l)
  if [ -n "$db" ]; then rows=$(psql_ -d "$db" -c "SELECT count(*) FROM instances")
  else rows=$(sqlite3 "$root/index.sqlite" "SELECT count(*) FROM instances"); fi
  [ "$files" = "$slices" ] && [ "$rows" = "$slices" ] || fail "$what stored $files file(s) and $rows index row(s) of $slices"
}

declare -A secs all
record() {  # record KEY SECONDS: keep the best, and every run for the spread
  if [ -z "${secs[$1]:-}" ] || [ "$(echo "$2 < ${secs[$1]}" | bc -l)" = 1 ]; then secs[$1]=$2; fi
  all[$1]="${all[$1]:-} $2"
}

echo "ingest: $runs run(s) of 1 and 4 associations on SQLite, PostgreSQL and 3 nodes on PostgreSQL ..."
for run in $(seq "$runs"); do
for k in 1 4; do
  # one node, SQLite
  port=$(free_port); root="$work/sqlite-$k-$run"; mkdir -p "$root"
  write_config "$work/n.toml" "$port" "$root" n1 sqlite "" false warn
  start_node "$work/n.toml" "$work/sqlite.log" "$port"
  record "sqlite$k" "$(send "$k" "$port")"
  stop_nodes
  check_counts "$root" "SQLite node ($k association(s), run $run)"
  rm -rf "$root"

  # one node, PostgreSQL
  port=$(free_port); root="$work/pg1-$k-$run"; db="pn_pg1_${k}_$run"; mkdir -p "$root"; new_db "$db"
  write_config "$work/n.toml" "$port" "$root" n1 postgresql "$(dsn_for "$db")" false warn
  start_node "$work/n.toml" "$work/pg1.log" "$port"
  record "pg1_$k" "$(send "$k" "$port")"
  stop_nodes
  check_counts "$root" "PostgreSQL node ($k association(s), run $run)" "$db"
  drop_db "$db"; rm -rf "$root"

  # three nodes, PostgreSQL, one shared root
  root="$work/pg3-$k-$run"; db="pn_pg3_${k}_$run"; mkdir -p "$root"; new_db "$db"; ports=()
  for node in n1 n2 n3; do
    port=$(free_port); ports+=("$port")
    write_config "$work/$node.toml" "$port" "$root" "$node" postgresql "$(dsn_for "$db")" false warn
    start_node "$work/$node.toml" "$work/pg3-$node.log" "$port"
  done
  conns=$(psql_ -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")
  record "pg3_$k" "$(send "$k" "${ports[@]}")"
  stop_nodes
  check_counts "$root" "3 nodes on PostgreSQL ($k association(s), run $run)" "$db"
  drop_db "$db"; rm -rf "$root"
done
done

# --- database cost and analysis time: one PostgreSQL node, analysis on, statements logged ---------
# count_log FROM TO DB HIST [BACKGROUND]: "statements transactions own_statements own_transactions"
# the server logged for DB between two byte offsets of its log. A statement: one "statement:" or
# "execute <unnamed>:" line (simple and extended protocol), i.e. one round trip. A transaction:
# BEGIN..COMMIT, or one statement outside it (an implicit transaction). Own: the transactions with at
# least one statement that the BACKGROUND histogram (the idle window's) does not have, i.e. what the
# ingest or the job added, counted exactly; the others are the node's periodic polls and heartbeats.
# HIST gets the statements by text (first 90 characters): all of them, or the own ones with BACKGROUND.
count_log() {
  /usr/bin/python3 - "$work/pg/server.log" "$1" "$2" "$3" "$4" "${5:-}" <<'PY'
import collections, re, sys
path, a, b, db, hist, background = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
bg = set()
if background:
    bg = {l.rstrip("\n").split("\t", 1)[1] for l in open(background)}
with open(path, "rb") as f:
    f.seek(a); text = f.read(b - a).decode("utf-8", "replace")
line = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (\S*) LOG:  (?:statement|execute [^:]*): (.*)$")
open_tx = {}; units = []  # units: lists of statement texts, one per transaction
for l in text.splitlines():
    m = line.match(l)
    if not m or m.group(2) != db: continue
    pid, sql = m.group(1), " ".join(m.group(3).split())[:90]
    up = sql.upper()
    if up.startswith(("BEGIN", "START TRANSACTION")):
        open_tx[pid] = [sql]
    elif pid in open_tx:
        open_tx[pid].append(sql)
        if up.startswith(("COMMIT", "ROLLBACK", "END")): units.append(open_tx.pop(pid))
    else:
        units.append([sql])
units += open_tx.values()
control = ("BEGIN", "COMMIT", "ROLLBACK", "END", "START TRANSACTION")
own = [u for u in units if not bg or any(s not in bg for s in u if not s.upper().startswith(control))]
kinds = collections.Counter(s for u in (own if bg else units) for s in u)
with open(hist, "w") as f:
    for k, c in kinds.most_common(): f.write(f"{c}\t{k}\n")
print(sum(map(len, units)), len(units), sum(map(len, own)), len(own))
PY
}
log_at() { stat -c %s "$work/pg/server.log"; }
# CPU seconds of a process: "own children" (user+system; children: those it has reaped, i.e. the
# analysis workers that ended).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f %.2f\n", ($14 + $15) / hz, ($16 + $17) / hz}' "/proc/$1/stat"; }
# Transactions committed and rolled back in DB as pg_stat_database shows them. A backend publishes
# its counts when idle, at most once a second, so this reads them 2 s after the moment it stands for.
xacts() { sleep 2; psql_ -d postgres -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$1'"; }

idle=10
echo "database cost and analysis time: $runs run(s) on one PostgreSQL node with statement logging ..."
cost_rows=()
for run in $(seq "$runs"); do
  port=$(free_port); root="$work/cost-$run"; db="pn_cost_$run"; mkdir -p "$root"; new_db "$db"
  psql_ -d postgres -c "ALTER DATABASE $db SET log_statement = 'all'" >/dev/null
  # the results go to DCMTK's storescp, so that the job's cost includes one delivery per object
  sink=$(free_port); mkdir -p "$work/sink"; storescp -od "$work/sink" -aet SINK "$sink" & pids+=($!)
  wait_echo "$sink" SINK
  write_config "$work/n.toml" "$port" "$root" n1 postgresql "$(dsn_for "$db")" true info "$sink"
  start_node "$work/n.toml" "$work/cost-$run.log" "$port"
  sleep 2  # past the start (schema, requeue, first heartbeat)
  a=$(log_at); ta=$(now); xa=$(xacts "$db")
  sleep "$idle"
  b=$(log_at); tb=$(now); xb=$(xacts "$db")
  node_pid=${pids[-1]}; read -r cpu_b wcpu_b < <(cpu_of "$node_pid")
  send 1 "$port" >/dev/null
  c=$(log_at); tc=$(now); xc=$(xacts "$db")
  for _ in $(seq 1200); do grep -q 'analysed in' "$work/cost-$run.log" && break; sleep 0.1; done
  grep -q 'analysed in' "$work/cost-$run.log" || fail "no analysis within 120 s (log: $(tail -n 5 "$work/cost-$run.log"))"
  # every result object sent (read off the daemon's log: polling the database would add to its counts)
  objects=$(sed -n 's/.*analysed in .* \([0-9][0-9]*\) object(s) in .*/\1/p' "$work/cost-$run.log" | head -n 1)
  sent() { sed -n "s/.*destination 'sink' .*: \([0-9][0-9]*\) object(s) sent in.*/\1/p" "$work/cost-$run.log" | awk '{s += $1} END {print s + 0}'; }
  for _ in $(seq 600); do [ "$(sent)" -ge "$objects" ] && break; sleep 0.2; done
  [ "$(sent)" -ge "$objects" ] && [ "$objects" -gt 0 ] || fail "$(sent) of ${objects:-?} result object(s) sent within 120 s"
  sleep 1
  d=$(log_at); td=$(now); xd=$(xacts "$db")
  read -r cpu_d wcpu_d < <(cpu_of "$node_pid")
  wcpu=$(echo "$wcpu_d - $wcpu_b" | bc -l); dcpu=$(echo "$cpu_d - $cpu_b" | bc -l)
  stop_nodes
  rm -rf "$work/sink"
  check_counts "$root" "PostgreSQL node with analysis (run $run)" "$db"
  row_bytes=$(psql_ -d "$db" -c "VACUUM ANALYZE instances" -c "SELECT pg_total_relation_size('instances') / count(*) FROM instances")
  asecs=$(sed -n 's/.*analysed in \([0-9.]*\) s.*/\1/p' "$work/cost-$run.log" | head -n 1)
  stages=$(grep -o 'series [^ ]* (ct-chest): .*' "$work/cost-$run.log" | head -n 1 | sed 's/^series [^ ]* //')
  read -r si ti _ _ < <(count_log "$a" "$b" "$db" "$work/hist-idle")
  read -r sn tn on otn < <(count_log "$b" "$c" "$db" "$work/hist-ingest" "$work/hist-idle")
  read -r sj tj oj otj < <(count_log "$c" "$d" "$db" "$work/hist-job" "$work/hist-idle")
  cost_rows+=("$(/usr/bin/python3 - "$si" "$ti" "$sn" "$tn" "$sj" "$tj" "$xa" "$xb" "$xc" "$xd" "$ta" "$tb" "$tc" "$td" "$slices" "$asecs" "$on" "$otn" "$oj" "$otj" "$wcpu" "$dcpu" <<'PY'
import sys
si, ti, sn, tn, sj, tj, xa, xb, xc, xd = map(int, sys.argv[1:11])
ta, tb, tc, td = map(float, sys.argv[11:15]); n = int(sys.argv[15]); asecs = sys.argv[16]
on, otn, oj, otj = map(int, sys.argv[17:21]); wcpu, dcpu = map(float, sys.argv[21:23])
rs, rt, rx = si / (tb - ta), ti / (tb - ta), (xb - xa) / (tb - ta)  # idle background per second
ing, job = tc - tb, td - tc
print(f"{rs:.2f}/{rt:.2f}/{rx:.2f} "
      f"{on / n:.2f}/{otn / n:.2f} {(sn - rs * ing) / n:.2f}/{(tn - rt * ing) / n:.2f}/{((xc - xb) - rx * ing) / n:.2f} "
      f"{oj}/{otj} {sj - rs * job:.0f}/{tj - rt * job:.0f}/{(xd - xc) - rx * job:.0f} {job:.1f} {asecs} {wcpu:.1f} {dcpu:.1f}")
PY
)")
  echo "  run $run: $objects result object(s) sent; $stages"
  drop_db "$db"; rm -rf "$root"
done

# --- the disk and the database's commit -------------------------------------------------------------
flush_ms=$(/usr/bin/python3 "$here/bench/disk_flush_ms.py" "$work")
new_db pn_commit
psql_ -d pn_commit -c "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v TEXT)" >/dev/null
echo "INSERT INTO t (v) VALUES ('1.2.826.0.1.3680043.8.498.12345678901234567890');" > "$work/commit.sql"
commit_tps=$("$pgbin/pgbench" -n -h 127.0.0.1 -p "$pgport" -U postgres -c 1 -t 500 -f "$work/commit.sql" pn_commit 2>/dev/null |
  sed -n 's/^tps = \([0-9.]*\).*/\1/p')
drop_db pn_commit

# --- report ------------------------------------------------------------------------------------------
ips() { echo "$slices / $1" | bc -l; }
printf '\n%-40s %10s %12s   %s\n' "ingest, $slices slices ${size}x${size}, best of $runs" "seconds" "instances/s" "all runs (instances/s)"
for k in 1 4; do
  for who in sqlite pg1_ pg3_; do
    key="$who$k"; [ "$who" = sqlite ] && key="sqlite$k"
    case $who in sqlite) label="1 node, SQLite";; pg1_) label="1 node, PostgreSQL";; pg3_) label="3 nodes, PostgreSQL";; esac
    list=""; for v in ${all[$key]}; do list+=$(printf ' %.0f' "$(ips "$v")"); done
    printf '%-40s %10.2f %12.1f  %s\n' "$label, $k association(s)" "${secs[$key]}" "$(ips "${secs[$key]}")" "$list"
  done
  printf '%-40s %23.2fx\n' "ratio PostgreSQL/SQLite, 1 node, $k" "$(echo "${secs[sqlite$k]} / ${secs[pg1_$k]}" | bc -l)"
  printf '%-40s %23.2fx\n' "ratio 3 nodes/1 node (PostgreSQL), $k" "$(echo "${secs[pg1_$k]} / ${secs[pg3_$k]}" | bc -l)"
done
echo "connections to PostgreSQL held by the 3 nodes (pg_stat_activity): $conns"

printf '\ndatabase cost on one PostgreSQL node; statements = libpq round trips, tx = transactions:\n'
printf '%-4s %20s %14s %20s %9s %18s %10s %10s\n' run "idle stmt/tx/xact" "instance: own" "instance: all-idle" "job: own" "job: all-idle" "analysis" "CPU s"
printf '%-4s %20s %14s %20s %9s %18s %10s %10s\n' "" "per s" "stmt/tx" "stmt/tx/xact" "stmt/tx" "stmt/tx/xact" "wall s" "wkr/node"
i=0
for row in "${cost_rows[@]}"; do
  i=$((i+1)); read -r idle_r own_i all_i own_j all_j jw as wc dc <<<"$row"
  printf '%-4s %20s %14s %20s %9s %18s %10s %10s\n' "$i" "$idle_r" "$own_i" "$all_i" "$own_j" "$all_j" "$as" "$wc/$dc"
done
echo "own: the transactions (and their statements, BEGIN/COMMIT included) with a statement the idle window"
echo "  never ran, counted exactly from the statement log; all-idle: everything logged minus the idle rate"
echo "  times the window (stmt, tx from the log; xact: pg_stat_database xact_commit + xact_rollback)."
echo "job: from the last C-STORE response until every result object is sent and 1 s more: study completion"
echo "  (quiet_seconds = 3), job claim, series run, results with their outbox rows, and their delivery to one"
echo "  destination (storescp). analysis wall s: the job's wall time ('analysed in'), one series. CPU s: user+system"
echo "  seconds of the analysis worker(s) that ended (wkr) and of the daemon itself (node; it received the"
echo "  $slices instances and sent the results) from the start of the ingest to the end of the job window."
echo "statements of the last cost run by text (first 90 characters): the idle background per s, own per instance and per job:"
/usr/bin/python3 - "$work" "$slices" "$(echo "$tb - $ta" | bc -l)" <<'PY'
import sys
work, n, t_idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for name, div, unit in (("idle", t_idle, "per s"), ("ingest", n, "own, per instance"), ("job", 1, "own, per job")):
    print(f"  {name} ({unit}):")
    for l in open(f"{work}/hist-{name}"):
        c, k = l.rstrip("\n").split("\t", 1)
        print(f"    {int(c) / div:7.2f}  {k}")
PY
echo "instances table with its indexes: $row_bytes bytes per instance ($slices rows of the CT; pg_total_relation_size)"
printf '\ndisk: write+fsync+rename+dir fsync of one 512 KiB file: %s ms median (at most %.0f/s on one writer)\n' \
  "$flush_ms" "$(echo "1000 / $flush_ms" | bc -l)"
printf 'PostgreSQL: single-row INSERT commits on one connection (pgbench, synchronous_commit on): %.0f/s = %.2f ms each\n' \
  "$commit_tps" "$(echo "1000 / $commit_tps" | bc -l)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg), nproc $(nproc)"
