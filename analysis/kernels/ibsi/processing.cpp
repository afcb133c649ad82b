#include "analysis/kernels/ibsi/processing.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <deque>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace analysis::kernels::ibsi {
namespace {

using Method = Interpolation::Method;

// ---------------------------------------------------------------------------------------------
// Grid alignment (manual 2.4.1, "align grid centres"): along one axis, n_a voxels of spacing s_a
// become n_b = ceil(n_a s_a / s_b) voxels of spacing s_b; the centres of both grids coincide, so
// output voxel i sits at source index (i s_b + offset) / s_a with
// offset = (s_a (n_a - 1) - s_b (n_b - 1)) / 2 (in mm from the first source voxel centre).
constexpr std::size_t kMaxRoiVoxels = std::size_t{1} << 30;  // 6 GB of RoiImage: beyond the worker's memory

struct Axis {
  int n_in = 0;
  double s_in = 1;
  int n_out = 0;
  double s_out = 1;
  bool interpolated = false;
  double offset = 0;

  static constexpr int kMaxAxisVoxels = 1 << 14;  // a 16k grid axis: far beyond any real image
  static Axis identity(int n, double s) { return {n, s, n, s, false, 0}; }
  static Axis resampled(int n, double s_in, double s_out) {
    Axis a;
    a.n_in = n;
    a.s_in = s_in;
    a.s_out = s_out;
    const double n_out = std::ceil(n * s_in / s_out - 1e-9);
    if (!(n_out <= kMaxAxisVoxels))  // also NaN
      throw std::invalid_argument(fmt::format("prepare_roi: interpolating {} voxels of {} mm to {} mm gives more than {} "
                                              "voxels along an axis",
                                              n, s_in, s_out, kMaxAxisVoxels));
    a.n_out = std::max(1, static_cast<int>(n_out));
    a.interpolated = true;
    a.offset = (s_in * (n - 1) - s_out * (a.n_out - 1)) / 2;
    return a;
  }
  double source(int i) const { return interpolated ? (i * s_out + offset) / s_in : i; }
};

// 1D interpolation weights of a range of output voxels: `k` taps per output voxel, source
// indices in the full source axis (already clamped or mirrored into 0..n_in-1).
struct Taps {
  int k = 1;
  int first = 0;  // first output index
  std::vector<int> idx;
  std::vector<float> w;
  int count() const { return static_cast<int>(idx.size()) / k; }
  int min_index() const { return *std::min_element(idx.begin(), idx.end()); }
  int max_index() const { return *std::max_element(idx.begin(), idx.end()); }
};

int mirror(int j, int n) {
  if (n == 1) return 0;
  const int period = 2 * (n - 1);
  j = std::abs(j) % period;
  return j > n - 1 ? period - j : j;
}

Taps make_taps(const Axis& a, Method m, int o0, int o1) {
  Taps t;
  t.first = o0;
  if (!a.interpolated) m = Method::nearest;  // the original grid: the samples themselves
  t.k = m == Method::nearest ? 1 : m == Method::linear ? 2 : 4;
  const int n = a.n_in;
  for (int i = o0; i <= o1; ++i) {
    // Outside the span of the source voxel centres the value of the nearest edge is used.
    const double c = std::clamp(a.source(i), 0.0, static_cast<double>(n - 1));
    if (m == Method::nearest) {
      t.idx.push_back(std::clamp(static_cast<int>(std::floor(c + 0.5)), 0, n - 1));
      t.w.push_back(1.f);
    } else if (m == Method::linear) {
      const int i0 = std::min(static_cast<int>(std::floor(c)), n - 1);
      const double f = c - i0;
      t.idx.push_back(i0);
      t.idx.push_back(std::min(i0 + 1, n - 1));
      t.w.push_back(static_cast<float>(1 - f));
      t.w.push_back(static_cast<float>(f));
    } else {  // cubic B-spline basis at distances 1+f, f, 1-f, 2-f
      const int i0 = static_cast<int>(std::floor(c));
      const double f = c - i0, g = 1 - f;
      const double w[4] = {g * g * g / 6, (4 - 6 * f * f + 3 * f * f * f) / 6, (4 - 6 * g * g + 3 * g * g * g) / 6,
                           f * f * f / 6};
      for (int j = 0; j < 4; ++j) {
        t.idx.push_back(mirror(i0 - 1 + j, n));
        t.w.push_back(static_cast<float>(w[j]));
      }
    }
  }
  return t;
}

// Cubic B-spline interpolation coefficients (in place) of `lines` neighbouring lines of n samples:
// sample i of line l at base[i * stride + l]; mirror-symmetric boundaries. The causal and
// anti-causal recursive filters with the pole z = sqrt(3) - 2 and gain 6 (Unser, Aldroubi, Eden
// 1991; Thevenaz, Blu, Unser 2000), run on all lines at once so that a filter across rows or
// slices reads memory in order.
void bspline_prefilter(float* base, int n, std::ptrdiff_t stride, int lines) {
  if (n < 2) return;
  const double z = std::sqrt(3.0) - 2.0;
  const float lambda = static_cast<float>((1 - z) * (1 - 1 / z));
  const float zf = static_cast<float>(z);
  auto line = [&](int i) { return base + i * stride; };
  for (int i = 0; i < n; ++i) {
    float* p = line(i);
    for (int l = 0; l < lines; ++l) p[l] *= lambda;
  }
  // Initial causal coefficient: sum_k z^k c[k] over the mirrored signal.
  thread_local std::vector<double> c0;
  c0.assign(static_cast<std::size_t>(lines), 0.0);
  const int horizon = 24;  // |z|^24 < 2e-14
  if (n > horizon) {
    double zn = 1;
    for (int k = 0; k < horizon; ++k, zn *= z) {
      const float* p = line(k);
      for (int l = 0; l < lines; ++l) c0[static_cast<std::size_t>(l)] += zn * p[l];
    }
  } else {  // exact, for the mirror extension of period 2n - 2
    double zn = z, z2n = std::pow(z, n - 1);
    const double iz = 1 / z;
    for (int l = 0; l < lines; ++l) c0[static_cast<std::size_t>(l)] = line(0)[l] + z2n * line(n - 1)[l];
    z2n *= z2n * iz;
    for (int k = 1; k < n - 1; ++k, zn *= z, z2n *= iz) {
      const float* p = line(k);
      for (int l = 0; l < lines; ++l) c0[static_cast<std::size_t>(l)] += (zn + z2n) * p[l];
    }
    for (int l = 0; l < lines; ++l) c0[static_cast<std::size_t>(l)] /= 1 - zn * zn;
  }
  for (int l = 0; l < lines; ++l) line(0)[l] = static_cast<float>(c0[static_cast<std::size_t>(l)]);
  for (int i = 1; i < n; ++i) {
    float* p = line(i);
    const float* q = line(i - 1);
    for (int l = 0; l < lines; ++l) p[l] += zf * q[l];
  }
  {
    float* last = line(n - 1);
    const float* prev = line(n - 2);
    const float f = static_cast<float>(z / (z * z - 1));
    for (int l = 0; l < lines; ++l) last[l] = f * (zf * prev[l] + last[l]);
  }
  for (int i = n - 2; i >= 0; --i) {
    float* p = line(i);
    const float* q = line(i + 1);
    for (int l = 0; l < lines; ++l) p[l] = zf * (q[l] - p[l]);
  }
}

struct Box {
  int x0, x1, y0, y1, z0, z1;  // inclusive
  int nx() const { return x1 - x0 + 1; }
  int ny() const { return y1 - y0 + 1; }
  int nz() const { return z1 - z0 + 1; }
};

// Where resampling reads from: the image (or mask) slices, or a block of cubic B-spline
// coefficients covering part of them. Indices are those of the whole source volume.
struct Source {
  const std::vector<cv::Mat>* slices = nullptr;
  bool binary = false;          // a mask: non-zero -> 1
  int x_off = 0, y_off = 0, z_off = 0;  // index of the slices' first voxel in the source volume

