#include "analysis/kernels/ibsi/morphology.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_set>

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/core/hal/intrin.hpp>

#include "analysis/kernels/mesh.h"
#include "analysis/kernels/types.h"

extern "C" {
#include <libqhull_r/qhull_ra.h>
}

namespace analysis::kernels::ibsi {
namespace {

constexpr FeatureDef kDefs[] = {
    {"morph_volume", "RNU0", "Volume (mesh)", "mm^3"},
    {"morph_vol_approx", "YEKZ", "Approximate volume (voxel counting)", "mm^3"},
    {"morph_area_mesh", "C0JK", "Surface area (mesh)", "mm^2"},
    {"morph_av", "2PR5", "Surface to volume ratio", "mm^-1"},
    {"morph_comp_1", "SKGS", "Compactness 1", ""},
    {"morph_comp_2", "BQWJ", "Compactness 2", ""},
    {"morph_sph_dispr", "KRCK", "Spherical disproportion", ""},
    {"morph_sphericity", "QCFX", "Sphericity", ""},
    {"morph_asphericity", "25C7", "Asphericity", ""},
    {"morph_com", "KLMA", "Centre of mass shift", "mm"},
    {"morph_diam", "L0JK", "Maximum 3D diameter", "mm"},
    {"morph_pca_maj_axis", "TDIC", "Major axis length", "mm"},
    {"morph_pca_min_axis", "P9VJ", "Minor axis length", "mm"},
    {"morph_pca_least_axis", "7J51", "Least axis length", "mm"},
    {"morph_pca_elongation", "Q3CK", "Elongation", ""},
    {"morph_pca_flatness", "N17B", "Flatness", ""},
    {"morph_vol_dens_aabb", "PBX1", "Volume density (axis-aligned bounding box)", ""},
    {"morph_area_dens_aabb", "R59B", "Area density (axis-aligned bounding box)", ""},
    {"morph_vol_dens_ombb", "ZH1A", "Volume density (oriented minimum bounding box)", ""},
    {"morph_area_dens_ombb", "IQYR", "Area density (oriented minimum bounding box)", ""},
    {"morph_vol_dens_aee", "6BDE", "Volume density (approximate enclosing ellipsoid)", ""},
    {"morph_area_dens_aee", "RDD2", "Area density (approximate enclosing ellipsoid)", ""},
    {"morph_vol_dens_mvee", "SWZ1", "Volume density (minimum volume enclosing ellipsoid)", ""},
    {"morph_area_dens_mvee", "BRI8", "Area density (minimum volume enclosing ellipsoid)", ""},
    {"morph_vol_dens_conv_hull", "R3ER", "Volume density (convex hull)", ""},
    {"morph_area_dens_conv_hull", "7T7F", "Area density (convex hull)", ""},
    {"morph_integ_int", "99N0", "Integrated intensity", "HU mm^3"},
    {"morph_moran_i", "N365", "Moran's I index", ""},
    {"morph_geary_c", "NPT7", "Geary's C measure", ""},
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- Qhull ----

// A qhT context that is always freed, with Qhull's messages captured for the exception text.
class QhullRun {
 public:
  QhullRun() {
    err_ = open_memstream(&text_, &size_);
    qh_zero(&qh_, err_);
  }
  ~QhullRun() {
    qh_freeqhull(&qh_, !qh_ALL);
    int curlong = 0, totlong = 0;
    qh_memfreeshort(&qh_, &curlong, &totlong);
    if (err_) std::fclose(err_);
    std::free(text_);
  }
  QhullRun(const QhullRun&) = delete;
  QhullRun& operator=(const QhullRun&) = delete;
  qhT* get() { return &qh_; }
  FILE* err() { return err_; }
  std::string messages() {
    if (err_) std::fflush(err_);
    return text_ ? std::string(text_, size_) : std::string();
  }

 private:
  qhT qh_{};
  char* text_ = nullptr;
  std::size_t size_ = 0;
  FILE* err_ = nullptr;
};

// ---- small geometry ----

struct Vec2 {
  double x, y;
};

double cross2(const Vec2& o, const Vec2& a, const Vec2& b) { return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x); }

// Andrew's monotone chain; collinear points dropped. `pts` is reordered.
std::vector<Vec2> hull2d(std::vector<Vec2>& pts) {
  std::sort(pts.begin(), pts.end(), [](const Vec2& a, const Vec2& b) { return a.x < b.x || (a.x == b.x && a.y < b.y); });
  if (pts.size() < 3) return pts;
  std::vector<Vec2> h(2 * pts.size() + 1);
  std::size_t k = 0;
  for (const auto& p : pts) {
    while (k >= 2 && cross2(h[k - 2], h[k - 1], p) <= 0) --k;
    h[k++] = p;
  }
  for (std::size_t i = pts.size() - 1, t = k + 1; i-- > 0;) {
    const auto& p = pts[i];
    while (k >= t && cross2(h[k - 2], h[k - 1], p) <= 0) --k;
    h[k++] = p;
  }
  h.resize(k > 1 ? k - 1 : k);
  return h;
}

// Smallest-area enclosing rectangle of a convex polygon: one side is flush with a polygon edge
// (Freeman and Shapira), so try every edge direction. Returns {side along edge, other side}.
std::array<double, 2> min_area_rectangle(const std::vector<Vec2>& h) {
  if (h.size() < 3) {  // a segment or a point
    double len = 0;
    if (h.size() == 2) len = std::hypot(h[1].x - h[0].x, h[1].y - h[0].y);
    return {len, 0.0};
  }
  double best = std::numeric_limits<double>::infinity();
  std::array<double, 2> dims{0, 0};
  for (std::size_t i = 0; i < h.size(); ++i) {
    const Vec2& a = h[i];
    const Vec2& b = h[(i + 1) % h.size()];
    double dx = b.x - a.x, dy = b.y - a.y;
    const double len = std::hypot(dx, dy);
    if (len == 0) continue;
    dx /= len;
    dy /= len;
    double lo_u = std::numeric_limits<double>::infinity(), hi_u = -lo_u, hi_v = 0;
    for (const auto& p : h) {
      const double u = (p.x - a.x) * dx + (p.y - a.y) * dy;
      const double v = -(p.x - a.x) * dy + (p.y - a.y) * dx;  // the polygon is on one side of the edge
      lo_u = std::min(lo_u, u);
      hi_u = std::max(hi_u, u);
      hi_v = std::max(hi_v, std::abs(v));
    }
    const double area = (hi_u - lo_u) * hi_v;
    if (area < best) {
      best = area;
      dims = {hi_u - lo_u, hi_v};
    }
  }
  return dims;
}

std::array<double, 3> sorted_desc(std::array<double, 3> v) {
  std::sort(v.begin(), v.end(), std::greater<>());
  return v;
}

double box_area(const std::array<double, 3>& d) { return 2.0 * (d[0] * d[1] + d[0] * d[2] + d[1] * d[2]); }

// Eigenvalues (descending) of a symmetric 3x3 matrix.
std::array<double, 3> eigenvalues(const cv::Matx33d& m) {
  cv::Mat values;
  cv::eigen(cv::Mat(m), values);
  return {values.at<double>(0), values.at<double>(1), values.at<double>(2)};
}

// ---- spatial autocorrelation ----

struct PairSums {
  double w = 0, wzz = 0, wdd = 0;  // over unordered pairs: w, w z1 z2, w (z1 - z2)^2
  void add(const PairSums& o) {
    w += o.w;
    wzz += o.wzz;
    wdd += o.wdd;
  }
};

struct Voxels {  // positions in mm and centred intensities z = X - mu, structure of arrays
  std::vector<double> x, y, z, v;
  void reserve(std::size_t n) {
    x.reserve(n);
    y.reserve(n);
    z.reserve(n);
    v.reserve(n);
  }
  void push(double px, double py, double pz, double pv) {
    x.push_back(px);
    y.push_back(py);
    z.push_back(pz);
    v.push_back(pv);
  }
  std::size_t size() const { return v.size(); }
};

PairSums pair_sums(const Voxels& s) {
  PairSums out;
  const std::size_t n = s.size();
  for (std::size_t i = 0; i + 1 < n; ++i) {
    const double xi = s.x[i], yi = s.y[i], zi = s.z[i], vi = s.v[i];
    double w = 0, wzz = 0, wdd = 0;
    for (std::size_t j = i + 1; j < n; ++j) {
      const double dx = s.x[j] - xi, dy = s.y[j] - yi, dz = s.z[j] - zi;
      const double r2 = dx * dx + dy * dy + dz * dz;
      if (!(r2 >= 0)) __builtin_unreachable();  // lets the compiler drop sqrt's errno path and vectorise
      const double wij = 1.0 / std::sqrt(r2);
      const double d = vi - s.v[j];
      w += wij;
      wzz += wij * s.v[j];
      wdd += wij * d * d;
    }
    out.w += w;
    out.wzz += vi * wzz;
    out.wdd += wdd;
  }
  return out;
}

// The same sums in single precision, four pairs at a time (the subsampling approximation only):
// per-row partial sums in float (<= kAutocorrelationSubset terms), rows accumulated in double.
PairSums pair_sums_simd(const std::vector<float>& x, const std::vector<float>& y, const std::vector<float>& z,
                        const std::vector<float>& v) {
  PairSums out;
  const std::size_t n = v.size();
  for (std::size_t i = 0; i + 1 < n; ++i) {
    const cv::v_float32x4 xi = cv::v_setall_f32(x[i]), yi = cv::v_setall_f32(y[i]), zi = cv::v_setall_f32(z[i]);
    const cv::v_float32x4 vi = cv::v_setall_f32(v[i]), one = cv::v_setall_f32(1.0f);
    cv::v_float32x4 w = cv::v_setzero_f32(), wz = cv::v_setzero_f32(), wdd = cv::v_setzero_f32();
    std::size_t j = i + 1;
    for (; j + 4 <= n; j += 4) {
      const cv::v_float32x4 dx = cv::v_load(&x[j]) - xi, dy = cv::v_load(&y[j]) - yi, dz = cv::v_load(&z[j]) - zi;
      const cv::v_float32x4 vj = cv::v_load(&v[j]);
      const cv::v_float32x4 wij = one / cv::v_sqrt(dx * dx + dy * dy + dz * dz);
      const cv::v_float32x4 d = vi - vj;
      w += wij;
      wz += wij * vj;
      wdd += wij * d * d;
    }
    double sw = cv::v_reduce_sum(w), swz = cv::v_reduce_sum(wz), swdd = cv::v_reduce_sum(wdd);
    for (; j < n; ++j) {
      const float dx = x[j] - x[i], dy = y[j] - y[i], dz = z[j] - z[i];
      const float wij = 1.0f / std::sqrt(dx * dx + dy * dy + dz * dz);
      const float d = v[i] - v[j];
      sw += wij;
      swz += wij * v[j];
      swdd += wij * d * d;
    }
    out.w += sw;
    out.wzz += static_cast<double>(v[i]) * swz;
    out.wdd += swdd;
  }
  return out;
}

struct IntensityMaskData {
  std::size_t n = 0;
  double mean = 0, ss = 0;  // mean of X and sum of (X - mean)^2 over the intensity mask
  int x0 = 0, x1 = -1, y0 = 0, y1 = -1, z0 = 0, z1 = -1;  // bounding box
};

// The sum of squared deviations from the mean over the intensity mask (its second pass), from a
// first pass that set n, mean and the bounding box.
void finish_mask_data(const RoiImage& roi, IntensityMaskData& d) {
  const Grid& g = roi.grid;
  std::vector<double> sums(static_cast<std::size_t>(g.nz), 0.0);
  parallel_slices(d.z0, d.z1 + 1, [&](int z) {
    double ss = 0;
    for (int y = d.y0; y <= d.y1; ++y) {
      const std::size_t base = g.index(0, y, z);
      for (int x = d.x0; x <= d.x1; ++x)
        if (roi.mask[base + static_cast<std::size_t>(x)]) {
          const double e = roi.intensity[base + static_cast<std::size_t>(x)] - d.mean;
          ss += e * e;
        }
    }
    sums[static_cast<std::size_t>(z)] = ss;
  });
  for (int z = d.z0; z <= d.z1; ++z) d.ss += sums[static_cast<std::size_t>(z)];
}

// Merges per-slice first-pass results (count, bounding box; the intensity sum of each slice in
// `sums`) in slice order (deterministic) and sets the mean.
IntensityMaskData merge_mask_data(const Grid& g, const std::vector<IntensityMaskData>& per, const std::vector<double>& sums) {
  IntensityMaskData d;
  d.x0 = g.nx, d.y0 = g.ny, d.z0 = g.nz;
  double sum = 0;
  for (std::size_t z = 0; z < per.size(); ++z) {
    const auto& p = per[z];
    d.n += p.n;
    sum += sums[z];
    d.x0 = std::min(d.x0, p.x0), d.x1 = std::max(d.x1, p.x1);
    d.y0 = std::min(d.y0, p.y0), d.y1 = std::max(d.y1, p.y1);
    d.z0 = std::min(d.z0, p.z0), d.z1 = std::max(d.z1, p.z1);
  }
  d.mean = sum / static_cast<double>(d.n);
  return d;
}

IntensityMaskData intensity_mask_data(const RoiImage& roi) {
  const Grid& g = roi.grid;
  std::vector<IntensityMaskData> per(static_cast<std::size_t>(g.nz));
  std::vector<double> sums(static_cast<std::size_t>(g.nz), 0.0);
  parallel_slices(0, g.nz, [&](int z) {
    IntensityMaskData d;
    d.x0 = g.nx, d.y0 = g.ny, d.z0 = g.nz;
    double sum = 0;
    for (int y = 0; y < g.ny; ++y) {
      const std::size_t base = g.index(0, y, z);
      for (int x = 0; x < g.nx; ++x)
        if (roi.mask[base + static_cast<std::size_t>(x)]) {
          ++d.n;
          sum += roi.intensity[base + static_cast<std::size_t>(x)];
          d.x0 = std::min(d.x0, x), d.x1 = std::max(d.x1, x);
          d.y0 = std::min(d.y0, y), d.y1 = std::max(d.y1, y);
          d.z0 = std::min(d.z0, z), d.z1 = std::max(d.z1, z);
        }
    }
    per[static_cast<std::size_t>(z)] = d;
    sums[static_cast<std::size_t>(z)] = sum;
  });
  IntensityMaskData d = merge_mask_data(g, per, sums);
  finish_mask_data(roi, d);
  return d;
}

Autocorrelation from_ratios(const IntensityMaskData& d, double zz_per_w, double dd_per_w) {
  if (!(d.ss > 0)) return {1.0, 1.0};  // constant intensities: 0/0, reported as 1 (see header)
  const double n = static_cast<double>(d.n);
  return {n * zz_per_w / d.ss, (n - 1.0) * 0.5 * dd_per_w / d.ss};
}

Autocorrelation autocorrelation_direct(const RoiImage& roi, const IntensityMaskData& d) {
  const Grid& g = roi.grid;
  Voxels s;
  s.reserve(d.n);
  for (int z = d.z0; z <= d.z1; ++z)
    for (int y = d.y0; y <= d.y1; ++y)
      for (int x = d.x0; x <= d.x1; ++x) {
        const std::size_t i = g.index(x, y, z);
        if (roi.mask[i]) s.push(x * g.sx, y * g.sy, z * g.sz, roi.intensity[i] - d.mean);
      }
  const PairSums p = pair_sums(s);
  if (!(p.w > 0)) return from_ratios(d, kNaN, kNaN);
  return from_ratios(d, p.wzz / p.w, p.wdd / p.w);
}

// In-place 3D DFT of a complex volume stored as pz rows of py * px cells (CV_64FC2).
void dft3(cv::Mat& vol, int px, int py, int pz, bool inverse) {
  const int flags = inverse ? (cv::DFT_INVERSE | cv::DFT_SCALE) : 0;
  parallel_slices(0, pz, [&](int z) {
    cv::Mat s(py, px, CV_64FC2, vol.ptr(z));
    cv::dft(s, s, flags);
  });
  if (pz == 1) return;
  const int cols = py * px, block = 512;
  cv::parallel_for_(cv::Range(0, (cols + block - 1) / block), [&](const cv::Range& r) {
    cv::Mat t(block, pz, CV_64FC2);
    for (int b = r.start; b < r.end; ++b) {
      const int c0 = b * block, c1 = std::min(cols, c0 + block);
      for (int z = 0; z < pz; ++z) {
        const auto* src = vol.ptr<cv::Vec2d>(z);
        for (int c = c0; c < c1; ++c) t.at<cv::Vec2d>(c - c0, z) = src[c];
      }
      cv::Mat rows = t.rowRange(0, c1 - c0);
      cv::dft(rows, rows, flags | cv::DFT_ROWS);
      for (int z = 0; z < pz; ++z) {
        auto* dst = vol.ptr<cv::Vec2d>(z);
        for (int c = c0; c < c1; ++c) dst[c] = t.at<cv::Vec2d>(c - c0, z);
      }
    }
  });
}

struct FftGrid {
  int bx, by, bz, px, py, pz;
  std::size_t cells() const { return static_cast<std::size_t>(px) * static_cast<std::size_t>(py) * static_cast<std::size_t>(pz); }
};

FftGrid fft_grid(const IntensityMaskData& d) {
  FftGrid f{};
  f.bx = d.x1 - d.x0 + 1, f.by = d.y1 - d.y0 + 1, f.bz = d.z1 - d.z0 + 1;
  f.px = cv::getOptimalDFTSize(2 * f.bx - 1);
  f.py = cv::getOptimalDFTSize(2 * f.by - 1);
  f.pz = cv::getOptimalDFTSize(2 * f.bz - 1);
  return f;
}

Autocorrelation autocorrelation_fft(const RoiImage& roi, const IntensityMaskData& d) {
  const Grid& g = roi.grid;
  const FftGrid f = fft_grid(d);
  const int cols = f.py * f.px;
  // Spectrum of w(r) = 1 / |r| (0 at r = 0) on the periodic grid, offsets taken as minimal images:
  // the kernel is real and even, so its spectrum is real.
  cv::Mat spectrum;
  {
    cv::Mat ker(f.pz, cols, CV_64FC2);
    parallel_slices(0, f.pz, [&](int k) {
      const int dz = k <= f.pz / 2 ? k : k - f.pz;
      auto* row = ker.ptr<cv::Vec2d>(k);
      for (int j = 0; j < f.py; ++j) {
        const int dy = j <= f.py / 2 ? j : j - f.py;
        for (int i = 0; i < f.px; ++i) {
          const int dx = i <= f.px / 2 ? i : i - f.px;
          const double r2 = (dx * g.sx) * (dx * g.sx) + (dy * g.sy) * (dy * g.sy) + (dz * g.sz) * (dz * g.sz);
          row[j * f.px + i] = cv::Vec2d(r2 > 0 ? 1.0 / std::sqrt(r2) : 0.0, 0.0);
        }
      }
    });
    dft3(ker, f.px, f.py, f.pz, false);
    spectrum.create(f.pz, cols, CV_64F);
    for (int k = 0; k < f.pz; ++k) {
      const auto* src = ker.ptr<cv::Vec2d>(k);
      auto* dst = spectrum.ptr<double>(k);
      for (int c = 0; c < cols; ++c) dst[c] = src[c][0];
    }
  }
  // m + i z, convolved with w.
  cv::Mat vol(f.pz, cols, CV_64FC2, cv::Scalar::all(0));
  for (int z = d.z0; z <= d.z1; ++z) {
    auto* row = vol.ptr<cv::Vec2d>(z - d.z0);
    for (int y = d.y0; y <= d.y1; ++y)
      for (int x = d.x0; x <= d.x1; ++x) {
        const std::size_t i = g.index(x, y, z);
        if (roi.mask[i]) row[(y - d.y0) * f.px + (x - d.x0)] = cv::Vec2d(1.0, roi.intensity[i] - d.mean);
      }
  }
  dft3(vol, f.px, f.py, f.pz, false);
  parallel_slices(0, f.pz, [&](int k) {
    auto* row = vol.ptr<cv::Vec2d>(k);
    const auto* s = spectrum.ptr<double>(k);
    for (int c = 0; c < cols; ++c) row[c] *= s[c];
  });
  spectrum.release();
  dft3(vol, f.px, f.py, f.pz, true);
  // Ordered pairs: W = sum A, S = sum z B, G = 2 sum z^2 A - 2 S with A = w * m, B = w * z.
  double w = 0, s_zz = 0, s_z2a = 0;
  for (int z = d.z0; z <= d.z1; ++z) {
    const auto* row = vol.ptr<cv::Vec2d>(z - d.z0);
    for (int y = d.y0; y <= d.y1; ++y)
      for (int x = d.x0; x <= d.x1; ++x) {
        const std::size_t i = g.index(x, y, z);
        if (!roi.mask[i]) continue;
        const cv::Vec2d& ab = row[(y - d.y0) * f.px + (x - d.x0)];
        const double zi = roi.intensity[i] - d.mean;
        w += ab[0];
        s_zz += zi * ab[1];
        s_z2a += zi * zi * ab[0];
      }
  }
  if (!(w > 0)) return from_ratios(d, kNaN, kNaN);
  return from_ratios(d, s_zz / w, (2.0 * s_z2a - 2.0 * s_zz) / w);
}

Autocorrelation autocorrelation_subsample(const RoiImage& roi, const IntensityMaskData& d) {
  if (d.n <= kAutocorrelationSubset) return autocorrelation_direct(roi, d);
  const Grid& g = roi.grid;
  // Subsets uniform without replacement: positions uniform in the mask's bounding box, kept when in
  // the mask and not yet drawn for this subset.
  std::mt19937_64 rng(kAutocorrelationSeed);
  auto below = [&rng](std::uint64_t n) {  // uniform in [0, n), the same on every platform
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(rng()) * n) >> 64);
  };
  const std::uint64_t bx = static_cast<std::uint64_t>(d.x1 - d.x0 + 1), by = static_cast<std::uint64_t>(d.y1 - d.y0 + 1),
                      bz = static_cast<std::uint64_t>(d.z1 - d.z0 + 1);
  const std::size_t m = kAutocorrelationSubset;
  std::vector<std::size_t> subsets;
  subsets.reserve(m * kAutocorrelationRepeats);
  std::unordered_set<std::size_t> drawn;
  for (int r = 0; r < kAutocorrelationRepeats; ++r) {
    drawn.clear();
    while (drawn.size() < m) {
      const std::uint64_t c = below(bx * by * bz);
      const auto x = static_cast<int>(c % bx) + d.x0, y = static_cast<int>((c / bx) % by) + d.y0, z = static_cast<int>(c / (bx * by)) + d.z0;
      const std::size_t i = g.index(x, y, z);
      if (roi.mask[i] && drawn.insert(i).second) subsets.push_back(i);
    }
  }
  std::vector<PairSums> sums(kAutocorrelationRepeats);
  cv::parallel_for_(cv::Range(0, kAutocorrelationRepeats), [&](const cv::Range& range) {
    std::vector<float> px(m), py(m), pz(m), pv(m);
    for (int r = range.start; r < range.end; ++r) {
      for (std::size_t k = 0; k < m; ++k) {
        const std::size_t i = subsets[static_cast<std::size_t>(r) * m + k];
        const std::size_t x = i % static_cast<std::size_t>(g.nx);
        const std::size_t y = (i / static_cast<std::size_t>(g.nx)) % static_cast<std::size_t>(g.ny);
        const std::size_t z = i / (static_cast<std::size_t>(g.nx) * static_cast<std::size_t>(g.ny));
        px[k] = static_cast<float>(static_cast<double>(x - static_cast<std::size_t>(d.x0)) * g.sx);
        py[k] = static_cast<float>(static_cast<double>(y - static_cast<std::size_t>(d.y0)) * g.sy);
        pz[k] = static_cast<float>(static_cast<double>(z - static_cast<std::size_t>(d.z0)) * g.sz);
        pv[k] = static_cast<float>(roi.intensity[i] - d.mean);
      }
      sums[static_cast<std::size_t>(r)] = pair_sums_simd(px, py, pz, pv);
    }
  });
  PairSums total;
  for (const auto& p : sums) total.add(p);  // in repeat order: deterministic
  return from_ratios(d, total.wzz / total.w, total.wdd / total.w);
}

