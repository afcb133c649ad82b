#!/bin/bash
# Pipeline benchmark: ours against a C++ ITK peer (bench/itk_peer, the primary reference) and the
# SciPy peer (../shared/tools/peer_pipeline.py, a second reference on the phantom), with targets:
#   like-for-like steps (decode, median 3x3, threshold < -400 HU, 6-connected 3D components with
#     those touching the in-plane border dropped), ours cold (a fresh process that has run nothing
#     before) >= 40x faster than ITK in total (per step shown); both must keep the SAME voxels
#     (checked on every series: voxel count, component count and the raw masks with cmp);
#   the one-shot `pacsnode analyze` (default profile matching: the phantom goes to ct-chest; SEG,
#     SR, preview and features written) as a whole process >= 5x faster than the ITK peer's whole
#     process (wall time, reading included);
#   against the SciPy peer (phantom): like-for-like >= 20x, whole ct-chest profile >= 10x,
#   peak RSS of the whole profile <= 3x the int16 volume (300*512*512*2 bytes).
# Series (SERIES, default all four):
#   phantom   ../shared/tools/make_ct_phantom.py, SLICES x SIZE x SIZE, uncompressed
#   real_jls  a real CT (REAL_CT, default ../shared/data/mirp/ct_images_seg/CRLM-CT-1004/image: GE,
#             41 slices of 512x512, 5 mm) stretched to SLICES slices by bench/make_bench_series.py
#             replicate (back and forth, new UIDs, consecutive positions), JPEG-LS lossless (dcmcjpls)
#   real_j2k  the same, JPEG 2000 lossless (gdcmconv --j2k)
#   blobs     bench/make_bench_series.py blobs: tens of thousands of small separate air bubbles
# Every program runs as its own process. Numbers are printed as measured; nothing is adjusted.
# For the compressed series the codec's own decode time (bench_pipeline --mode codec) is printed
# too, with the ratio to ITK that it leaves at best: no decoder built on that codec can beat it.
#
# usage: bench/pipeline.sh [BUILD_DIR] [WORK_DIR]     (defaults: build-pipeline, /tmp/pacsnode-bench-pipeline)
# Env: SLICES (300), SIZE (512), RUNS (3: ours and the peers alternate; each side's best run is
#      compared), SERIES ("phantom real_jls real_j2k blobs"), PY_PEER (1; 0 skips the SciPy peer),
#      REAL_CT (source folder of the real CT).
# Needs root or the packages: libinsighttoolkit5-dev (installed with apt-get when missing),
# dcmtk (dcmcjpls), libgdcm-tools (gdcmconv).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build-pipeline}
work=${2:-/tmp/pacsnode-bench-pipeline}
slices=${SLICES:-300}
size=${SIZE:-512}
runs=${RUNS:-3}
series_names=${SERIES:-phantom real_jls real_j2k blobs}
py_peer=${PY_PEER:-1}
real_src=${REAL_CT:-$here/../shared/data/mirp/ct_images_seg/CRLM-CT-1004/image}
py=/usr/bin/python3
mkdir -p "$work"
load() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"; }
echo "== machine: $(load) (other processes share it: compare runs, discard noisy ones)"

# ---- programs: ours (main build) and the ITK peer (its own CMake project: the main build never needs ITK)
cmake --build "$build" --target bench_pipeline pacsnode -j2 >/dev/null
if [ ! -f /usr/lib/cmake/ITK-5.2/ITKConfig.cmake ] && ! ls /usr/lib/cmake/ITK-*/ITKConfig.cmake >/dev/null 2>&1; then
  echo "== installing libinsighttoolkit5-dev (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libinsighttoolkit5-dev >/dev/null
fi
cmake -S "$here/bench/itk_peer" -B "$build/itk_peer" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build/itk_peer" -j2 >/dev/null
ours_bin=$build/bench/bench_pipeline
# bench_pipeline runs in the environment the analysis runs in: `pacsnode worker`, the child that
# decodes and analyses for the daemon and for `pacsnode analyze`, gets these two from
# analysis/worker_client.cpp (glibc.malloc.hugetlb=1: transparent huge pages for malloc's heap).
ours_env=(env MALLOC_ARENA_MAX=2 "GLIBC_TUNABLES=${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1")
itk_bin=$build/itk_peer/itk_peer
pacsnode=$build/scp/pacsnode

