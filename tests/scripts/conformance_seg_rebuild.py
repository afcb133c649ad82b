#!/usr/bin/python3
"""Rebuilds the pipeline's label map from a written DICOM SEG alone and compares it, voxel for
voxel, with the label map the pipeline had (test_results_conformance).

Usage: conformance_seg_rebuild.py SEG DUMP LABELS
  DUMP   tab-separated lines written by the test:
           VOLUME depth rows cols has_frame_of_reference(1/0)
           SERIES source_series_uid
           SEGMENT number label [covered]      (SEG segment numbers 1..N, in order; label: the SEG's
                                                Segment Label; covered: further label values the
                                                segment covers, comma-separated, e.g. a body that
                                                holds the lungs; overlaps are allowed only so)
           SLICE z sop_class sop_instance frame_number x y z path
                 (frame_number 0 for a single-frame source; x y z '-' without frame of reference)
  LABELS raw uint8 label map, z-major (depth x rows x cols), value k = segment k, 0 = background;
         segment k's frames are the voxels whose value is k or one of its covered values

What is read from the SEG: Segment Sequence, Referenced Series Sequence, Shared Functional Groups
(Plane Orientation, Pixel Measures), and per frame Segment Identification -> Referenced Segment
Number, Derivation Image -> Source Image -> Referenced SOP Class/Instance UID and Referenced Frame
Number, Plane Position -> Image Position (Patient); the 1-bit frames are unpacked with numpy (and
cross-checked against pydicom's own pixel_array). The source files are read independently for
their positions, orientation, spacing, study and frame of reference.

Output (space separated): one ERROR line per failed check (exit status 1 when there is any),
  SEGFRAMES segment_number frames voxels     (per segment)
  SUMMARY frames segments slices_with_frames voxels mismatched_voxels
"""
import sys

import numpy as np
import pydicom

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
POS_TOL_MM = 1e-3
errors = []


def error(msg):
    errors.append(msg)
    print("ERROR", msg)


def read_dump(path):
    dump = {"segments": {}, "slices": []}
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if p[0] == "VOLUME":
                dump["depth"], dump["rows"], dump["cols"] = int(p[1]), int(p[2]), int(p[3])
                dump["has_for"] = p[4] == "1"
            elif p[0] == "SERIES":
                dump["series"] = p[1]
            elif p[0] == "SEGMENT":
                dump["segments"][int(p[1])] = p[2]
                dump.setdefault("covers", {})[int(p[1])] = (
                    {int(p[1])} | {int(v) for v in p[3].split(",") if v} if len(p) > 3 else {int(p[1])})
            elif p[0] == "SLICE":
                pos = None if p[5] == "-" else np.array([float(v) for v in p[5:8]])
                dump["slices"].append({"z": int(p[1]), "cls": p[2], "uid": p[3], "frame": int(p[4]),
                                       "pos": pos, "path": p[8]})
    return dump


def source_geometry(ds, frame):
    """(position, orientation, pixel spacing) of one frame of a source dataset, or None each."""
    pos = iop = spacing = None
    if frame > 0 and "PerFrameFunctionalGroupsSequence" in ds:
        groups = [ds.PerFrameFunctionalGroupsSequence[frame - 1]]
        if "SharedFunctionalGroupsSequence" in ds:
            groups.append(ds.SharedFunctionalGroupsSequence[0])
        for g in groups:
            if pos is None and "PlanePositionSequence" in g:
                pos = np.array([float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient])
            if iop is None and "PlaneOrientationSequence" in g:
                iop = np.array([float(v) for v in g.PlaneOrientationSequence[0].ImageOrientationPatient])
            if spacing is None and "PixelMeasuresSequence" in g and "PixelSpacing" in g.PixelMeasuresSequence[0]:
                spacing = np.array([float(v) for v in g.PixelMeasuresSequence[0].PixelSpacing])
    else:
        if "ImagePositionPatient" in ds:
            pos = np.array([float(v) for v in ds.ImagePositionPatient])
        if "ImageOrientationPatient" in ds:
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        if "PixelSpacing" in ds:
            spacing = np.array([float(v) for v in ds.PixelSpacing])
    return pos, iop, spacing