// ---- per-mask voxel moments ----

struct MorphMoments {
  std::int64_t n = 0;
  std::array<std::int64_t, 3> s{};     // sums of x, y, z voxel indices
  std::array<std::int64_t, 6> ss{};    // xx, yy, zz, xy, xz, yz
};

struct IntensityMoments {
  std::size_t n = 0;
  double sum = 0;
  std::array<double, 3> weighted{};  // sum of X * position (mm)
};

// The voxel passes of morphology_features in one: morph_moments, intensity_moments and the first
// pass of intensity_mask_data, each sum in the same order as there (bit-identical results). Per row
// the morphological mask's counts and index sums (integers: exact in any order, branch-free), then
// the intensity mask's voxels, each added to the row sums of intensity_moments and to the running
// slice sum of intensity_mask_data.
struct VoxelPass {
  MorphMoments morph;
  IntensityMoments intensity;
  IntensityMaskData mask;  // ss included (its second pass)
};

VoxelPass voxel_pass(const RoiImage& roi) {
  const Grid& g = roi.grid;
  const auto nz = static_cast<std::size_t>(g.nz);
  std::vector<MorphMoments> morph(nz);
  std::vector<IntensityMoments> inten(nz);
  std::vector<IntensityMaskData> mask(nz);
  std::vector<double> sums(nz, 0.0);
  // Row sums of x and x^2 fit in 32 bits up to 1024 columns (1024^3 / 3 < 2^31): then 32-bit
  // lanes, selected by masks from a table of squares, without multiplications.
  const bool narrow = g.nx <= 1024;
  std::vector<std::int32_t> squares(narrow ? static_cast<std::size_t>(g.nx) : 0);
  for (std::size_t x = 0; x < squares.size(); ++x) squares[x] = static_cast<std::int32_t>(x * x);
  parallel_slices(0, g.nz, [&](int z) {
    MorphMoments mm;
    IntensityMoments im;
    IntensityMaskData d;
    d.x0 = g.nx, d.y0 = g.ny, d.z0 = g.nz;
    double sum = 0;
    const std::int64_t zz = z;
    for (int y = 0; y < g.ny; ++y) {
      const std::size_t base = g.index(0, y, z);
      const std::int64_t yy = y;
      {
        const std::uint8_t* row = roi.morph.data() + base;
        std::int64_t c = 0, sx = 0, sxx = 0;
        int x0 = 0, x1 = g.nx - 1;  // the row's extent
        while (x0 < g.nx && !row[x0]) ++x0;
        if (x0 < g.nx) {
          while (!row[x1]) --x1;
          if (narrow) {
            std::int32_t c32 = 0, sx32 = 0, sxx32 = 0;
            for (int x = x0; x <= x1; ++x) {
              const std::int32_t b = -static_cast<std::int32_t>(row[x] != 0);
              c32 -= b;
              sx32 += b & x;
              sxx32 += b & squares[static_cast<std::size_t>(x)];
            }
            c = c32, sx = sx32, sxx = sxx32;
          } else {
            for (int x = x0; x <= x1; ++x) {
              const std::int64_t b = row[x] != 0, bx = b * x;
              c += b;
              sx += bx;
              sxx += bx * x;
            }
          }
        }
        mm.n += c;
        mm.s[0] += sx, mm.s[1] += yy * c, mm.s[2] += zz * c;
        mm.ss[0] += sxx, mm.ss[1] += yy * yy * c, mm.ss[2] += zz * zz * c;
        mm.ss[3] += yy * sx, mm.ss[4] += zz * sx, mm.ss[5] += yy * zz * c;
      }
      const std::uint8_t* m = roi.mask.data() + base;
      const float* in = roi.intensity.data() + base;
      int first = 0, last = g.nx - 1;
      while (first < g.nx && !m[first]) ++first;
      double row_sum = 0, row_x = 0;
      std::size_t row_n = 0;
      if (first < g.nx) {
        while (!m[last]) --last;
        for (int x = first; x <= last; ++x) {
          if (!m[x]) continue;
          const double v = in[x];
          ++row_n;
          row_sum += v;
          row_x += v * x;
          sum += in[x];
        }
        d.n += row_n;
        d.x0 = std::min(d.x0, first), d.x1 = std::max(d.x1, last);
        d.y0 = std::min(d.y0, y), d.y1 = std::max(d.y1, y);
        d.z0 = std::min(d.z0, z), d.z1 = std::max(d.z1, z);
      }
      im.n += row_n;
      im.sum += row_sum;
      im.weighted[0] += row_x * g.sx;
      im.weighted[1] += row_sum * y * g.sy;
      im.weighted[2] += row_sum * z * g.sz;
    }
    morph[static_cast<std::size_t>(z)] = mm;
    inten[static_cast<std::size_t>(z)] = im;
    mask[static_cast<std::size_t>(z)] = d;
    sums[static_cast<std::size_t>(z)] = sum;
  });
  VoxelPass out;
  for (const auto& m : morph) {
    out.morph.n += m.n;
    for (int k = 0; k < 3; ++k) out.morph.s[static_cast<std::size_t>(k)] += m.s[static_cast<std::size_t>(k)];
    for (int k = 0; k < 6; ++k) out.morph.ss[static_cast<std::size_t>(k)] += m.ss[static_cast<std::size_t>(k)];
  }
  for (const auto& m : inten) {
    out.intensity.n += m.n;
    out.intensity.sum += m.sum;
    for (int k = 0; k < 3; ++k) out.intensity.weighted[static_cast<std::size_t>(k)] += m.weighted[static_cast<std::size_t>(k)];
  }
  out.mask = merge_mask_data(g, mask, sums);
  finish_mask_data(roi, out.mask);
  return out;
}

