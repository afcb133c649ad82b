#!/usr/bin/python3
"""Reads a DICOM SEG with pydicom and prints, line by line, what a reader rebuilds from it:
header, segments, referenced instances, dimension index, and for every frame its segment,
source image/frame (Derivation Image Sequence), Image Position (Patient) and pixels.

Usage: seg_dump.py SEG_FILE
Lines (space separated; '-' for absent):
  SEG rows cols segmentation_type max_fractional_value number_of_frames
  UIDS sop_class sop_instance series study frame_of_reference
  SERIES series_number modality series_description
  SEGMENT number category(scheme:value) type(scheme:value) region(scheme:value) algorithm_type label
  REFINST series_uid sop_class sop_instance
  DIM dimension_index_pointer functional_group_pointer
  SHARED orientation(6 values or -) pixel_spacing(2 values) slice_thickness
  FRAME index segment src_class src_instance src_frame x y z derivation_code purpose_code dim_values
        spatial_locations_preserved
  PIX hex (two hex digits per pixel, row-major)
"""
import sys
import numpy as np
import pydicom
from pydicom.multival import MultiValue


def code(seq):
    if not seq:
        return "-"
    return f"{seq[0].CodingSchemeDesignator}:{seq[0].CodeValue}"


def main(path):
    ds = pydicom.dcmread(path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = int(getattr(ds, "NumberOfFrames", 1))
    maxfrac = int(getattr(ds, "MaximumFractionalValue", 0))
    print("SEG", rows, cols, ds.SegmentationType, maxfrac, n)
    print("UIDS", ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID,
          getattr(ds, "FrameOfReferenceUID", "-") or "-")
    print("SERIES", getattr(ds, "SeriesNumber", "-"), ds.Modality, getattr(ds, "SeriesDescription", "-"))
    for s in ds.SegmentSequence:
        region = code(getattr(s, "AnatomicRegionSequence", None))
        print("SEGMENT", s.SegmentNumber, code(s.SegmentedPropertyCategoryCodeSequence),
              code(s.SegmentedPropertyTypeCodeSequence), region, s.SegmentAlgorithmType, s.SegmentLabel)
    for rs in getattr(ds, "ReferencedSeriesSequence", []):
        for ri in rs.ReferencedInstanceSequence:
            print("REFINST", rs.SeriesInstanceUID, ri.ReferencedSOPClassUID, ri.ReferencedSOPInstanceUID)
    for di in getattr(ds, "DimensionIndexSequence", []):
        print("DIM", f"{int(di.DimensionIndexPointer):08X}", f"{int(di.FunctionalGroupPointer):08X}")
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    iop = "-"
    spacing, thick = "- -", "-"
    if shared is not None:
        if "PlaneOrientationSequence" in shared:
            iop = " ".join(repr(float(v)) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient)
        if "PixelMeasuresSequence" in shared:
            pm = shared.PixelMeasuresSequence[0]
            spacing = " ".join(repr(float(v)) for v in pm.PixelSpacing)
            thick = repr(float(pm.SliceThickness)) if "SliceThickness" in pm else "-"
    print("SHARED", iop, spacing, thick)
    pixels = ds.pixel_array
    if n == 1 and pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    assert pixels.shape == (n, rows, cols), pixels.shape
    for i, pf in enumerate(ds.PerFrameFunctionalGroupsSequence):
        seg = int(pf.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        der = pf.DerivationImageSequence[0]
        src = der.SourceImageSequence[0]
        frame = int(src.ReferencedFrameNumber) if "ReferencedFrameNumber" in src else 0
        if "PlanePositionSequence" in pf:
            x, y, z = (repr(float(v)) for v in pf.PlanePositionSequence[0].ImagePositionPatient)
        else:
            x = y = z = "-"
        dim = "-"
        if "FrameContentSequence" in pf:
            values = pf.FrameContentSequence[0].DimensionIndexValues
            values = list(values) if isinstance(values, (MultiValue, list, tuple)) else [values]
            dim = ",".join(str(int(v)) for v in values)
        print("FRAME", i, seg, src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID, frame, x, y, z,
              der.DerivationCodeSequence[0].CodeValue, src.PurposeOfReferenceCodeSequence[0].CodeValue, dim,
              getattr(src, "SpatialLocationsPreserved", "-"))
        print("PIX", pixels[i].astype(np.uint8).tobytes().hex())


if __name__ == "__main__":
    main(sys.argv[1])
