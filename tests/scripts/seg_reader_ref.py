#!/usr/bin/env python3
"""Independent reference for test_seg_reader: reads a DICOM SEG with pydicom and numpy (not DCMTK)
and prints what dicom::read_seg must find.

Output, one record per line:
  SEG <rows> <cols> <frames> <BINARY|FRACTIONAL>
  SEGMENT <number> <voxels> <label>      one per Segment Sequence item; voxels over all its frames
  FRAME <index0> <segment> <voxels> <index_sum>   one per frame, in stored order; index_sum is the
                                         sum of r * cols + c over its set pixels (catches bit order)
FRACTIONAL pixels count as inside when value >= 0.5 * Maximum Fractional Value.
"""
import sys

import numpy as np
import pydicom


def main(path):
    ds = pydicom.dcmread(path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = int(getattr(ds, "NumberOfFrames", 1))
    kind = str(ds.SegmentationType)
    raw = np.frombuffer(ds.PixelData, dtype=np.uint8)
    if kind == "BINARY":
        # Bits are packed LSB first and frames follow each other without byte alignment.
        bits = np.unpackbits(raw, bitorder="little")[: n * rows * cols]
        frames = bits.reshape(n, rows, cols)
    elif kind == "FRACTIONAL":
        maxv = int(ds.MaximumFractionalValue)
        frames = (2 * raw[: n * rows * cols].astype(np.int64) >= maxv).reshape(n, rows, cols)
    else:
        raise SystemExit(f"unsupported Segmentation Type {kind}")
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = ds.PerFrameFunctionalGroupsSequence
    seg_of = []
    for i in range(n):
        item = per_frame[i]
        if "SegmentIdentificationSequence" in item:
            sid = item.SegmentIdentificationSequence[0]
        else:
            sid = shared.SegmentIdentificationSequence[0]
        seg_of.append(int(sid.ReferencedSegmentNumber))
    counts = {}
    for i in range(n):
        counts[seg_of[i]] = counts.get(seg_of[i], 0) + int(frames[i].sum())
    print(f"SEG {rows} {cols} {n} {kind}")
    for s in ds.SegmentSequence:
        num = int(s.SegmentNumber)
        print(f"SEGMENT {num} {counts.get(num, 0)} {s.SegmentLabel}")
    for i in range(n):
        flat = np.flatnonzero(frames[i].reshape(-1))
        print(f"FRAME {i} {seg_of[i]} {flat.size} {int(flat.astype(np.int64).sum())}")


if __name__ == "__main__":
    main(sys.argv[1])
