#include "analysis/kernels/ibsi/intensity.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <opencv2/core.hpp>

namespace analysis::kernels::ibsi {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

constexpr std::array<FeatureDef, 2> kLocal{{
    {"loc_peak_loc", "VJGA", "Local intensity peak", "HU"},
    {"loc_peak_glob", "0F91", "Global intensity peak", "HU"},
}};

constexpr std::array<FeatureDef, 18> kStat{{
    {"stat_mean", "Q4LE", "Mean", "HU"},
    {"stat_var", "ECT3", "Variance", "HU^2"},
    {"stat_skew", "KE2A", "Skewness", ""},
    {"stat_kurt", "IPH6", "(Excess) kurtosis", ""},
    {"stat_median", "Y12H", "Median", "HU"},
    {"stat_min", "1GSF", "Minimum", "HU"},
    {"stat_p10", "QG58", "10th percentile", "HU"},
    {"stat_p90", "8DWT", "90th percentile", "HU"},
    {"stat_max", "84IY", "Maximum", "HU"},
    {"stat_iqr", "SALO", "Interquartile range", "HU"},
    {"stat_range", "2OJQ", "Range", "HU"},
    {"stat_mad", "4FUA", "Mean absolute deviation", "HU"},
    {"stat_rmad", "1128", "Robust mean absolute deviation", "HU"},
    {"stat_medad", "N72L", "Median absolute deviation", "HU"},
    {"stat_cov", "7TET", "Coefficient of variation", ""},
    {"stat_qcod", "9S40", "Quartile coefficient of dispersion", ""},
    {"stat_energy", "N8CA", "Energy", "HU^2"},
    {"stat_rms", "5ZWQ", "Root mean square", "HU"},
}};

constexpr std::array<FeatureDef, 23> kHist{{
    {"ih_mean", "X6K6", "Intensity histogram mean", ""},
    {"ih_var", "CH89", "Intensity histogram variance", ""},
    {"ih_skew", "88K1", "Intensity histogram skewness", ""},
    {"ih_kurt", "C3I7", "Intensity histogram (excess) kurtosis", ""},
    {"ih_median", "WIFQ", "Intensity histogram median", ""},
    {"ih_min", "1PR8", "Intensity histogram minimum grey level", ""},
    {"ih_p10", "GPMT", "Intensity histogram 10th percentile", ""},
    {"ih_p90", "OZ0C", "Intensity histogram 90th percentile", ""},
    {"ih_max", "3NCY", "Intensity histogram maximum grey level", ""},
    {"ih_mode", "AMMC", "Intensity histogram mode", ""},
    {"ih_iqr", "WR0O", "Intensity histogram interquartile range", ""},
    {"ih_range", "5Z3W", "Intensity histogram range", ""},
    {"ih_mad", "D2ZX", "Intensity histogram mean absolute deviation", ""},
    {"ih_rmad", "WRZB", "Intensity histogram robust mean absolute deviation", ""},
    {"ih_medad", "4RNL", "Intensity histogram median absolute deviation", ""},
    {"ih_cov", "CWYJ", "Intensity histogram coefficient of variation", ""},
    {"ih_qcod", "SLWD", "Intensity histogram quartile coefficient of dispersion", ""},
    {"ih_entropy", "TLU2", "Intensity histogram entropy", "bits"},
    {"ih_uniformity", "BJ5W", "Intensity histogram uniformity", ""},
    {"ih_max_grad", "12CE", "Maximum histogram gradient", "voxels"},
    {"ih_max_grad_g", "8E6O", "Maximum histogram gradient grey level", ""},
    {"ih_min_grad", "VQB3", "Minimum histogram gradient", "voxels"},
    {"ih_min_grad_g", "RHQZ", "Minimum histogram gradient grey level", ""},
}};

constexpr std::array<FeatureDef, 7> kIvh{{
    {"ivh_v10", "NK6P", "Volume fraction at 10% intensity", ""},
    {"ivh_v90", "4279", "Volume fraction at 90% intensity", ""},
    {"ivh_i10", "PWN1", "Intensity at 10% volume", "HU"},
    {"ivh_i90", "BOHI", "Intensity at 90% volume", "HU"},
    {"ivh_diff_v10_v90", "WITY", "Volume fraction difference between 10% and 90% intensity", ""},
    {"ivh_diff_i10_i90", "JXJA", "Intensity difference between 10% and 90% volume", "HU"},
    {"ivh_auc", "9CMM", "Area under the IVH curve", ""},
}};

// Runs body(z0, z1) over [0, nz) split in about one chunk per thread.
template <typename F>
void parallel_chunks(int nz, F&& body) {
  const int stripes = std::max(1, std::min(nz, cv::getNumThreads()));
  cv::parallel_for_(cv::Range(0, nz), [&](const cv::Range& r) { body(r.start, r.end); }, stripes);
}

// One pass over the intensity mask: extremes, count, whether every value is an integer.
struct Scan {
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
  std::int64_t n = 0;
  bool integer = true;
};

Scan scan_roi(const RoiImage& roi, const char* what) {
  const Grid& g = roi.grid;
  const std::size_t plane = static_cast<std::size_t>(g.nx) * static_cast<std::size_t>(g.ny);
  std::vector<Scan> per(static_cast<std::size_t>(g.nz));
  std::vector<char> bad(static_cast<std::size_t>(g.nz), 0);
  parallel_chunks(g.nz, [&](int z0, int z1) {
    for (int z = z0; z < z1; ++z) {
      Scan s;
      const std::size_t b = static_cast<std::size_t>(z) * plane;
      for (std::size_t i = b; i < b + plane; ++i) {
        if (!roi.mask[i]) continue;
        const double v = roi.intensity[i];
        if (!std::isfinite(v)) { bad[static_cast<std::size_t>(z)] = 1; break; }
        s.min = std::min(s.min, v);
        s.max = std::max(s.max, v);
        s.integer = s.integer && v == std::nearbyint(v);
        ++s.n;
      }
      per[static_cast<std::size_t>(z)] = s;
    }
  });
  if (std::any_of(bad.begin(), bad.end(), [](char c) { return c != 0; }))
    throw std::invalid_argument(fmt::format("{}: non-finite intensity in the ROI", what));
  Scan all;
  for (const auto& s : per) {
    all.min = std::min(all.min, s.min);
    all.max = std::max(all.max, s.max);
    all.n += s.n;
    all.integer = all.integer && s.integer;
  }
  return all;
}

// Counts per integer bin 0..nbins-1 of bin_of(x) over the intensity mask, in parallel.
template <typename BinOf>
std::vector<std::int64_t> roi_histogram(const RoiImage& roi, std::size_t nbins, BinOf bin_of) {
  const Grid& g = roi.grid;
  const std::size_t plane = static_cast<std::size_t>(g.nx) * static_cast<std::size_t>(g.ny);
  std::vector<std::int64_t> total(nbins, 0);
  std::mutex m;
  parallel_chunks(g.nz, [&](int z0, int z1) {
    std::vector<std::int64_t> h(nbins, 0);
    const std::size_t b = static_cast<std::size_t>(z0) * plane, e = static_cast<std::size_t>(z1) * plane;
    for (std::size_t i = b; i < e; ++i)
      if (roi.mask[i]) ++h[bin_of(static_cast<double>(roi.intensity[i]))];
    const std::lock_guard lock(m);
    for (std::size_t k = 0; k < nbins; ++k) total[k] += h[k];
  });
  return total;
}

// One pass for the common case: every intensity in the mask an integer in -32768..32767 (CT HU).
// Returns the counts of value v at [v + 32768], or nothing (some value is not such an integer:
// the caller falls back to scan_roi, which also reports non-finite values).
constexpr int kInt16Offset = 32768;
std::optional<std::vector<std::int64_t>> int16_histogram(const RoiImage& roi) {
  const Grid& g = roi.grid;
  const std::size_t plane = static_cast<std::size_t>(g.nx) * static_cast<std::size_t>(g.ny);
  std::vector<std::int64_t> total(2 * kInt16Offset, 0);
  bool ok = true;
  std::mutex m;
  parallel_chunks(g.nz, [&](int z0, int z1) {
    std::vector<std::uint32_t> h(2 * kInt16Offset, 0);
    bool local_ok = true;
    for (int z = z0; z < z1 && local_ok; ++z) {
      const std::size_t b = static_cast<std::size_t>(z) * plane;
      for (std::size_t i = b; i < b + plane; ++i) {
        if (!roi.mask[i]) continue;
        const float v = roi.intensity[i];
        // NaN fails the range test; a fraction the equality.
        if (!(v >= -32768.0f && v <= 32767.0f) || v != std::nearbyint(v)) { local_ok = false; break; }
        ++h[static_cast<std::size_t>(static_cast<int>(v) + kInt16Offset)];
      }
    }
    const std::lock_guard lock(m);
    ok = ok && local_ok;
    if (ok)
      for (std::size_t k = 0; k < h.size(); ++k) total[k] += h[k];
  });
  if (!ok) return std::nullopt;
  return total;
}

// A distribution as ascending distinct values with their counts.
struct Distribution {
  std::vector<double> value;
  std::vector<std::int64_t> cum;  // voxels with value <= value[i]
  std::int64_t n() const { return cum.empty() ? 0 : cum.back(); }
  std::int64_t count(std::size_t i) const { return cum[i] - (i ? cum[i - 1] : 0); }
  void add(double v, std::int64_t c) {
    if (c == 0) return;
    value.push_back(v);
    cum.push_back(n() + c);
  }
  // The k-th smallest value (k from 0).
  double order(std::int64_t k) const {
    const auto it = std::upper_bound(cum.begin(), cum.end(), k);
    return value[static_cast<std::size_t>(it - cum.begin())];
  }
  // Linear interpolation between ranks (NumPy's default percentile).
  double quantile(double p) const {
    const double h = static_cast<double>(n() - 1) * p;
    const auto lo = static_cast<std::int64_t>(std::floor(h));
    const double a = order(lo);
    const double frac = h - static_cast<double>(lo);
    if (frac == 0) return a;
    return a + frac * (order(std::min(lo + 1, n() - 1)) - a);
  }
};

// The intensity mask's intensities as a distribution: an integer histogram when every value is an
// integer within a moderate range (CT HU), else one sort.
Distribution roi_distribution(const RoiImage& roi, const Scan& s) {
  Distribution d;
  constexpr double kMaxBins = 1 << 22;
  if (s.integer && s.max - s.min < kMaxBins) {
    const double lo = s.min;
    const auto h = roi_histogram(roi, static_cast<std::size_t>(s.max - s.min) + 1,
                                 [lo](double x) { return static_cast<std::size_t>(x - lo); });
    for (std::size_t k = 0; k < h.size(); ++k) d.add(lo + static_cast<double>(k), h[k]);
    return d;
  }
  std::vector<float> v;
  v.reserve(static_cast<std::size_t>(s.n));
  for (std::size_t i = 0; i < roi.mask.size(); ++i)
    if (roi.mask[i]) v.push_back(roi.intensity[i]);
  std::sort(v.begin(), v.end());
  for (std::size_t i = 0; i < v.size();) {
    std::size_t j = i;
    while (j < v.size() && v[j] == v[i]) ++j;
    d.add(v[i], static_cast<std::int64_t>(j - i));
    i = j;
  }
  return d;
}

// The statistics shared by "stat_" and "ih_" (the manual 3.3 and 3.4 define them alike).
struct Summary {
  double mean, var, skew, kurt, median, min, p10, p25, p75, p90, max, mad, rmad, medad, cov, qcod, energy;
};

Summary summarise(const Distribution& d) {
  const double n = static_cast<double>(d.n());
  Summary s{};
  double sum = 0, energy = 0;
  for (std::size_t i = 0; i < d.value.size(); ++i) {
    const double c = static_cast<double>(d.count(i)), v = d.value[i];
    sum += c * v;
    energy += c * v * v;
  }
  s.mean = sum / n;
  s.energy = energy;
  double m2 = 0, m3 = 0, m4 = 0, mad = 0;
  for (std::size_t i = 0; i < d.value.size(); ++i) {
    const double c = static_cast<double>(d.count(i)), x = d.value[i] - s.mean, x2 = x * x;
    m2 += c * x2;
    m3 += c * x2 * x;
    m4 += c * x2 * x2;
    mad += c * std::abs(x);
  }
  m2 /= n, m3 /= n, m4 /= n;
  s.var = m2;
  s.skew = m2 > 0 ? m3 / std::pow(m2, 1.5) : 0.0;
  s.kurt = m2 > 0 ? m4 / (m2 * m2) - 3.0 : 0.0;
  s.mad = mad / n;
  s.min = d.value.front();
  s.max = d.value.back();
  s.median = d.quantile(0.5);
  s.p10 = d.quantile(0.1);
  s.p25 = d.quantile(0.25);
  s.p75 = d.quantile(0.75);
  s.p90 = d.quantile(0.9);
  // Robust MAD: the voxels with P10 <= x <= P90, about their own mean.
  double rn = 0, rsum = 0;
  for (std::size_t i = 0; i < d.value.size(); ++i)
    if (d.value[i] >= s.p10 && d.value[i] <= s.p90) {
      rn += static_cast<double>(d.count(i));
      rsum += static_cast<double>(d.count(i)) * d.value[i];
    }
  const double rmean = rsum / rn;
  double rdev = 0, meddev = 0;
  for (std::size_t i = 0; i < d.value.size(); ++i) {
    const double c = static_cast<double>(d.count(i)), v = d.value[i];
    if (v >= s.p10 && v <= s.p90) rdev += c * std::abs(v - rmean);
    meddev += c * std::abs(v - s.median);
  }
  s.rmad = rdev / rn;
  s.medad = meddev / n;
  const double sd = std::sqrt(m2);
  s.cov = sd == 0 ? 0.0 : s.mean == 0 ? kNaN : sd / s.mean;
  s.qcod = s.p75 + s.p25 == 0 ? kNaN : (s.p75 - s.p25) / (s.p75 + s.p25);
  return s;
}

void put(Features& out, std::string_view tag, double v) { out.push_back({std::string(tag), v}); }

// ---- Local intensity --------------------------------------------------------------------------

// One chord of the sphere: the voxels (x - w .. x + w, y + dy, z + dz).
struct Chord {
  int dy, dz, w;
};

struct Peaks {
  double max_intensity = -std::numeric_limits<double>::infinity();
  double local = -std::numeric_limits<double>::infinity();
  double global = -std::numeric_limits<double>::infinity();
  void merge(const Peaks& o) {
    global = std::max(global, o.global);
    if (o.max_intensity > max_intensity) {
      max_intensity = o.max_intensity;
      local = o.local;
    } else if (o.max_intensity == max_intensity) {
      local = std::max(local, o.local);
    }
  }
  void add(double intensity, double sphere_mean) {
    global = std::max(global, sphere_mean);
    if (intensity > max_intensity) {
      max_intensity = intensity;
      local = sphere_mean;
    } else if (intensity == max_intensity) {
      local = std::max(local, sphere_mean);
    }
  }
};

}  // namespace

