#!/usr/bin/python3
"""Reads Secondary Capture key images with pydicom and prints, line by line, what a reader sees,
for tests/unit/test_key_images.cpp. Patient identifiers are never printed: the patient/study
attributes are only compared with the source's.

Usage: key_images_dump.py SOURCE_FILE KEY_IMAGE EXPECTED_RGB [KEY_IMAGE EXPECTED_RGB ...]
  EXPECTED_RGB: raw interleaved 8-bit RGB, rows*cols*3 bytes, as the test wrote it ('-' to skip).
Lines per key image (space separated; '-' for absent):
  FILE path
  SOP sop_class sop_instance series study instance_number series_number modality
  IMAGE rows cols samples_per_pixel photometric planar_configuration bits_allocated bits_stored
        high_bit pixel_representation
  FLAGS burned_in_annotation image_type(joined by '/') conversion_type lossy_image_compression
        pixel_spacing_present(0/1) patient_orientation(joined by '/')
  SERIES laterality_present(0/1) laterality body_part_examined
  SOURCE sop_class sop_instance frame purpose(scheme:value) spatial_locations_preserved
  REFSERIES series_uid sop_class sop_instance
  PATIENT_MISMATCH count keywords(comma separated, or -)
  PIXELS_DIFF number_of_differing_values (or - without EXPECTED_RGB)
"""
import sys

import numpy as np
import pydicom

# Patient/study attributes that must equal the source's (absent and empty count as equal).
COMPARED = [
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription",
]


def text(ds, keyword):
    v = getattr(ds, keyword, None)
    if v is None:
        return ""
    if isinstance(v, pydicom.multival.MultiValue):
        return "\\".join(str(x) for x in v)
    return str(v)


def dash(v):
    return v if v not in (None, "") else "-"


def dump(src, path, expected):
    ds = pydicom.dcmread(path)
    print("FILE", path)
    print("SOP", ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID,
          dash(text(ds, "InstanceNumber")), dash(text(ds, "SeriesNumber")), dash(text(ds, "Modality")))
    print("IMAGE", ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation,
          dash(text(ds, "PlanarConfiguration")), ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation)
    print("FLAGS", dash(text(ds, "BurnedInAnnotation")), "/".join(ds.ImageType) if "ImageType" in ds else "-",
          dash(text(ds, "ConversionType")), dash(text(ds, "LossyImageCompression")),
          1 if "PixelSpacing" in ds else 0, dash(text(ds, "PatientOrientation").replace("\\", "/")))
    print("SERIES", 1 if "Laterality" in ds else 0, dash(text(ds, "Laterality")), dash(text(ds, "BodyPartExamined")))
    for item in getattr(ds, "SourceImageSequence", []):
        purpose = "-"
        if "PurposeOfReferenceCodeSequence" in item and len(item.PurposeOfReferenceCodeSequence):
            code = item.PurposeOfReferenceCodeSequence[0]
            purpose = f"{code.CodingSchemeDesignator}:{code.CodeValue}"
        frame = text(item, "ReferencedFrameNumber") or "0"
        print("SOURCE", item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID, frame, purpose,
              dash(text(item, "SpatialLocationsPreserved")))
    for series in getattr(ds, "ReferencedSeriesSequence", []):
        for inst in series.ReferencedInstanceSequence:
            print("REFSERIES", series.SeriesInstanceUID, inst.ReferencedSOPClassUID, inst.ReferencedSOPInstanceUID)
    mismatched = [k for k in COMPARED if text(ds, k) != text(src, k)]
    print("PATIENT_MISMATCH", len(mismatched), ",".join(mismatched) or "-")
    if expected == "-":
        print("PIXELS_DIFF", "-")
        return
    want = np.fromfile(expected, dtype=np.uint8)
    got = ds.pixel_array
    if got.size != want.size:
        print("PIXELS_DIFF", max(got.size, want.size))
        return
    want = want.reshape(int(ds.Rows), int(ds.Columns), 3)
    print("PIXELS_DIFF", int(np.count_nonzero(got.reshape(want.shape) != want)))


def main(argv):
    if len(argv) < 4 or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = pydicom.dcmread(argv[1], stop_before_pixels=True)
    for i in range(2, len(argv), 2):
        dump(src, argv[i], argv[i + 1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
