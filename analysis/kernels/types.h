#pragma once
// Shared vocabulary of the pure analysis kernels: masks, label maps and voxel spacing.
// A kernel takes and returns plain cv::Mat stacks (one matrix per slice, slice index = z) and
// never sees DICOM; the Volume geometry only enters through Spacing.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <opencv2/core.hpp>

#include "dicom/volume.h"

namespace analysis {

// Binary mask: one CV_8U matrix per slice, 0 = background, any non-zero = foreground.
// Kernels that produce masks write 1 for foreground.
using Mask = std::vector<cv::Mat>;

// Label map: one CV_8U matrix per slice, 0 = background, 1..255 = segment labels.
using LabelVolume = std::vector<cv::Mat>;

// Voxel spacing in mm along columns (x), rows (y) and slices (z).
struct Spacing {
  double col = 1.0;
  double row = 1.0;
  double slice = 1.0;
  double voxel_volume() const { return col * row * slice; }
};

inline Spacing spacing_of(const dicom::Geometry& g) { return {g.spacing_col, g.spacing_row, g.spacing_slice}; }

namespace kernels {

// Allocates a zeroed mask of depth x rows x cols in one contiguous block (each slice continuous).
Mask make_mask(int depth, int rows, int cols);

// The mask (0/1) of one label (1..255) of a label map.
Mask label_mask(const LabelVolume& labels, int label);

// Throws std::invalid_argument naming `what` unless `stack` is non-empty, every slice has the
// same size, is continuous-row addressable and has type `type` (-1: any single-channel type).
void check_stack(const std::vector<cv::Mat>& stack, int type, std::string_view what);

// Throws std::invalid_argument unless `a` and `b` have the same depth, rows and cols.
void check_same_shape(const std::vector<cv::Mat>& a, const std::vector<cv::Mat>& b, std::string_view what);

// Throws std::invalid_argument unless every spacing is finite and > 0.
void check_spacing(const Spacing& s, std::string_view what);

// Number of non-zero voxels of a mask.
std::size_t count_nonzero(const Mask& m);

// counts[z][k]: voxels of label value k in slice z of a CV_8U label map.
std::vector<std::array<std::int64_t, 256>> label_counts(const std::vector<cv::Mat>& labels);

// Runs body(z) for z in [begin, end) on OpenCV's threads.
template <typename F>
void parallel_slices(int begin, int end, F&& body) {
  if (end <= begin) return;
  cv::parallel_for_(cv::Range(begin, end), [&](const cv::Range& r) {
    for (int z = r.start; z < r.end; ++z) body(z);
  });
}

}  // namespace kernels
}  // namespace analysis