  // rows y0..y0+ny-1, columns x0..x0+nx-1 of slice z, as float, into out (ny x nx).
  void read(int z, int y0, int ny, int x0, int nx, float* out) const {
    const cv::Mat roi = (*slices)[static_cast<std::size_t>(z - z_off)](cv::Rect(x0 - x_off, y0 - y_off, nx, ny));
    if (binary) {
      for (int y = 0; y < ny; ++y) {
        const std::uint8_t* r = roi.ptr<std::uint8_t>(y);
        float* o = out + static_cast<std::ptrdiff_t>(y) * nx;
        for (int x = 0; x < nx; ++x) o[x] = r[x] ? 1.f : 0.f;
      }
    } else {
      cv::Mat dst(ny, nx, CV_32F, out);
      roi.convertTo(dst, CV_32F);
    }
  }
};

// Interpolation of the source onto output voxels, separable (z, then y, then x: the same as
// tensor-product trilinear / tricubic interpolation), one output slice at a time on OpenCV's
// threads with per-thread scratch planes: no volume-sized intermediate. sink(z, y, row) receives
// each output row (output-box-relative z, y; row of tx.count() values), concurrently for different z.
template <typename Sink>
void resample_rows(const Source& src, const Taps& tx, const Taps& ty, const Taps& tz, Sink&& sink) {
  const int sx0 = tx.min_index(), nsx = tx.max_index() - sx0 + 1;
  const int sy0 = ty.min_index(), nsy = ty.max_index() - sy0 + 1;
  const int nox = tx.count(), noy = ty.count(), noz = tz.count();
  cv::parallel_for_(cv::Range(0, noz), [&](const cv::Range& r) {
    thread_local std::vector<float> plane, tmp, rows, out;
    plane.resize(static_cast<std::size_t>(nsy) * nsx);
    tmp.resize(plane.size());
    rows.resize(static_cast<std::size_t>(noy) * nsx);
    out.resize(static_cast<std::size_t>(nox));
    for (int i = r.start; i < r.end; ++i) {
      bool first = true;
      for (int j = 0; j < tz.k; ++j) {
        const float w = tz.w[static_cast<std::size_t>(i * tz.k + j)];
        if (w == 0.f) continue;
        const int z = tz.idx[static_cast<std::size_t>(i * tz.k + j)];
        if (first) {
          src.read(z, sy0, nsy, sx0, nsx, plane.data());
          if (w != 1.f)
            for (float& v : plane) v *= w;
          first = false;
        } else {
          src.read(z, sy0, nsy, sx0, nsx, tmp.data());
          for (std::size_t p = 0; p < plane.size(); ++p) plane[p] += w * tmp[p];
        }
      }
      if (first) std::fill(plane.begin(), plane.end(), 0.f);
      for (int y = 0; y < noy; ++y) {
        float* q = rows.data() + static_cast<std::ptrdiff_t>(y) * nsx;
        std::fill(q, q + nsx, 0.f);
        for (int k = 0; k < ty.k; ++k) {
          const float w = ty.w[static_cast<std::size_t>(y * ty.k + k)];
          if (w == 0.f) continue;
          const float* p = plane.data() + static_cast<std::ptrdiff_t>(ty.idx[static_cast<std::size_t>(y * ty.k + k)] - sy0) * nsx;
          for (int x = 0; x < nsx; ++x) q[x] += w * p[x];
        }
        for (int x = 0; x < nox; ++x) {
          float acc = 0;
          for (int k = 0; k < tx.k; ++k)
            acc += tx.w[static_cast<std::size_t>(x * tx.k + k)] * q[tx.idx[static_cast<std::size_t>(x * tx.k + k)] - sx0];
          out[static_cast<std::size_t>(x)] = acc;
        }
        sink(i, y, out.data());
      }
    }
  });
}

// Interpolates the stack onto the output box of the new grid; sink as for resample_rows.
//
// The cubic B-spline needs its coefficients (the samples prefiltered along each interpolated axis)
// first. Prefilter and resampling along different axes commute, so each axis is prefiltered just
// before it is resampled: x and y within each source slice, then z on the (x, y)-resampled block,
// which for a downsampling is several times smaller than the source. The recursive prefilter runs
// in from 16 voxels beyond what the taps touch (its influence decays as |z|^k = 0.268^k: < 1e-9);
// at the image edges its mirror boundary is exact.
template <typename Sink>
void resample(const std::vector<cv::Mat>& stack, bool binary, const std::array<Axis, 3>& ax, Method m, const Box& out, Sink&& sink) {
  const Taps tx = make_taps(ax[0], m, out.x0, out.x1);
  const Taps ty = make_taps(ax[1], m, out.y0, out.y1);
  const Taps tz = make_taps(ax[2], m, out.z0, out.z1);
  const Source src{&stack, binary};
  if (!ax[0].interpolated && !ax[1].interpolated && !ax[2].interpolated) {
    // The original grid (taps: the samples themselves, weight 1): each output slice is a block of
    // a source slice. The values are what the separable passes give: v + 0 (-0 becomes +0).
    parallel_slices(0, tz.count(), [&](int z) {
      thread_local std::vector<float> plane;
      const int nox = tx.count(), noy = ty.count();
      plane.resize(static_cast<std::size_t>(nox) * static_cast<std::size_t>(noy));
      src.read(tz.idx[static_cast<std::size_t>(z)], ty.idx.front(), noy, tx.idx.front(), nox, plane.data());
      for (int y = 0; y < noy; ++y) {
        float* row = plane.data() + static_cast<std::ptrdiff_t>(y) * nox;
        for (int x = 0; x < nox; ++x) row[x] += 0.f;
        sink(z, y, row);
      }
    });
    return;
  }
  const bool cubic = m == Method::cubic && (ax[0].interpolated || ax[1].interpolated || ax[2].interpolated);
  if (!cubic) {
    resample_rows(src, tx, ty, tz, sink);
    return;
  }
  const int pad = 16;
  auto range = [&](const Taps& t, const Axis& a) {
    const int p = a.interpolated ? pad : 0;
    return std::pair{std::max(0, t.min_index() - p), std::min(a.n_in - 1, t.max_index() + p)};
  };
  const auto rx = range(tx, ax[0]), ry = range(ty, ax[1]), rz = range(tz, ax[2]);
  const int nsx = rx.second - rx.first + 1, nsy = ry.second - ry.first + 1, nsz = rz.second - rz.first + 1;
  const int nox = tx.count(), noy = ty.count(), noz = tz.count();
  const std::size_t oplane = static_cast<std::size_t>(nox) * noy;
  std::vector<float> block(oplane * nsz);  // source slices, resampled in x and y
  parallel_slices(0, nsz, [&](int zs) {
    thread_local std::vector<float> plane, xr;
    plane.resize(static_cast<std::size_t>(nsx) * nsy);
    xr.resize(static_cast<std::size_t>(nox) * nsy);
    src.read(rz.first + zs, ry.first, nsy, rx.first, nsx, plane.data());
    for (int y = 0; y < nsy; ++y) {
      const float* in = plane.data() + static_cast<std::ptrdiff_t>(y) * nsx;
      if (ax[0].interpolated) bspline_prefilter(plane.data() + static_cast<std::ptrdiff_t>(y) * nsx, nsx, 1, 1);
      float* o = xr.data() + static_cast<std::ptrdiff_t>(y) * nox;
      for (int x = 0; x < nox; ++x) {
        float acc = 0;
        for (int k = 0; k < tx.k; ++k)
          acc += tx.w[static_cast<std::size_t>(x * tx.k + k)] * in[tx.idx[static_cast<std::size_t>(x * tx.k + k)] - rx.first];
        o[x] = acc;
      }
    }
    if (ax[1].interpolated) bspline_prefilter(xr.data(), nsy, nox, nox);
    for (int y = 0; y < noy; ++y) {
      float* o = block.data() + static_cast<std::size_t>(zs) * oplane + static_cast<std::size_t>(y) * nox;
      std::fill(o, o + nox, 0.f);
      for (int k = 0; k < ty.k; ++k) {
        const float w = ty.w[static_cast<std::size_t>(y * ty.k + k)];
        const float* in = xr.data() + static_cast<std::ptrdiff_t>(ty.idx[static_cast<std::size_t>(y * ty.k + k)] - ry.first) * nox;
        for (int x = 0; x < nox; ++x) o[x] += w * in[x];
      }
    }
  });
  if (ax[2].interpolated)
    parallel_slices(0, noy, [&](int y) {
      bspline_prefilter(block.data() + static_cast<std::ptrdiff_t>(y) * nox, nsz, static_cast<std::ptrdiff_t>(oplane), nox);
    });
  parallel_slices(0, noz, [&](int z) {
    thread_local std::vector<float> row;
    row.resize(static_cast<std::size_t>(nox));
    for (int y = 0; y < noy; ++y) {
      std::fill(row.begin(), row.end(), 0.f);
      for (int k = 0; k < tz.k; ++k) {
        const float w = tz.w[static_cast<std::size_t>(z * tz.k + k)];
        const float* in = block.data() + static_cast<std::size_t>(tz.idx[static_cast<std::size_t>(z * tz.k + k)] - rz.first) * oplane +
                          static_cast<std::size_t>(y) * nox;
        for (int x = 0; x < nox; ++x) row[static_cast<std::size_t>(x)] += w * in[x];
      }
      sink(z, y, row.data());
    }
  });
}

float round_half_away(float v) { return std::round(v); }

// out[i] = f(in[i]) where m[i] is set, else 0, for i < n; returns the largest. Also built for AVX2
// (picked at load time): floor and the conversions in vector registers instead of a call per voxel
// (SSE2 has no floor); the same operations on each voxel either way, so the same levels.
template <typename F>
PACSNODE_TEMPLATE_AVX2_CLONES int fill_levels(const std::uint8_t* m, const float* in, int* out, std::size_t n, F f) {
  int top = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const int v = m[i] ? f(in[i]) : 0;
    out[i] = v;
    top = std::max(top, v);
  }
  return top;
}