std::span<const FeatureDef> local_intensity_definitions() { return kLocal; }
std::span<const FeatureDef> statistics_definitions() { return kStat; }
std::span<const FeatureDef> histogram_definitions() { return kHist; }
std::span<const FeatureDef> ivh_definitions() { return kIvh; }

namespace {

// The sphere of the local intensity features as chords along x, and the part of the grid the
// intensity mask's spheres reach.
struct SphereSetup {
  std::vector<Chord> chords;
  std::int64_t full = 0;                  // voxels of a sphere inside the grid
  int kx = 0, kz = 0;                     // reach along x and z in voxels
  int x0 = 0, x1 = 0, y0 = 0, y1 = 0, z0 = 0, z1 = 0;  // intensity mask's bounding box
  int ex0 = 0, ex1 = 0, ey0 = 0, ey1 = 0;              // columns and rows the spheres reach
  int i0 = 0, len = 0;                    // row prefix arrays: element 0 is column i0
};

// Sphere means at every voxel of the intensity mask from row prefix sums (type T: int for integer
// intensities, exact and twice as wide in SIMD; else double). A ring of 2 kz + 1 slices of prefix
// sums per thread; each thread a contiguous block of slices.
template <typename T>
Peaks sphere_peaks(const RoiImage& roi, const SphereSetup& s) {
  const Grid& g = roi.grid;
  const int rows = s.ey1 - s.ey0 + 1, ring = 2 * s.kz + 1, len = s.len;
  const std::size_t row_len = static_cast<std::size_t>(len);
  const int nzb = s.z1 - s.z0 + 1;
  const int stripes = std::max(1, std::min(nzb, cv::getNumThreads()));
  std::vector<Peaks> per(static_cast<std::size_t>(stripes));
  cv::parallel_for_(cv::Range(0, stripes), [&](const cv::Range& sr) {
    std::vector<T> prefix(static_cast<std::size_t>(ring) * static_cast<std::size_t>(rows) * row_len);
    std::vector<int> loaded(static_cast<std::size_t>(ring), -1);
    std::vector<T> acc(static_cast<std::size_t>(s.x1 - s.x0 + 1));
    // S(col) = sum of the row's intensities at columns ex0 .. col - 1 (clamped to the grid), for
    // col = i0 .. i0 + len - 1: a chord's sum is S(x + w + 1) - S(x - w).
    auto slice_prefix = [&](int zz) -> const T* {
      const auto slot = static_cast<std::size_t>(zz % ring);
      T* base = prefix.data() + slot * static_cast<std::size_t>(rows) * row_len;
      if (loaded[slot] != zz) {
        for (int yy = s.ey0; yy <= s.ey1; ++yy) {
          T* p = base + static_cast<std::size_t>(yy - s.ey0) * row_len;
          const float* row = &roi.intensity[g.index(0, yy, zz)];
          T sum = 0;
          int i = 0;
          for (; s.i0 + i <= s.ex0; ++i) p[i] = 0;
          for (; s.i0 + i - 1 <= s.ex1; ++i) p[i] = sum += static_cast<T>(row[s.i0 + i - 1]);
          for (; i < len; ++i) p[i] = sum;
        }
        loaded[slot] = zz;
      }
      return base;
    };
    for (int st = sr.start; st < sr.end; ++st) {
      Peaks peaks;
      const int za = s.z0 + static_cast<int>(static_cast<std::int64_t>(nzb) * st / stripes);
      const int zb = s.z0 + static_cast<int>(static_cast<std::int64_t>(nzb) * (st + 1) / stripes);
      for (int z = za; z < zb; ++z) {
        for (int y = s.y0; y <= s.y1; ++y) {
          const std::uint8_t* m = &roi.mask[g.index(0, y, z)];
          const float* row = &roi.intensity[g.index(0, y, z)];
          // Runs of the row's ROI voxels, gaps of up to kGap voxels bridged (a gap costs as much as
          // ROI voxels; a new run costs the chords' setup).
          constexpr int kGap = 16;
          for (int xa = s.x0; xa <= s.x1;) {
            if (!m[xa]) { ++xa; continue; }
            int xb = xa;
            for (int x = xa + 1; x <= s.x1 && x - xb <= kGap; ++x)
              if (m[x]) xb = x;
            const int n = xb - xa + 1;
            std::fill_n(acc.begin(), n, T{0});
            bool interior = xa - s.kx >= 0 && xb + s.kx <= g.nx - 1;
            for (const Chord& c : s.chords) {
              const int zz = z + c.dz, yy = y + c.dy;
              if (zz < 0 || zz >= g.nz || yy < 0 || yy >= g.ny) {
                interior = false;
                continue;
              }
              const T* p = slice_prefix(zz) + static_cast<std::size_t>(yy - s.ey0) * row_len;
              const T* __restrict hi = p + (xa + c.w + 1 - s.i0);
              const T* __restrict lo = p + (xa - c.w - s.i0);
              T* __restrict a = acc.data();
              for (int j = 0; j < n; ++j) a[j] += hi[j] - lo[j];
            }
            for (int x = xa; x <= xb; ++x) {
              if (!m[x]) continue;
              std::int64_t count = s.full;
              if (!interior) {  // the sphere leaves the grid: count the voxels it keeps
                count = 0;
                for (const Chord& c : s.chords) {
                  const int zz = z + c.dz, yy = y + c.dy;
                  if (zz < 0 || zz >= g.nz || yy < 0 || yy >= g.ny) continue;
                  count += std::min(x + c.w, g.nx - 1) - std::max(x - c.w, 0) + 1;
                }
              }
              peaks.add(row[x], static_cast<double>(acc[static_cast<std::size_t>(x - xa)]) / static_cast<double>(count));
            }
            xa = xb + 1;
          }
        }
      }
      per[static_cast<std::size_t>(st)] = peaks;
    }
  }, stripes);
  Peaks all;
  for (const auto& p : per) all.merge(p);
  return all;
}

}  // namespace

