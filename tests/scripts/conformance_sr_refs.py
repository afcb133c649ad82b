#!/usr/bin/python3
"""Checks that a TID 1500 SR written by the pipeline refers to the SEG and the source series that
were actually written (test_results_conformance).

Usage: conformance_sr_refs.py SR SEG DUMP
  DUMP is the tab-separated file of conformance_seg_rebuild.py (SERIES and SLICE lines are used).

Checks: every Referenced Segment (DCM 121191) names the SEG's SOP Class and Instance UID and a
segment number of its Segment Sequence, and the group's Tracking Unique Identifier (DCM 112040)
is that segment's Tracking UID; every "Source series for segmentation" (DCM 121232) is the source
series; the Current Requested Procedure Evidence lists the SEG and every source instance, each
under its own study and series, and nothing else; the SR is in the source's study and patient.

Output (space separated): one ERROR line per failed check (exit status 1 when there is any),
  GROUP index segment_number tracking_id
  SUMMARY groups referenced_segments source_series_items evidence_instances
"""
import sys

import pydicom
from pydicom.multival import MultiValue

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
errors = []


def error(msg):
    errors.append(msg)
    print("ERROR", msg)


def concept(item):
    if "ConceptNameCodeSequence" not in item:
        return "-"
    c = item.ConceptNameCodeSequence[0]
    return f"{c.CodingSchemeDesignator}:{c.CodeValue}"


def walk(item):
    for c in getattr(item, "ContentSequence", []):
        yield c
        yield from walk(c)


def main(sr_path, seg_path, dump_path):
    series, slices = None, []
    with open(dump_path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if p[0] == "SERIES":
                series = p[1]
            elif p[0] == "SLICE":
                slices.append((p[2], p[3], p[8]))  # class, instance, path
    sr = pydicom.dcmread(sr_path)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    src = pydicom.dcmread(slices[0][2], stop_before_pixels=True)

    if sr.StudyInstanceUID != src.StudyInstanceUID or sr.PatientID != src.PatientID:
        error("SR is not in the source's study/patient")
    if seg.SOPClassUID != SEG_CLASS:
        error(f"the SEG file has SOP Class {seg.SOPClassUID}")
    tracking = {int(s.SegmentNumber): getattr(s, "TrackingUID", None) for s in seg.SegmentSequence}

    groups = refsegs = srcseries = 0
    referenced = set()
    for item in walk(sr):
        if concept(item) != "DCM:125007":  # Measurement Group
            continue
        groups += 1
        numbers, tracking_uid, tracking_id, group_series = [], None, "-", 0
        for c in getattr(item, "ContentSequence", []):
            cn = concept(c)
            if cn == "DCM:121191":
                refsegs += 1
                if c.ValueType != "IMAGE" or "ReferencedSOPSequence" not in c:
                    error(f"group {groups}: Referenced Segment is not an IMAGE reference")
                    continue
                ref = c.ReferencedSOPSequence[0]
                if ref.ReferencedSOPClassUID != seg.SOPClassUID or ref.ReferencedSOPInstanceUID != seg.SOPInstanceUID:
                    error(f"group {groups}: Referenced Segment names {ref.ReferencedSOPClassUID} "
                          f"{ref.ReferencedSOPInstanceUID}, not the written SEG {seg.SOPInstanceUID}")
                if "ReferencedSegmentNumber" not in ref:
                    error(f"group {groups}: Referenced Segment without Referenced Segment Number")
                    continue
                value = ref.ReferencedSegmentNumber
                for k in value if isinstance(value, (MultiValue, list)) else [value]:
                    k = int(k)
                    numbers.append(k)
                    if k not in tracking:
                        error(f"group {groups}: segment {k} is not in the SEG (segments {sorted(tracking)})")
            elif cn == "DCM:121232":
                srcseries += 1
                group_series += 1
                if c.UID != series:
                    error(f"group {groups}: source series for segmentation {c.UID}, the source is {series}")
            elif cn == "DCM:112040":
                tracking_uid = c.UID
            elif cn == "DCM:112039":
                tracking_id = c.TextValue
        if len(numbers) != 1:
            error(f"group {groups}: {len(numbers)} referenced segments, expected 1")
        if group_series != 1:
            error(f"group {groups}: {group_series} 'Source series for segmentation' items, expected 1")
        for k in numbers:
            referenced.add(k)
            if tracking.get(k) and tracking_uid != tracking[k]:
                error(f"group {groups}: Tracking UID {tracking_uid} is not segment {k}'s {tracking[k]}")
        print("GROUP", groups, ",".join(str(k) for k in numbers) or "-", tracking_id)

    evidence = set()
    for st in getattr(sr, "CurrentRequestedProcedureEvidenceSequence", []):
        for se in st.ReferencedSeriesSequence:
            for so in se.ReferencedSOPSequence:
                evidence.add((st.StudyInstanceUID, se.SeriesInstanceUID, so.ReferencedSOPClassUID,
                              so.ReferencedSOPInstanceUID))
    want = {(seg.StudyInstanceUID, seg.SeriesInstanceUID, seg.SOPClassUID, seg.SOPInstanceUID)}
    want |= {(src.StudyInstanceUID, series, cls, uid) for cls, uid, _ in slices}
    for e in sorted(want - evidence):
        error(f"evidence lacks {e[3]} (class {e[2]}, series {e[1]})")
    for e in sorted(evidence - want):
        error(f"evidence lists {e[3]} (class {e[2]}, series {e[1]}), which was not written or analysed")
    print("SUMMARY", groups, len(referenced), srcseries, len(evidence))
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:4]))
