#!/usr/bin/env bash
# End-to-end latency: from the last instance acknowledged to SEG and SR stored in a real Orthanc,
# minus the quiet time, for a 300-slice 512x512 chest-like CT. Target: at most 2 s.
#
# Usage: bench/e2e.sh [BUILD_DIR] [SLICES] [SIZE]     (defaults: build 300 512)
#        PRESTART=false bench/e2e.sh ...               without a worker started ahead (the reference)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}; slices=${2:-300}; size=${3:-512}
work=$(mktemp -d /tmp/pacsnode-bench-e2e-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export TCP_NODELAY=1
quiet=2

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
count() { curl -sf "http://127.0.0.1:$http/statistics" | sed -n 's/.*"CountInstances" *: *\([0-9]*\).*/\1/p'; }

echo "making $slices CT slices of ${size}x${size} ..."
/usr/bin/python3 "$here/../shared/tools/make_ct_phantom.py" "$work/ct" --slices "$slices" --size "$size" >/dev/null

dicom=$(free_port); http=$(free_port); port=$(free_port); api=$(free_port)
mkdir -p "$work/orthanc"
cat > "$work/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$work/orthanc", "IndexDirectory": "$work/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": $dicom, "HttpPort": $http, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomModalities": {}, "SaveJobs": false }
JSON
/usr/sbin/Orthanc "$work/orthanc.json" > "$work/orthanc.log" 2>&1 &
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$http/system" >/dev/null && break; sleep 0.1; done

cat > "$work/pacsnode.toml" <<TOML
[node]
port = $port
[storage]
root = "$work/pn"
min_free_mb = 0
[study]
quiet_seconds = $quiet
[analysis]
prestart_worker = ${PRESTART:-true}
[[destination]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = $dicom
[log]
level = "debug"   # the worker line (spawn time) is at debug
[http]
enabled = true
port = $api
token = "bench-token-0123456789"
TOML
"$build/scp/pacsnode" run --config "$work/pacsnode.toml" 2> "$work/pacsnode.log" &
for _ in $(seq 200); do echoscu -aec PACSNODE 127.0.0.1 "$port" 2>/dev/null && break; sleep 0.05; done

storescu -aec PACSNODE +sd 127.0.0.1 "$port" "$work/ct"
acked=$(date +%s.%N)   # storescu returns after the last C-STORE-RSP
# When both are in Orthanc: the time the daemon logs the C-STORE-RSPs of the delivery (its log's
# clock, ms). Polling Orthanc for it every 50 ms (a curl per poll, and Orthanc answering) took about
# a core from the pipeline being measured and made the job 1.6x slower, so poll slowly and only to
# know when to stop, then read the time off the log.
until [ "$(count)" = 2 ]; do sleep 0.5; done
sent_line=$(grep -m1 "object(s) sent in" "$work/pacsnode.log")
done_at=$(date -d "${sent_line:0:23}" +%s.%N)

total=$(echo "$done_at - $acked" | bc -l)
latency=$(echo "$total - $quiet" | bc -l)
printf '\nend to end, %s slices %sx%s: last ack -> SEG+SR in Orthanc %.2f s, minus quiet time %s s = %.2f s (target <= 2 s)\n' \
  "$slices" "$size" "$size" "$total" "$quiet" "$latency"
grep -E "analysed in|sent in|ms .beside|worker [0-9]+: .* started in" "$work/pacsnode.log" | sed "s/^/  /"
# What a Prometheus scrape sees afterwards (the families that moved; METRICS=all for every line).
for _ in $(seq 100); do
  curl -sf -H "Authorization: Bearer bench-token-0123456789" "http://127.0.0.1:$api/metrics" > "$work/metrics.txt" &&
    grep -q 'pacsnode_deliveries_total{destination="pacs",outcome="sent"} 2' "$work/metrics.txt" && break
  sleep 0.1
done
echo "metrics after the run:"
if [ "${METRICS:-}" = all ]; then grep -v '^#' "$work/metrics.txt" | sed "s/^/  /"; else
  grep -E '^pacsnode_(instances_stored_total|received_bytes_total|jobs\{|job_duration_seconds_(sum|count)|stage_duration_seconds_sum|deliveries_total|outbox_objects|worker_(crashes|failures)_total|instances_refused_total)' \
    "$work/metrics.txt" | grep -v ' 0$' | sed "s/^/  /"
fi