// fill_levels for a fixed bin size: floor((X - x0) / w) + 1, computed for every voxel and kept
// where the mask is set (no branch: vectorised). The quotient is clamped to [0, 2^31 - 2] first,
// so that voxels outside the mask (any value) convert without overflow; inside it, X >= x0 and
// (X - x0) / w < 2^31 - 2 (checked by the caller), so the clamp changes nothing there. GCC
// vectorises it only when it may ignore floating-point exception flags (no-trapping-math: the
// values are the IEEE ones all the same; nothing here reads the flags).
#if defined(__GNUC__) && !defined(__clang__)
#define PACSNODE_NO_TRAPPING_MATH optimize("no-trapping-math"),
#else
#define PACSNODE_NO_TRAPPING_MATH
#endif
__attribute__((PACSNODE_NO_TRAPPING_MATH target_clones("avx2", "default"))) int fill_fixed_bin_size(const std::uint8_t* m, const float* in, int* out,
                                                                           std::size_t n, double x0, double w) {
  constexpr double kTop = std::numeric_limits<int>::max() - 1;
  int top = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double q = std::floor((in[i] - x0) / w);
    q = q >= 0.0 ? q : 0.0;  // NaN too
    q = q <= kTop ? q : kTop;
    const int v = m[i] ? static_cast<int>(q) + 1 : 0;
    out[i] = v;
    top = std::max(top, v);
  }
  return top;
}