# ---- series
dir_of() {
  case $1 in
    phantom) echo "$work/ct_${slices}x${size}" ;;
    real_jls | real_j2k) echo "$work/real_${slices}_${1#real_}" ;;
    blobs) echo "$work/blobs_${slices}x${size}" ;;
    *) echo "unknown series $1" >&2; exit 2 ;;
  esac
}
complete() { [ -f "$1/ct_$(printf %04d $((slices - 1))).dcm" ]; }
encode() {  # encode SRC DST tool...: every file of SRC through the tool into DST
  local src=$1 dst=$2 f
  shift 2
  rm -rf "$dst.tmp" && mkdir -p "$dst.tmp"
  for f in "$src"/*.dcm; do "$@" "$f" "$dst.tmp/$(basename "$f")"; done
  rm -rf "$dst" && mv "$dst.tmp" "$dst"
}
for s in $series_names; do
  d=$(dir_of "$s")
  complete "$d" && continue
  echo "== making $s in $d"
  case $s in
    phantom)
      rm -rf "$d"
      "$py" "$here/../shared/tools/make_ct_phantom.py" "$d" --slices "$slices" --size "$size" >/dev/null ;;
    real_jls | real_j2k)
      raw=$work/real_${slices}_raw
      complete "$raw" || { rm -rf "$raw"; "$py" "$here/bench/make_bench_series.py" replicate "$real_src" "$raw" --slices "$slices" >/dev/null; }
      if [ "$s" = real_jls ]; then encode "$raw" "$d" dcmcjpls; else encode "$raw" "$d" gdcmconv --j2k; fi ;;
    blobs)
      rm -rf "$d"
      "$py" "$here/bench/make_bench_series.py" blobs "$d" --slices "$slices" --size "$size" >/dev/null ;;
  esac
done
for s in $series_names; do cat "$(dir_of "$s")"/*.dcm >/dev/null; done  # same warm page cache for all

rec=$work/records.txt  # "<series> <key> <value>" per measurement, all runs
: > "$rec"
record() {  # record SERIES OUTPUT: its "@ key value" lines
  echo "$2" | awk -v s="$1" '$1 == "@" {print s, $2, $3}' >> "$rec"
}
wall_ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) * 1000}'; }
val() { echo "$1" | awk -v k="$2" '$1 == "@" && $2 == k {printf "%.0f", $3}'; }

# ---- same voxels: ours (cold run) and ITK write their kept masks; untimed (also warms up)
echo
echo "== check: ours and ITK keep the same voxels"
for s in $series_names; do
  d=$(dir_of "$s")
  o=$("${ours_env[@]}" "$ours_bin" --mode lfl --mask-out "$work/mask_ours_$s.raw" "$d" "$work/out" 2>> "$work/ours.log")
  i=$("$itk_bin" "$d" "$work/mask_itk_$s.raw")
  same=yes
  [ "$(val "$o" lfl_cold.kept_voxels)" = "$(val "$i" itk.kept_voxels)" ] || same=no
  [ "$(val "$o" lfl_cold.components)" = "$(val "$i" itk.components)" ] || same=no
  cmp -s "$work/mask_ours_$s.raw" "$work/mask_itk_$s.raw" || same=no
  echo "  $s: $(echo "$i" | awk '/^volume/ {print $2, $3, $4, $5, $6}') ours $(val "$o" lfl_cold.components) components," \
    "$(val "$o" lfl_cold.kept_voxels) voxels kept; ITK $(val "$i" itk.components), $(val "$i" itk.kept_voxels);" \
    "masks $(cmp -s "$work/mask_ours_$s.raw" "$work/mask_itk_$s.raw" && echo identical || echo DIFFER)"
  rm -f "$work/mask_ours_$s.raw" "$work/mask_itk_$s.raw"
  if [ "$same" != yes ]; then
    echo "FAIL: ours and the ITK peer do not keep the same voxels on $s ($d)" >&2
    exit 1
  fi
done

# ---- timed runs. Alternate ours and the peers RUNS times; each metric's best (minimum) run is
# compared, so that a burst of load from other processes on the machine hits neither side alone.
first=$(echo "$series_names" | awk '{print $1}')
for i in $(seq 1 "$runs"); do
  echo
  echo "== run $i of $runs: $(load)"
  for s in $series_names; do
    d=$(dir_of "$s")
    o=$("${ours_env[@]}" "$ours_bin" --mode lfl "$d" "$work/out" 2>> "$work/ours.log")
    t1=$EPOCHREALTIME
    k=$("$itk_bin" "$d")
    t2=$EPOCHREALTIME
    record "$s" "$o"
    record "$s" "$k"$'\n'"@ itk.process_wall_ms $(wall_ms "$t1" "$t2")"
    printf '  %-9s ours like-for-like cold %s ms (decode %s, median %s, threshold %s, components %s), reused %s ms;' \
      "$s" "$(val "$o" lfl_cold.total_ms)" "$(val "$o" lfl_cold.decode_ms)" "$(val "$o" lfl_cold.median_ms)" \
      "$(val "$o" lfl_cold.threshold_ms)" "$(val "$o" lfl_cold.components_ms)" "$(val "$o" lfl.total_ms)"
    printf ' ITK %s ms (read %s, median %s, threshold %s, components %s), process %s ms\n' \
      "$(val "$k" itk.total_ms)" "$(val "$k" itk.read_ms)" "$(val "$k" itk.median_ms)" "$(val "$k" itk.threshold_ms)" \
      "$(val "$k" itk.components_ms)" "$(wall_ms "$t1" "$t2" | cut -d. -f1)"
    if [ "$s" = phantom ] || [ "$s" = real_jls ]; then  # the one-shot command, a fresh process
      rm -rf "$work/analyze_$s"
      t0=$EPOCHREALTIME
      "$pacsnode" analyze -q --out "$work/analyze_$s" "$d"
      t1=$EPOCHREALTIME
      echo "@ analyze.wall_ms $(wall_ms "$t0" "$t1")" | awk -v s="$s" '{print s, $2, $3}' >> "$rec"
      profile=$(awk -F, 'NR == 2 {print $4}' "$work/analyze_$s/features.csv")
      seg=$(find "$work/analyze_$s" -name '*_seg.dcm' | wc -l)
      sr=$(find "$work/analyze_$s" -name '*_sr.dcm' | wc -l)
      echo "            pacsnode analyze: $(wall_ms "$t0" "$t1" | cut -d. -f1) ms (profile ${profile:-none}, $seg SEG, $sr SR)"
      if [ "$s" = phantom ] && [ "$seg$sr" != 11 ]; then echo "FAIL: analyze wrote $seg SEG, $sr SR" >&2; exit 1; fi
    fi
  done
  if [[ " $series_names " == *" phantom "* ]]; then
    d=$(dir_of phantom)
    ours=$("${ours_env[@]}" "$ours_bin" --mode profile "$d" "$work/out" 2>> "$work/ours.log")
    record phantom "$ours"
    if [ "$i" = 1 ]; then
      echo "  -- ours: bench_pipeline --mode profile (phantom, $slices x $size x $size), run 1 of $runs"
      echo "$ours" | grep -v '^@ ' | sed 's/^/  /'
    fi
    echo "  phantom   ours whole profile: $(echo "$ours" | awk '$2 ~ /^profile\..*_ms$/ {sub("profile.", "", $2);
         sub("_ms", "", $2); printf "%s %.0f, ", $2, $3}')peak RSS $(val "$ours" profile.peak_rss_mb) MiB"
    if [ "$py_peer" = 1 ]; then
      peer=$("$py" "$here/../shared/tools/peer_pipeline.py" "$d")
      echo "  phantom   SciPy peer: $peer"
      echo "$peer" | awk '{for (j = 1; j < NF; j += 2) if ($(j+1) ~ /s$/) {v = $(j+1); sub("s$", "", v); print "phantom py." $j "_ms", v * 1000}}' >> "$rec"
    fi
  fi
done
echo "  after the runs: $(load)"

# ---- the codec floor of the compressed series: the codec library alone (CharLS 2 / OpenJPEG),
# slices on all threads, against ours; with it, the best ratio to ITK that any decoder built on
# that codec could reach here (ITK's best total / (codec floor + our best median, threshold and
# components)).
for s in $series_names; do
  case $s in real_jls | real_j2k) ;; *) continue ;; esac
  c=$("${ours_env[@]}" "$ours_bin" --mode codec --runs "$runs" "$(dir_of "$s")" 2>> "$work/ours.log")
  echo
  echo "== codec floor, $s ($(load))"
  echo "$c" | grep -E '^  ' || true
  record "$s" "$c"
done

echo
echo "== ratios (peer time / our time; > 1 means we are faster)"
REC="$rec" SERIES="$series_names" "$py" - <<'EOF'
import os
best = {}
for line in open(os.environ["REC"]):  # best run per metric (peak RSS: worst run)
    s, k, v = line.split()
    v = float(v)
    key = (s, k)
    best[key] = (max if "rss" in k else min)(best.get(key, v), v)
series = os.environ["SERIES"].split()
ok_all = True

def row(name, p, o, target, info=False, width=44):
    global ok_all
    if p is None or o is None:
        return
    r = p / o if o > 0 else float("inf")
    verdict = "(info)" if info else ("met" if r >= target else "NOT MET")
    if not info:
        ok_all &= r >= target
    tgt = "" if info else f">={target:3d}x"
    print(f"  {name:{width}s} {p:10.1f} {o:10.1f} {r:7.1f}x {tgt:>6s} {verdict}")

print("  (best of each side's runs; peak RSS: the largest. Ours cold = first run of a fresh process;")
print("   reused = the second run in that process, with the blocks the cold run freed)")
print(f"\n  ITK peer (C++, ITK default threads), like for like; same voxels kept (checked above);")
print(f"  the target is on the cold total, per step for information")
print(f"  {'series / step':44s} {'ITK ms':>10s} {'ours ms':>10s} {'ratio':>8s} {'target':>6s}")
for s in series:
    g = lambda k: best.get((s, k))
    row(f"{s}: read/decode, cold", g("itk.read_ms"), g("lfl_cold.decode_ms"), 40, info=True)
    row(f"{s}: median 3x3, cold", g("itk.median_ms"), g("lfl_cold.median_ms"), 40, info=True)
    row(f"{s}: threshold, cold", g("itk.threshold_ms"), g("lfl_cold.threshold_ms"), 40, info=True)
    row(f"{s}: components+border drop, cold", g("itk.components_ms"), g("lfl_cold.components_ms"), 40, info=True)
    row(f"{s}: like-for-like total, cold", g("itk.total_ms"), g("lfl_cold.total_ms"), 40)
    row(f"{s}: like-for-like total, reused", g("itk.total_ms"), g("lfl.total_ms"), 40, info=True)
codec = [s for s in series if best.get((s, "codec.codec_ms")) is not None]
if codec:
    print(f"\n  compressed series: the codec alone (slices on all threads) and the best ratio it leaves")
    print(f"  {'series':12s} {'codec ms':>9s} {'ours decode':>11s} {'x codec':>7s} {'ITK ms':>8s} {'max ratio':>9s}")
    for s in codec:
        g = lambda k: best.get((s, k))
        rest = g("lfl_cold.median_ms") + g("lfl_cold.threshold_ms") + g("lfl_cold.components_ms")
        print(f"  {s:12s} {g('codec.codec_ms'):9.0f} {g('codec.ours_stored_ms'):11.0f} "
              f"{g('codec.ours_stored_ms') / g('codec.codec_ms'):6.2f}x {g('itk.total_ms'):8.0f} "
              f"{g('itk.total_ms') / (g('codec.codec_ms') + rest):8.1f}x")
print(f"\n  one-shot analysis, whole processes (wall time, reading included)")
for s in series:
    g = lambda k: best.get((s, k))
    if g("analyze.wall_ms") is not None:
        row(f"{s}: pacsnode analyze vs ITK peer process", g("itk.process_wall_ms"), g("analyze.wall_ms"),
            5, info=(s != "phantom"))
if ("phantom", "profile.total_ms") in best:
    row("phantom: whole ct-chest profile (in process)", best[("phantom", "itk.process_wall_ms")],
        best[("phantom", "profile.total_ms")], 0, info=True)

if ("phantom", "py.total_ms") in best:
    ours = {k: v for (s, k), v in best.items() if s == "phantom"}
    peer = {k[3:-3]: v for k, v in ours.items() if k.startswith("py.")}
    print(f"\n  SciPy peer (second reference, phantom)")
    print(f"  {'step':44s} {'peer ms':>10s} {'ours ms':>10s} {'ratio':>8s} {'target':>6s}")
    rows = [("decode, cold", "read", "lfl_cold.decode_ms", 20),
            ("decode, reused blocks", "read", "lfl.decode_ms", 20),
            ("median 3x3", "median", "lfl.median_ms", 20),
            ("threshold+components+border, cold", "segment", "lfl_cold.segment_ms", 20),
            ("threshold+components+border, reused", "segment", "lfl.segment_ms", 20),
            ("like-for-like total, cold", "total", "lfl_cold.total_ms", 20),
            ("like-for-like total, reused", "total", "lfl.total_ms", 20),
            ("whole ct-chest profile vs peer total", "total", "profile.total_ms", 10)]
    for name, pk, ok_, target in rows:
        row(name, peer.get(pk), ours.get(ok_), target)
if ("phantom", "profile.peak_rss_mb") in best:
    rss, vol = best[("phantom", "profile.peak_rss_mb")], best[("phantom", "volume_int16_mb")]
    ok = rss <= 3 * vol
    ok_all &= ok
    print(f"  {'peak RSS, whole profile (MiB)':44s} {'':10s} {rss:10.1f} {rss / vol:7.2f}x {'<=':>3s}  3x {'met' if ok else 'NOT MET'}")
    after = best[("phantom", "peak_rss_after_seg_sr_mb")]
    print(f"  {'peak RSS incl. SEG+SR (MiB)':44s} {'':10s} {after:10.1f} {after / vol:7.2f}x  (info)")
    print(f"  (faulting in {vol:.0f} MiB of fresh memory on this machine, 2 threads: "
          f"{best[('phantom', 'fault_volume_ms')]:.1f} ms, most of what separates cold from reused)")
print("  all targets met" if ok_all else "  some targets NOT met")
EOF
