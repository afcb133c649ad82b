#!/usr/bin/env bash
# Runs one libFuzzer harness for a while and sorts what it found.
#
#   fuzz/run.sh TARGET SECONDS [--jobs N] [--cpu] [--ci] [-- LIBFUZZER_ARGS...]
#
# TARGET is a harness of fuzz/ (fuzz_header, fuzz_decode, ...), SECONDS the wall time, or with
# --cpu the CPU time of all its processes (a campaign on a shared machine: it runs until it has had
# that much CPU, however long that takes). The run is
# nice'd and uses libFuzzer's fork mode (-fork=N -ignore_crashes=1): a crash inside DCMTK, GDCM or
# OpenJPEG does not end the campaign. Afterwards every crash/leak/timeout/OOM input is replayed
# and attributed by its stack: the first frame that is neither the sanitizer runtime, libc nor the
# C++ runtime decides whether it is pacsnode's code (exit 1) or a library's (listed, exit 0).
#
# Where: the harnesses in $PACSNODE_FUZZ_BUILD/fuzz (default build-fuzz), the growing corpus,
# artifacts and logs in $PACSNODE_FUZZ_WORK/TARGET (default var/fuzz; not committed). The seeds
# come from fuzz/corpus/ and fuzz/regressions/ and are never written to.
# --ci: quieter, and a fresh corpus each time (what CTest's *_brief tests run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
target="$1" seconds="$2"
shift 2
jobs=1 ci=0 cpu_budget=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    --ci) ci=1; shift ;;
    --cpu) cpu_budget=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) usage ;;
  esac
done

build="${PACSNODE_FUZZ_BUILD:-$root/build-fuzz}"
work="${PACSNODE_FUZZ_WORK:-$root/var/fuzz}/$target"
bin="$build/fuzz/$target"
[ -x "$bin" ] || { echo "run.sh: $bin not built (cmake --build $build --target fuzzers)" >&2; exit 2; }

# Seeds and dictionary of each harness.
dict=""
case "$target" in
  fuzz_header|fuzz_decode|fuzz_scan) seeds=("$here/corpus/dicom"); dict="$here/dicom.dict" ;;
  fuzz_seg) seeds=("$here/corpus/seg"); dict="$here/dicom.dict" ;;
  fuzz_nifti) seeds=("$here/corpus/nifti") ;;
  fuzz_config) seeds=("$here/corpus/config"); dict="$here/config.dict" ;;
  fuzz_csv) seeds=("$here/corpus/csv") ;;
  *) seeds=() ;;
esac
[ -d "$here/regressions/$target" ] && seeds+=("$here/regressions/$target")

[ "$ci" = 1 ] && rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts" "$work/library"
log="$work/fuzz-$(date +%Y%m%d-%H%M%S).log"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=0:symbolize=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/lsan.supp}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
symbolizer="$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)"
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$symbolizer"

args=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1
  -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=2048 -artifact_prefix="$work/artifacts/"
  -print_final_stats=1 -print_funcs=0)
[ -n "$dict" ] && args+=(-dict="$dict")
args+=("${extra[@]}")

# One libFuzzer run of $1 wall seconds on the campaign's corpus; its CPU seconds (user + system,
# all its processes) are added to $cpu_total, its executions to $execs_total.
cpu_total=0 execs_total=0 status=0
segment() {
  local segment_log="$work/segment.log"
  set +e
  (cd "$work" && /usr/bin/time -f "%U %S" -o "$work/cpu" nice -n "${PACSNODE_FUZZ_NICE:-19}" \
    "$bin" "${args[@]}" -max_total_time="$1" "$work/corpus" "${seeds[@]}") >"$segment_log" 2>&1
  status=$?
  set -e
  cat "$segment_log" >>"$log"
  # time(1) writes "Command exited with non-zero status N" first when the status is not 0.
  cpu_total=$(tail -n 1 "$work/cpu" | awk -v t="$cpu_total" '{printf "%.0f", t + $1 + $2}')
  # The last status line of fork mode: "#N: cov: C ft: F corp: K exec/s E oom/timeout/crash: a/b/c ..."
  stats="$(grep -E '^#[0-9]+: cov: ' "$segment_log" | tail -1 || true)"
  execs_total=$(( execs_total + $(sed -nE 's/^#([0-9]+):.*/\1/p' <<<"$stats" | grep . || echo 0) ))
}

echo "run.sh: $target for ${seconds}s$([ "$cpu_budget" = 1 ] && echo " of CPU"), $jobs job(s); log $log" >&2
started=$(date +%s)
if [ "$cpu_budget" = 1 ]; then
  # A campaign measured in CPU time on a shared machine: segments of at most 5 minutes (the corpus
  # carries over) until the budget is spent.
  while [ "$cpu_total" -lt "$seconds" ]; do
    left=$(( (seconds - cpu_total + jobs - 1) / jobs ))
    before="$cpu_total"
    segment $(( left < 300 ? (left < 30 ? 30 : left) : 300 ))
    [ "$cpu_total" -gt "$before" ] || { echo "run.sh: $target used no CPU in a segment; see $log" >&2; break; }
  done
else
  segment "$seconds"
fi
elapsed=$(( $(date +%s) - started ))
execs="$execs_total" cpu="$cpu_total"
cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")"
ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$stats")"
echo "run.sh: $target: ${elapsed}s x $jobs job(s), ${cpu}s CPU, ${execs:-?} executions, cov ${cov:-?}, ft ${ft:-?}," \
  "corpus $(ls "$work/corpus" | wc -l) (libFuzzer exit $status)"

# Sort the findings: replay each input and look at its stack.
ours=0 theirs=0
rm -f "$work/sites.txt"
shopt -s nullglob
for a in "$work"/artifacts/{crash,leak,timeout,oom,slow-unit}-*; do
  case "$a" in *.txt) continue ;; esac  # a replay report, not an input
  kind="$(basename "$a")"; kind="${kind%%-*}"
  report="$a.txt"
  if [ ! -s "$report" ] || [ "$bin" -nt "$report" ]; then  # replayed again after a rebuild
    timeout -k 5 120 "$bin" -runs=1 -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=2048 "$a" >"$report" 2>&1 || true
  fi
  verdict="$("$here/triage.py" --source "$root" "$report")"
  case "$verdict" in
    none*) ;;  # no longer reproduces (fixed, or a timeout/OOM that depended on the load)
    pacsnode*)
      ours=$((ours + 1))
      # One line per site: the same bug with other values (numbers) is not listed again.
      site="$(sed -E 's/[-+]?[0-9][0-9a-fx.e+-]*/N/g' <<<"$verdict")"
      if ! grep -qxF "$site" "$work/sites.txt" 2>/dev/null; then
        echo "$site" >>"$work/sites.txt"
        echo "run.sh: $kind in pacsnode code: $a"
        echo "        $verdict"
      fi
      ;;
    *)
      theirs=$((theirs + 1))
      sig="$(cksum <<<"$verdict" | cut -d' ' -f1)"
      if [ ! -e "$work/library/$sig" ]; then
        cp "$a" "$work/library/$sig"
        echo "$verdict" >"$work/library/$sig.site"
        [ "$ci" = 1 ] || echo "run.sh: $kind in a library (kept as library/$sig): $verdict"
      fi
      ;;
  esac
done
sites=("$work"/library/*.site)
echo "run.sh: $target: $ours finding(s) in pacsnode code ($(cat "$work/sites.txt" 2>/dev/null | wc -l) site(s)), $theirs in" \
  "libraries (distinct library sites so far: ${#sites[@]})"
[ "$ours" -eq 0 ]
