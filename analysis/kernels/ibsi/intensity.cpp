#include "analysis/kernels/ibsi/intensity.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <numbers>
#include <optional>
#include <span>
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
        // NaN fails the range test; a fraction the equality (in range, truncation to int is exact
        // for integers and changes any fraction: the same test as v != nearbyint(v), without the
        // library call that SSE2 needs for nearbyint).
        if (!(v >= -32768.0f && v <= 32767.0f) || v != static_cast<float>(static_cast<int>(v))) { local_ok = false; break; }
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
  std::vector<std::vector<Chord>> discs;  // discs[k]: the chords at dz = k (the same at -k)
  std::vector<char> width_used;           // [w]: some chord has the half-width w
  std::int64_t full = 0;                  // voxels of a sphere inside the grid
  int kx = 0, kz = 0;                     // reach along x (widest chord) and z in voxels
  int dy_min = 0, dy_max = 0;             // reach along y
  int x0 = 0, x1 = 0, y0 = 0, y1 = 0, z0 = 0, z1 = 0;  // intensity mask's bounding box
  int ex0 = 0, ex1 = 0, ey0 = 0, ey1 = 0;              // columns and rows the spheres reach
  int i0 = 0, len = 0;                    // row prefix arrays: element 0 is column i0
};

// Columns a .. b of a row.
struct Run {
  int a, b;
};

// Appends the runs of non-zero bytes of m[x0 .. x1] (8 bytes at a time through long runs and gaps).
void mask_runs(const std::uint8_t* m, int x0, int x1, std::vector<Run>& out) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  const auto word = [m](int x) {
    std::uint64_t w;
    std::memcpy(&w, m + x, sizeof w);
    return w;
  };
  const int end = x1 + 1;
  int x = x0;
  while (x < end) {
    while (x + 8 <= end && word(x) == 0) x += 8;
    while (x < end && !m[x]) ++x;
    if (x == end) break;
    const int a = x;
    while (x + 8 <= end && [](std::uint64_t w) { return ((w - kOnes) & ~w & kHigh) == 0; }(word(x))) x += 8;
    while (x < end && m[x]) ++x;
    out.push_back({a, x - 1});
  }
}

// The union of two sorted run lists into out, runs at most `gap` columns apart joined.
void merge_runs(std::span<const Run> p, std::span<const Run> q, int gap, std::vector<Run>& out) {
  out.clear();
  std::size_t i = 0, j = 0;
  while (i < p.size() || j < q.size()) {
    const Run r = j == q.size() || (i < p.size() && p[i].a <= q[j].a) ? p[i++] : q[j++];
    if (!out.empty() && r.a - out.back().b - 1 <= gap)
      out.back().b = std::max(out.back().b, r.b);
    else
      out.push_back(r);
  }
}

// d[j] = (or +=) h[j] - l[j] (a window sum from prefix sums), or the sum of the p_t[j].
template <typename T, bool kSet>
inline void chords1(T* __restrict d, const T* __restrict h0, const T* __restrict l0, int n) {
  for (int j = 0; j < n; ++j) d[j] = kSet ? h0[j] - l0[j] : d[j] + (h0[j] - l0[j]);
}
template <typename T, bool kSet>
inline void sum4(T* __restrict d, const T* __restrict p0, const T* __restrict p1, const T* __restrict p2,
                 const T* __restrict p3, int n) {
  for (int j = 0; j < n; ++j) {
    const T v = (p0[j] + p1[j]) + (p2[j] + p3[j]);
    d[j] = kSet ? v : d[j] + v;
  }
}
template <typename T, bool kSet>
inline void sum8(T* __restrict d, const T* __restrict p0, const T* __restrict p1, const T* __restrict p2,
                 const T* __restrict p3, const T* __restrict p4, const T* __restrict p5, const T* __restrict p6,
                 const T* __restrict p7, int n) {
  for (int j = 0; j < n; ++j) {
    const T v = ((p0[j] + p1[j]) + (p2[j] + p3[j])) + ((p4[j] + p5[j]) + (p6[j] + p7[j]));
    d[j] = kSet ? v : d[j] + v;
  }
}
template <typename T, bool kSet>
inline void sum1(T* __restrict d, const T* __restrict p0, int n) {
  for (int j = 0; j < n; ++j) d[j] = kSet ? p0[j] : d[j] + p0[j];
}

