#!/usr/bin/python3
"""Independent reference reader for the decode tests (pydicom + numpy, no GDCM/DCMTK).

  decode_reference.py pixels OUT.f64 FILE
      Real-world values of every frame of FILE, computed here from the raw Pixel Data bytes
      (uncompressed, deflated or big endian; RLE via pydicom's own decoder): mask to Bits Stored,
      sign-extend, mirror MONOCHROME1, apply Rescale Slope/Intercept (per frame for enhanced
      objects) or the Modality LUT (pydicom's apply_modality_lut). Writes float64 little endian, frame after frame, row-major, to OUT.f64 and prints
      "frames rows cols".

  decode_reference.py tags FILE
      Prints "Name<TAB>value" for the descriptive attributes a SeriesInfo carries.

  decode_reference.py stack FILE...
      Sorts single-frame FILEs along the normal of the first file's Image Orientation and prints
      "spacing <mean step mm>" then "origin x y z", then one "file <path>" line per file in order.
"""
import sys

import numpy as np
import pydicom
from pydicom.pixel_data_handlers.util import apply_modality_lut
from pydicom.uid import ImplicitVRLittleEndian, RLELossless


def stored_values(ds):
    for keyword, dtype in (("FloatPixelData", "f4"), ("DoubleFloatPixelData", "f8")):
        if keyword in ds:  # IEEE samples: nothing to mask
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            order = "<" if ds.is_little_endian else ">"
            return np.frombuffer(ds[keyword].value, dtype=order + dtype).astype(np.float64).reshape(
                frames, int(ds.Rows), int(ds.Columns))
    bits_alloc = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored", bits_alloc))
    high_bit = int(ds.get("HighBit", bits_stored - 1))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    ts = ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)  # no meta: as read
    if ts == RLELossless:
        arr = ds.pixel_array  # pydicom's own RLE decoder
        raw = arr.astype(np.int64).reshape(frames, rows, cols) & ((1 << bits_alloc) - 1)
    else:
        if ts.is_compressed:
            raise SystemExit("compressed transfer syntax: use the uncompressed sibling as reference")
        dtype = {8: "u1", 16: "u2", 32: "u4"}[bits_alloc]
        order = "<" if ds.is_little_endian else ">"
        n = frames * rows * cols
        raw = np.frombuffer(ds.PixelData, dtype=order + dtype, count=n).astype(np.int64)
        raw = raw.reshape(frames, rows, cols)
    shift = high_bit + 1 - bits_stored
    v = (raw >> shift) & ((1 << bits_stored) - 1)
    if signed:
        sign = 1 << (bits_stored - 1)
        v = np.where(v & sign, v - 2 * sign, v)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
        v = lo + hi - v
    return v


def rescale_of(ds, frame):
    def from_item(item):
        if item is not None and "PixelValueTransformationSequence" in item:
            t = item.PixelValueTransformationSequence[0]
            return float(t.get("RescaleSlope", 1)), float(t.get("RescaleIntercept", 0))
        return None
    if "PerFrameFunctionalGroupsSequence" in ds:
        got = from_item(ds.PerFrameFunctionalGroupsSequence[frame])
        if got is None and "SharedFunctionalGroupsSequence" in ds:
            got = from_item(ds.SharedFunctionalGroupsSequence[0])
        if got is not None:
            return got
    if "DoseGridScaling" in ds:
        return float(ds.DoseGridScaling), 0.0
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def pixels(out, path):
    ds = pydicom.dcmread(path, force=True)
    stored = stored_values(ds)
    if "ModalityLUTSequence" in ds:  # pydicom's own LUT lookup
        v = apply_modality_lut(stored, ds).astype(np.float64)
        v.astype("<f8").tofile(out)
        print(v.shape[0], v.shape[1], v.shape[2])
        return
    v = stored.astype(np.float64)
    for f in range(v.shape[0]):
        slope, intercept = rescale_of(ds, f)
        v[f] = v[f] * slope + intercept
    v.astype("<f8").tofile(out)
    print(v.shape[0], v.shape[1], v.shape[2])


def stack(paths):
    dss = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in paths]
    o = np.array(dss[0][1].ImageOrientationPatient, dtype=float)
    n = np.cross(o[:3], o[3:])
    n /= np.linalg.norm(n)
    placed = sorted(((float(np.dot(n, np.array(d.ImagePositionPatient, float))), p, d) for p, d in dss),
                    key=lambda t: t[0])
    steps = np.diff([t[0] for t in placed])
    print("spacing", repr(float(steps.mean())) if len(steps) else "0")
    print("origin", *[repr(float(x)) for x in placed[0][2].ImagePositionPatient])
    for _, p, _ in placed:
        print("file", p)


def tags(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for name in ("Modality", "BodyPartExamined", "SeriesDescription", "ProtocolName", "StudyInstanceUID",
                 "SeriesInstanceUID", "FrameOfReferenceUID", "SOPClassUID", "SOPInstanceUID"):
        print(f"{name}\t{str(ds.get(name, '')).strip()}")


if __name__ == "__main__":
    if sys.argv[1] == "pixels":
        pixels(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "tags":
        tags(sys.argv[2])
    elif sys.argv[1] == "stack":
        stack(sys.argv[2:])
    else:
        raise SystemExit(__doc__)
