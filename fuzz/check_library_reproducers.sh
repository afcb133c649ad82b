#!/usr/bin/env bash
# CTest fuzz_library_reproducers_contained: `pacsnode analyze` on each input of
# fuzz/regressions/library/ (inputs that still crash inside DCMTK, GDCM or OpenJPEG whatever pacsnode
# checks first). Passes when analyze exits normally (0, or 1 when nothing could be analysed) and
# names the file as rejected or failed, i.e. when the analysis worker process contained the crash.
#
#   fuzz/check_library_reproducers.sh PACSNODE_BINARY fuzz/regressions/library
#
# Exit 77 (CTest: skipped) while pacsnode has no `worker` command: before issue 9 section 2 lands,
# analyze decodes in its own process and dies with the library, which is what this test guards.
set -euo pipefail
bin="$1" dir="$2"

worker_help="$("$bin" worker --help 2>&1 || true)"
if grep -q "unknown command" <<<"$worker_help"; then
  echo "SKIPPED: $bin has no 'worker' command yet (crash-isolated analysis, issue 9 section 2);"
  echo "         without it analyze dies with the library on these inputs."
  exit 77
fi

shopt -s nullglob
files=()
for f in "$dir"/*/*; do
  case "$f" in *.md | *.txt) continue ;; esac
  files+=("$f")
done
if [ ${#files[@]} -eq 0 ]; then
  echo "no library reproducers in $dir"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
for f in "${files[@]}"; do
  rm -rf "$tmp/in" "$tmp/out"
  mkdir -p "$tmp/in"
  cp "$f" "$tmp/in/"
  set +e
  timeout -k 10 600 "$bin" analyze "$tmp/in" --out "$tmp/out" --no-dicom >"$tmp/stdout" 2>"$tmp/stderr"
  rc=$?
  set -e
  name="$(basename "$f")"
  if [ "$rc" -gt 1 ]; then
    what="exit $rc"
    [ "$rc" -gt 128 ] && what="killed by signal $((rc - 128))"
    [ "$rc" -eq 124 ] && what="timed out"
    echo "FAIL $f: analyze $what"
    tail -5 "$tmp/stderr" | sed 's/^/     /'
    failed=1
  elif ! grep -qF "$name" "$tmp/stderr"; then
    echo "FAIL $f: analyze exited $rc but did not list the file as rejected or failed"
    tail -5 "$tmp/stderr" | sed 's/^/     /'
    failed=1
  else
    echo "ok   $f: $(grep -F "$name" "$tmp/stderr" | head -1)"
  fi
done
exit $failed