// ---------------------------------------------------------------------------------------------
// Diagnostics.

struct Stats {
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  std::size_t n = 0;
  void add(double v) {
    sum += v;
    min = std::min(min, v);
    max = std::max(max, v);
    ++n;
  }
  void merge(const Stats& o) {
    sum += o.sum;
    min = std::min(min, o.min);
    max = std::max(max, o.max);
    n += o.n;
  }
  double mean() const { return n ? sum / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN(); }
};

void image_rows(Features& out, const char* stage, int nx, int ny, int nz, double sx, double sy, double sz, const Stats& st) {
  out.push_back({fmt::format("img_dim_x_{}", stage), static_cast<double>(nx)});
  out.push_back({fmt::format("img_dim_y_{}", stage), static_cast<double>(ny)});
  out.push_back({fmt::format("img_dim_z_{}", stage), static_cast<double>(nz)});
  out.push_back({fmt::format("vox_dim_x_{}", stage), sx});
  out.push_back({fmt::format("vox_dim_y_{}", stage), sy});
  out.push_back({fmt::format("vox_dim_z_{}", stage), sz});
  out.push_back({fmt::format("mean_int_{}", stage), st.mean()});
  out.push_back({fmt::format("min_int_{}", stage), st.min});
  out.push_back({fmt::format("max_int_{}", stage), st.max});
}

struct BoundingBox {
  int x0 = std::numeric_limits<int>::max(), x1 = -1, y0 = std::numeric_limits<int>::max(), y1 = -1,
      z0 = std::numeric_limits<int>::max(), z1 = -1;
  void add(int x, int y, int z) {
    x0 = std::min(x0, x); x1 = std::max(x1, x);
    y0 = std::min(y0, y); y1 = std::max(y1, y);
    z0 = std::min(z0, z); z1 = std::max(z1, z);
  }
  void merge(const BoundingBox& o) {
    x0 = std::min(x0, o.x0); x1 = std::max(x1, o.x1);
    y0 = std::min(y0, o.y0); y1 = std::max(y1, o.y1);
    z0 = std::min(z0, o.z0); z1 = std::max(z1, o.z1);
  }
  bool empty() const { return x1 < 0; }
  int dx() const { return empty() ? 0 : x1 - x0 + 1; }
  int dy() const { return empty() ? 0 : y1 - y0 + 1; }
  int dz() const { return empty() ? 0 : z1 - z0 + 1; }
};

// Bounding boxes, counts and intensity statistics of the masks of an RoiImage.
struct RoiSummary {
  BoundingBox morph_box, int_box;
  std::size_t morph_count = 0;
  Stats intensity;  // over the intensity mask
};

RoiSummary summarise(const RoiImage& r) {
  const Grid& g = r.grid;
  std::vector<RoiSummary> per(static_cast<std::size_t>(g.nz));
  parallel_slices(0, g.nz, [&](int z) {
    RoiSummary& s = per[static_cast<std::size_t>(z)];
    for (int y = 0; y < g.ny; ++y) {
      const std::size_t base = g.index(0, y, z);
      for (int x = 0; x < g.nx; ++x) {
        if (r.morph[base + x]) {
          s.morph_box.add(x, y, z);
          ++s.morph_count;
        }
        if (r.mask[base + x]) {
          s.int_box.add(x, y, z);
          s.intensity.add(r.intensity[base + x]);
        }
      }
    }
  });
  RoiSummary all;
  for (const auto& s : per) {
    all.morph_box.merge(s.morph_box);
    all.int_box.merge(s.int_box);
    all.morph_count += s.morph_count;
    all.intensity.merge(s.intensity);
  }
  return all;
}

