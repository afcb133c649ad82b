#pragma once
// Reads a DICOM Segmentation (SEG, SOP class 1.2.840.10008.5.1.4.1.1.66.4) of Segmentation Type
// BINARY or FRACTIONAL into per-segment 0/1 frames with their geometry, with plain dcmdata (the
// per-frame and shared functional groups), so that files from other writers (dcmqi, highdicom)
// read as well as ours (dicom/seg_builder.h).
//
//   * BINARY: 1 bit per pixel, frames packed back to back (a frame need not start on a byte).
//   * FRACTIONAL: 8 bits per pixel; a pixel is inside when value >= 0.5 * Maximum Fractional
//     Value (i.e. 2 * value >= max).
//   * Encapsulated pixel data (RLE, JPEG, JPEG-LS) is decompressed with the DCMTK codecs.
//   * Geometry: Plane Orientation and Pixel Measures may be shared or per frame; per-frame
//     orientations must all agree. has_frame_of_reference is true when the SEG has a Frame of
//     Reference UID, an orientation and an Image Position (Patient) for every frame; otherwise
//     (2D projection images) frames are only identified by their source image.
// LABELMAP segmentations and the Label Map Segmentation SOP class are refused.
#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "dicom/codes.h"
#include "dicom/scan.h"
#include "dicom/volume.h"

namespace dicom {

struct SegFrame {
  int segment = 0;       // Referenced Segment Number
  Vec3 position{};       // Image Position (Patient); {0,0,0} when has_position is false
  bool has_position = false;
  cv::Mat mask;          // CV_8U, 0/1, rows x cols
  std::string source_sop_instance_uid;  // first Source Image of the Derivation Image Sequence
  int source_frame = 0;  // its Referenced Frame Number (0: none, i.e. a single-frame source)
};

struct SegSegment {
  int number = 0;  // Segment Number
  std::string label;
  Code category, type;  // Segmented Property Category / Type (empty when absent)
};

struct SegObject {
  std::string sop_instance_uid;
  std::string segmentation_type;  // "BINARY" or "FRACTIONAL"
  int max_fractional_value = 0;   // FRACTIONAL only
  std::vector<SegSegment> segments;  // in Segment Sequence order
  std::vector<SegFrame> frames;      // in stored frame order
  Vec3 row_dir{1, 0, 0}, col_dir{0, 1, 0};  // Image Orientation (Patient)
  double spacing_row = 1.0, spacing_col = 1.0;  // Pixel Spacing [0], [1]
  bool has_pixel_spacing = false;
  double slice_thickness = 0;         // Slice Thickness when given, else 0
  double spacing_between_slices = 0;  // Spacing Between Slices when given, else 0
  int rows = 0, cols = 0;
  bool has_frame_of_reference = false;
  std::string frame_of_reference_uid;

  const SegSegment* segment(int number) const;  // nullptr when there is no such segment
};

// True when the file starts with the 128-byte preamble and "DICM".
bool has_dicom_preamble(const std::filesystem::path& path);

// True when the file has the DICOM preamble, or (a bare dataset without preamble and meta
// header) DCMTK reads its SOP Class UID as Segmentation Storage, or it starts like a bare data
// set but fails the structural scan (so that read_seg reports why). Never throws.
bool looks_like_dicom(const std::filesystem::path& path, const ScanLimits& limits = default_scan_limits());

// Reads the SEG after the structural scan (dicom/scan.h); throws DicomError naming the file and
// the reason (fails the scan, unreadable, not a SEG, unsupported type or bit depth, missing or
// inconsistent functional groups, short pixel data).
SegObject read_seg(const std::filesystem::path& path, const ScanLimits& limits = default_scan_limits());

}  // namespace dicom
