#pragma once
// The one thing that leaves dicom/ for the analysis: a stack of parallel, equally spaced planes of
// real-world values with their patient-space geometry and the source frame of every plane.
#include <array>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace dicom {

using Vec3 = std::array<double, 3>;

// The source image plane one slice of a Volume came from.
struct SourceFrame {
  std::string sop_class_uid;
  std::string sop_instance_uid;
  std::string path;      // file it was read from
  int frame_number = 0;  // 1-based frame of a multi-frame source; 0 for a single-frame instance
  Vec3 position{};       // Image Position (Patient) of this plane, mm
};

// Patient-space geometry (DICOM LPS, mm). Voxel (c, r, z) sits at
// origin + c*spacing_col*row_dir + r*spacing_row*col_dir + z*spacing_slice*normal.
struct Geometry {
  Vec3 origin{};             // Image Position (Patient) of slice 0
  Vec3 row_dir{1, 0, 0};     // IOP first triplet: direction of increasing column index
  Vec3 col_dir{0, 1, 0};     // IOP second triplet: direction of increasing row index
  Vec3 normal{0, 0, 1};      // row_dir x col_dir; slices are sorted along it
  double spacing_col = 1.0;  // mm between adjacent columns (Pixel Spacing [1])
  double spacing_row = 1.0;  // mm between adjacent rows (Pixel Spacing [0])
  double spacing_slice = 1.0;  // mm between slices, from positions (2D: Slice Thickness or 1)
  bool has_frame_of_reference = true;  // false for 2D projection images (CR, DX, SC)
};

// Descriptive attributes the profiles match on and the result builders need.
struct SeriesInfo {
  std::string modality, body_part, series_description, protocol_name;
  std::string study_uid, series_uid, frame_of_reference_uid;
  std::string units;  // "HU" for CT, "US" (unspecified) otherwise unless the header says
  std::string photometric;  // as received; MONOCHROME1 is already inverted in the voxels
};

// Acquisition attributes that qualify measurements (protocol check) and that results must carry
// (lossy compression), read from a few of a volume's source files (dicom/acquisition.h).
struct AcquisitionInfo {
  double slice_thickness_mm = 0;  // (0018,0050); 0 when not recorded
  std::string kernel;             // (0018,1210) Convolution Kernel, values joined by '\\'
  std::string contrast_agent;     // (0018,0010) Contrast/Bolus Agent
  std::string contrast_route;     // (0018,1040) Contrast/Bolus Route
  std::string study_description;  // (0008,1030)
  // "01" when a source was lossily compressed (Lossy Image Compression 01, or a lossy transfer
  // syntax), "00" when every source read says 00, empty when unknown; with the sources' Lossy
  // Image Compression Ratio and Method (multi-valued, '\\'-separated), as PS3.3 C.7.6.1.1.5 wants
  // them carried into derived images.
  std::string lossy_compression;
  std::string lossy_ratio, lossy_method;
};

struct Volume {
  SeriesInfo info;
  AcquisitionInfo acquisition;
  Geometry geom;
  // rows x cols each, all one type: CV_16S where every real-world value is an integer that fits
  // int16 (CT in HU, most MR), else CV_32F. Slices may share one allocation.
  std::vector<cv::Mat> slices;
  std::vector<SourceFrame> sources;  // one per slice, same order

  int depth() const { return static_cast<int>(slices.size()); }
  int rows() const { return slices.empty() ? 0 : slices.front().rows; }
  int cols() const { return slices.empty() ? 0 : slices.front().cols; }
  double voxel_volume_mm3() const { return geom.spacing_col * geom.spacing_row * geom.spacing_slice; }
};

// One allocation for `planes` planes of rows x cols of `type`, as a (planes * rows) x cols Mat
// whose row ranges are the planes; zero-filled when `zeroed`, else of unspecified content.
// Large blocks (4 MiB and up: volumes, masks) are kept when their last Mat goes and handed to the
// next allocation that fits (best fit, at most twice the size), so that a process analysing series
// after series does not fault the same memory in again: first-touch page faults were most of the
// time to decode a CT volume or threshold it. The cache holds at most the size of the largest
// block asked for since release_cached_planes() (about one volume), and an allocation that cannot
// reuse a cached block returns them all to the system first.
cv::Mat allocate_planes(int planes, int rows, int cols, int type, bool zeroed = false);

// Before writing all of `rows` of a block from allocate_planes: when the block is a fresh mapping,
// faults their pages in with one call (MADV_POPULATE_WRITE), which costs less than a fault per
// page; nothing for a reused block (already mapped) or where the kernel lacks it.
void prefault_rows(const cv::Mat& rows);

// Returns every cached block to the system (the daemon calls this when its job queue runs empty).
void release_cached_planes();

// Bytes held in cached blocks (for status and tests).
std::size_t cached_plane_bytes();

}  // namespace dicom
