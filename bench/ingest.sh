#!/usr/bin/env bash
# Ingest benchmark: the same CT slices sent with storescu to pacsnode (durable before every success)
# and to DCMTK's storescp -od (no fsync at all), with 1 and 4 concurrent associations, Nagle off on
# both sides. Prints instances/s and the ratio pacsnode/storescp measured in this same run.
# pacsnode runs three ways, alternating with the references:
#   fresh   a new storage root every run: the journal's segments are made during the ingest (a
#           node's first minutes after installation);
#   steady  the same root every run (the spool and the index emptied between runs, the journal's
#           segments kept, as a node in service has them);
#   tls     steady, over DICOM TLS (a test CA from tests/scripts/make_test_pki.sh, storescu +tls
#           with a client certificate, the default bcp195-nd profile).
# Beside them, measured in the same run, what bounds any durable receiver on this machine:
#   storescp --ignore (data read off the wire and dropped): the sender's and the network's share;
#   the disk's fdatasync of one journal record (530 KB), and its durable write rate for the
#   study's bytes (bench/disk_flush_ms.py);
# and from them the best ratio a receiver that acknowledges only durable instances could reach
# here: storescp -od / max(storescp --ignore + instances x fdatasync, bytes / durable rate) on one
# association (one instance at a time: each waits for its own flush), storescp -od / (bytes /
# durable rate) on four.
#
# Usage: bench/ingest.sh [BUILD_DIR] [SLICES] [SIZE]     (defaults: build 300 512)
# BEFORE=<another build dir>: its pacsnode runs too (fresh and steady), in the same alternation:
# a before/after comparison measured under the same conditions.
# Note: storescp serves one association at a time (no --fork), as a plain storescp does.
# Each side runs RUNS times (default 5); the best run of each is compared.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}; slices=${2:-300}; size=${3:-512}; runs=${RUNS:-5}
bin=$build/scp/pacsnode
work=$(mktemp -d /tmp/pacsnode-bench-ingest-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export TCP_NODELAY=1

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_echo() { for _ in $(seq 200); do echoscu -aec "$2" 127.0.0.1 "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no C-ECHO on $1" >&2; exit 1; }

echo "making $slices CT slices of ${size}x${size} ..."
/usr/bin/python3 "$here/../shared/tools/make_ct_phantom.py" "$work/ct" --slices "$slices" --size "$size" >/dev/null
# Split into 4 folders for the concurrent runs.
for i in 0 1 2 3; do mkdir -p "$work/part$i"; done
n=0; for f in "$work"/ct/*.dcm; do ln -s "$f" "$work/part$((n % 4))/"; n=$((n+1)); done

"$here/tests/scripts/make_test_pki.sh" "$work/pki"
tls_client=(+tls "$work/pki/modality.key" "$work/pki/modality.pem" +cf "$work/pki/ca.pem")

# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
# send PORT AET ASSOCIATIONS RECEIVER_PID [storescu options] -> "seconds sender_cpu receiver_cpu"
send() {
  local port=$1 aet=$2 k=$3 rx=$4 start end rx0
  shift 4
  rx0=$(cpu_of "$rx")
  start=$(date +%s.%N)
  local TIMEFORMAT='%U %S' cpu
  cpu=$( { time {
    if [ "$k" = 1 ]; then
      storescu "$@" -aec "$aet" +sd 127.0.0.1 "$port" "$work/ct" >&2
    else
      local pids=()
      for i in $(seq 0 $((k-1))); do storescu "$@" -aec "$aet" +sd 127.0.0.1 "$port" "$work/part$i" >&2 & pids+=($!); done
      wait "${pids[@]}"
    fi
  } ; } 2>&1 >/dev/null | tail -1)
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc -l) $(echo "$cpu" | awk '{print $1 + $2}') $(echo "$(cpu_of "$rx") - $rx0" | bc -l)"
}

# best NAME "seconds sender_cpu receiver_cpu": the fastest run, and the least CPU seen
declare -A secs scu_cpu rx_cpu
best() {
  local t c r
  read -r t c r <<< "$2"
  if [ -z "${secs[$1]:-}" ] || [ "$(echo "$t < ${secs[$1]}" | bc -l)" = 1 ]; then secs[$1]=$t; fi
  if [ -z "${scu_cpu[$1]:-}" ] || [ "$(echo "$c < ${scu_cpu[$1]}" | bc -l)" = 1 ]; then scu_cpu[$1]=$c; fi
  if [ -z "${rx_cpu[$1]:-}" ] || [ "$(echo "$r < ${rx_cpu[$1]}" | bc -l)" = 1 ]; then rx_cpu[$1]=$r; fi
}

# pacsnode on ROOT with the config below; prints the seconds of one send.
pacsnode_run() {
  local root=$1 k=$2 via=$3 bin=${4:-$bin} port tls_port
  port=$(free_port); tls_port=$(free_port); mkdir -p "$root"
  cat > "$work/pn.toml" <<TOML
[node]
port = $port
[tls]
enabled = true
port = $tls_port
certificate = "$work/pki/node.pem"
private_key = "$work/pki/node.key"
ca_certificates = "$work/pki/ca.pem"
[storage]
root = "$root"
min_free_mb = 0
[analysis]
enabled = false
[log]
level = "warn"
TOML
  "$bin" run --config "$work/pn.toml" >&2 & local pid=$!
  wait_echo "$port" PACSNODE
  local out
  if [ "$via" = tls ]; then out=$(send "$tls_port" PACSNODE "$k" $pid "${tls_client[@]}"); else out=$(send "$port" PACSNODE "$k" $pid); fi
  echo "$out"
  kill -TERM $pid; wait $pid || true
  local got; got=$(find "$root/incoming" -name '*.dcm' | wc -l)
  [ "$got" = "$slices" ] || { echo "pacsnode ($via) stored $got of $slices" >&2; exit 1; }
}
# The steady root between runs: spool and index emptied, journal segments kept.
empty_root() { rm -rf "$1/incoming" "$1"/index.sqlite* "$1/results" "$1/nodes" "$1/status.json"; }

for run in $(seq "$runs"); do
for k in 1 4; do
  # storescp, the reference, and storescp --ignore (nothing written: the sender's share)
  for mode in od ignore; do
    port=$(free_port); out="$work/scp$k-$run"; mkdir -p "$out"
    if [ $mode = od ]; then storescp -od "$out" -aet STORESCP "$port" & pid=$!
    else storescp --ignore -aet STORESCP "$port" & pid=$!; fi
    wait_echo "$port" STORESCP
    best "storescp-$mode$k" "$(send "$port" STORESCP "$k" $pid)"
    kill $pid; wait $pid 2>/dev/null || true
    if [ $mode = od ]; then
      got=$(find "$out" -type f | wc -l); [ "$got" = "$slices" ] || { echo "storescp stored $got of $slices" >&2; exit 1; }
    fi
    rm -rf "$out"
  done
  best "pacsnode-fresh$k" "$(pacsnode_run "$work/fresh$k-$run" "$k" plain)"
  rm -rf "$work/fresh$k-$run"
  empty_root "$work/steady"
  best "pacsnode-steady$k" "$(pacsnode_run "$work/steady" "$k" plain)"
  empty_root "$work/steady"
  best "pacsnode-tls$k" "$(pacsnode_run "$work/steady" "$k" tls)"
  if [ -n "${BEFORE:-}" ]; then
    best "before-fresh$k" "$(pacsnode_run "$work/bfresh$k-$run" "$k" plain "$BEFORE/scp/pacsnode")"
    rm -rf "$work/bfresh$k-$run"
    empty_root "$work/bsteady"
    best "before-steady$k" "$(pacsnode_run "$work/bsteady" "$k" plain "$BEFORE/scp/pacsnode")"
  fi
done
done

# What durability costs on this disk, measured now (bench/disk_flush_ms.py).
flush_ms=$(/usr/bin/python3 "$here/bench/disk_flush_ms.py" "$work")
record_ms=$(/usr/bin/python3 "$here/bench/disk_flush_ms.py" --journal "$work")
rate_mbs=$(/usr/bin/python3 "$here/bench/disk_flush_ms.py" --bandwidth "$work" "$work"/ct/*.dcm)
study_mb=$(du -cb "$work"/ct/*.dcm | tail -1 | awk '{print $1 / 1e6}')

# The structural scan each instance passes before it is committed, on the same files.
read -r scan_us _ scan_file_bytes < <("$build/bench/bench_scan" "$work"/ct/*.dcm)

echo "== machine: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
printf '\n%-36s %8s %12s %10s %11s %11s\n' "ingest, $slices slices ${size}x${size}, best of $runs" "seconds" "instances/s" "/storescp" \
  "sender CPU" "receiver CPU"
ncpu=$(nproc)
for k in 1 4; do
  for who in storescp-od storescp-ignore pacsnode-fresh pacsnode-steady pacsnode-tls ${BEFORE:+before-fresh before-steady}; do
    s=${secs[$who$k]}
    printf '%-36s %8.2f %12.1f %9.2fx %10.2fs %10.2fs\n' "$who, $k association(s)" "$s" "$(echo "$slices / $s" | bc -l)" \
      "$(echo "${secs[storescp-od$k]} / $s" | bc -l)" "${scu_cpu[$who$k]}" "${rx_cpu[$who$k]}"
  done
  # What no durable receiver can beat here: the study's bytes at the disk's durable rate; on one
  # association also the sender's own time plus one journal-record flush per instance; with
  # several, the senders' CPU plus the least a receiver uses (storescp --ignore) over all CPUs.
  floor=$(echo "$study_mb / $rate_mbs" | bc -l); why="disk rate"
  if [ $k = 1 ]; then
    per=$(echo "${secs[storescp-ignore1]} + $slices * $record_ms / 1000" | bc -l)
    [ "$(echo "$per > $floor" | bc -l)" = 1 ] && { floor=$per; why="sender + a flush per instance"; }
  else
    cpu=$(echo "(${scu_cpu[storescp-ignore$k]} + ${rx_cpu[storescp-ignore$k]}) / $ncpu" | bc -l)
    [ "$(echo "$cpu > $floor" | bc -l)" = 1 ] && { floor=$cpu; why="CPU: senders + a receiver that drops everything, on $ncpu CPUs"; }
  fi
  printf '%-36s %8.2f %12s %9.2fx  (the best a durable receiver can do here: %s)\n' "ceiling, $k association(s)" "$floor" "" \
    "$(echo "${secs[storescp-od$k]} / $floor" | bc -l)" "$why"
  printf 'ratio pacsnode/storescp, %s: fresh %.2fx, steady %.2fx  (target %s)\n\n' "$k" \
    "$(echo "${secs[storescp-od$k]} / ${secs[pacsnode-fresh$k]}" | bc -l)" "$(echo "${secs[storescp-od$k]} / ${secs[pacsnode-steady$k]}" | bc -l)" \
    "$([ $k = 1 ] && echo '>= 1.0' || echo '>= 1.5')"
done
printf 'disk: fdatasync of one 530 KB journal record: %s ms median; durable write rate %s MB/s (%.0f MB of this study: %.2f s)\n' \
  "$record_ms" "$rate_mbs" "$study_mb" "$(echo "$study_mb / $rate_mbs" | bc -l)"
printf 'disk: write+fsync+rename+dir fsync of one 530 KB file: %s ms median (the path without the journal)\n' "$flush_ms"
printf 'structural scan (dicom/scan.h) of the same files: %s us per %.0f KiB file = %.2f %% of a journal record flush\n' \
  "$scan_us" "$(echo "$scan_file_bytes / 1024" | bc -l)" "$(echo "$scan_us / 10 / $record_ms" | bc -l)"
