#include "analysis/kernels/types.h"

#include <cmath>
#include <opencv2/core/utility.hpp>
#include <stdexcept>

#include <fmt/format.h>

namespace analysis::kernels {

Mask make_mask(int depth, int rows, int cols) {
  if (depth <= 0 || rows <= 0 || cols <= 0)
    throw std::invalid_argument(fmt::format("make_mask: bad size {}x{}x{}", depth, rows, cols));
  const cv::Mat block = dicom::allocate_planes(depth, rows, cols, CV_8U, /*zeroed=*/true);
  Mask m;
  m.reserve(static_cast<std::size_t>(depth));
  for (int z = 0; z < depth; ++z) m.push_back(block.rowRange(z * rows, (z + 1) * rows));
  return m;
}

void check_stack(const std::vector<cv::Mat>& stack, int type, std::string_view what) {
  if (stack.empty()) throw std::invalid_argument(fmt::format("{}: empty volume", what));
  const cv::Size size = stack.front().size();
  if (size.width <= 0 || size.height <= 0) throw std::invalid_argument(fmt::format("{}: empty slice", what));
  for (std::size_t z = 0; z < stack.size(); ++z) {
    const cv::Mat& s = stack[z];
    if (s.dims != 2 || s.size() != size)
      throw std::invalid_argument(fmt::format("{}: slice {} is {}x{}, expected {}x{}", what, z, s.cols, s.rows,
                                              size.width, size.height));
    if (s.channels() != 1) throw std::invalid_argument(fmt::format("{}: slice {} is not single-channel", what, z));
    if (type >= 0 && s.type() != type)
      throw std::invalid_argument(fmt::format("{}: slice {} has type {}, expected {}", what, z, s.type(), type));
    if (type < 0 && s.type() != stack.front().type())
      throw std::invalid_argument(fmt::format("{}: slices have different types", what));
  }
}

void check_same_shape(const std::vector<cv::Mat>& a, const std::vector<cv::Mat>& b, std::string_view what) {
  if (a.size() != b.size() || a.empty() || a.front().size() != b.front().size())
    throw std::invalid_argument(fmt::format("{}: volumes differ in shape", what));
}

void check_spacing(const Spacing& s, std::string_view what) {
  for (double v : {s.col, s.row, s.slice})
    if (!std::isfinite(v) || v <= 0)
      throw std::invalid_argument(fmt::format("{}: spacing must be finite and > 0 (got {}, {}, {})", what, s.col,
                                              s.row, s.slice));
}

std::size_t count_nonzero(const Mask& m) {
  std::size_t n = 0;
  for (const auto& s : m) n += static_cast<std::size_t>(cv::countNonZero(s));
  return n;
}

std::vector<std::array<std::int64_t, 256>> label_counts(const std::vector<cv::Mat>& labels) {
  std::vector<std::array<std::int64_t, 256>> counts(labels.size());
  // Slices in parallel; within a row four interleaved tallies, so that runs of one label (most
  // of a label map) do not chain every increment on the one before.
  cv::parallel_for_(cv::Range(0, static_cast<int>(labels.size())), [&](const cv::Range& range) {
    std::array<std::array<std::uint32_t, 256>, 4> t;
    for (int z = range.start; z < range.end; ++z) {
      for (auto& a : t) a.fill(0);
      const cv::Mat& s = labels[static_cast<std::size_t>(z)];
      for (int r = 0; r < s.rows; ++r) {
        const uchar* p = s.ptr<uchar>(r);
        int c = 0;
        for (; c + 4 <= s.cols; c += 4) {
          ++t[0][p[c]];
          ++t[1][p[c + 1]];
          ++t[2][p[c + 2]];
          ++t[3][p[c + 3]];
        }
        for (; c < s.cols; ++c) ++t[0][p[c]];
      }
      auto& out = counts[static_cast<std::size_t>(z)];
      for (std::size_t v = 0; v < 256; ++v)
        out[v] = static_cast<std::int64_t>(t[0][v]) + t[1][v] + t[2][v] + t[3][v];
    }
  });
  return counts;
}

Mask label_mask(const LabelVolume& labels, int label) {
  check_stack(labels, CV_8U, "label_mask");
  if (label < 1 || label > 255) throw std::invalid_argument("label_mask: label must be 1..255");
  Mask out;
  out.reserve(labels.size());
  for (const auto& s : labels) {
    cv::Mat m;
    cv::compare(s, label, m, cv::CMP_EQ);
    cv::bitwise_and(m, cv::Scalar(1), m);
    out.push_back(m);
  }
  return out;
}

}  // namespace analysis::kernels
