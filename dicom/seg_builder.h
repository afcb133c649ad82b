#pragma once
// Writes a DICOM Segmentation (SEG) object with DCMTK dcmseg from a plain SegSpec.
//
// Mask representation (one rule, documented here):
//   * Every mask is a std::vector<cv::Mat>, one Mat per slice of the source Volume, in the order
//     of SegSpec::sources (slice z was derived from sources[z]). Each Mat is rows x cols of the
//     source image. An empty Mat (cv::Mat()) stands for an all-zero slice.
//   * BINARY: per segment, CV_8U; any non-zero pixel is inside the segment. Segments may overlap.
//     Instead of per-segment masks, a caller with non-overlapping labels may leave every
//     SegmentSpec::mask empty and give SegSpec::label_map (CV_8U or CV_16U, value k = segment k,
//     i.e. SegSpec::segments[k-1]; 0 = background). Each frame is then derived on the fly, so no
//     per-segment volume is ever materialised.
//   * FRACTIONAL: per segment, CV_32F in [0, 1] (stored as round(p * 255)) or CV_8U 0..255
//     (stored as is). Maximum Fractional Value is 255.
//   Mats are only read; slices may be views into one allocation (no copy is made of a volume,
//   only one frame buffer at a time; dcmseg keeps binary frames bit-packed).
//
// Geometry: frame z of a segment gets Image Position (Patient) sources[z].position, the shared
// Plane Orientation from geom.row_dir/col_dir and Pixel Measures (Pixel Spacing = spacing_row/
// spacing_col, Slice Thickness and Spacing Between Slices = spacing_slice). Without a frame of reference (2D projection
// images, geom.has_frame_of_reference == false) no plane position/orientation is written; every
// SEG pixel maps to the same pixel of the referenced source frame.
//
// Frames whose mask is all zero are omitted unless keep_empty_frames is set; if that leaves no
// frame at all, one empty frame of segment 1 on slice 0 is written (a SEG needs one frame).
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "dicom/codes.h"
#include "dicom/volume.h"

namespace dicom {

// The device that creates the result objects (General Equipment, SR device observer).
struct DeviceInfo {
  std::string manufacturer = "pacsnode";
  std::string model_name = "pacsnode";
  std::string serial_number = "0";
  std::string software_versions = "0.1.0";
  std::string device_uid;   // SR device observer UID; generated once per object when empty
  std::string device_name = "pacsnode";
};

struct SegmentSpec {
  std::string label;        // Segment Label (LO, <= 64 chars)
  std::string description;  // optional Segment Description
  Code category;            // Segmented Property Category (CID 7150)
  Code type;                // Segmented Property Type (CID 7151)
  std::optional<Code> anatomic_region;
  std::array<std::uint16_t, 3> cielab{0xFFFF, 0x8080, 0x8080};  // Recommended Display CIELab
  std::string tracking_id;   // optional; defaults to label
  std::string tracking_uid;  // optional; generated when empty (returned in WrittenObject)
  std::vector<cv::Mat> mask;  // see the header comment; empty with SegSpec::label_map
};

// Where a result object goes: a new series (empty UID), or the series of the object it supersedes,
// with a series number (0: the builder's default) and an instance number (0: 1).
struct SeriesPlacement {
  std::string series_uid;
  int series_number = 0;
  int instance_number = 0;
};

enum class SegmentationType { binary, fractional };

struct SegSpec {
  std::filesystem::path source_file;  // one source instance: patient, study, frame of reference
  std::string source_series_uid;      // optional; read from source_file when empty
  Geometry geom;
  std::vector<SourceFrame> sources;  // one per slice; slice z of every mask comes from sources[z]
  SegmentationType type = SegmentationType::binary;
  std::vector<SegmentSpec> segments;  // segment numbers are 1..N in this order
  std::vector<cv::Mat> label_map;     // optional BINARY input, see header comment
  bool keep_empty_frames = false;
  std::string series_description = "pacsnode segmentation";
  int series_number = 9001;
  int instance_number = 1;
  std::string series_uid;  // empty: a new series; else the series of an earlier SEG this one supersedes
  std::string content_label = "SEGMENTATION";  // CS: upper case, digits, '_', space; <= 16
  std::string content_description;
  std::string algorithm_name = "pacsnode";
  std::string algorithm_version = "0.1.0";
  Code algorithm_family = codes::algorithm_family_ai();
  DeviceInfo device;
};

struct WrittenObject {
  std::filesystem::path path;
  std::string sop_class_uid, sop_instance_uid, series_uid, study_uid;
  int number_of_frames = 0;            // SEG only
  std::vector<std::string> tracking_uids;  // SEG only: one per segment, in segment order
};

// Validates the spec, builds the SEG and writes it (Explicit VR Little Endian) to out_file via a
// temporary file in the same directory and a rename. Throws std::invalid_argument for a bad spec
// and dicom::DicomError for a DCMTK failure, each naming the reason.
WrittenObject write_seg(const SegSpec& spec, const std::filesystem::path& out_file);

}  // namespace dicom
