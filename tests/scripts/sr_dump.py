#!/usr/bin/python3
"""Reads a TID 1500 SR with pydicom, walks its content tree and resolves its references against
the SEG and a source image file. Prints one fact per line (space separated, '-' if absent):
  SR sop_class sop_instance series study modality completion verification
  SAME patient_id_equal study_uid_equal        (SR vs source file: 1/0)
  TITLE scheme:value      TEMPLATE template_id
  PROCEDURE scheme:value  LANGUAGE scheme:value
  OBSERVER observer_type(scheme:value) device_uid
  EVIDENCE study series sop_class sop_instance
  PREDECESSOR study series sop_class sop_instance
  SCHEME designator
  GROUP index tracking_uid tracking_id...
    REFSEG sop_class sop_instance segment_number resolved_label...   ('?' if not in the SEG)
    SRCSERIES uid seg_references_it(1/0)
    FINDING scheme:value   SITE scheme:value
    NUM concept value unit derivation method
    QUAL concept value
  DOCQUAL concept value
Usage: sr_dump.py SR SEG SOURCE
"""
import sys
import pydicom


def code(item):
    return f"{item.CodingSchemeDesignator}:{item.CodeValue}"


def name(item):
    return code(item.ConceptNameCodeSequence[0])


def children(item):
    return list(getattr(item, "ContentSequence", []))


def main(sr_path, seg_path, src_path):
    sr = pydicom.dcmread(sr_path)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    src = pydicom.dcmread(src_path, stop_before_pixels=True)
    print("SR", sr.SOPClassUID, sr.SOPInstanceUID, sr.SeriesInstanceUID, sr.StudyInstanceUID, sr.Modality,
          sr.CompletionFlag, sr.VerificationFlag)
    print("SAME", int(sr.PatientID == src.PatientID), int(sr.StudyInstanceUID == src.StudyInstanceUID))
    print("TITLE", name(sr))
    if "ContentTemplateSequence" in sr:
        print("TEMPLATE", sr.ContentTemplateSequence[0].TemplateIdentifier)
    for st in getattr(sr, "CurrentRequestedProcedureEvidenceSequence", []):
        for se in st.ReferencedSeriesSequence:
            for so in se.ReferencedSOPSequence:
                print("EVIDENCE", st.StudyInstanceUID, se.SeriesInstanceUID, so.ReferencedSOPClassUID,
                      so.ReferencedSOPInstanceUID)
    for st in getattr(sr, "PredecessorDocumentsSequence", []):
        for se in st.ReferencedSeriesSequence:
            for so in se.ReferencedSOPSequence:
                print("PREDECESSOR", st.StudyInstanceUID, se.SeriesInstanceUID, so.ReferencedSOPClassUID,
                      so.ReferencedSOPInstanceUID)
    for cs in getattr(sr, "CodingSchemeIdentificationSequence", []):
        print("SCHEME", cs.CodingSchemeDesignator)
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    seg_series = {rs.SeriesInstanceUID for rs in getattr(seg, "ReferencedSeriesSequence", [])}
    group_index = 0
    for item in children(sr):
        n = name(item)
        if n == "DCM:121049":
            print("LANGUAGE", code(item.ConceptCodeSequence[0]))
        elif n == "DCM:121005":
            observer = code(item.ConceptCodeSequence[0])
        elif n == "DCM:121012":
            print("OBSERVER", observer, item.UID)
        elif n == "DCM:121058":
            print("PROCEDURE", code(item.ConceptCodeSequence[0]))
        elif n == "DCM:126010":  # Imaging Measurements
            for group in children(item):
                assert name(group) == "DCM:125007", name(group)
                group_index += 1
                facts, tracking_id, tracking_uid = [], "-", "-"
                for c in children(group):
                    cn = name(c)
                    if cn == "DCM:112039":
                        tracking_id = c.TextValue
                    elif cn == "DCM:112040":
                        tracking_uid = c.UID
                    elif cn == "DCM:121191":  # Referenced Segment
                        ref = c.ReferencedSOPSequence[0]
                        number = int(ref.ReferencedSegmentNumber)
                        ok = ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
                        facts.append(f"REFSEG {ref.ReferencedSOPClassUID} {ref.ReferencedSOPInstanceUID} {number} "
                                     f"{labels.get(number, '?') if ok else '?'}")
                    elif cn == "DCM:121232":
                        facts.append(f"SRCSERIES {c.UID} {int(c.UID in seg_series)}")
                    elif cn == "DCM:121071":
                        facts.append(f"FINDING {code(c.ConceptCodeSequence[0])}")
                    elif cn == "SCT:363698007":
                        facts.append(f"SITE {code(c.ConceptCodeSequence[0])}")
                    elif c.ValueType == "NUM":
                        mv = c.MeasuredValueSequence[0]
                        derivation = method = "-"
                        for m in children(c):
                            if name(m) == "DCM:121401":
                                derivation = code(m.ConceptCodeSequence[0])
                            elif name(m) == "SCT:370129005":
                                method = code(m.ConceptCodeSequence[0])
                        facts.append(f"NUM {cn} {float(mv.NumericValue)!r} {code(mv.MeasurementUnitsCodeSequence[0])} "
                                     f"{derivation} {method}")
                    elif c.ValueType == "CODE" and c.RelationshipType == "CONTAINS":
                        facts.append(f"QUAL {cn} {code(c.ConceptCodeSequence[0])}")
                print("GROUP", group_index, tracking_uid, tracking_id)
                for f in facts:
                    print("  " + f)
        elif n == "UMLS:C0034375":  # Qualitative Evaluations
            for c in children(item):
                print("DOCQUAL", name(c), code(c.ConceptCodeSequence[0]))


if __name__ == "__main__":
    main(*sys.argv[1:4])
