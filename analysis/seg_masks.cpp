#include "analysis/seg_masks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <utility>

namespace analysis {
namespace {

using dicom::Vec3;

double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
bool parallel(const Vec3& a, const Vec3& b) {
  return std::abs(a[0] - b[0]) < 1e-4 && std::abs(a[1] - b[1]) < 1e-4 && std::abs(a[2] - b[2]) < 1e-4;
}
bool close_rel(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max(std::abs(a), std::abs(b)); }

[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument(why); }

std::string segment_list(const dicom::SegObject& s) {
  std::string out;
  for (const auto& g : s.segments) out += fmt::format("{}{} '{}'", out.empty() ? "" : ", ", g.number, g.label);
  return out;
}

bool selected(const dicom::SegFrame& f, const std::optional<int>& segment) { return !segment || f.segment == *segment; }

// Regular grid through sorted distinct positions: returns (step, index of every position).
std::pair<double, std::vector<int>> regular_grid(const std::vector<double>& d, double single_step) {
  if (d.size() == 1) return {single_step, {0}};
  double step = d[1] - d[0];
  for (std::size_t i = 2; i < d.size(); ++i) step = std::min(step, d[i] - d[i - 1]);
  // Refine over the whole span so that rounding in single gaps does not accumulate.
  const double n = std::round((d.back() - d.front()) / step);
  if (n > 100000)
    fail(fmt::format("slice positions span {:.6g} mm at a step of {:.6g} mm: more than 100000 slices",
                     d.back() - d.front(), step));
  step = (d.back() - d.front()) / n;
  std::vector<int> idx(d.size());
  for (std::size_t i = 0; i < d.size(); ++i) {
    const double k = (d[i] - d.front()) / step;
    idx[i] = static_cast<int>(std::lround(k));
    if (std::abs(k - idx[i]) > 0.01)
      fail(fmt::format(
          "slice positions do not form a regular grid: the slice at {:.6g} mm along the normal is {:.3g} mm off "
          "the {:.6g} mm grid starting at {:.6g} mm (more than 1% of the step)",
          d[i], (k - idx[i]) * step, step, d.front()));
  }
  return {step, idx};
}

SegGrid physical_grid(const std::vector<SegMaskInput>& in) {
  const dicom::SegObject& a = *in.front().seg;
  for (const auto& x : in) {
    const dicom::SegObject& s = *x.seg;
    if (!parallel(s.row_dir, a.row_dir) || !parallel(s.col_dir, a.col_dir))
      fail(fmt::format("{} and {} have different image orientations ([{}, {}, {}, {}, {}, {}] vs [{}, {}, {}, {}, "
                       "{}, {}]); resampling is not supported",
                       in.front().name, x.name, a.row_dir[0], a.row_dir[1], a.row_dir[2], a.col_dir[0], a.col_dir[1],
                       a.col_dir[2], s.row_dir[0], s.row_dir[1], s.row_dir[2], s.col_dir[0], s.col_dir[1],
                       s.col_dir[2]));
    if (!close_rel(s.spacing_row, a.spacing_row, 1e-3) || !close_rel(s.spacing_col, a.spacing_col, 1e-3))
      fail(fmt::format("{} and {} have different pixel spacings ({}\\{} vs {}\\{} mm); resampling is not supported",
                       in.front().name, x.name, a.spacing_row, a.spacing_col, s.spacing_row, s.spacing_col));
    if (s.rows != a.rows || s.cols != a.cols)
      fail(fmt::format("{} and {} have different image sizes ({}x{} vs {}x{} rows x columns)", in.front().name, x.name,
                       a.rows, a.cols, s.rows, s.cols));
    if (s.frame_of_reference_uid != a.frame_of_reference_uid)
      fail(fmt::format("{} and {} have different frames of reference ({} vs {}): their positions cannot be compared",
                       in.front().name, x.name, a.frame_of_reference_uid, s.frame_of_reference_uid));
  }
  const Vec3 normal = cross(a.row_dir, a.col_dir);
  const double min_px = std::min(a.spacing_row, a.spacing_col);
  // In-plane origin: every frame's position projected on the row and column directions.
  const double u0 = dot(a.frames.front().position, a.row_dir), v0 = dot(a.frames.front().position, a.col_dir);
  std::vector<double> all;
  for (const auto& x : in) {
    for (const auto& f : x.seg->frames) {
      const double du = dot(f.position, a.row_dir) - u0, dv = dot(f.position, a.col_dir) - v0;
      if (std::abs(du) > 0.05 * a.spacing_col || std::abs(dv) > 0.05 * a.spacing_row)
        fail(fmt::format("{}: a frame at ({:.6g}, {:.6g}, {:.6g}) is shifted in-plane by ({:.4g}, {:.4g}) mm from "
                         "the first frame of {}: the frames are not on one grid",
                         x.name, f.position[0], f.position[1], f.position[2], du, dv, in.front().name));
      all.push_back(dot(f.position, normal));
    }
  }
  std::sort(all.begin(), all.end());
  std::vector<double> distinct;
  for (double d : all)
    if (distinct.empty() || d - distinct.back() > 0.1 * min_px) distinct.push_back(d);
  double single = 1.0;
  for (const auto& x : in) {
    const double t = x.seg->spacing_between_slices > 0 ? x.seg->spacing_between_slices : x.seg->slice_thickness;
    if (t > 0) {
      single = t;
      break;
    }
  }
  const auto [step, idx] = regular_grid(distinct, single);
  const int depth = idx.back() + 1;

  SegGrid g;
  g.physical = true;
  g.spacing = {a.spacing_col, a.spacing_row, step};
  for (int z = 0; z < depth; ++z) g.slice_positions.push_back(distinct.front() + z * step);
  if (distinct.size() > 1)
    for (const auto& x : in)
      if (x.seg->spacing_between_slices > 0 && step < 0.99 * x.seg->spacing_between_slices)
        g.warnings.push_back(fmt::format(
            "{}: the common slice step {:.6g} mm is finer than its Spacing Between Slices {:.6g} mm (slices of the "
            "inputs interleave?); the missing slices are empty",
            x.name, step, x.seg->spacing_between_slices));
  for (const auto& x : in) {
    Mask m = kernels::make_mask(depth, a.rows, a.cols);
    for (const auto& f : x.seg->frames) {
      if (!selected(f, x.segment)) continue;
      const double d = dot(f.position, normal);
      // distinct holds the smallest position of each cluster: the last one not above d.
      const auto it = std::upper_bound(distinct.begin(), distinct.end(), d);
      const int z = idx[static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, it - distinct.begin() - 1))];
      cv::bitwise_or(m[static_cast<std::size_t>(z)], f.mask, m[static_cast<std::size_t>(z)]);
    }
    g.masks.push_back(std::move(m));
  }
  return g;
}

