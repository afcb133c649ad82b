#include "analysis/kernels/evaluate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

namespace analysis::kernels {

Mask surface_voxels(const Mask& mask) {
  check_stack(mask, CV_8U, "surface_voxels");
  const int depth = static_cast<int>(mask.size()), rows = mask.front().rows, cols = mask.front().cols;
  Mask out = make_mask(depth, rows, cols);
  const cv::Mat cross = cv::getStructuringElement(cv::MORPH_CROSS, cv::Size(3, 3));
  cv::Mat bin, inner;
  const cv::Mat zero = cv::Mat::zeros(rows, cols, CV_8U);
  cv::Mat prev_bin = zero.clone(), cur_bin, next_bin;
  cv::compare(mask[0], 0, cur_bin, cv::CMP_NE);
  for (int z = 0; z < depth; ++z) {
    if (z + 1 < depth) cv::compare(mask[static_cast<std::size_t>(z + 1)], 0, next_bin, cv::CMP_NE);
    else next_bin = zero.clone();
    // Interior: all 6 neighbours inside (outside the volume counts as background).
    cv::erode(cur_bin, inner, cross, cv::Point(-1, -1), 1, cv::BORDER_CONSTANT, cv::Scalar(0));
    cv::bitwise_and(inner, prev_bin, inner);
    cv::bitwise_and(inner, next_bin, inner);
    cv::Mat& o = out[static_cast<std::size_t>(z)];
    cv::bitwise_and(cur_bin, ~inner, o);
    cv::bitwise_and(o, cv::Scalar(1), o);
    prev_bin = cur_bin;
    cur_bin = next_bin.clone();
  }
  return out;
}

namespace {

// 1D squared distance transform of f (INF = no feature) on a line with sample spacing h (mm),
// Felzenszwalb & Huttenlocher's lower envelope of parabolas.
void edt_1d(const double* f, int n, double h, double* d, int* v, double* zb) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  int k = -1;
  for (int q = 0; q < n; ++q) {
    if (f[q] == inf) continue;
    if (k < 0) {
      k = 0;
      v[0] = q;
      zb[0] = -inf;
      zb[1] = inf;
      continue;
    }
    double s = 0;
    while (true) {
      const int p = v[k];
      const double xq = q * h, xp = p * h;
      s = ((f[q] + xq * xq) - (f[p] + xp * xp)) / (2 * (xq - xp));
      if (s <= zb[k] && k > 0) --k;
      else break;
    }
    if (s <= zb[k]) {  // k == 0 and the new parabola hides the only one left
      v[0] = q;
      zb[0] = -inf;
      zb[1] = inf;
      continue;
    }
    ++k;
    v[k] = q;
    zb[k] = s;
    zb[k + 1] = inf;
  }
  if (k < 0) {
    for (int q = 0; q < n; ++q) d[q] = inf;
    return;
  }
  int j = 0;
  for (int q = 0; q < n; ++q) {
    const double x = q * h;
    while (zb[j + 1] < x) ++j;
    const double dx = (q - v[j]) * h;
    d[q] = dx * dx + f[v[j]];
  }
}

}  // namespace

std::vector<cv::Mat> squared_distance_transform(const std::vector<cv::Mat>& features, const Spacing& spacing) {
  check_stack(features, CV_8U, "squared_distance_transform");
  check_spacing(spacing, "squared_distance_transform");
  constexpr double inf = std::numeric_limits<double>::infinity();
  const int depth = static_cast<int>(features.size()), rows = features.front().rows, cols = features.front().cols;
  const int n = std::max({depth, rows, cols});
  std::vector<double> f(static_cast<std::size_t>(n)), d(static_cast<std::size_t>(n)), zb(static_cast<std::size_t>(n) + 1);
  std::vector<int> v(static_cast<std::size_t>(n));
  std::vector<cv::Mat> out;
  out.reserve(static_cast<std::size_t>(depth));
  for (int z = 0; z < depth; ++z) {
    cv::Mat s(rows, cols, CV_32F);
    for (int r = 0; r < rows; ++r) {  // along columns
      const uchar* p = features[static_cast<std::size_t>(z)].ptr<uchar>(r);
      for (int c = 0; c < cols; ++c) f[static_cast<std::size_t>(c)] = p[c] ? 0.0 : inf;
      edt_1d(f.data(), cols, spacing.col, d.data(), v.data(), zb.data());
      float* o = s.ptr<float>(r);
      for (int c = 0; c < cols; ++c) o[c] = static_cast<float>(d[static_cast<std::size_t>(c)]);
    }
    for (int c = 0; c < cols; ++c) {  // along rows
      for (int r = 0; r < rows; ++r) f[static_cast<std::size_t>(r)] = s.ptr<float>(r)[c];
      edt_1d(f.data(), rows, spacing.row, d.data(), v.data(), zb.data());
      for (int r = 0; r < rows; ++r) s.ptr<float>(r)[c] = static_cast<float>(d[static_cast<std::size_t>(r)]);
    }
    out.push_back(s);
  }
  if (depth > 1)
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {  // along slices
        for (int z = 0; z < depth; ++z) f[static_cast<std::size_t>(z)] = out[static_cast<std::size_t>(z)].ptr<float>(r)[c];
        edt_1d(f.data(), depth, spacing.slice, d.data(), v.data(), zb.data());
        for (int z = 0; z < depth; ++z) out[static_cast<std::size_t>(z)].ptr<float>(r)[c] = static_cast<float>(d[static_cast<std::size_t>(z)]);
      }
  return out;
}