void local_intensity_features(const RoiImage& roi, Features& out) {
  check_roi(roi, "local_intensity_features");
  const Grid& g = roi.grid;
  SphereSetup s;
  // The manual 3.2: a sphere of 1 cm^3, r = (3 / (4 pi))^(1/3) cm.
  const double r = 10.0 * std::cbrt(3.0 / (4.0 * std::numbers::pi));
  const double r2 = r * r;
  s.kx = static_cast<int>(std::floor(r / g.sx));
  s.kz = static_cast<int>(std::floor(r / g.sz));
  const int ky = static_cast<int>(std::floor(r / g.sy));
  for (int dz = -s.kz; dz <= s.kz; ++dz)
    for (int dy = -ky; dy <= ky; ++dy) {
      const double rest = r2 - (dz * g.sz) * (dz * g.sz) - (dy * g.sy) * (dy * g.sy);
      if (rest < 0) continue;
      int w = static_cast<int>(std::floor(std::sqrt(rest) / g.sx));
      while ((w + 1) * g.sx * (w + 1) * g.sx <= rest) ++w;
      while (w > 0 && w * g.sx * w * g.sx > rest) --w;
      s.chords.push_back({dy, dz, w});
      s.full += 2 * w + 1;
    }

  // The intensity mask's bounding box, per slice in parallel.
  struct Box {
    int x0 = std::numeric_limits<int>::max(), x1 = -1, y0 = std::numeric_limits<int>::max(), y1 = -1;
  };
  std::vector<Box> boxes(static_cast<std::size_t>(g.nz));
  parallel_chunks(g.nz, [&](int za, int zb) {
    for (int z = za; z < zb; ++z) {
      Box& b = boxes[static_cast<std::size_t>(z)];
      for (int y = 0; y < g.ny; ++y) {
        const std::uint8_t* m = &roi.mask[g.index(0, y, z)];
        int xa = 0, xb = g.nx - 1;
        while (xa < g.nx && !m[xa]) ++xa;
        if (xa == g.nx) continue;
        while (!m[xb]) --xb;
        b.x0 = std::min(b.x0, xa), b.x1 = std::max(b.x1, xb);
        b.y0 = std::min(b.y0, y), b.y1 = y;
      }
    }
  });
  s.x0 = g.nx, s.x1 = -1, s.y0 = g.ny, s.y1 = -1, s.z0 = g.nz, s.z1 = -1;
  for (int z = 0; z < g.nz; ++z) {
    const Box& b = boxes[static_cast<std::size_t>(z)];
    if (b.x1 < 0) continue;
    s.x0 = std::min(s.x0, b.x0), s.x1 = std::max(s.x1, b.x1);
    s.y0 = std::min(s.y0, b.y0), s.y1 = std::max(s.y1, b.y1);
    s.z0 = std::min(s.z0, z), s.z1 = z;
  }
  s.ex0 = std::max(0, s.x0 - s.kx), s.ex1 = std::min(g.nx - 1, s.x1 + s.kx);
  s.ey0 = std::max(0, s.y0 - ky), s.ey1 = std::min(g.ny - 1, s.y1 + ky);
  s.i0 = s.x0 - s.kx;
  s.len = (s.x1 + s.kx + 1) - s.i0 + 1;

  // Integer intensities (HU) where the spheres reach: exact int32 sums if they cannot overflow.
  const int ez0 = std::max(0, s.z0 - s.kz), ez1 = std::min(g.nz - 1, s.z1 + s.kz);
  std::vector<char> non_integer(static_cast<std::size_t>(g.nz), 0);
  std::vector<float> largest(static_cast<std::size_t>(g.nz), 0.0f);
  std::vector<char> non_finite(static_cast<std::size_t>(g.nz), 0);
  parallel_chunks(ez1 - ez0 + 1, [&](int za, int zb) {
    for (int z = ez0 + za; z < ez0 + zb; ++z) {
      float big = 0;
      bool frac = false;
      for (int y = s.ey0; y <= s.ey1; ++y) {
        const float* row = &roi.intensity[g.index(0, y, z)];
        for (int x = s.ex0; x <= s.ex1; ++x) {
          if (!std::isfinite(row[x])) { non_finite[static_cast<std::size_t>(z)] = 1; continue; }
          big = std::max(big, std::abs(row[x]));
          frac |= row[x] != std::nearbyint(row[x]);
        }
      }
      non_integer[static_cast<std::size_t>(z)] = frac;
      largest[static_cast<std::size_t>(z)] = big;
    }
  });
  if (std::any_of(non_finite.begin(), non_finite.end(), [](char c) { return c != 0; }))
    throw std::invalid_argument("local_intensity_features: non-finite intensity within the spheres' reach");
  const bool integer = std::none_of(non_integer.begin(), non_integer.end(), [](char c) { return c != 0; });
  const double big = *std::max_element(largest.begin(), largest.end());
  const double worst = big * static_cast<double>(std::max<std::int64_t>(s.full, s.ex1 - s.ex0 + 1));
  const Peaks peaks = integer && worst < 2e9 ? sphere_peaks<std::int32_t>(roi, s) : sphere_peaks<double>(roi, s);
  put(out, "loc_peak_loc", peaks.local);
  put(out, "loc_peak_glob", peaks.global);
}