void roi_rows(Features& out, const char* stage, int nx, int ny, int nz, const RoiSummary& s) {
  out.push_back({fmt::format("int_mask_dim_x_{}", stage), static_cast<double>(nx)});
  out.push_back({fmt::format("int_mask_dim_y_{}", stage), static_cast<double>(ny)});
  out.push_back({fmt::format("int_mask_dim_z_{}", stage), static_cast<double>(nz)});
  out.push_back({fmt::format("int_mask_bb_dim_x_{}", stage), static_cast<double>(s.int_box.dx())});
  out.push_back({fmt::format("int_mask_bb_dim_y_{}", stage), static_cast<double>(s.int_box.dy())});
  out.push_back({fmt::format("int_mask_bb_dim_z_{}", stage), static_cast<double>(s.int_box.dz())});
  out.push_back({fmt::format("morph_mask_bb_dim_x_{}", stage), static_cast<double>(s.morph_box.dx())});
  out.push_back({fmt::format("morph_mask_bb_dim_y_{}", stage), static_cast<double>(s.morph_box.dy())});
  out.push_back({fmt::format("morph_mask_bb_dim_z_{}", stage), static_cast<double>(s.morph_box.dz())});
  out.push_back({fmt::format("int_mask_vox_count_{}", stage), static_cast<double>(s.intensity.n)});
  out.push_back({fmt::format("morph_mask_vox_count_{}", stage), static_cast<double>(s.morph_count)});
  out.push_back({fmt::format("int_mask_mean_int_{}", stage), s.intensity.mean()});
  out.push_back({fmt::format("int_mask_min_int_{}", stage), s.intensity.min});
  out.push_back({fmt::format("int_mask_max_int_{}", stage), s.intensity.max});
}

Stats stack_stats(const std::vector<cv::Mat>& image) {
  std::vector<Stats> per(image.size());
  parallel_slices(0, static_cast<int>(image.size()), [&](int z) {
    const cv::Mat& m = image[static_cast<std::size_t>(z)];
    double lo = 0, hi = 0;
    cv::minMaxLoc(m, &lo, &hi);
    auto& s = per[static_cast<std::size_t>(z)];
    s.sum = cv::sum(m)[0];
    s.min = lo;
    s.max = hi;
    s.n = m.total();
  });
  Stats all;
  for (const auto& s : per) all.merge(s);
  return all;
}

// Statistics of the whole interpolated image, interpolated in chunks of output slices.
Stats interpolated_stats(const std::vector<cv::Mat>& image, const std::array<Axis, 3>& ax, Method m, bool round) {
  Stats all;
  const int chunk = 32;  // output slices at a time: bounds the cubic coefficient block
  std::vector<Stats> per(static_cast<std::size_t>(chunk));
  for (int z0 = 0; z0 < ax[2].n_out; z0 += chunk) {
    const Box b{0, ax[0].n_out - 1, 0, ax[1].n_out - 1, z0, std::min(ax[2].n_out, z0 + chunk) - 1};
    std::fill(per.begin(), per.end(), Stats{});
    resample(image, false, ax, m, b, [&](int z, int, const float* row) {
      Stats& st = per[static_cast<std::size_t>(z)];
      for (int x = 0; x < b.nx(); ++x) st.add(round ? round_half_away(row[x]) : row[x]);
    });
    for (const auto& st : per) all.merge(st);
  }
  return all;
}

void check_settings(const ProcessingSettings& s) {
  const auto& in = s.interpolation;
  if (in.spacing)
    for (int i = 0; i < (in.in_plane_only ? 2 : 3); ++i)
      if (!std::isfinite((*in.spacing)[static_cast<std::size_t>(i)]) || !((*in.spacing)[static_cast<std::size_t>(i)] > 0))
        throw std::invalid_argument("prepare_roi: interpolation spacing must be finite and > 0");
  if (!(in.mask_threshold > 0) || !(in.mask_threshold <= 1))
    throw std::invalid_argument("prepare_roi: mask threshold must be in (0, 1]");
  if (!std::isfinite(in.margin_mm) || in.margin_mm < 0) throw std::invalid_argument("prepare_roi: margin must be >= 0 mm");
  const auto& r = s.resegmentation;
  if (r.min && r.max && *r.min > *r.max) throw std::invalid_argument("prepare_roi: re-segmentation range min > max");
}

}  // namespace

