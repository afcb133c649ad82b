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
//     per-segment volume is ever materialised. A segment may also cover other label values
//     (SegmentSpec::also_labels): e.g. a "body" segment that holds the lungs and bones labelled
//     as their own segments too (overlapping segments from one label map).
//   * FRACTIONAL: per segment, CV_32F in [0, 1] (stored as round(p * 255)) or CV_8U 0..255
//     (stored as is). Maximum Fractional Value is 255.
//   Mats are only read; slices may be views into one allocation (no copy is made of a volume;
//   BINARY frames are packed to bits a few frames at a time while the file is written).
//
// Geometry: frame z of a segment gets Image Position (Patient) sources[z].position, the shared
// Plane Orientation from geom.row_dir/col_dir and Pixel Measures (Pixel Spacing = spacing_row/
// spacing_col, Slice Thickness and Spacing Between Slices = spacing_slice). Without a frame of reference (2D projection
// images, geom.has_frame_of_reference == false) no plane position/orientation is written; every
// SEG pixel maps to the same pixel of the referenced source frame.
//
// Codes of a coding scheme outside PS3.16 Table 8-1 (codes::known_private_scheme, e.g. 99PACSNODE)
// are declared in the Coding Scheme Identification Sequence.
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
  std::vector<int> also_labels;  // with label_map: further label values that belong to this segment
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
  std::string algorithm_name = "pacsnode";  // LO, <= 64 characters: what the method is
  std::string algorithm_version = "0.1.0";
  Code algorithm_family = codes::algorithm_family_morphological_operations();  // CID 7162
  std::string algorithm_parameters;  // optional Algorithm Parameters (LT), e.g. thresholds
  // General Image: Lossy Image Compression of the sources ("01" when any was lossily compressed,
  // with their Ratio and Method, '\\'-separated), carried into the SEG (PS3.3 C.7.6.1.1.5);
  // empty or "00": "00".
  std::string lossy_compression, lossy_ratio, lossy_method;
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
// dcmseg encodes the object and its first frames (one per segment); the Per-Frame Functional Groups
// of all frames are then built directly, and the Pixel Data is packed from the masks while the file
// is written, never held whole (a DicomError if dcmseg's first frames do not come out identical):
// thousands of frames are several times faster to write than through dcmseg's per-frame API.
WrittenObject write_seg(const SegSpec& spec, const std::filesystem::path& out_file);

// The same object with every frame going through dcmseg (DcmSegmentation::addFrame, functional
// groups checked on write): slow for many frames; the reference that the tests and
// bench/bench_seg.cpp compare write_seg with (equal but for new UIDs, dates and times, and but for
// the last byte of BINARY Pixel Data that does not end on a byte boundary: dcmseg 3.6.7 clears the
// last pixels of the last frame there, write_seg keeps them).
WrittenObject write_seg_reference(const SegSpec& spec, const std::filesystem::path& out_file);

}  // namespace dicom