void statistics_features(const RoiImage& roi, Features& out) {
  check_roi(roi, "statistics_features");
  Distribution d;
  if (const auto h = int16_histogram(roi)) {
    for (std::size_t k = 0; k < h->size(); ++k) d.add(static_cast<double>(static_cast<int>(k) - kInt16Offset), (*h)[k]);
  } else {
    d = roi_distribution(roi, scan_roi(roi, "statistics_features"));
  }
  const Summary s = summarise(d);
  const double n = static_cast<double>(d.n());
  put(out, "stat_mean", s.mean);
  put(out, "stat_var", s.var);
  put(out, "stat_skew", s.skew);
  put(out, "stat_kurt", s.kurt);
  put(out, "stat_median", s.median);
  put(out, "stat_min", s.min);
  put(out, "stat_p10", s.p10);
  put(out, "stat_p90", s.p90);
  put(out, "stat_max", s.max);
  put(out, "stat_iqr", s.p75 - s.p25);
  put(out, "stat_range", s.max - s.min);
  put(out, "stat_mad", s.mad);
  put(out, "stat_rmad", s.rmad);
  put(out, "stat_medad", s.medad);
  put(out, "stat_cov", s.cov);
  put(out, "stat_qcod", s.qcod);
  put(out, "stat_energy", s.energy);
  put(out, "stat_rms", std::sqrt(s.energy / n));
}