Autocorrelation autocorrelation_with(const RoiImage& roi, const IntensityMaskData& d, AutocorrelationMethod method) {
  if (method == AutocorrelationMethod::automatic) {
    if (d.n <= kAutocorrelationDirectMax)
      method = AutocorrelationMethod::direct;
    else if (fft_grid(d).cells() <= kAutocorrelationFftMaxCells)
      method = AutocorrelationMethod::fft;
    else
      method = AutocorrelationMethod::subsample;
  }
  switch (method) {
    case AutocorrelationMethod::direct: return autocorrelation_direct(roi, d);
    case AutocorrelationMethod::fft: return autocorrelation_fft(roi, d);
    default: return autocorrelation_subsample(roi, d);
  }
}

}  // namespace

std::span<const FeatureDef> morphology_definitions() { return kDefs; }

ConvexHull convex_hull(const std::vector<cv::Point3d>& points) {
  if (points.size() < 4) throw std::invalid_argument("convex_hull: at least 4 points needed");
  std::vector<coordT> coords;
  coords.reserve(3 * points.size());
  for (const auto& p : points) {
    coords.push_back(p.x);
    coords.push_back(p.y);
    coords.push_back(p.z);
  }
  QhullRun run;
  qhT* qh = run.get();
  char command[] = "qhull";
  const int code = qh_new_qhull(qh, 3, static_cast<int>(points.size()), coords.data(), False, command, nullptr, run.err());
  if (code != 0) throw std::invalid_argument("convex_hull: qhull failed (flat input?): " + run.messages());
  qh_getarea(qh, qh->facet_list);
  ConvexHull hull;
  hull.area = qh->totarea;
  hull.volume = qh->totvol;
  vertexT* vertex = nullptr;
  FORALLvertices hull.vertices.emplace_back(vertex->point[0], vertex->point[1], vertex->point[2]);
  std::vector<std::pair<double, cv::Vec3d>> faces;
  facetT* facet = nullptr;
  FORALLfacets faces.emplace_back(facet->isarea ? facet->f.area : 0.0, cv::Vec3d(facet->normal[0], facet->normal[1], facet->normal[2]));
  std::stable_sort(faces.begin(), faces.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& face : faces) {
    const cv::Vec3d n = face.second;  // not a structured binding: clang 14 cannot capture those
    const bool seen = std::any_of(hull.normals.begin(), hull.normals.end(), [&](const cv::Vec3d& o) { return cv::norm(o - n) < 1e-9; });
    if (!seen) hull.normals.push_back(n / cv::norm(n));
  }
  return hull;
}