SegGrid source_grid(const std::vector<SegMaskInput>& in) {
  const dicom::SegObject& a = *in.front().seg;
  std::map<std::pair<std::string, int>, int> slice;
  for (const auto& x : in) {
    const dicom::SegObject& s = *x.seg;
    if (s.rows != a.rows || s.cols != a.cols)
      fail(fmt::format("{} and {} have different image sizes ({}x{} vs {}x{} rows x columns)", in.front().name, x.name,
                       a.rows, a.cols, s.rows, s.cols));
    if (s.has_pixel_spacing != a.has_pixel_spacing ||
        (s.has_pixel_spacing && (!close_rel(s.spacing_row, a.spacing_row, 1e-3) ||
                                 !close_rel(s.spacing_col, a.spacing_col, 1e-3))))
      fail(fmt::format("{} and {} have different pixel spacings", in.front().name, x.name));
    for (const auto& f : s.frames) {
      if (f.source_sop_instance_uid.empty())
        fail(x.name + ": a frame has neither a plane position nor a source image reference; cannot place it");
      slice.emplace(std::make_pair(f.source_sop_instance_uid, f.source_frame), 0);
    }
  }
  int z = 0;
  for (auto& [key, v] : slice) v = z++;
  SegGrid g;
  g.physical = false;
  g.spacing = {a.spacing_col, a.spacing_row, 1.0};
  for (const auto& x : in) {
    Mask m = kernels::make_mask(z, a.rows, a.cols);
    for (const auto& f : x.seg->frames) {
      if (!selected(f, x.segment)) continue;
      auto& dst = m[static_cast<std::size_t>(slice.at({f.source_sop_instance_uid, f.source_frame}))];
      cv::bitwise_or(dst, f.mask, dst);
    }
    g.masks.push_back(std::move(m));
  }
  return g;
}

}  // namespace

SegGrid seg_masks_on_common_grid(const std::vector<SegMaskInput>& inputs) {
  if (inputs.empty()) fail("no SEG given");
  for (const auto& x : inputs) {
    if (!x.seg) fail("null SEG");
    if (x.seg->frames.empty()) fail(x.name + ": SEG has no frames");
    if (x.segment && !x.seg->segment(*x.segment))
      fail(fmt::format("{}: segment {} is not defined (segments: {})", x.name, *x.segment, segment_list(*x.seg)));
  }
  const bool physical = inputs.front().seg->has_frame_of_reference;
  for (const auto& x : inputs)
    if (x.seg->has_frame_of_reference != physical)
      fail(fmt::format("{} has {}a frame of reference but {} has {}: cannot put them on one grid", inputs.front().name,
                       physical ? "" : "no ", x.name, physical ? "none" : "one"));
  return physical ? physical_grid(inputs) : source_grid(inputs);
}

}  // namespace analysis