void histogram_features(const Levels& levels, Features& out) {
  check_levels(levels, "histogram_features");
  const Grid& g = levels.grid;
  const int ng = levels.ng;
  const std::size_t plane = static_cast<std::size_t>(g.nx) * static_cast<std::size_t>(g.ny);
  std::vector<std::int64_t> h(static_cast<std::size_t>(ng) + 1, 0);  // h[i]: voxels at level i
  std::mutex mu;
  parallel_chunks(g.nz, [&](int z0, int z1) {
    std::vector<std::int64_t> local(h.size(), 0);
    const std::size_t b = static_cast<std::size_t>(z0) * plane, e = static_cast<std::size_t>(z1) * plane;
    for (std::size_t i = b; i < e; ++i) ++local[static_cast<std::size_t>(levels.level[i])];
    const std::lock_guard lock(mu);
    for (std::size_t k = 1; k < h.size(); ++k) h[k] += local[k];
  });
  Distribution d;
  for (int i = 1; i <= ng; ++i) d.add(i, h[static_cast<std::size_t>(i)]);
  const Summary s = summarise(d);
  const double n = static_cast<double>(d.n());

  // Mode: the most frequent level; ties go to the level closest to the mean, then the lowest.
  int mode = 1;
  for (int i = 2; i <= ng; ++i) {
    const auto hi = h[static_cast<std::size_t>(i)], hm = h[static_cast<std::size_t>(mode)];
    if (hi > hm || (hi == hm && std::abs(i - s.mean) < std::abs(mode - s.mean))) mode = i;
  }
  double entropy = 0, uniformity = 0;
  for (int i = 1; i <= ng; ++i) {
    const double p = static_cast<double>(h[static_cast<std::size_t>(i)]) / n;
    if (p > 0) entropy -= p * std::log2(p);
    uniformity += p * p;
  }
  // Histogram gradient over the levels 1..ng.
  auto H = [&](int i) { return static_cast<double>(h[static_cast<std::size_t>(i)]); };
  auto grad = [&](int i) {
    if (ng == 1) return 0.0;
    if (i == 1) return H(2) - H(1);
    if (i == ng) return H(ng) - H(ng - 1);
    return (H(i + 1) - H(i - 1)) / 2.0;
  };
  double gmax = grad(1), gmin = grad(1);
  int gmax_i = 1, gmin_i = 1;
  for (int i = 2; i <= ng; ++i) {
    const double v = grad(i);
    if (v > gmax) gmax = v, gmax_i = i;
    if (v < gmin) gmin = v, gmin_i = i;
  }
  put(out, "ih_mean", s.mean);
  put(out, "ih_var", s.var);
  put(out, "ih_skew", s.skew);
  put(out, "ih_kurt", s.kurt);
  put(out, "ih_median", s.median);
  put(out, "ih_min", s.min);
  put(out, "ih_p10", s.p10);
  put(out, "ih_p90", s.p90);
  put(out, "ih_max", s.max);
  put(out, "ih_mode", mode);
  put(out, "ih_iqr", s.p75 - s.p25);
  put(out, "ih_range", s.max - s.min);
  put(out, "ih_mad", s.mad);
  put(out, "ih_rmad", s.rmad);
  put(out, "ih_medad", s.medad);
  put(out, "ih_cov", s.cov);
  put(out, "ih_qcod", s.qcod);
  put(out, "ih_entropy", entropy);
  put(out, "ih_uniformity", uniformity);
  put(out, "ih_max_grad", gmax);
  put(out, "ih_max_grad_g", gmax_i);
  put(out, "ih_min_grad", gmin);
  put(out, "ih_min_grad_g", gmin_i);
}

