#!/usr/bin/env python3
"""Attributes a sanitizer/libFuzzer report (the output of replaying one input) to pacsnode's code or
to a library, by the first stack frame that is not the sanitizer runtime, libFuzzer, libc or the C++
runtime. Prints one line:

  none                                     the input no longer fails
  pacsnode: KIND: FUNC at FILE:LINE < ...  a frame of this checkout comes first
  library LIB: KIND: FUNC < FUNC < ...     a frame of an installed library comes first

Used by fuzz/run.sh (which fails only on `pacsnode`) and fuzz/mutate_analyze.py.
"""
import argparse
import os
import re
import sys

# "#3 0x7f.. in gdcm::X::Y() (/usr/lib/x86_64-linux-gnu/libgdcmMSFF.so.3.0+0x1234) (BuildId: ..)"
# "#4 0x55.. in dicom::f(int) /work/wt-fuzz/dicom/x.cpp:12:3"
# "#1 0x7f..  (/lib/x86_64-linux-gnu/libopenjp2.so.7+0x1d19c) (BuildId: ..)"  (no symbol: two blanks)
FRAME = re.compile(r"^\s*#(\d+) 0x[0-9a-f]+(?: in (?P<func>.+?))?(?: +(?P<loc>\(?/\S+?|[\w.]\S*:\d+(?::\d+)?))?"
                   r"(?: \(BuildId: \w+\))?$")
RUNTIME_FUNCS = re.compile(
    r"^(__asan|__ubsan|__lsan|__sanitizer|__interceptor_|__cxa_|__cxxabiv1|__gxx_|fuzzer::|__libc_|__GI_|"
    r"raise|abort|__assert_fail|gsignal|pthread_kill|__pthread|__restore_rt|malloc|calloc|realloc|free|"
    r"operator new|operator delete|std::terminate|__gnu_cxx::__verbose_terminate|_Unwind_|"
    r"LLVMFuzzerRunDriver|main$|_start|(__)?(mem|str)[a-z]*(_[a-z0-9]+)*$)")
RUNTIME_MODULES = re.compile(r"/(libc\.so|libc-|libstdc\+\+\.so|libgcc_s\.so|ld-linux|libm\.so|libpthread)")


def kind_of(text):
    m = re.search(r"ERROR: AddressSanitizer: ([\w-]+)(?: on unknown address)?", text)
    if m:
        kind = "asan " + m.group(1)
        if m.group(1) in ("SEGV", "ABRT", "FPE", "BUS", "ILL"):
            a = re.search(r"^.*Assertion .* failed\.$", text, re.M)
            if a:
                kind += " (" + re.sub(r"^.*?: ", "", a.group(0)).strip()[:160] + ")"
        return kind
    m = re.search(r"runtime error: (.*)", text)
    if m:
        return "ubsan " + m.group(1).strip()[:160]
    if "ERROR: LeakSanitizer" in text:
        return "leak"
    m = re.search(r"ERROR: libFuzzer: (timeout|out-of-memory|deadly signal|fuzz target exited)", text)
    if m:
        kind = m.group(1)
        a = re.search(r"^.*Assertion .* failed\.$", text, re.M)
        if a:
            kind += " (" + re.sub(r"^.*?: ", "", a.group(0)).strip()[:160] + ")"
        t = re.search(r"terminate called after throwing an instance of '([^']+)'", text)
        if t:
            kind += " (uncaught " + t.group(1) + ")"
        return kind
    return None


def first_stack(text):
    """The frames of the first stack trace in the report."""
    frames, started = [], False
    for line in text.splitlines():
        m = FRAME.match(line)
        if m:
            if started and m.group(1) == "0":
                break  # a second stack (e.g. where a freed block was allocated)
            started = True
            frames.append((m.group("func") or "?", m.group("loc") or ""))
        elif started and frames and not line.strip():
            break
    return frames


def short(func):
    """The function name without its parameter list (template arguments may hold parentheses)."""
    func = func.strip()
    if func.endswith(")"):
        depth = 0
        for i in range(len(func) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(func[i], 0)
            if depth == 0:
                return func[:i].strip()
    return func


def attribute(text, source):
    kind = kind_of(text)
    if kind is None:
        return "none"
    relevant = []
    for func, loc in first_stack(text):
        path = re.sub(r"[:(+].*$", "", loc.strip("()"))
        if RUNTIME_FUNCS.match(func) or RUNTIME_MODULES.search(loc):
            continue
        if "compiler-rt" in loc or "/libFuzzer/" in loc or path.startswith("/usr/include/c++/"):
            continue
        relevant.append((func, loc, path))
    if not relevant:
        return f"pacsnode: {kind}: no frame to attribute (read the report)"
    ours = lambda p: p.startswith(source + "/")
    for func, loc, path in relevant:
        if path.startswith("/usr/include/"):
            continue  # library code inlined into ours: the caller decides
        if ours(path):
            where = re.sub(r"^" + re.escape(source) + "/", "", loc)
            later = [short(f) for f, _, p in relevant if ours(p)][1:3]
            return f"pacsnode: {kind}: {short(func)} at {where}" + "".join(f" < {f}" for f in later)
        lib = os.path.basename(path) if path else "?"
        lib = re.sub(r"\.so.*$", "", lib)
        chain = [short(f) for f, _, _ in relevant[:3]]
        return f"library {lib}: {kind}: " + " < ".join(chain)
    func, loc, _ = relevant[0]
    return f"pacsnode: {kind}: {short(func)} at {loc} (inlined library code called from ours)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="the checkout (frames below it are pacsnode's)")
    ap.add_argument("report")
    a = ap.parse_args()
    with open(a.report, errors="replace") as f:
        text = f.read()
    print(attribute(text, os.path.realpath(a.source)))


if __name__ == "__main__":
    sys.exit(main())