std::array<double, 3> oriented_minimum_bounding_box(const ConvexHull& hull) {
  if (hull.vertices.empty()) throw std::invalid_argument("oriented_minimum_bounding_box: empty hull");
  // Candidate box directions: the normals of the largest hull facets, the coordinate axes and the
  // principal axes of the hull's vertices.
  std::vector<cv::Vec3d> normals(hull.normals.begin(),
                                 hull.normals.begin() + static_cast<std::ptrdiff_t>(std::min(hull.normals.size(), kOmbbMaxNormals)));
  normals.emplace_back(1, 0, 0);
  normals.emplace_back(0, 1, 0);
  normals.emplace_back(0, 0, 1);
  {
    cv::Vec3d mean(0, 0, 0);
    for (const auto& p : hull.vertices) mean += cv::Vec3d(p.x, p.y, p.z);
    mean *= 1.0 / static_cast<double>(hull.vertices.size());
    cv::Matx33d cov = cv::Matx33d::zeros();
    for (const auto& p : hull.vertices) {
      const cv::Vec3d d = cv::Vec3d(p.x, p.y, p.z) - mean;
      cov += d * d.t();
    }
    cv::Mat values, vectors;
    cv::eigen(cv::Mat(cov), values, vectors);
    for (int i = 0; i < 3; ++i) normals.emplace_back(vectors.at<double>(i, 0), vectors.at<double>(i, 1), vectors.at<double>(i, 2));
  }
  double best = std::numeric_limits<double>::infinity();
  std::array<double, 3> dims{0, 0, 0};
  std::vector<Vec2> proj;
  proj.reserve(hull.vertices.size());
  for (const auto& n : normals) {
    // An orthonormal basis (u, v) of the plane normal to n.
    const cv::Vec3d helper = std::abs(n[0]) < 0.9 ? cv::Vec3d(1, 0, 0) : cv::Vec3d(0, 1, 0);
    cv::Vec3d u = n.cross(helper);
    u /= cv::norm(u);
    const cv::Vec3d v = n.cross(u);
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    proj.clear();
    for (const auto& p : hull.vertices) {
      const cv::Vec3d q(p.x, p.y, p.z);
      const double h = q.dot(n);
      lo = std::min(lo, h);
      hi = std::max(hi, h);
      proj.push_back({q.dot(u), q.dot(v)});
    }
    const auto rect = min_area_rectangle(hull2d(proj));
    const double volume = rect[0] * rect[1] * (hi - lo);
    if (volume < best) {
      best = volume;
      dims = {rect[0], rect[1], hi - lo};
    }
  }
  return sorted_desc(dims);
}