// d[0 .. n) = the sum over t < nt of p[t][j] (nt >= 1). Also built for AVX2 (chosen at load time
// where the CPU has it): twice the lanes; each d[j] is the same sum in the same order either way.
template <typename T>
PACSNODE_TEMPLATE_AVX2_CLONES void add_terms(T* d, const T* const* p, int nt, int n) {
  int t = 0;
  if (nt >= 8) {
    sum8<T, true>(d, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], n);
    t = 8;
  } else if (nt >= 4) {
    sum4<T, true>(d, p[0], p[1], p[2], p[3], n);
    t = 4;
  } else {
    sum1<T, true>(d, p[0], n);
    t = 1;
  }
  for (; t + 8 <= nt; t += 8) sum8<T, false>(d, p[t], p[t + 1], p[t + 2], p[t + 3], p[t + 4], p[t + 5], p[t + 6], p[t + 7], n);
  for (; t + 4 <= nt; t += 4) sum4<T, false>(d, p[t], p[t + 1], p[t + 2], p[t + 3], n);
  for (; t < nt; ++t) sum1<T, false>(d, p[t], n);
}

// Sphere means at every voxel of the intensity mask (type T: int for integer intensities, exact and
// twice as wide in SIMD; else double). The sphere is a stack of discs, one per slice offset dz, the
// disc at dz the same as at -dz: sphere(x, y, z) = sum over dz of disc_|dz|(x, y, z + dz). The disc
// of radius k of slice zz serves the output slices zz - k and zz + k, so it is computed once, where
// either slice's mask needs it, and kept in a ring of planes (the intensity mask's bounding box)
// until zz + k is done. A disc is the sum of its chords along x, each one lookup in the window sums
// of its row for its half-width w (made once per row and slice from the row's prefix sums). Per ROI
// voxel about 80 lookups (the 67 chords of the half sphere over the discs' slightly larger area,
// then 13 discs) instead of the sphere's 121 chords. Each thread takes a contiguous block of slices.
template <typename T>
Peaks sphere_peaks(const RoiImage& roi, const SphereSetup& s) {
  const Grid& g = roi.grid;
  const int rows = s.ey1 - s.ey0 + 1, len = s.len, kz = s.kz;
  const int bw = s.x1 - s.x0 + 1, bh = s.y1 - s.y0 + 1;
  const auto row_len = static_cast<std::size_t>(len);
  const std::size_t plane = static_cast<std::size_t>(bw) * static_cast<std::size_t>(bh);
  // Disc k of slice zz is made (at the latest) before output slice zz - kz and last read by output
  // slice zz + k: a ring of kz + k + 1 planes.
  std::vector<std::size_t> ring_at(static_cast<std::size_t>(kz) + 2, 0);
  for (int k = 0; k <= kz; ++k) ring_at[static_cast<std::size_t>(k) + 1] = ring_at[static_cast<std::size_t>(k)] + static_cast<std::size_t>(kz + k + 1);
  const int nzb = s.z1 - s.z0 + 1;
  const int stripes = std::max(1, std::min(nzb, cv::getNumThreads()));
  std::vector<Peaks> per(static_cast<std::size_t>(stripes));
  constexpr int kGap = 8;  // disc runs: gaps of up to kGap columns bridged (cheaper than a new run)
  cv::parallel_for_(cv::Range(0, stripes), [&](const cv::Range& sr) {
    std::vector<T> prefix(row_len);
    const std::size_t row_windows = static_cast<std::size_t>(s.kx + 1) * static_cast<std::size_t>(bw);
    std::vector<T> windows(static_cast<std::size_t>(rows) * row_windows);
    const auto windows_of = [&](std::size_t slot) { return windows.data() + slot * row_windows; };
    std::vector<int> summed(static_cast<std::size_t>(rows), -1);  // the slice each window row holds
    std::vector<T> disc(ring_at.back() * plane);
    std::vector<T> acc(static_cast<std::size_t>(bw));
    std::vector<Run> runs, merged;
    std::vector<std::size_t> first;
    std::vector<const T*> prow, hs, terms;
    std::vector<int> widths;
    for (int st = sr.start; st < sr.end; ++st) {
      Peaks peaks;
      const int za = s.z0 + static_cast<int>(static_cast<std::int64_t>(nzb) * st / stripes);
      const int zb = s.z0 + static_cast<int>(static_cast<std::int64_t>(nzb) * (st + 1) / stripes);
      // The mask's runs of the block's slices.
      runs.clear();
      first.assign(1, 0);
      for (int z = za; z < zb; ++z)
        for (int y = s.y0; y <= s.y1; ++y) {
          mask_runs(&roi.mask[g.index(0, y, z)], s.x0, s.x1, runs);
          first.push_back(runs.size());
        }
      const auto row_runs = [&](int z, int y) -> std::span<const Run> {
        if (z < za || z >= zb) return {};
        const auto i = static_cast<std::size_t>(z - za) * static_cast<std::size_t>(bh) + static_cast<std::size_t>(y - s.y0);
        return {runs.data() + first[i], runs.data() + first[i + 1]};
      };
      const auto disc_plane = [&](int k, int zz) {
        return disc.data() + (ring_at[static_cast<std::size_t>(k)] + static_cast<std::size_t>(zz % (kz + k + 1))) * plane;
      };
      // The discs of slice zz (0 <= zz < nz) where the block's output slices zz -+ k need them.
      const auto make_discs = [&](int zz) {
        for (int k = 0; k <= kz; ++k) {
          if (!(zz - k >= za && zz - k < zb) && !(zz + k >= za && zz + k < zb)) continue;
          T* const pl = disc_plane(k, zz);
          const auto& chords = s.discs[static_cast<std::size_t>(k)];
          for (int y = s.y0; y <= s.y1; ++y) {
            merge_runs(row_runs(zz - k, y), k > 0 ? row_runs(zz + k, y) : std::span<const Run>{}, kGap, merged);
            if (merged.empty()) continue;
            // The rows this disc row reads, once per slice: from the row's prefix sums S(col) (the
            // sum of its intensities at columns ex0 .. col - 1), its window sums of every chord
            // width w, S(x + w + 1) - S(x - w) at the columns x0 .. x1.
            for (int yy = std::max(s.ey0, y + s.dy_min); yy <= std::min(s.ey1, y + s.dy_max); ++yy) {
              const auto slot = static_cast<std::size_t>(yy - s.ey0);
              if (summed[slot] == zz) continue;
              summed[slot] = zz;
              T* p = prefix.data();
              const float* row = &roi.intensity[g.index(0, yy, zz)];
              // (locals: stores through p may alias s's int fields)
              const int i0 = s.i0, lead = s.ex0 - s.i0 + 1, stop = s.ex1 - s.i0 + 2;
              T sum = 0;
              for (int i = 0; i < lead; ++i) p[i] = 0;
              for (int i = lead; i < stop; ++i) p[i] = sum += static_cast<T>(row[i0 + i - 1]);
              for (int i = stop; i < len; ++i) p[i] = sum;
              for (int w = 0; w <= s.kx; ++w)
                if (s.width_used[static_cast<std::size_t>(w)])
                  chords1<T, true>(windows_of(slot) + static_cast<std::size_t>(w) * static_cast<std::size_t>(bw),
                                   p + (s.kx + w + 1), p + (s.kx - w), bw);
            }
            // The disc's chords; rows beyond the grid hold none.
            prow.clear();
            for (const Chord& c : chords) {
              const int yy = y + c.dy;
              if (yy < 0 || yy >= g.ny) continue;
              prow.push_back(windows_of(static_cast<std::size_t>(yy - s.ey0)) + static_cast<std::size_t>(c.w) * static_cast<std::size_t>(bw));
            }
            const int nc = static_cast<int>(prow.size());
            T* const out_row = pl + static_cast<std::size_t>(y - s.y0) * static_cast<std::size_t>(bw);
            for (const Run& r : merged) {
              hs.clear();
              for (int c = 0; c < nc; ++c) hs.push_back(prow[static_cast<std::size_t>(c)] + (r.a - s.x0));
              add_terms(out_row + (r.a - s.x0), hs.data(), nc, r.b - r.a + 1);
            }
          }
        }
      };
      for (int zz = std::max(0, za - kz); zz <= std::min(g.nz - 1, za + kz - 1); ++zz) make_discs(zz);
      for (int z = za; z < zb; ++z) {
        if (z + kz < g.nz) make_discs(z + kz);
        const bool z_inside = z - kz >= 0 && z + kz <= g.nz - 1;
        for (int y = s.y0; y <= s.y1; ++y) {
          const auto line = row_runs(z, y);
          if (line.empty()) continue;
          const float* row = &roi.intensity[g.index(0, y, z)];
          const bool yz_inside = z_inside && y + s.dy_min >= 0 && y + s.dy_max <= g.ny - 1;
          // Voxels of a sphere centred in this row, columns beyond the grid aside: the chords
          // whose rows and slices lie in the grid.
          widths.clear();
          std::int64_t row_count = 0;
          for (const Chord& c : s.chords) {
            const int zz = z + c.dz, yy = y + c.dy;
            if (yz_inside || (zz >= 0 && zz < g.nz && yy >= 0 && yy < g.ny)) {
              row_count += 2 * c.w + 1;
              widths.push_back(c.w);
            }
          }
          T* const sums = acc.data();
          const std::size_t at = static_cast<std::size_t>(y - s.y0) * static_cast<std::size_t>(bw);
          for (const Run& r : line) {
            const std::size_t col = at + static_cast<std::size_t>(r.a - s.x0);
            terms.clear();
            terms.push_back(disc_plane(0, z) + col);
            for (int k = 1; k <= kz; ++k) {
              if (z - k >= 0) terms.push_back(disc_plane(k, z - k) + col);
              if (z + k < g.nz) terms.push_back(disc_plane(k, z + k) + col);
            }
            const int n = r.b - r.a + 1;
            add_terms(sums, terms.data(), static_cast<int>(terms.size()), n);
            if (r.a - s.kx >= 0 && r.b + s.kx <= g.nx - 1) {
              // One count for the run: the largest sum gives the largest mean (division by a
              // positive number, correctly rounded, keeps the order); the local peak looks only
              // at voxels as bright as the brightest so far.
              T top = sums[0];
              float bright = row[r.a];
              for (int j = 1; j < n; ++j) {
                top = top > sums[j] ? top : sums[j];
                bright = bright > row[r.a + j] ? bright : row[r.a + j];
              }
              const auto cnt = static_cast<double>(row_count);
              peaks.global = std::max(peaks.global, static_cast<double>(top) / cnt);
              if (bright >= peaks.max_intensity)
                for (int x = r.a; x <= r.b; ++x)
                  if (row[x] >= peaks.max_intensity) peaks.add(row[x], static_cast<double>(sums[x - r.a]) / cnt);
              continue;
            }
            for (int x = r.a; x <= r.b; ++x) {
              std::int64_t count = row_count;
              if (x - s.kx < 0 || x + s.kx > g.nx - 1) {  // the sphere leaves the grid along x
                count = 0;
                for (const int w : widths) count += std::min(x + w, g.nx - 1) - std::max(x - w, 0) + 1;
              }
              peaks.add(row[x], static_cast<double>(sums[x - r.a]) / static_cast<double>(count));
            }
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
  // Voxels below 0.1 mm (micro-CT, or a wrong spacing) would make a sphere of millions of voxels
  // around every ROI voxel: refused rather than run for hours.
  constexpr double kMaxReach = 64;
  if (!(r / g.sx <= kMaxReach && r / g.sy <= kMaxReach && r / g.sz <= kMaxReach))
    throw std::invalid_argument(fmt::format("local_intensity_features: the 1 cm^3 sphere spans more than {} voxels "
                                            "along an axis (voxels of {} x {} x {} mm); not computed",
                                            kMaxReach, g.sx, g.sy, g.sz));
  const int ky = static_cast<int>(std::floor(r / g.sy));
  const int kz = static_cast<int>(std::floor(r / g.sz));
  s.discs.resize(static_cast<std::size_t>(kz) + 1);
  for (int dz = -kz; dz <= kz; ++dz)
    for (int dy = -ky; dy <= ky; ++dy) {
      const double rest = r2 - (dz * g.sz) * (dz * g.sz) - (dy * g.sy) * (dy * g.sy);
      if (rest < 0) continue;
      int w = static_cast<int>(std::floor(std::sqrt(rest) / g.sx));
      while ((w + 1) * g.sx * (w + 1) * g.sx <= rest) ++w;
      while (w > 0 && w * g.sx * w * g.sx > rest) --w;
      s.chords.push_back({dy, dz, w});
      s.full += 2 * w + 1;
      s.kx = std::max(s.kx, w);
      s.kz = std::max(s.kz, std::abs(dz));
      s.dy_min = std::min(s.dy_min, dy), s.dy_max = std::max(s.dy_max, dy);
      if (dz >= 0) s.discs[static_cast<std::size_t>(dz)].push_back({dy, dz, w});
    }
  s.discs.resize(static_cast<std::size_t>(s.kz) + 1);
  s.width_used.assign(static_cast<std::size_t>(s.kx) + 1, 0);
  for (const Chord& c : s.chords) s.width_used[static_cast<std::size_t>(c.w)] = 1;

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
  s.ey0 = std::max(0, s.y0 + s.dy_min), s.ey1 = std::min(g.ny - 1, s.y1 + s.dy_max);
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
        // One vectorisable pass. (v + 1.5 2^23) - 1.5 2^23 is v rounded to an integer (or to an
        // even one from 2^22, or NaN): v is an integer where that gives v back (and some are
        // called fractional, as NaN and infinities are: no harm, the double sums are exact as
        // well). The largest |v| by the bits, which order non-negative floats as integers.
        std::int32_t row_big = 0;
        int odd = 0;
        for (int x = s.ex0; x <= s.ex1; ++x) {
          const float v = row[x];
          odd |= (v + 12582912.0f) - 12582912.0f != v ? 1 : 0;
          std::int32_t bits;
          std::memcpy(&bits, &v, sizeof bits);
          bits &= 0x7fffffff;
          row_big = row_big > bits ? row_big : bits;
        }
        float row_abs;
        std::memcpy(&row_abs, &row_big, sizeof row_abs);
        big = std::max(big, row_abs);
        if (odd) {  // a fraction, a non-finite value or a huge one: double sums, or a throw
          frac = true;
          for (int x = s.ex0; x <= s.ex1; ++x)
            if (!std::isfinite(row[x])) non_finite[static_cast<std::size_t>(z)] = 1;
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
  histogram_features(CheckedLevels(levels, "histogram_features"), out);
}

void histogram_features(const CheckedLevels& checked, Features& out) {
  const Levels& levels = checked.get();
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