RoiImage prepare_roi(const std::vector<cv::Mat>& image, const Mask& mask, const Spacing& spacing,
                     const ProcessingSettings& s, Features* diagnostics) {
  check_stack(image, -1, "prepare_roi image");
  check_stack(mask, CV_8U, "prepare_roi mask");
  check_same_shape(image, mask, "prepare_roi image and mask");
  check_spacing(spacing, "prepare_roi");
  check_settings(s);
  const auto& ip = s.interpolation;
  const int nx = image.front().cols, ny = image.front().rows, nz = static_cast<int>(image.size());

  std::array<Axis, 3> ax{Axis::identity(nx, spacing.col), Axis::identity(ny, spacing.row), Axis::identity(nz, spacing.slice)};
  if (ip.spacing) {
    ax[0] = Axis::resampled(nx, spacing.col, (*ip.spacing)[0]);
    ax[1] = Axis::resampled(ny, spacing.row, (*ip.spacing)[1]);
    if (!ip.in_plane_only) ax[2] = Axis::resampled(nz, spacing.slice, (*ip.spacing)[2]);
  }

  // The original mask's bounding box (and, for the diagnostics, its voxels' statistics).
  std::vector<BoundingBox> boxes(static_cast<std::size_t>(nz));
  std::vector<Stats> mask_stats(static_cast<std::size_t>(nz));
  parallel_slices(0, nz, [&](int z) {
    const cv::Mat& m = mask[static_cast<std::size_t>(z)];
    thread_local std::vector<float> row;
    row.resize(static_cast<std::size_t>(nx));
    for (int y = 0; y < ny; ++y) {
      if (cv::countNonZero(m.row(y)) == 0) continue;  // vectorised: most rows of a slice are empty
      const std::uint8_t* r = m.ptr<std::uint8_t>(y);
      int x0 = 0, x1 = nx - 1;
      while (!r[x0]) ++x0;
      while (!r[x1]) --x1;
      boxes[static_cast<std::size_t>(z)].add(x0, y, z);
      boxes[static_cast<std::size_t>(z)].add(x1, y, z);
      if (!diagnostics) continue;
      Source{&image}.read(z, y, 1, 0, nx, row.data());
      for (int x = x0; x <= x1; ++x)
        if (r[x]) mask_stats[static_cast<std::size_t>(z)].add(row[static_cast<std::size_t>(x)]);
    }
  });
  BoundingBox box0;
  Stats roi0;
  for (int z = 0; z < nz; ++z) {
    box0.merge(boxes[static_cast<std::size_t>(z)]);
    roi0.merge(mask_stats[static_cast<std::size_t>(z)]);
  }
  if (box0.empty()) throw std::invalid_argument("prepare_roi: empty mask");

  const bool image_diag = diagnostics && s.image_diagnostics;
  if (image_diag) image_rows(*diagnostics, "init_img", nx, ny, nz, spacing.col, spacing.row, spacing.slice, stack_stats(image));
  if (diagnostics) {
    RoiSummary r0;
    r0.morph_box = box0;
    r0.int_box = box0;
    r0.morph_count = roi0.n;
    r0.intensity = roi0;
    roi_rows(*diagnostics, "init_roi", nx, ny, nz, r0);
  }

  // Output voxels the interpolated mask can reach: those with a tap of non-zero weight inside the
  // original bounding box.
  auto reach = [&](const Axis& a, int b0, int b1) {
    const Taps t = make_taps(a, ip.mask_method, 0, a.n_out - 1);
    int lo = a.n_out, hi = -1;
    for (int i = 0; i < t.count(); ++i)
      for (int j = 0; j < t.k; ++j) {
        const int k = t.idx[static_cast<std::size_t>(i * t.k + j)];
        if (t.w[static_cast<std::size_t>(i * t.k + j)] != 0.f && k >= b0 && k <= b1) {
          lo = std::min(lo, i);
          hi = std::max(hi, i);
        }
      }
    return std::pair{lo, hi};
  };
  const auto [cx0, cx1] = reach(ax[0], box0.x0, box0.x1);
  const auto [cy0, cy1] = reach(ax[1], box0.y0, box0.y1);
  const auto [cz0, cz1] = reach(ax[2], box0.z0, box0.z1);
  if (cx1 < 0 || cy1 < 0 || cz1 < 0) throw std::invalid_argument("prepare_roi: the mask vanishes on the new grid");
  const Box cand{cx0, cx1, cy0, cy1, cz0, cz1};

  // The ROI grid: every voxel the mask can reach plus the margin, within the image (so at least
  // margin_mm around the morphological mask's bounding box).
  auto margin = [&](const Axis& a) {
    return static_cast<int>(std::min<double>(a.n_out, std::ceil(ip.margin_mm / a.s_out - 1e-9)));
  };
  const Box rb{std::max(0, cx0 - margin(ax[0])), std::min(ax[0].n_out - 1, cx1 + margin(ax[0])),
               std::max(0, cy0 - margin(ax[1])), std::min(ax[1].n_out - 1, cy1 + margin(ax[1])),
               std::max(0, cz0 - margin(ax[2])), std::min(ax[2].n_out - 1, cz1 + margin(ax[2]))};
  RoiImage roi;
  roi.grid = Grid{rb.nx(), rb.ny(), rb.nz(), ax[0].s_out, ax[1].s_out, ax[2].s_out};
  const std::size_t n = roi.grid.size();
  if (n > kMaxRoiVoxels)
    throw std::invalid_argument(fmt::format("prepare_roi: the ROI's grid of {}x{}x{} voxels is larger than {} voxels",
                                            rb.nx(), rb.ny(), rb.nz(), kMaxRoiVoxels));
  resize_fresh(roi.intensity, n);
  resize_fresh(roi.morph, n);
  resize_fresh(roi.mask, n);

  // Partial-volume mask (manual 2.4.2), thresholded: >= threshold, forgiving float rounding.
  const float thr = static_cast<float>(ip.mask_threshold) - 1e-6f;
  resample(mask, true, ax, ip.mask_method, cand, [&](int z, int y, const float* row) {
    std::uint8_t* o = roi.morph.data() + roi.grid.index(cand.x0 - rb.x0, cand.y0 - rb.y0 + y, cand.z0 - rb.z0 + z);
    for (int x = 0; x < cand.nx(); ++x) o[x] = row[x] >= thr;
  });

  // The intensities; the intensity mask starts as the morphological mask. With diagnostics, the
  // interpolated ROI's summary is gathered on the way.
  const bool round = ip.round_intensities;
  std::vector<RoiSummary> per(diagnostics ? static_cast<std::size_t>(rb.nz()) : 0);
  resample(image, false, ax, ip.image_method, rb, [&](int z, int y, const float* row) {
    const std::size_t base = roi.grid.index(0, y, z);
    float* o = roi.intensity.data() + base;
    if (round)
      for (int x = 0; x < rb.nx(); ++x) o[x] = round_half_away(row[x]);
    else
      std::copy(row, row + rb.nx(), o);
    const std::uint8_t* m = roi.morph.data() + base;
    std::copy(m, m + rb.nx(), roi.mask.data() + base);
    if (!diagnostics) return;
    RoiSummary& s = per[static_cast<std::size_t>(z)];
    for (int x = 0; x < rb.nx(); ++x)
      if (m[x]) {
        s.morph_box.add(x, y, z);
        ++s.morph_count;
        s.intensity.add(o[x]);
      }
  });
  RoiSummary interp;
  for (const auto& s : per) {
    interp.morph_box.merge(s.morph_box);
    interp.morph_count += s.morph_count;
    interp.intensity.merge(s.intensity);
  }
  interp.int_box = interp.morph_box;
  if (std::none_of(roi.morph.begin(), roi.morph.end(), [](std::uint8_t v) { return v != 0; }))
    throw std::invalid_argument("prepare_roi: the mask vanishes on the new grid");

  if (image_diag) {
    const Stats st = (ip.spacing) ? interpolated_stats(image, ax, ip.image_method, ip.round_intensities) : stack_stats(image);
    image_rows(*diagnostics, "interp_img", ax[0].n_out, ax[1].n_out, ax[2].n_out, ax[0].s_out, ax[1].s_out, ax[2].s_out, st);
  }
  if (diagnostics) roi_rows(*diagnostics, "interp_roi", ax[0].n_out, ax[1].n_out, ax[2].n_out, interp);

  // Re-segmentation (manual 2.5): range, then outlier filtering on what the range left.
  const auto& rs = s.resegmentation;
  const std::size_t plane = static_cast<std::size_t>(roi.grid.nx) * roi.grid.ny;
  auto remove_outside = [&](double lo, double hi) {
    parallel_slices(0, roi.grid.nz, [&](int z) {
      for (std::size_t i = z * plane, e = i + plane; i < e; ++i)
        if (roi.mask[i] && !(roi.intensity[i] >= lo && roi.intensity[i] <= hi)) roi.mask[i] = 0;
    });
  };
  if (rs.min || rs.max)
    remove_outside(rs.min.value_or(-std::numeric_limits<double>::infinity()), rs.max.value_or(std::numeric_limits<double>::infinity()));
  if (rs.outlier_3sigma) {
    // mean and population standard deviation of the intensity mask (per-slice sums, then merged)
    std::vector<std::array<double, 2>> acc(static_cast<std::size_t>(roi.grid.nz));
    parallel_slices(0, roi.grid.nz, [&](int z) {
      double k = 0, sum = 0;
      for (std::size_t i = z * plane, e = i + plane; i < e; ++i)
        if (roi.mask[i]) {
          k += 1;
          sum += roi.intensity[i];
        }
      acc[static_cast<std::size_t>(z)] = {k, sum};
    });
    double k = 0, sum = 0;
    for (const auto& a : acc) k += a[0], sum += a[1];
    if (k > 0) {
      const double mean = sum / k;
      std::vector<double> dev(static_cast<std::size_t>(roi.grid.nz));
      parallel_slices(0, roi.grid.nz, [&](int z) {  // second pass: exact, no cancellation
        double d = 0;
        for (std::size_t i = z * plane, e = i + plane; i < e; ++i)
          if (roi.mask[i]) d += (roi.intensity[i] - mean) * (roi.intensity[i] - mean);
        dev[static_cast<std::size_t>(z)] = d;
      });
      double d = 0;
      for (double v : dev) d += v;
      const double sd = std::sqrt(d / k);
      remove_outside(mean - 3 * sd, mean + 3 * sd);
    }
  }
  if (diagnostics) roi_rows(*diagnostics, "reseg_roi", ax[0].n_out, ax[1].n_out, ax[2].n_out, summarise(roi));
  check_roi(roi, "prepare_roi (after re-segmentation)");
  return roi;
}