std::array<double, 3> minimum_volume_enclosing_ellipsoid(const std::vector<cv::Point3d>& points, double tolerance) {
  const std::size_t n = points.size();
  if (n < 4) throw std::invalid_argument("minimum_volume_enclosing_ellipsoid: at least 4 points needed");
  if (!(tolerance > 0)) throw std::invalid_argument("minimum_volume_enclosing_ellipsoid: tolerance must be > 0");
  cv::Point3d c0(0, 0, 0);
  for (const auto& p : points) c0 += p;
  c0 *= 1.0 / static_cast<double>(n);
  std::vector<cv::Vec4d> q(n);
  for (std::size_t j = 0; j < n; ++j) {
    const cv::Point3d p = points[j] - c0;
    q[j] = cv::Vec4d(p.x, p.y, p.z, 1.0);
  }
  constexpr double d = 3.0;
  std::vector<double> u(n, 1.0 / static_cast<double>(n));
  cv::Matx44d x = cv::Matx44d::zeros();  // sum u q q', updated with u
  for (std::size_t j = 0; j < n; ++j) x += u[j] * (q[j] * q[j].t());
  for (int iteration = 0; iteration < 100000; ++iteration) {
    const cv::Matx44d xi = x.inv(cv::DECOMP_CHOLESKY);
    std::size_t arg = 0;
    double most = -1;
    for (std::size_t j = 0; j < n; ++j) {
      const double mj = (q[j].t() * xi * q[j])(0);
      if (mj > most) most = mj, arg = j;
    }
    const double step = (most - d - 1.0) / ((d + 1.0) * (most - 1.0));
    // ||u_new - u||: every weight scales by (1 - step), the chosen one also gains step.
    double change2 = 0;
    for (std::size_t j = 0; j < n; ++j) {
      const double delta = -step * u[j] + (j == arg ? step : 0.0);
      change2 += delta * delta;
      u[j] = (1.0 - step) * u[j] + (j == arg ? step : 0.0);
    }
    x = (1.0 - step) * x + step * (q[arg] * q[arg].t());
    if (std::sqrt(change2) < tolerance) break;
  }
  // Ellipsoid (x - c)' A (x - c) <= 1 with A = (1/d) S^-1, S = sum u p p' - c c': semi-axes sqrt(d s_i).
  cv::Vec3d c(0, 0, 0);
  cv::Matx33d s = cv::Matx33d::zeros();
  for (std::size_t j = 0; j < n; ++j) {
    const cv::Vec3d p(q[j][0], q[j][1], q[j][2]);
    c += u[j] * p;
    s += u[j] * (p * p.t());
  }
  s -= c * c.t();
  const auto e = eigenvalues(s);
  return {std::sqrt(d * std::max(e[0], 0.0)), std::sqrt(d * std::max(e[1], 0.0)), std::sqrt(d * std::max(e[2], 0.0))};
}