namespace {

double percentile_linear(std::vector<double>& v, double p) {
  std::sort(v.begin(), v.end());
  const double h = (static_cast<double>(v.size()) - 1) * p;
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (h - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

}  // namespace

OverlapMetrics overlap_metrics(const Mask& reference, const Mask& test, const Spacing& spacing) {
  check_stack(reference, CV_8U, "overlap_metrics reference");
  check_stack(test, CV_8U, "overlap_metrics test");
  check_same_shape(reference, test, "overlap_metrics");
  check_spacing(spacing, "overlap_metrics");
  OverlapMetrics m;
  cv::Mat a, b, both;
  for (std::size_t z = 0; z < reference.size(); ++z) {
    cv::compare(reference[z], 0, a, cv::CMP_NE);
    cv::compare(test[z], 0, b, cv::CMP_NE);
    cv::bitwise_and(a, b, both);
    m.reference_voxels += cv::countNonZero(a);
    m.test_voxels += cv::countNonZero(b);
    m.intersection_voxels += cv::countNonZero(both);
  }
  const double vv = spacing.voxel_volume();
  m.reference_volume_mm3 = static_cast<double>(m.reference_voxels) * vv;
  m.test_volume_mm3 = static_cast<double>(m.test_voxels) * vv;
  m.volume_difference_mm3 = m.test_volume_mm3 - m.reference_volume_mm3;
  m.relative_volume_difference = m.reference_voxels ? m.volume_difference_mm3 / m.reference_volume_mm3
                                                     : std::numeric_limits<double>::quiet_NaN();
  const std::int64_t uni = m.reference_voxels + m.test_voxels - m.intersection_voxels;
  if (uni == 0) {
    m.dice = m.jaccard = 1.0;
    return m;
  }
  m.dice = 2.0 * static_cast<double>(m.intersection_voxels) / static_cast<double>(m.reference_voxels + m.test_voxels);
  m.jaccard = static_cast<double>(m.intersection_voxels) / static_cast<double>(uni);
  if (m.reference_voxels == 0 || m.test_voxels == 0) {
    m.hausdorff_mm = m.hausdorff95_mm = m.mean_surface_distance_mm = std::numeric_limits<double>::infinity();
    return m;
  }
  // Work on the bounding box of both masks: it holds every surface voxel (features and query
  // points), so the separable transform on the box is exact, and voxels just outside it are
  // background, as outside the volume, so the surface is unchanged by the crop.
  int z0 = INT32_MAX, z1 = -1, r0 = INT32_MAX, r1 = -1, c0 = INT32_MAX, c1 = -1;
  for (int z = 0; z < static_cast<int>(reference.size()); ++z)
    for (const Mask* s : {&reference, &test}) {
      const cv::Rect bb = cv::boundingRect((*s)[static_cast<std::size_t>(z)]);  // of the non-zero pixels
      if (bb.empty()) continue;
      z0 = std::min(z0, z); z1 = std::max(z1, z);
      r0 = std::min(r0, bb.y); r1 = std::max(r1, bb.y + bb.height - 1);
      c0 = std::min(c0, bb.x); c1 = std::max(c1, bb.x + bb.width - 1);
    }
  const cv::Rect box(c0, r0, c1 - c0 + 1, r1 - r0 + 1);
  auto crop = [&](const Mask& s) {
    Mask out;
    for (int z = z0; z <= z1; ++z) out.push_back(s[static_cast<std::size_t>(z)](box));
    return out;
  };
  const Mask csr = surface_voxels(crop(reference)), cst = surface_voxels(crop(test));
  std::vector<double> dist;
  dist.reserve(static_cast<std::size_t>(m.reference_voxels));  // rough
  auto directed = [&](const Mask& from, const Mask& to, std::int64_t& count) {
    const auto dt = squared_distance_transform(to, spacing);
    for (std::size_t z = 0; z < from.size(); ++z)
      for (int r = 0; r < box.height; ++r) {
        const uchar* p = from[z].ptr<uchar>(r);
        const float* d = dt[z].ptr<float>(r);
        for (int c = 0; c < box.width; ++c)
          if (p[c]) {
            dist.push_back(std::sqrt(static_cast<double>(d[c])));
            ++count;
          }
      }
  };
  directed(csr, cst, m.reference_surface_voxels);
  directed(cst, csr, m.test_surface_voxels);
  m.hausdorff_mm = *std::max_element(dist.begin(), dist.end());
  m.mean_surface_distance_mm = std::accumulate(dist.begin(), dist.end(), 0.0) / static_cast<double>(dist.size());
  m.hausdorff95_mm = percentile_linear(dist, 0.95);
  return m;
}

}  // namespace analysis::kernels