def unpack_frames(seg, n, rows, cols):
    if seg.file_meta.TransferSyntaxUID.is_compressed:
        error(f"SEG pixel data is compressed ({seg.file_meta.TransferSyntaxUID}); expected native 1-bit frames")
        return None
    raw = np.frombuffer(seg.PixelData, dtype=np.uint8)
    need = n * rows * cols
    bits = np.unpackbits(raw, bitorder="little")
    if bits.size < need:
        error(f"Pixel Data holds {bits.size} bits, {n} frames of {rows}x{cols} need {need}")
        return None
    if raw.size != (need + 7) // 8 + ((need + 7) // 8) % 2:
        error(f"Pixel Data is {raw.size} bytes, expected {(need + 7) // 8} (+ even padding)")
    if np.any(bits[need:]):
        error("padding bits after the last frame are not zero")
    frames = bits[:need].reshape(n, rows, cols)
    # pydicom's own decoder must agree with the manual unpacking.
    ref = seg.pixel_array
    if ref.ndim == 2:
        ref = ref[np.newaxis]
    if ref.shape != frames.shape or not np.array_equal(ref.astype(np.uint8), frames):
        error("pydicom pixel_array differs from the numpy unpacking of Pixel Data")
    return frames


def main(seg_path, dump_path, labels_path):
    dump = read_dump(dump_path)
    depth, rows, cols = dump["depth"], dump["rows"], dump["cols"]
    labels = np.fromfile(labels_path, dtype=np.uint8)
    if labels.size != depth * rows * cols:
        error(f"label file has {labels.size} bytes, expected {depth}x{rows}x{cols}")
        return 1
    labels = labels.reshape(depth, rows, cols)
    slices = dump["slices"]
    if len(slices) != depth or [s["z"] for s in slices] != list(range(depth)):
        error("dump does not list slices 0..depth-1 in order")
        return 1

    seg = pydicom.dcmread(seg_path)
    n = int(getattr(seg, "NumberOfFrames", 1))
    if seg.SOPClassUID != SEG_CLASS:
        error(f"SOP Class {seg.SOPClassUID} is not Segmentation Storage")
    if seg.Modality != "SEG":
        error(f"Modality {seg.Modality}")
    if seg.SegmentationType != "BINARY" or int(seg.BitsAllocated) != 1 or int(seg.BitsStored) != 1:
        error(f"expected a BINARY 1-bit SEG, got {seg.SegmentationType} with {seg.BitsAllocated} bits allocated")
    if (int(seg.Rows), int(seg.Columns)) != (rows, cols):
        error(f"SEG is {seg.Rows}x{seg.Columns}, source slices are {rows}x{cols}")
        return 1
    pffg = seg.PerFrameFunctionalGroupsSequence
    if len(pffg) != n:
        error(f"Number of Frames {n} but {len(pffg)} per-frame functional group items")
        return 1

    # Segments: numbered 1..N in order, labelled with the pipeline's names.
    seg_numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    if seg_numbers != list(range(1, len(seg_numbers) + 1)):
        error(f"segment numbers {seg_numbers} are not 1..N")
    if sorted(dump["segments"]) != seg_numbers:
        error(f"SEG segments {seg_numbers}, pipeline segments {sorted(dump['segments'])}")
    for s in seg.SegmentSequence:
        want = dump["segments"].get(int(s.SegmentNumber))
        if want is not None and s.SegmentLabel != want:
            error(f"segment {s.SegmentNumber} is labelled '{s.SegmentLabel}', pipeline segment is '{want}'")

    # The source files, read on their own.
    src_ds = {}
    for s in slices:
        if s["path"] not in src_ds:
            src_ds[s["path"]] = pydicom.dcmread(s["path"], stop_before_pixels=True)
    first = src_ds[slices[0]["path"]]
    if seg.StudyInstanceUID != first.StudyInstanceUID:
        error("SEG is not in the source's study")
    if seg.PatientID != first.PatientID:
        error("SEG Patient ID differs from the source's")
    if seg.SeriesInstanceUID == dump["series"]:
        error("SEG reuses the source Series Instance UID")
    if first.SeriesInstanceUID != dump["series"]:
        error(f"source file series {first.SeriesInstanceUID} is not the pipeline's {dump['series']}")

    by_ref = {}
    for s in slices:
        ds = src_ds[s["path"]]
        if ds.SOPInstanceUID != s["uid"] or ds.SOPClassUID != s["cls"]:
            error(f"slice {s['z']}: pipeline names {s['uid']} but {s['path']} is {ds.SOPInstanceUID}")
        key = (s["uid"], s["frame"])
        if key in by_ref:
            error(f"slices {by_ref[key]} and {s['z']} come from the same source frame {key}")
        by_ref[key] = s["z"]
        pos, _, _ = source_geometry(ds, s["frame"])
        s["src_pos"] = pos
        if dump["has_for"]:
            if pos is None:
                error(f"slice {s['z']}: source has no Image Position (Patient)")
            elif s["pos"] is None or np.max(np.abs(pos - s["pos"])) > POS_TOL_MM:
                error(f"slice {s['z']}: pipeline position {s['pos']} is not the source's {pos}")

    # Referenced Series Sequence: the source series with every source instance.
    refs = {}
    for rs in getattr(seg, "ReferencedSeriesSequence", []):
        for ri in rs.ReferencedInstanceSequence:
            refs.setdefault(rs.SeriesInstanceUID, set()).add((ri.ReferencedSOPClassUID, ri.ReferencedSOPInstanceUID))
    want_refs = {(s["cls"], s["uid"]) for s in slices}
    if set(refs) != {dump["series"]}:
        error(f"Referenced Series Sequence lists series {sorted(refs)}, expected only {dump['series']}")
    elif refs[dump["series"]] != want_refs:
        error(f"Referenced Instance Sequence lists {len(refs[dump['series']])} instances, "
              f"the source has {len(want_refs)}")

    # Shared geometry: orientation and spacing of the source.
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    _, src_iop, src_spacing = source_geometry(first, slices[0]["frame"])
    if dump["has_for"]:
        if seg.get("FrameOfReferenceUID") != first.get("FrameOfReferenceUID"):
            error("SEG Frame of Reference UID differs from the source's")
        if shared is None or "PlaneOrientationSequence" not in shared:
            error("no shared Plane Orientation Sequence")
        else:
            iop = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
            if src_iop is None or np.max(np.abs(iop - src_iop)) > 1e-5:
                error(f"SEG orientation {iop} is not the source's {src_iop}")
        if shared is None or "PixelMeasuresSequence" not in shared:
            error("no shared Pixel Measures Sequence")
        else:
            sp = np.array([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing])
            if src_spacing is None or np.max(np.abs(sp - src_spacing)) > 1e-6 * max(1.0, float(np.max(sp))):
                error(f"SEG pixel spacing {sp} is not the source's {src_spacing}")

    frames = unpack_frames(seg, n, rows, cols)
    if frames is None:
        return 1

    # Rebuild the label map frame by frame from the functional groups. A segment covering further
    # labels (the body) is written first so that the more specific segments overwrite it; each
    # frame must equal the pipeline's voxels of the labels its segment covers.
    covers = dump.get("covers", {})
    cover = lambda k: sorted(covers.get(k, {k}))
    order = sorted(range(len(pffg)), key=lambda i: -len(cover(int(pffg[i].SegmentIdentificationSequence[0].ReferencedSegmentNumber))))
    rebuilt = np.zeros_like(labels)
    seen = set()
    per_segment = {k: [0, 0] for k in seg_numbers}
    empty_frames = []
    for i in order:
        pf = pffg[i]
        k = int(pf.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if k not in per_segment:
            error(f"frame {i + 1} references segment {k}, not in the Segment Sequence")
            continue
        der = pf.DerivationImageSequence
        if len(der) != 1 or len(der[0].SourceImageSequence) != 1:
            error(f"frame {i + 1}: expected one Derivation Image with one Source Image")
            continue
        src = der[0].SourceImageSequence[0]
        ref = (src.ReferencedSOPInstanceUID, int(src.ReferencedFrameNumber) if "ReferencedFrameNumber" in src else 0)
        z = by_ref.get(ref)
        if z is None:
            error(f"frame {i + 1} is derived from {ref}, which is no source slice of the pipeline")
            continue
        s = slices[z]
        if src.ReferencedSOPClassUID != s["cls"]:
            error(f"frame {i + 1}: source class {src.ReferencedSOPClassUID}, slice {z} is {s['cls']}")
        if s["frame"] > 0 and "ReferencedFrameNumber" not in src:
            error(f"frame {i + 1}: multi-frame source without Referenced Frame Number")
        if (k, z) in seen:
            error(f"segment {k} has two frames on slice {z}")
        seen.add((k, z))
        if dump["has_for"]:
            if "PlanePositionSequence" not in pf:
                error(f"frame {i + 1}: no Plane Position Sequence")
            else:
                pos = np.array([float(v) for v in pf.PlanePositionSequence[0].ImagePositionPatient])
                if s["src_pos"] is None or np.max(np.abs(pos - s["src_pos"])) > POS_TOL_MM:
                    error(f"frame {i + 1} (segment {k}, slice {z}) at {pos}, its source is at {s['src_pos']}")
        elif "PlanePositionSequence" in pf:
            error(f"frame {i + 1}: Plane Position on a SEG without frame of reference")
        mask = frames[i].astype(bool)
        if not mask.any():
            empty_frames.append(i)
        plane = rebuilt[z]  # a view: writes go to the volume
        want = np.isin(labels[z], cover(k))
        if (mask != want).any():
            error(f"frame {i + 1}: segment {k} has {int((mask != want).sum())} voxels on slice {z} that are not "
                  f"those of the labels it covers {cover(k)} (an undeclared overlap or a wrong mask)")
        plane[mask] = k
        per_segment[k][0] += 1
        per_segment[k][1] += int(mask.sum())
    # Empty frames are allowed only as the single placeholder of an all-empty SEG.
    if empty_frames and not (n == 1 and not labels.any()):
        error(f"{len(empty_frames)} empty frame(s) written, e.g. frame {empty_frames[0] + 1}")

    # Every non-empty (segment, slice) of the pipeline has a frame; every omitted one is empty.
    for k in seg_numbers:
        for z in range(depth):
            if (k, z) not in seen and np.any(np.isin(labels[z], cover(k))):
                error(f"segment {k} has {int(np.sum(np.isin(labels[z], cover(k))))} voxels on slice {z} but no frame")
    stray = set(np.unique(labels).tolist()) - {0} - set(seg_numbers)
    if stray:
        error(f"pipeline label map holds values {sorted(stray)} that are no SEG segment")

    diff = rebuilt != labels
    mismatched = int(diff.sum())
    if mismatched:
        zs = np.nonzero(diff.any(axis=(1, 2)))[0]
        z = int(zs[0])
        r, c = np.argwhere(diff[z])[0]
        error(f"{mismatched} voxels differ on {len(zs)} slice(s); first at z={z} r={r} c={c}: "
              f"SEG {rebuilt[z, r, c]}, pipeline {labels[z, r, c]}")
    for k in seg_numbers:
        print("SEGFRAMES", k, per_segment[k][0], per_segment[k][1])
    print("SUMMARY", n, len(seg_numbers), len({z for _, z in seen}), int((labels != 0).sum()), mismatched)
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:4]))