double ellipsoid_area(double a, double b, double c) {
  const auto s = sorted_desc({a, b, c});
  if (!(s[0] > 0)) return 0.0;
  const double alpha = std::sqrt(1.0 - (s[1] * s[1]) / (s[0] * s[0]));
  const double beta = std::sqrt(1.0 - (s[2] * s[2]) / (s[0] * s[0]));
  // t_nu = (alpha beta)^nu P_nu(x), x = (alpha^2 + beta^2) / (2 alpha beta), by Bonnet's recurrence
  // multiplied through by (alpha beta)^(nu + 1): no division by alpha beta (a sphere has 0).
  const double half_sum = 0.5 * (alpha * alpha + beta * beta), prod2 = alpha * alpha * beta * beta;
  double t_prev = 1.0, t = half_sum;  // t_0, t_1
  double series = 1.0 + t / (1.0 - 4.0);
  for (int nu = 1; nu < 20; ++nu) {
    const double next = ((2.0 * nu + 1.0) * half_sum * t - nu * prod2 * t_prev) / (nu + 1.0);
    t_prev = t;
    t = next;
    series += t / (1.0 - 4.0 * (nu + 1.0) * (nu + 1.0));
  }
  return 4.0 * std::numbers::pi * s[0] * s[1] * series;
}