Levels discretise(const RoiImage& roi, const Discretisation& d) {
  check_roi(roi, "discretise");
  Levels out;
  out.grid = roi.grid;
  const std::size_t n = roi.grid.size();
  const std::size_t plane = static_cast<std::size_t>(roi.grid.nx) * static_cast<std::size_t>(roi.grid.ny);
  resize_fresh(out.level, n);
  // Slices in parallel: the intensity range of the mask first, then the levels (0 outside the mask).
  const auto each_slice = [&](auto&& body) {  // body(first, last) over the voxel indices of one slice
    parallel_slices(0, roi.grid.nz, [&](int z) { body(static_cast<std::size_t>(z) * plane, static_cast<std::size_t>(z + 1) * plane); });
  };
  std::vector<std::array<double, 2>> range(static_cast<std::size_t>(roi.grid.nz),
                                           {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()});
  each_slice([&](std::size_t a, std::size_t b) {
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    for (std::size_t i = a; i < b; ++i)
      if (roi.mask[i]) {
        lo = std::min(lo, roi.intensity[i]);
        hi = std::max(hi, roi.intensity[i]);
      }
    range[a / plane] = {lo, hi};
  });
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& r : range) lo = std::min(lo, r[0]), hi = std::max(hi, r[1]);
  std::vector<int> tops(static_cast<std::size_t>(roi.grid.nz), 0);
  // Writes f(intensity) inside the mask, 0 outside; the highest level per slice into tops.
  const auto fill = [&](auto&& f) {
    each_slice([&](std::size_t a, std::size_t b) {
      tops[a / plane] = fill_levels(roi.mask.data() + a, roi.intensity.data() + a, out.level.data() + a, b - a, f);
    });
    return *std::max_element(tops.begin(), tops.end());
  };
  switch (d.method) {
    case Discretisation::Method::none: {
      for (std::size_t i = 0; i < n; ++i)
        if (roi.mask[i]) {
          const double v = roi.intensity[i];
          if (v != std::floor(v) || v < 1 || v > std::numeric_limits<int>::max())
            throw std::invalid_argument(fmt::format("discretise: without discretisation the intensities must be integers >= 1, got {}", v));
        }
      out.ng = fill([](float v) { return static_cast<int>(v); });
      break;
    }
    case Discretisation::Method::fixed_bin_size: {
      if (!(d.bin_width > 0) || !std::isfinite(d.bin_width)) throw std::invalid_argument("discretise: bin width must be > 0");
      const double x0 = d.lower_bound.value_or(lo);
      if (lo < x0) throw std::invalid_argument("discretise: intensities below the fixed-bin-size lower bound");
      if ((hi - x0) / d.bin_width >= std::numeric_limits<int>::max() - 1)
        throw std::invalid_argument("discretise: too many bins for the fixed bin size");
      const double w = d.bin_width;
      each_slice([&](std::size_t a, std::size_t b) {
        tops[a / plane] = fill_fixed_bin_size(roi.mask.data() + a, roi.intensity.data() + a, out.level.data() + a, b - a, x0, w);
      });
      out.ng = *std::max_element(tops.begin(), tops.end());
      break;
    }
    case Discretisation::Method::fixed_bin_number: {
      if (d.bins < 1) throw std::invalid_argument("discretise: bin number must be >= 1");
      const double span = hi - lo;
      const int bins = d.bins;
      fill([&](float v) {
        return span > 0 ? std::min(static_cast<int>(std::floor(bins * (v - lo) / span)) + 1, bins) : 1;
      });
      out.ng = bins;
      break;
    }
  }
  if (out.ng > kMaxGreyLevels)
    throw std::invalid_argument(fmt::format("discretise: {} grey levels, more than {}: choose a larger bin width or fewer bins",
                                            out.ng, kMaxGreyLevels));
  return out;
}

