#!/usr/bin/env bash
# Ingest benchmark: the same CT slices sent with storescu to pacsnode (fsync before every success)
# and to DCMTK's storescp -od (no fsync), with 1 and 4 concurrent associations, Nagle off on both
# sides. Prints instances/s and the ratio pacsnode/storescp measured in this same run, then what one
# durable write costs on this disk and what the structural scan of each received instance costs
# (bench_scan, on the same files) beside it. pacsnode is also measured over DICOM TLS (a test CA
# from tests/scripts/make_test_pki.sh, storescu +tls with a client certificate, the default
# bcp195-nd profile), and the ratio TLS/plain printed.
#
# Usage: bench/ingest.sh [BUILD_DIR] [SLICES] [SIZE]     (defaults: build 300 512)
# Note: storescp -od serves one association at a time (no --fork), as a plain storescp does.
# Each side runs RUNS times (default 3) into a fresh folder; the best run of each is compared.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}; slices=${2:-300}; size=${3:-512}; runs=${RUNS:-3}
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

# send PORT AET ASSOCIATIONS [storescu options] -> seconds
send() {
  local port=$1 aet=$2 k=$3 start end
  shift 3
  start=$(date +%s.%N)
  if [ "$k" = 1 ]; then
    storescu "$@" -aec "$aet" +sd 127.0.0.1 "$port" "$work/ct"
  else
    for i in $(seq 0 $((k-1))); do storescu "$@" -aec "$aet" +sd 127.0.0.1 "$port" "$work/part$i" & done
    wait
  fi
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

declare -A secs
best() { if [ -z "${secs[$1]:-}" ] || [ "$(echo "$2 < ${secs[$1]}" | bc -l)" = 1 ]; then secs[$1]=$2; fi; }
for run in $(seq "$runs"); do
for k in 1 4; do
  # storescp, the reference
  port=$(free_port); out="$work/scp$k-$run"; mkdir -p "$out"
  storescp -od "$out" -aet STORESCP "$port" & pid=$!
  wait_echo "$port" STORESCP
  best "storescp$k" "$(send "$port" STORESCP "$k")"
  kill $pid; wait $pid 2>/dev/null || true
  got=$(find "$out" -type f | wc -l); [ "$got" = "$slices" ] || { echo "storescp stored $got of $slices" >&2; exit 1; }
  rm -rf "$out"

  # pacsnode, plain DICOM and then DICOM over TLS (each into a fresh storage root)
  for via in plain tls; do
    port=$(free_port); tls_port=$(free_port); root="$work/pn$k-$run-$via"; mkdir -p "$root"
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
    "$bin" run --config "$work/pn.toml" & pid=$!
    wait_echo "$port" PACSNODE
    if [ $via = plain ]; then
      best "pacsnode$k" "$(send "$port" PACSNODE "$k")"
    else
      best "pacsnode-tls$k" "$(send "$tls_port" PACSNODE "$k" "${tls_client[@]}")"
    fi
    kill -TERM $pid; wait $pid || true
    got=$(find "$root/incoming" -name '*.dcm' | wc -l); [ "$got" = "$slices" ] || { echo "pacsnode ($via) stored $got of $slices" >&2; exit 1; }
    rm -rf "$root"
  done
done
done

# What one fsync'ed file costs on this disk: the floor under one association's C-STORE with
# durable acknowledgement (file fsync + rename + directory fsync).
flush_ms=$(/usr/bin/python3 "$here/bench/disk_flush_ms.py" "$work")

# The structural scan each instance passes before it is committed, on the same files.
read -r scan_us _ scan_file_bytes < <("$build/bench/bench_scan" "$work"/ct/*.dcm)

printf '\n%-32s %12s %12s\n' "ingest, $slices slices ${size}x${size}, best of $runs" "seconds" "instances/s"
for k in 1 4; do
  for who in storescp pacsnode pacsnode-tls; do
    s=${secs[$who$k]}
    printf '%-32s %12.2f %12.1f\n' "$who, $k association(s)" "$s" "$(echo "$slices / $s" | bc -l)"
  done
  printf '%-32s %25.2fx  (target %s)\n' "ratio pacsnode/storescp, $k" "$(echo "${secs[storescp$k]} / ${secs[pacsnode$k]}" | bc -l)" "$([ $k = 1 ] && echo '>= 0.5' || echo '>= 1.0')"
  printf '%-32s %25.2fx\n' "ratio TLS/plain pacsnode, $k" "$(echo "${secs[pacsnode$k]} / ${secs[pacsnode-tls$k]}" | bc -l)"
done
printf '\ndisk: write+fsync+rename+dir fsync of one 512 KiB file: %s ms median -> at most %.0f instances/s\n' \
  "$flush_ms" "$(echo "1000 / $flush_ms" | bc -l)"
echo "on one association with acknowledgement after fsync (storescp -od does not fsync)."
printf 'structural scan (dicom/scan.h) of the same files: %s us per %.0f KiB file = %.2f %% of that durable write\n' \
  "$scan_us" "$(echo "$scan_file_bytes / 1024" | bc -l)" "$(echo "$scan_us / 10 / $flush_ms" | bc -l)"