Autocorrelation spatial_autocorrelation(const RoiImage& roi, AutocorrelationMethod method) {
  check_roi(roi, "spatial_autocorrelation");
  return autocorrelation_with(roi, intensity_mask_data(roi), method);
}

void morphology_features(const RoiImage& roi, Features& out) {
  check_roi(roi, "morphology_features");
  const Grid& g = roi.grid;
  if (std::none_of(roi.morph.begin(), roi.morph.end(), [](std::uint8_t v) { return v != 0; }))
    throw std::invalid_argument("morphology_features: empty morphological mask");

  // Mesh of the morphological mask (slices wrap roi.morph, no copy).
  Mask morph;
  morph.reserve(static_cast<std::size_t>(g.nz));
  for (int z = 0; z < g.nz; ++z)
    morph.emplace_back(g.ny, g.nx, CV_8U, const_cast<std::uint8_t*>(roi.morph.data() + g.index(0, 0, z)));
  const MeshMeasures mesh = mesh_measures(morph, Spacing{g.sx, g.sy, g.sz});
  const double volume = mesh.volume_mm3, area = mesh.area_mm2;
  const ConvexHull hull = convex_hull(mesh.hull_candidates);

  // Voxel centres of the morphological mask: count, centroid, covariance (N - 1).
  const VoxelPass pass = voxel_pass(roi);
  const MorphMoments& mm = pass.morph;
  const double n = static_cast<double>(mm.n);
  const std::array<double, 3> sp{g.sx, g.sy, g.sz};
  const cv::Vec3d centroid(mm.s[0] * g.sx / n, mm.s[1] * g.sy / n, mm.s[2] * g.sz / n);
  cv::Matx33d cov = cv::Matx33d::zeros();
  if (mm.n > 1) {
    const int pairs[6][2] = {{0, 0}, {1, 1}, {2, 2}, {0, 1}, {0, 2}, {1, 2}};
    for (int k = 0; k < 6; ++k) {
      const auto a = static_cast<std::size_t>(pairs[k][0]), b = static_cast<std::size_t>(pairs[k][1]);
      // (N sum ab - sum a sum b) / (N (N - 1)), exactly in integers before the division.
      const __int128 num = static_cast<__int128>(mm.n) * mm.ss[static_cast<std::size_t>(k)] - static_cast<__int128>(mm.s[a]) * mm.s[b];
      const double v = static_cast<double>(num) / (n * (n - 1.0)) * sp[a] * sp[b];
      cov(pairs[k][0], pairs[k][1]) = cov(pairs[k][1], pairs[k][0]) = v;
    }
  }
  auto lambda = eigenvalues(cov);
  for (auto& l : lambda) l = std::max(l, 0.0);
  const double sa = 2.0 * std::sqrt(lambda[0]), sb = 2.0 * std::sqrt(lambda[1]), sc = 2.0 * std::sqrt(lambda[2]);

  // Intensity mask.
  const IntensityMoments& im = pass.intensity;
  const double mean = im.sum / static_cast<double>(im.n);
  const cv::Vec3d weighted_centroid(im.weighted[0] / im.sum, im.weighted[1] / im.sum, im.weighted[2] / im.sum);

  // Bounding boxes and ellipsoids.
  cv::Point3d lo(std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity());
  cv::Point3d hi = -lo;
  for (const auto& p : hull.vertices) {
    lo = cv::Point3d(std::min(lo.x, p.x), std::min(lo.y, p.y), std::min(lo.z, p.z));
    hi = cv::Point3d(std::max(hi.x, p.x), std::max(hi.y, p.y), std::max(hi.z, p.z));
  }
  const std::array<double, 3> aabb{hi.x - lo.x, hi.y - lo.y, hi.z - lo.z};
  const auto ombb = oriented_minimum_bounding_box(hull);
  const auto mvee = minimum_volume_enclosing_ellipsoid(hull.vertices);
  const double four_thirds_pi = 4.0 / 3.0 * std::numbers::pi;
  const bool spans_3d = lambda[2] > 0;

  const Autocorrelation ac = autocorrelation_with(roi, pass.mask, AutocorrelationMethod::automatic);

  const double sph = std::cbrt(36.0 * std::numbers::pi * volume * volume);  // (36 pi V^2)^(1/3)
  const double values[] = {
      volume,
      n * g.voxel_volume(),
      area,
      area / volume,
      volume / (std::sqrt(std::numbers::pi) * std::pow(area, 1.5)),
      36.0 * std::numbers::pi * volume * volume / (area * area * area),
      area / sph,
      sph / area,
      area / sph - 1.0,
      cv::norm(centroid - weighted_centroid),
      max_pairwise_distance(hull.vertices),
      2.0 * sa,
      2.0 * sb,
      2.0 * sc,
      lambda[0] > 0 ? std::sqrt(lambda[1] / lambda[0]) : kNaN,
      lambda[0] > 0 ? std::sqrt(lambda[2] / lambda[0]) : kNaN,
      volume / (aabb[0] * aabb[1] * aabb[2]),
      area / box_area(aabb),
      volume / (ombb[0] * ombb[1] * ombb[2]),
      area / box_area(ombb),
      spans_3d ? volume / (four_thirds_pi * sa * sb * sc) : kNaN,
      spans_3d ? area / ellipsoid_area(sa, sb, sc) : kNaN,
      volume / (four_thirds_pi * mvee[0] * mvee[1] * mvee[2]),
      area / ellipsoid_area(mvee[0], mvee[1], mvee[2]),
      volume / hull.volume,
      area / hull.area,
      volume * mean,
      ac.moran_i,
      ac.geary_c,
  };
  static_assert(std::size(values) == std::size(kDefs));
  for (std::size_t i = 0; i < std::size(kDefs); ++i) out.push_back({std::string(kDefs[i].base_tag), values[i]});
}

}  // namespace analysis::kernels::ibsi
