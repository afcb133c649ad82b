#!/usr/bin/python3
"""Mutation campaign against `pacsnode analyze` itself (the production binary, no sanitizers).

Takes compressed and multi-frame DICOM files (every codec pacsnode decodes), mutates one at a time
(bit flips, boundary values in the image pixel module, in the encapsulated fragments' offsets and
lengths and in the first bytes of each codec stream), runs `pacsnode analyze` on a folder holding
the mutant with a timeout, and buckets the runs that die on a signal or time out by signal and top
stack frames (from a second run under gdb). Mutants that crash are kept per bucket.

  fuzz/mutate_analyze.py --pacsnode build/scp/pacsnode --minutes 30 --out var/mutate
        [--data ../shared/data] [--files LIST] [--timeout 60] [--seed N] [--keep 3] [--batch 6]

Writes OUT/report.md (buckets, counts, first example) and OUT/buckets/<id>/ (mutants, gdb
backtrace). Exit status 0; it reports, it does not judge (see README "Fuzzing and sanitizers").
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

# Every codec path of dicom/pixel_decoder.cpp, greyscale (what analyze decodes), from ../shared/data.
DEFAULT_FILES = [
    "pylibjpeg-data/ljdata/ds/JPEGBaseline/JPEGBaseline_1s_1f_u_08_08.dcm",  # JPEG baseline
    "pydicom/test_files/JPEG-lossy.dcm",                      # JPEG extended 12-bit
    "pylibjpeg-data/ljdata/ds/JPEGExtended/RG2_JPLY.dcm",     # JPEG extended, real CR
    "pydicom-data/data_store/data/JPEG-LL.dcm",               # JPEG lossless SV1
    "pydicom-data/data_store/data/JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless 8-bit
    "pydicom/test_files/MR_small_jpeg_ls_lossless.dcm",       # JPEG-LS lossless
    "pydicom/test_files/JPEGLSNearLossless_16.dcm",           # JPEG-LS near-lossless
    "pylibjpeg-data/ljdata/ds/JPEGLS/CT1_JLSN.dcm",           # JPEG-LS near-lossless CT
    "pydicom/test_files/MR_small_jp2klossless.dcm",           # JPEG 2000 lossless
    "pydicom/test_files/693_J2KI.dcm",                        # JPEG 2000 lossy
    "pylibjpeg-data/ljdata/ds/JPEG2000/MAROTECH_CT_JP2Lossy.dcm",  # JPEG 2000 in a JP2 wrapper
    "pydicom/test_files/MR_small_RLE.dcm",                    # RLE
    "pydicom/test_files/image_dfl.dcm",                       # deflate
    "pydicom/test_files/MR_small_bigendian.dcm",              # big endian
    "pydicom/test_files/rtdose_rle.dcm",                      # multi-frame RLE (15 frames, offsets)
    "pydicom/test_files/rtdose_expb.dcm",                     # multi-frame big endian
    "pydicom/test_files/rtdose.dcm",                          # multi-frame native
    "dcmqi/data/segmentations/23x38x3/multiframe/mf.dcm",     # enhanced multi-frame
    "pydicom-data/data_store/data/parametric_map_float.dcm",  # float pixel data
]

# Image pixel module tags (group, element) whose US values get boundary values.
US_TAGS = [(0x0028, 0x0002), (0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0101),
           (0x0028, 0x0102), (0x0028, 0x0103), (0x0028, 0x0006)]
STRING_TAGS = [(0x0028, 0x0008), (0x0028, 0x1052), (0x0028, 0x1053)]  # Number of Frames, rescale (IS/DS)
US_BOUNDARY = [0, 1, 2, 3, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 64, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
STRING_BOUNDARY = [b"0", b"-1", b"1", b"2", b"3", b"100", b"65535", b"2147483647", b"99999999", b"1e308", b"-1e308",
                   b"nan", b"inf", b"1e-308", b"0.0", b""]
INT_BOUNDARY = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
SKIP_FUNCS = re.compile(r"^(__pthread|pthread_kill|raise|abort|__GI_|__assert_fail|__libc|gsignal|__restore_rt|"
                        r"__cxa|std::terminate|__gnu_cxx::__verbose_terminate|_Unwind|malloc|free|_int_|"
                        r"cfree|__malloc|__free|__memmove|__memcpy|__memset|__strlen|operator delete|operator new)")


def find_tag(data, group, element, little=True):
    """Offsets of the value of every occurrence of an explicit-VR (or implicit) element with this tag."""
    tag = struct.pack("<HH" if little else ">HH", group, element)
    out = []
    start = 0
    while True:
        i = data.find(tag, start)
        if i < 0:
            return out
        start = i + 1
        vr = data[i + 4:i + 6]
        if re.fullmatch(rb"[A-Z]{2}", vr):
            if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV", b"SV", b"UV"):
                off, lfmt, lsize = i + 12, "<I" if little else ">I", 4
                length = struct.unpack(lfmt, data[i + 8:i + 12])[0] if len(data) >= i + 12 else 0
            else:
                off, lfmt, lsize = i + 8, "<H" if little else ">H", 2
                length = struct.unpack(lfmt, data[i + 6:i + 8])[0] if len(data) >= i + 8 else 0
        else:
            off, length = i + 8, struct.unpack("<I", data[i + 4:i + 8])[0] if len(data) >= i + 8 else 0
        out.append((off, length))


def fragments(data):
    """Offsets of the item headers of encapsulated Pixel Data (offset table first)."""
    out = []
    for off, length in find_tag(data, 0x7FE0, 0x0010):
        if length != 0xFFFFFFFF:
            continue
        pos = off
        while pos + 8 <= len(data):
            tag = data[pos:pos + 4]
            ln = struct.unpack("<I", data[pos + 4:pos + 8])[0]
            if tag == b"\xfe\xff\x00\xe0":
                out.append(pos)
                pos += 8 + ln
            else:
                break
    return out


def mutate(data, rng):
    data = bytearray(data)
    little = not (b"1.2.840.10008.1.2.2" in data[:1024])
    what = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.random()
        if kind < 0.30:  # boundary value of an image pixel module US
            g, e = rng.choice(US_TAGS)
            hits = find_tag(bytes(data), g, e, little)
            if hits:
                off, _ = rng.choice(hits)
                v = rng.choice(US_BOUNDARY)
                if off + 2 <= len(data):
                    data[off:off + 2] = struct.pack("<H" if little else ">H", v)
                    what.append(f"({g:04X},{e:04X})={v}")
                continue
        if kind < 0.40:  # a string value (Number of Frames, rescale) replaced, length kept
            g, e = rng.choice(STRING_TAGS)
            hits = find_tag(bytes(data), g, e, little)
            if hits:
                off, length = rng.choice(hits)
                if 0 < length < 64 and off + length <= len(data):
                    v = rng.choice(STRING_BOUNDARY)[:length].ljust(length, b" ")
                    data[off:off + length] = v
                    what.append(f"({g:04X},{e:04X})={v.decode(errors='replace').strip()}")
                continue
        frags = fragments(bytes(data))
        if kind < 0.60 and frags:  # fragment item length or offset table entry
            pos = rng.choice(frags)
            if rng.random() < 0.5 or pos == frags[0]:
                v = rng.choice(INT_BOUNDARY + [rng.randrange(0, 1 << 16)])
                data[pos + 4:pos + 8] = struct.pack("<I", v)
                what.append(f"fragment@{pos} length={v:#x}")
            else:
                ln = struct.unpack("<I", data[frags[0] + 4:frags[0] + 8])[0]
                if ln >= 4:
                    at = frags[0] + 8 + 4 * rng.randrange(ln // 4)
                    v = rng.choice(INT_BOUNDARY)
                    data[at:at + 4] = struct.pack("<I", v)
                    what.append(f"offset table@{at}={v:#x}")
            continue
        if kind < 0.85 and len(frags) > 1:  # codec stream header bytes (JPEG/JPEG-LS/J2K markers, RLE header)
            pos = rng.choice(frags[1:]) + 8
            at = pos + min(int(rng.expovariate(1 / 48)), 400)
            if at < len(data):
                if rng.random() < 0.5:
                    data[at] ^= 1 << rng.randrange(8)
                    what.append(f"stream bit flip @{at}")
                else:
                    w = rng.choice([1, 2, 4])
                    v = rng.choice(INT_BOUNDARY) & ((1 << (8 * w)) - 1)
                    data[at:at + w] = v.to_bytes(w, "big")[: len(data) - at]
                    what.append(f"stream @{at} = {v:#x}/{w}")
            continue
        # anywhere: bit flip or boundary bytes
        at = rng.randrange(len(data))
        if rng.random() < 0.6:
            data[at] ^= 1 << rng.randrange(8)
            what.append(f"bit flip @{at}")
        else:
            w = rng.choice([1, 2, 4])
            v = rng.choice(INT_BOUNDARY) & ((1 << (8 * w)) - 1)
            data[at:at + w] = v.to_bytes(w, "little")[: len(data) - at]
            what.append(f"@{at} = {v:#x}/{w}")
    return bytes(data), "; ".join(what)


def signame(rc):
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def backtrace(cmd, timeout):
    """Top frames of the crash, from a run under gdb (no sanitizer in the production binary)."""
    gdb = ["gdb", "-q", "-nx", "-batch", "-ex", "set pagination off", "-ex", "set print frame-arguments none",
           "-ex", "run", "-ex", "bt 40", "--args"] + cmd
    try:
        p = subprocess.run(gdb, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout * 3)
    except subprocess.TimeoutExpired:
        return "", []
    text = p.stdout.decode(errors="replace")
    frames = []
    for line in text.splitlines():
        m = re.match(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(.+?) \(.*?\)(?: (?:at|from) (\S+))?$", line)
        if m:
            frames.append((m.group(1).strip(), m.group(2) or ""))
    return text, frames


def bucket_of(sig, frames):
    relevant = [(f, w) for f, w in frames if not SKIP_FUNCS.match(f)]
    top = []
    for f, where in relevant[:3]:
        lib = os.path.basename(where) if where.startswith("/") and ".so" in where else ""
        f = re.sub(r"<.*>", "<>", f)
        top.append(f + (f" [{re.sub(r'[.]so.*$', '', lib)}]" if lib else ""))
    return f"{sig}: " + " < ".join(top) if top else f"{sig}: (no backtrace)"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pacsnode", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data"))
    ap.add_argument("--files", help="file with one input per line (paths relative to --data)")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--keep", type=int, default=3, help="mutants kept per bucket")
    ap.add_argument("--batch", type=int, default=6, help="mutants (of different files) per analyze run")
    a = ap.parse_args()

    names = DEFAULT_FILES if not a.files else [l.strip() for l in open(a.files) if l.strip()]
    inputs = [(n, open(os.path.join(a.data, n), "rb").read()) for n in names]
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.out, "buckets"), exist_ok=True)
    state_path = os.path.join(a.out, "state.json")
    state = json.load(open(state_path)) if os.path.exists(state_path) else {"runs": 0, "seconds": 0, "buckets": {},
                                                                            "per_file": {}}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    deadline = time.time() + a.minutes * 60
    started = time.time()
    work = tempfile.mkdtemp(prefix="mutate-analyze-")

    def run(mutants):
        """analyze on a folder holding `mutants` [(name, bytes)]: (return code or None on timeout, stderr)."""
        case = os.path.join(work, "in")
        shutil.rmtree(case, ignore_errors=True)
        os.makedirs(case)
        for i, (name, data) in enumerate(mutants):
            with open(os.path.join(case, f"{i}-{os.path.basename(name)}"), "wb") as f:
                f.write(data)
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [a.pacsnode, "analyze", case, "--out", out, "--no-dicom"]
        try:
            p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=a.timeout, env=env)
            return p.returncode, p.stderr.decode(errors="replace"), cmd
        except subprocess.TimeoutExpired:
            return None, "", cmd

    try:
        while time.time() < deadline:
            # A batch of mutants of different files (different UIDs: one series each) per run; when
            # the run dies, each mutant of the batch is run alone to find which one(s) did it.
            batch = [(name, *mutate(original, rng)) for name, original in rng.sample(inputs, min(a.batch, len(inputs)))]
            for name, _, _ in batch:
                state["per_file"][name] = state["per_file"].get(name, 0) + 1
            state["runs"] += len(batch)
            rc, err, batch_cmd = run([(n, m) for n, m, _ in batch])
            if rc is not None and rc >= 0:
                continue  # analysed or rejected: exit 0/1 with the reasons on stderr
            for name, mutant, how in batch:
                rc, err, cmd = run([(name, mutant)]) if len(batch) > 1 else (rc, err, batch_cmd)
                if rc is not None and rc >= 0:
                    continue
                sig = "TIMEOUT" if rc is None else signame(rc)
                text, frames = backtrace(cmd, a.timeout) if rc is not None else ("", [])
                bucket = bucket_of(sig, frames)
                bid = hashlib.sha1(bucket.encode()).hexdigest()[:10]
                b = state["buckets"].setdefault(bid, {"bucket": bucket, "count": 0, "files": {}, "examples": []})
                b["count"] += 1
                b["files"][name] = b["files"].get(name, 0) + 1
                if len(b["examples"]) < a.keep:
                    d = os.path.join(a.out, "buckets", bid)
                    os.makedirs(d, exist_ok=True)
                    ex = f"{len(b['examples'])}-{os.path.basename(name)}"
                    with open(os.path.join(d, ex), "wb") as f:
                        f.write(mutant)
                    with open(os.path.join(d, ex + ".gdb.txt"), "w") as f:
                        f.write(text + "\n--- stderr of the run ---\n" + err[-4000:])
                    b["examples"].append({"file": ex, "source": name, "mutation": how})
                    print(f"[{state['runs']}] new {'bucket' if b['count'] == 1 else 'example'} {bid}: {bucket} "
                          f"({name}: {how})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        state["seconds"] += time.time() - started
        json.dump(state, open(state_path, "w"), indent=1)
        write_report(a.out, state)
    return 0


def write_report(out, state):
    lines = [f"# pacsnode analyze mutation campaign", "",
             f"{state['runs']} mutants analysed in {state['seconds'] / 60:.1f} min; {len(state['buckets'])} distinct crash buckets.", "",
             "| bucket | count | inputs | first mutation |", "| --- | --- | --- | --- |"]
    for bid, b in sorted(state["buckets"].items(), key=lambda kv: -kv[1]["count"]):
        ex = b["examples"][0] if b["examples"] else {}
        files = ", ".join(f"{os.path.basename(k)} ({v})" for k, v in b["files"].items())
        lines.append(f"| `{bid}` {b['bucket']} | {b['count']} | {files} | {ex.get('mutation', '')} |")
    lines += ["", "Runs per input:", ""] + [f"- {k}: {v}" for k, v in sorted(state["per_file"].items())]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
