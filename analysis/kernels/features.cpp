#include "analysis/kernels/features.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <numbers>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include "analysis/kernels/mesh.h"

namespace analysis::kernels {
namespace {

struct Box {
  int z0, z1, r0, r1, c0, c1;  // inclusive
};

void check_inputs(const std::vector<cv::Mat>& image, const Mask& roi, const char* what) {
  check_stack(image, -1, what);
  check_stack(roi, CV_8U, what);
  check_same_shape(image, roi, what);
  const int t = image.front().type();
  if (t != CV_8U && t != CV_16S && t != CV_16U && t != CV_32F)
    throw std::invalid_argument(fmt::format("{}: image type must be CV_8U, CV_16S, CV_16U or CV_32F", what));
}

Box roi_box(const Mask& roi, const char* what) {
  Box b{std::numeric_limits<int>::max(), -1, std::numeric_limits<int>::max(), -1, std::numeric_limits<int>::max(), -1};
  for (int z = 0; z < static_cast<int>(roi.size()); ++z) {
    const cv::Rect bb = cv::boundingRect(roi[static_cast<std::size_t>(z)]);  // of the non-zero pixels
    if (bb.empty()) continue;
    b.z0 = std::min(b.z0, z); b.z1 = std::max(b.z1, z);
    b.r0 = std::min(b.r0, bb.y); b.r1 = std::max(b.r1, bb.y + bb.height - 1);
    b.c0 = std::min(b.c0, bb.x); b.c1 = std::max(b.c1, bb.x + bb.width - 1);
  }
  if (b.z1 < 0) throw std::invalid_argument(fmt::format("{}: empty ROI", what));
  return b;
}

inline double pixel(const cv::Mat& s, int r, int c) {
  switch (s.depth()) {
    case CV_8U: return s.ptr<uchar>(r)[c];
    case CV_16S: return s.ptr<int16_t>(r)[c];
    case CV_16U: return s.ptr<uint16_t>(r)[c];
    default: return s.ptr<float>(r)[c];
  }
}

template <typename F>
void for_each_roi(const std::vector<cv::Mat>& image, const Mask& roi, const Box& b, F&& f) {
  for (int z = b.z0; z <= b.z1; ++z) {
    const cv::Mat& s = image[static_cast<std::size_t>(z)];
    const cv::Mat& m = roi[static_cast<std::size_t>(z)];
    for (int r = b.r0; r <= b.r1; ++r) {
      const uchar* mp = m.ptr<uchar>(r);
      for (int c = b.c0; c <= b.c1; ++c)
        if (mp[c]) f(z, r, c, pixel(s, r, c));
    }
  }
}

// Sorted distinct values with counts: exact for integer images through a histogram, a sort for float.
std::vector<std::pair<double, std::int64_t>> value_counts(const std::vector<cv::Mat>& image, const Mask& roi,
                                                          const Box& b) {
  std::vector<std::pair<double, std::int64_t>> out;
  if (image.front().depth() != CV_32F) {
    std::vector<std::int64_t> h(65536, 0);
    const int off = image.front().depth() == CV_16S ? 32768 : 0;
    for_each_roi(image, roi, b, [&](int, int, int, double v) { ++h[static_cast<std::size_t>(static_cast<int>(v) + off)]; });
    for (std::size_t i = 0; i < h.size(); ++i)
      if (h[i]) out.emplace_back(static_cast<double>(static_cast<int>(i) - off), h[i]);
    return out;
  }
  std::vector<float> v;
  for_each_roi(image, roi, b, [&](int, int, int, double x) {
    if (std::isnan(x)) throw std::invalid_argument("features: NaN in the ROI");
    v.push_back(static_cast<float>(x));
  });
  std::sort(v.begin(), v.end());
  for (float x : v) {
    if (!out.empty() && out.back().first == x) ++out.back().second;
    else out.emplace_back(x, 1);
  }
  return out;
}

// Linear-interpolated percentile (NumPy default) over sorted value counts.
double percentile(const std::vector<std::pair<double, std::int64_t>>& vc, std::int64_t n, double p) {
  const double h = (static_cast<double>(n) - 1) * p;
  const auto lo = static_cast<std::int64_t>(std::floor(h));
  const double frac = h - static_cast<double>(lo);
  auto order_stat = [&](std::int64_t k) {
    std::int64_t cum = 0;
    for (const auto& [v, cnt] : vc) {
      cum += cnt;
      if (k < cum) return v;
    }
    return vc.back().first;
  };
  const double a = order_stat(lo);
  if (frac == 0) return a;
  return a + frac * (order_stat(std::min(lo + 1, n - 1)) - a);
}

}  // namespace

MorphologyFeatures morphology_features(const Mask& roi, const Spacing& spacing) {
  check_stack(roi, CV_8U, "morphology_features");
  check_spacing(spacing, "morphology_features");
  const std::size_t n = count_nonzero(roi);
  if (n == 0) throw std::invalid_argument("morphology_features: empty ROI");
  const MeshMeasures mesh = mesh_measures(roi, spacing);
  MorphologyFeatures f;
  f.volume_mesh_mm3 = mesh.volume_mm3;
  f.volume_voxel_mm3 = static_cast<double>(n) * spacing.voxel_volume();
  f.surface_area_mm2 = mesh.area_mm2;
  f.surface_to_volume = mesh.area_mm2 / mesh.volume_mm3;
  f.sphericity = std::cbrt(36.0 * std::numbers::pi * mesh.volume_mm3 * mesh.volume_mm3) / mesh.area_mm2;
  f.max_3d_diameter_mm = max_pairwise_distance(mesh.hull_candidates);
  return f;
}

IntensityStatistics intensity_statistics(const std::vector<cv::Mat>& image, const Mask& roi) {
  check_inputs(image, roi, "intensity_statistics");
  const Box b = roi_box(roi, "intensity_statistics");
  const auto vc = value_counts(image, roi, b);
  IntensityStatistics s;
  std::int64_t n = 0;
  double sum = 0, energy = 0;
  for (const auto& [v, c] : vc) {
    n += c;
    sum += v * static_cast<double>(c);
    energy += v * v * static_cast<double>(c);
  }
  const double mean = sum / static_cast<double>(n);
  double m2 = 0, m3 = 0, m4 = 0, mad = 0;
  for (const auto& [v, c] : vc) {
    const double d = v - mean, w = static_cast<double>(c) / static_cast<double>(n);
    m2 += w * d * d;
    m3 += w * d * d * d;
    m4 += w * d * d * d * d;
    mad += w * std::abs(d);
  }
  s.voxels = static_cast<std::size_t>(n);
  s.mean = mean;
  s.variance = m2;
  s.standard_deviation = std::sqrt(m2);
  s.skewness = m2 > 0 ? m3 / std::pow(m2, 1.5) : 0.0;
  s.excess_kurtosis = m2 > 0 ? m4 / (m2 * m2) - 3.0 : 0.0;
  s.minimum = vc.front().first;
  s.maximum = vc.back().first;
  s.median = percentile(vc, n, 0.5);
  s.percentile_10 = percentile(vc, n, 0.1);
  s.percentile_90 = percentile(vc, n, 0.9);
  s.interquartile_range = percentile(vc, n, 0.75) - percentile(vc, n, 0.25);
  s.range = s.maximum - s.minimum;
  s.mean_absolute_deviation = mad;
  s.energy = energy;
  s.root_mean_square = std::sqrt(energy / static_cast<double>(n));
  return s;
}

namespace {

// Highest grey level any discretisation may give (the "none" method's bound too). A level beyond
// it means a bin width far too small for the ROI's range; the histogram and GLCM would not fit.
constexpr double kMaxLevel = 1e6;

// Maps a value to its grey level (1 .. kMaxLevel) given ROI extremes. Throws std::invalid_argument
// for a value without one: not finite (NaN, inf from a decoded float image or an overflowing
// rescale), or a level outside that range. The level is computed in double and range-checked
// before it becomes an int (a cast of an out-of-range double is undefined behaviour, and the
// INT_MIN it gives on x86 indexed far outside the histogram).
struct Discretiser {
  Discretisation d;
  double xmin = 0, xmax = 0;
  int operator()(double x) const {
    if (!std::isfinite(x)) throw std::invalid_argument(fmt::format("discretisation: value {} in the ROI", x));
    double level = 1;
    switch (d.method) {
      case Discretisation::Method::none:
        if (x != std::floor(x) || x < 1 || x > kMaxLevel)
          throw std::invalid_argument(fmt::format("discretisation none: value {} is not a grey level >= 1", x));
        return static_cast<int>(x);
      case Discretisation::Method::fixed_bin_size:
        level = std::floor((x - xmin) / d.bin_width) + 1;
        break;
      case Discretisation::Method::fixed_bin_number:
        if (xmax == xmin) return 1;
        level = x >= xmax ? d.bins : std::floor(d.bins * (x - xmin) / (xmax - xmin)) + 1;
        break;
    }
    if (!(level >= 1 && level <= kMaxLevel))
      throw std::invalid_argument(fmt::format("discretisation: value {} gives grey level {} (1..{}); bin width "
                                              "too small for the ROI's range?",
                                              x, level, kMaxLevel));
    return static_cast<int>(level);
  }
};

Discretiser make_discretiser(const std::vector<cv::Mat>& image, const Mask& roi, const Box& b,
                             const Discretisation& d) {
  if (d.method == Discretisation::Method::fixed_bin_size && !(d.bin_width > 0 && std::isfinite(d.bin_width)))
    throw std::invalid_argument("discretisation: bin width must be > 0");
  if (d.method == Discretisation::Method::fixed_bin_number && d.bins < 1)
    throw std::invalid_argument("discretisation: bins must be >= 1");
  if (d.method == Discretisation::Method::fixed_bin_size && d.lower_bound && !std::isfinite(*d.lower_bound))
    throw std::invalid_argument("discretisation: the FBS lower bound must be finite");
  Discretiser out{d};
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for_each_roi(image, roi, b, [&](int, int, int, double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  });
  if (!std::isfinite(lo) || !std::isfinite(hi))
    throw std::invalid_argument(fmt::format("discretisation: ROI values range from {} to {}", lo, hi));
  out.xmin = lo;
  out.xmax = hi;
  if (d.method == Discretisation::Method::fixed_bin_size && d.lower_bound) {
    if (*d.lower_bound > lo)
      throw std::invalid_argument("discretisation: ROI values below the FBS lower bound (re-segment first)");
    out.xmin = *d.lower_bound;
  }
  return out;
}

constexpr int kMaxGreyLevels = 4096;

}  // namespace

std::vector<int> discretise_roi(const std::vector<cv::Mat>& image, const Mask& roi, const Discretisation& d) {
  check_inputs(image, roi, "discretise_roi");
  const Box b = roi_box(roi, "discretise_roi");
  const Discretiser q = make_discretiser(image, roi, b, d);
  std::vector<int> out;
  for_each_roi(image, roi, b, [&](int, int, int, double v) { out.push_back(q(v)); });
  return out;
}

IntensityHistogramFeatures intensity_histogram_features(const std::vector<cv::Mat>& image, const Mask& roi,
                                                        const Discretisation& d) {
  const std::vector<int> levels = discretise_roi(image, roi, d);
  const int ng = *std::max_element(levels.begin(), levels.end());
  if (ng > kMaxGreyLevels * 16) throw std::invalid_argument("intensity_histogram_features: too many grey levels");
  std::vector<std::int64_t> h(static_cast<std::size_t>(ng) + 1, 0);
  for (int l : levels) ++h[static_cast<std::size_t>(l)];
  IntensityHistogramFeatures f;
  f.grey_levels = ng;
  const double n = static_cast<double>(levels.size());
  for (auto c : h) {
    if (!c) continue;
    const double p = static_cast<double>(c) / n;
    f.entropy -= p * std::log2(p);
    f.uniformity += p * p;
  }
  return f;
}

GlcmFeatures glcm_features_3d_merged(const std::vector<cv::Mat>& image, const Mask& roi, const Discretisation& d) {
  check_inputs(image, roi, "glcm_features_3d_merged");
  const Box b = roi_box(roi, "glcm_features_3d_merged");
  const Discretiser q = make_discretiser(image, roi, b, d);
  const int nr = b.r1 - b.r0 + 1, nc = b.c1 - b.c0 + 1;
  // Grey levels of two consecutive slices of the ROI box at a time (0 = outside the ROI), each
  // plane padded by one zero row/column on every side so that neighbours need no bounds checks.
  // The extra memory is two int16 planes of the box whatever the ROI size.
  const int pc = nc + 2;
  const std::size_t plane = static_cast<std::size_t>(nr + 2) * pc;
  auto at = [&](int r, int c) { return static_cast<std::size_t>(r + 1) * pc + (c + 1); };
  auto levels_of = [&](int z, std::vector<std::int16_t>& g, int& ng_max) {
    std::fill(g.begin(), g.end(), 0);
    if (z > b.z1) return;
    const cv::Mat& s = image[static_cast<std::size_t>(z)];
    const cv::Mat& mk = roi[static_cast<std::size_t>(z)];
    for (int r = 0; r < nr; ++r) {
      const uchar* mp = mk.ptr<uchar>(r + b.r0);
      for (int c = 0; c < nc; ++c)
        if (mp[c + b.c0]) {
          const int l = q(pixel(s, r + b.r0, c + b.c0));
          if (l < 1 || l > kMaxGreyLevels)
            throw std::invalid_argument(fmt::format("glcm_features_3d_merged: grey level {} outside 1..{}", l, kMaxGreyLevels));
          g[at(r, c)] = static_cast<std::int16_t>(l);
          ng_max = std::max(ng_max, l);
        }
    }
  };
  // The 13 unique directions: offsets whose first non-zero component (z, then r, then c) is
  // positive, as (same or next plane, offset within the padded plane).
  std::vector<std::pair<bool, std::ptrdiff_t>> dirs;
  for (int dz = -1; dz <= 1; ++dz)
    for (int dr = -1; dr <= 1; ++dr)
      for (int dc = -1; dc <= 1; ++dc)
        if (dz > 0 || (dz == 0 && dr > 0) || (dz == 0 && dr == 0 && dc > 0))
          dirs.emplace_back(dz > 0, static_cast<std::ptrdiff_t>(dr) * pc + dc);
  // Discretisation is non-decreasing in the value, so Ng is the level of the ROI maximum.
  const int ng = q(q.xmax);
  if (ng < 1 || ng > kMaxGreyLevels)
    throw std::invalid_argument(fmt::format("glcm_features_3d_merged: {} grey levels (1..{})", ng, kMaxGreyLevels));
  std::vector<std::int64_t> counts(static_cast<std::size_t>(ng + 1) * (ng + 1), 0);  // index 0 unused
  int seen_max = 0;
  std::vector<std::int16_t> cur(plane), next(plane);
  levels_of(b.z0, cur, seen_max);
  for (int z = b.z0; z <= b.z1; ++z) {
    levels_of(z + 1, next, seen_max);
    for (int r = 0; r < nr; ++r) {
      const std::int16_t* row = cur.data() + at(r, 0);
      const std::int16_t* row_next = next.data() + at(r, 0);
      for (int c = 0; c < nc; ++c) {
        const int a = row[c];
        if (!a) continue;
        for (const auto& [dz, off] : dirs) {
          const int bb = (dz ? row_next : row)[c + off];
          if (bb) ++counts[static_cast<std::size_t>(a) * (ng + 1) + bb];
        }
      }
    }
    std::swap(cur, next);
  }
  std::vector<double> m(static_cast<std::size_t>(ng) * ng, 0.0);
  for (int i = 1; i <= ng; ++i)
    for (int j = 1; j <= ng; ++j) {  // symmetric: each pair counted in both orders
      const auto c = static_cast<double>(counts[static_cast<std::size_t>(i) * (ng + 1) + j]);
      m[static_cast<std::size_t>(i - 1) * ng + (j - 1)] += c;
      m[static_cast<std::size_t>(j - 1) * ng + (i - 1)] += c;
    }
  if (seen_max != ng) throw std::logic_error("glcm: discretisation is not monotone");
  double total = 0;
  for (double v : m) total += v;
  if (total <= 0) throw std::invalid_argument("glcm_features_3d_merged: no neighbouring voxel pairs in the ROI");
  for (double& v : m) v /= total;

  GlcmFeatures f;
  f.grey_levels = ng;
  std::vector<double> pi(static_cast<std::size_t>(ng), 0.0);
  for (int i = 0; i < ng; ++i)
    for (int j = 0; j < ng; ++j) pi[static_cast<std::size_t>(i)] += m[static_cast<std::size_t>(i) * ng + j];
  double mu = 0;
  for (int i = 0; i < ng; ++i) mu += (i + 1) * pi[static_cast<std::size_t>(i)];
  double var_marg = 0;
  for (int i = 0; i < ng; ++i) var_marg += (i + 1 - mu) * (i + 1 - mu) * pi[static_cast<std::size_t>(i)];
  double sum_ij = 0;
  const double dng = ng;
  for (int i1 = 0; i1 < ng; ++i1)
    for (int j1 = 0; j1 < ng; ++j1) {
      const double p = m[static_cast<std::size_t>(i1) * ng + j1];
      if (p <= 0) continue;
      const double i = i1 + 1, j = j1 + 1, k = std::abs(i - j);
      f.joint_maximum = std::max(f.joint_maximum, p);
      f.joint_average += i * p;
      f.joint_entropy -= p * std::log2(p);
      f.contrast += k * k * p;
      f.dissimilarity += k * p;
      f.angular_second_moment += p * p;
      f.inverse_difference += p / (1 + k);
      f.normalised_inverse_difference += p / (1 + k / dng);
      f.inverse_difference_moment += p / (1 + k * k);
      f.normalised_inverse_difference_moment += p / (1 + k * k / (dng * dng));
      if (k > 0) f.inverse_variance += p / (k * k);
      sum_ij += i * j * p;
    }
  for (int i1 = 0; i1 < ng; ++i1)
    for (int j1 = 0; j1 < ng; ++j1) {
      const double p = m[static_cast<std::size_t>(i1) * ng + j1];
      f.joint_variance += (i1 + 1 - f.joint_average) * (i1 + 1 - f.joint_average) * p;
    }
  // Symmetric matrix: mu_i = mu_j, sigma_i = sigma_j. A constant ROI has no defined correlation;
  // it is reported as 1 (perfectly correlated pairs) rather than NaN.
  f.correlation = var_marg > 0 ? (sum_ij - mu * mu) / var_marg : 1.0;
  return f;
}

SegmentFeatures segment_features(const std::vector<cv::Mat>& image, const Mask& roi, const Spacing& spacing,
                                 const Discretisation& discretisation) {
  SegmentFeatures f;
  f.statistics = intensity_statistics(image, roi);  // validates image and ROI first
  f.morphology = morphology_features(roi, spacing);
  f.histogram = intensity_histogram_features(image, roi, discretisation);
  f.glcm = glcm_features_3d_merged(image, roi, discretisation);
  return f;
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