std::span<const FeatureDef> diagnostics_definitions() {
  static const std::vector<FeatureDef> defs = [] {
    static std::deque<std::string> storage;  // the tags are built once and live for the program
    std::vector<std::array<std::string, 3>> rows;  // tag, name, unit
    const char* stage_names[][2] = {{"init_img", "initial image"}, {"interp_img", "interpolated image"}};
    for (const auto& [st, nm] : stage_names) {
      for (const char* a : {"x", "y", "z"}) rows.push_back({fmt::format("img_dim_{}_{}", a, st), fmt::format("Image dimension {} ({})", a, nm), "voxels"});
      for (const char* a : {"x", "y", "z"}) rows.push_back({fmt::format("vox_dim_{}_{}", a, st), fmt::format("Voxel dimension {} ({})", a, nm), "mm"});
      rows.push_back({fmt::format("mean_int_{}", st), fmt::format("Mean intensity ({})", nm), "HU"});
      rows.push_back({fmt::format("min_int_{}", st), fmt::format("Minimum intensity ({})", nm), "HU"});
      rows.push_back({fmt::format("max_int_{}", st), fmt::format("Maximum intensity ({})", nm), "HU"});
    }
    const char* roi_stages[][2] = {{"init_roi", "initial ROI"}, {"interp_roi", "interpolated ROI"}, {"reseg_roi", "re-segmented ROI"}};
    for (const auto& [st, nm] : roi_stages) {
      for (const char* a : {"x", "y", "z"}) rows.push_back({fmt::format("int_mask_dim_{}_{}", a, st), fmt::format("Intensity mask dimension {} ({})", a, nm), "voxels"});
      for (const char* a : {"x", "y", "z"}) rows.push_back({fmt::format("int_mask_bb_dim_{}_{}", a, st), fmt::format("Intensity mask bounding box dimension {} ({})", a, nm), "voxels"});
      for (const char* a : {"x", "y", "z"}) rows.push_back({fmt::format("morph_mask_bb_dim_{}_{}", a, st), fmt::format("Morphological mask bounding box dimension {} ({})", a, nm), "voxels"});
      rows.push_back({fmt::format("int_mask_vox_count_{}", st), fmt::format("Intensity mask voxel count ({})", nm), "voxels"});
      rows.push_back({fmt::format("morph_mask_vox_count_{}", st), fmt::format("Morphological mask voxel count ({})", nm), "voxels"});
      rows.push_back({fmt::format("int_mask_mean_int_{}", st), fmt::format("Intensity mask mean intensity ({})", nm), "HU"});
      rows.push_back({fmt::format("int_mask_min_int_{}", st), fmt::format("Intensity mask minimum intensity ({})", nm), "HU"});
      rows.push_back({fmt::format("int_mask_max_int_{}", st), fmt::format("Intensity mask maximum intensity ({})", nm), "HU"});
    }
    std::vector<FeatureDef> d;
    for (auto& r : rows) {
      storage.push_back(std::move(r[0]));
      const std::string& tag = storage.back();
      storage.push_back(std::move(r[1]));
      const std::string& name = storage.back();
      storage.push_back(std::move(r[2]));
      const std::string& unit = storage.back();
      d.push_back({tag, "", name, unit});
    }
    return d;
  }();
  return defs;
}

namespace {
char config_letter(char c) {
  const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (u < 'A' || u > 'E') throw std::invalid_argument(fmt::format("ct_phantom_configuration: no configuration '{}' (A-E)", c));
  return u;
}
}  // namespace

ProcessingSettings ct_phantom_configuration(char config) {
  const char c = config_letter(config);
  ProcessingSettings s;
  auto& ip = s.interpolation;
  auto& rs = s.resegmentation;
  auto& d = s.discretisation;
  if (c != 'A') {
    ip.spacing = std::array<double, 3>{2.0, 2.0, 2.0};
    ip.in_plane_only = c == 'B';
    ip.image_method = c == 'E' ? Method::cubic : Method::linear;
    ip.mask_method = Method::linear;
    ip.mask_threshold = 0.5;
    ip.round_intensities = true;
  }
  switch (c) {
    case 'A':
    case 'B':
      rs.min = -500.0;
      rs.max = 400.0;
      break;
    case 'C':
      rs.min = -1000.0;
      rs.max = 400.0;
      break;
    case 'D':
      rs.outlier_3sigma = true;
      break;
    case 'E':
      rs.min = -1000.0;
      rs.max = 400.0;
      rs.outlier_3sigma = true;
      break;
  }
  if (c == 'A' || c == 'C') {
    d.method = Discretisation::Method::fixed_bin_size;
    d.bin_width = 25;
    d.lower_bound = rs.min;
  } else {
    d.method = Discretisation::Method::fixed_bin_number;
    d.bins = 32;
  }
  return s;
}

TextureScope ct_phantom_texture_scope(char config) {
  const char c = config_letter(config);
  return c == 'A' || c == 'B' ? TextureScope{true, false} : TextureScope{false, true};
}

Discretisation ct_phantom_ivh_discretisation(char config) {
  const char c = config_letter(config);
  Discretisation d;
  if (c == 'C') {
    d.method = Discretisation::Method::fixed_bin_size;
    d.bin_width = 2.5;
    d.lower_bound = -1000.0;
  } else if (c == 'E') {
    d.method = Discretisation::Method::fixed_bin_number;
    d.bins = 1000;
  }
  return d;
}

}  // namespace analysis::kernels::ibsi
