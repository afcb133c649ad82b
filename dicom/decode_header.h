#pragma once
// Cheap header-only read (no pixel data) of one DICOM file: what the profiles match on, the pixel
// format, and the geometry and rescale of every frame (per-frame functional groups for enhanced
// multi-frame objects). DCMTK stops parsing at Pixel Data, so this costs a few kB per file.
#include <array>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dicom/pixel_decoder.h"
#include "dicom/scan.h"
#include "dicom/volume.h"

namespace dicom {

using Orientation = std::array<double, 6>;  // Image Orientation (Patient): row dir, then col dir

// One image plane of an instance (a single-frame instance has one, frame_number 0).
struct FrameHeader {
  int frame_number = 0;                 // 1-based in a multi-frame instance, 0 for single-frame
  std::optional<Vec3> position;         // Image Position (Patient)
  std::optional<Orientation> orientation;
  std::optional<std::array<double, 2>> pixel_spacing;  // [row spacing, col spacing] mm
  double slice_thickness = 0;           // 0 when absent
  double rescale_slope = 1, rescale_intercept = 0;
  bool has_rescale = false;             // Rescale Slope/Intercept (or Dose Grid Scaling) present
  std::string rescale_type;
  // Ordering of planes that share one position (temporal phases), compared lexicographically:
  // temporal position, trigger time, acquisition date/time, acquisition number, instance number,
  // frame number. Absent values are 0.
  std::array<double, 6> temporal_key{};
};

struct ImageHeader {
  std::string path;
  std::string sop_class_uid, sop_instance_uid, transfer_syntax_uid;
  std::string modality, body_part, series_description, protocol_name;
  std::string study_uid, series_uid, frame_of_reference_uid;
  std::string manufacturer, image_type;
  std::string photometric;
  std::string pet_units;    // (0054,1001), PET only
  int rows = 0, cols = 0;
  int samples_per_pixel = 1;
  int bits_allocated = 0, bits_stored = 0, high_bit = -1;
  bool is_signed = false;   // Pixel Representation 1
  int number_of_frames = 1;
  bool has_pixel_data = false;        // (7FE0,0010)
  bool has_float_pixel_data = false;  // (7FE0,0008) or (7FE0,0009)
  // Where a native (uncompressed little endian) Pixel Data value sits in the file, so that the
  // loader reads it straight into a volume without parsing the file again; length 0 when not
  // applicable (encapsulated, big endian or deflated syntaxes, float data, values under 4 kB).
  NativePixels native_pixels;
  bool has_modality_lut = false;      // Modality LUT Sequence (then `modality_lut` holds it)
  std::shared_ptr<const ModalityLut> modality_lut;
  bool enhanced = false;              // per-frame functional groups present
  double spacing_between_slices = 0;  // (0018,0088), 0 when absent
  std::vector<FrameHeader> frames;    // one per frame, in frame order
  std::string problem;  // a malformed value that makes the image unusable (frames then empty)

  bool is_multiframe() const { return number_of_frames > 1 || enhanced; }
};

// Reads the header of `file` without its pixel data, after the structural scan (dicom/scan.h).
// Throws DicomError when the file fails the scan (with its reason), is not DICOM or cannot be
// parsed; a malformed image attribute (e.g. Number of Frames) is reported in `problem` instead,
// so that the caller can still see what the object is.
ImageHeader read_image_header(const std::filesystem::path& file, const ScanLimits& limits = default_scan_limits());

}  // namespace dicom
