#!/usr/bin/python3
"""Checks the SEG + SR the daemon produced for a study, with pydicom as an independent reader.

Usage: check_results.py RESULTS_DIR SOURCE_DIR [EXPECTED_SEGMENT_TYPE_CODE...]  (SNOMED CT codes)
For every SEG in RESULTS_DIR there must be one SR of the same study that references it (in its
content tree and in Current Requested Procedure Evidence, together with every source instance);
the SEG must share study, patient and frame of reference with the sources and carry the expected
segment labels; segment types are SNOMED CT or a coding scheme the SEG declares. Prints a line per object and "ok N pairs"; exits 1 on the first problem.
"""
import os, sys
import pydicom

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def walk(items):
    for it in items:
        yield it
        if "ContentSequence" in it:
            yield from walk(it.ContentSequence)


def fail(msg):
    print("FAIL:", msg); sys.exit(1)


def main():
    results_dir, source_dir, expected = sys.argv[1], sys.argv[2], sys.argv[3:]
    sources = {}
    for root, _, names in os.walk(source_dir):
        for n in names:
            ds = pydicom.dcmread(os.path.join(root, n), stop_before_pixels=True)
            sources[str(ds.SOPInstanceUID)] = ds
    any_src = next(iter(sources.values()))
    segs, srs = [], []
    for n in sorted(os.listdir(results_dir)):
        ds = pydicom.dcmread(os.path.join(results_dir, n))
        (segs if ds.SOPClassUID == SEG_CLASS else srs).append(ds)
    if not segs: fail("no SEG")
    series = {str(s.SeriesInstanceUID) for s in sources.values()}
    for seg in segs:
        if seg.StudyInstanceUID != any_src.StudyInstanceUID: fail("SEG study differs from the source")
        if seg.PatientID != any_src.PatientID: fail("SEG patient differs from the source")
        if seg.FrameOfReferenceUID != any_src.FrameOfReferenceUID: fail("SEG frame of reference differs")
        refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
        if not refs or not refs <= set(sources): fail("SEG references instances that are not the sources")
        if seg.SeriesInstanceUID in series: fail("SEG is not in a new series")
        labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
        types = {str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in seg.SegmentSequence}
        schemes = {str(s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator) for s in seg.SegmentSequence}
        # SNOMED CT, or a private scheme the SEG declares (e.g. 99PACSNODE for "Bone, calcification
        # or contrast", which no SCT concept names).
        declared = {str(c.CodingSchemeDesignator) for c in seg.get("CodingSchemeIdentificationSequence", [])}
        if "SCT" not in schemes or not schemes <= {"SCT"} | declared:
            fail(f"segment types not SNOMED CT (SCT) or a declared scheme: {schemes} (declared {sorted(declared)})")
        for e in expected:
            if e not in types: fail(f"segment type {e} missing from {sorted(types)} ({labels})")
        mine = [sr for sr in srs if any(getattr(i, "ReferencedSOPInstanceUID", None) == seg.SOPInstanceUID
                                        for c in walk(sr.ContentSequence) for i in getattr(c, "ReferencedSOPSequence", []))]
        if len(mine) != 1: fail(f"{len(mine)} SR(s) reference SEG {seg.SOPInstanceUID}")
        sr = mine[0]
        if sr.StudyInstanceUID != seg.StudyInstanceUID: fail("SR study differs")
        evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                    for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
        if seg.SOPInstanceUID not in evidence: fail("SR evidence lacks the SEG")
        if not refs <= evidence: fail("SR evidence lacks source instances")
        nums = [c for c in walk(sr.ContentSequence) if c.ValueType == "NUM"]
        if not nums: fail("SR has no measurements")
        print(f"SEG {len(seg.SegmentSequence)} segments {labels}, {seg.NumberOfFrames} frames; SR {len(nums)} measurements")
    print(f"ok {len(segs)} pairs")


if __name__ == "__main__":
    main()