void ivh_features(const RoiImage& roi, const IvhOptions& o, Features& out) {
  check_roi(roi, "ivh_features");
  using M = IvhOptions::Method;
  if (o.method == M::none && !(o.step > 0 && std::isfinite(o.step)))
    throw std::invalid_argument(fmt::format("ivh_features: step {} must be > 0", o.step));
  if (o.method == M::fixed_bin_size && !(o.bin_width > 0 && std::isfinite(o.bin_width)))
    throw std::invalid_argument(fmt::format("ivh_features: bin width {} must be > 0", o.bin_width));
  if (o.method == M::fixed_bin_number && o.bins < 2)
    throw std::invalid_argument(fmt::format("ivh_features: {} bins, at least 2 needed", o.bins));
  if (o.method == M::fixed_bin_number && (o.lower || o.upper))
    throw std::invalid_argument("ivh_features: fixed bin number uses the ROI's range; lower/upper must be unset");
  if ((o.lower && !std::isfinite(*o.lower)) || (o.upper && !std::isfinite(*o.upper)) ||
      (o.lower && o.upper && !(*o.lower < *o.upper)))
    throw std::invalid_argument("ivh_features: bounds must be finite with lower < upper");

  // Integer intensities: one pass to a value histogram, whose bins are then mapped to levels.
  const auto vh = int16_histogram(roi);
  Scan scan;
  if (vh) {
    for (std::size_t k = 0; k < vh->size(); ++k)
      if ((*vh)[k]) {
        const double v = static_cast<double>(static_cast<int>(k) - kInt16Offset);
        scan.min = std::min(scan.min, v), scan.max = std::max(scan.max, v);
        scan.n += (*vh)[k];
      }
  } else {
    scan = scan_roi(roi, "ivh_features");
  }
  const double lower = o.lower.value_or(scan.min), upper = o.upper.value_or(scan.max);
  if (upper < lower)
    throw std::invalid_argument(fmt::format("ivh_features: bounds [{}, {}] exclude the ROI", lower, upper));
  constexpr double kMaxLevels = 1e7;
  double nlev = 0, first = 0, spacing = 1;  // levels G_k = first + (k - 1) spacing, k = 1..nlev
  switch (o.method) {
    case M::none:
      nlev = std::round((upper - lower) / o.step) + 1;
      first = lower, spacing = o.step;
      break;
    case M::fixed_bin_size:
      nlev = std::ceil((upper - lower) / o.bin_width) + 1;
      first = lower + 0.5 * o.bin_width, spacing = o.bin_width;
      break;
    case M::fixed_bin_number:
      nlev = o.bins;
      first = 1, spacing = 1;
      break;
  }
  if (!(nlev >= 1 && nlev <= kMaxLevels))
    throw std::invalid_argument(fmt::format("ivh_features: {} levels (at most {})", nlev, kMaxLevels));
  const auto n = static_cast<std::int64_t>(nlev);
  auto clamp_bin = [n](double k) {  // k: 0-based level, possibly out of range
    return static_cast<std::size_t>(std::clamp(k, 0.0, static_cast<double>(n - 1)));
  };
  const double lo = scan.min, span = scan.max - scan.min;
  auto bin_of = [&](double x) -> std::size_t {
    switch (o.method) {
      case M::none: return clamp_bin(std::round((x - lower) / o.step));
      case M::fixed_bin_size: return clamp_bin(std::floor((x - lower) / o.bin_width));
      case M::fixed_bin_number:
        return span > 0 ? clamp_bin(std::floor(static_cast<double>(n) * (x - lo) / span)) : std::size_t{0};
    }
    return 0;
  };
  std::vector<std::int64_t> h;
  if (vh) {
    h.assign(static_cast<std::size_t>(n), 0);
    for (std::size_t k = 0; k < vh->size(); ++k)
      if ((*vh)[k]) h[bin_of(static_cast<double>(static_cast<int>(k) - kInt16Offset))] += (*vh)[k];
  } else {
    h = roi_histogram(roi, static_cast<std::size_t>(n), bin_of);
  }
  const double total = static_cast<double>(scan.n);
  // nu[k]: fraction of voxels at level >= k (0-based); gamma_k = k / (n - 1).
  std::vector<double> nu(static_cast<std::size_t>(n));
  std::int64_t below = 0;
  for (std::int64_t k = 0; k < n; ++k) {
    nu[static_cast<std::size_t>(k)] = 1.0 - static_cast<double>(below) / total;
    below += h[static_cast<std::size_t>(k)];
  }
  auto level = [&](std::int64_t k) { return first + static_cast<double>(k) * spacing; };
  auto v_at = [&](double x) {  // nu at the lowest level with gamma >= x
    if (n < 2) return kNaN;
    const auto k = static_cast<std::int64_t>(std::ceil(x * static_cast<double>(n - 1) - 1e-9));
    return nu[static_cast<std::size_t>(std::clamp<std::int64_t>(k, 0, n - 1))];
  };
  auto i_at = [&](double x) {  // the lowest level with nu <= x, else the level above the top
    for (std::int64_t k = 0; k < n; ++k)
      if (nu[static_cast<std::size_t>(k)] <= x) return level(k);
    return level(n);
  };
  double auc = kNaN;
  if (n >= 2) {
    auc = 0;
    for (std::int64_t k = 0; k + 1 < n; ++k)
      auc += 0.5 * (nu[static_cast<std::size_t>(k)] + nu[static_cast<std::size_t>(k + 1)]) / static_cast<double>(n - 1);
  }
  const double v10 = v_at(0.1), v90 = v_at(0.9), i10 = i_at(0.1), i90 = i_at(0.9);
  put(out, "ivh_v10", v10);
  put(out, "ivh_v90", v90);
  put(out, "ivh_i10", i10);
  put(out, "ivh_i90", i90);
  put(out, "ivh_diff_v10_v90", v10 - v90);
  put(out, "ivh_diff_i10_i90", i10 - i90);
  put(out, "ivh_auc", auc);
}

}  // namespace analysis::kernels::ibsi
