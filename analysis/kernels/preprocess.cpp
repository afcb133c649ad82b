#include "analysis/kernels/preprocess.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/core/hal/intrin.hpp>
#include <opencv2/imgproc.hpp>

namespace analysis::kernels {

namespace {

// Bytes of output per band of the banded median: with the band's input, a few hundred KiB that
// stay in the cache (128 rows of 512 int16 columns). Larger bands recompute fewer context rows
// (2 x ksize/2 per band): on the 300x512x512 bench series 32 rows cost 10 % over OpenCV's median
// for 5x5, 128 rows 3 %.
constexpr std::size_t kMedianBandBytes = 128 * 1024;
// The median of `src` (ksize 3 or 5) in bands of about kMedianBandBytes: each band is filtered into one
// of the two buffers of `buf` from its rows plus ksize/2 rows of context above and below (OpenCV's
// median reads no pixel outside the Mat it is given, and the context rows' own results are
// dropped), so every row gets exactly the value a whole-slice medianBlur gives it. emit(r0, rows)
// receives the band's filtered rows [r0, r0 + rows.rows); they stay valid until the call after
// next. CV_16S goes to OpenCV directly: its 3x3 and 5x5 sorting network supports int16 (as 8U,
// 16U and 32F), so no order-preserving remap is needed.
template <typename Emit>
void median_bands(const cv::Mat& src, int ksize, cv::Mat (&buf)[2], Emit&& emit) {
  const int rows = src.rows, h = ksize / 2;
  const int band = static_cast<int>(std::clamp<std::size_t>(kMedianBandBytes / (src.cols * src.elemSize()), 8, 1024));
  for (int r0 = 0, k = 0; r0 < rows; r0 += band, k ^= 1) {
    const int r1 = std::min(rows, r0 + band);
    const int a = std::max(0, r0 - h), b = std::min(rows, r1 + h);
    buf[k].create(std::min(rows, band + 2 * h), src.cols, src.type());  // once per buffer
    cv::Mat out = buf[k].rowRange(0, b - a);
    cv::medianBlur(src.rowRange(a, b), out, ksize);
    emit(r0, out.rowRange(r0 - a, r1 - a));
  }
}

// In place: a band is written back only after the next band, which reads its last rows as
// context, has been filtered. The slice is read and written once, like an out-of-place medianBlur.
void median_in_place(cv::Mat& s, int ksize, cv::Mat (&buf)[2]) {
  int pending_r0 = -1;
  cv::Mat pending;
  median_bands(s, ksize, buf, [&](int r0, const cv::Mat& rows) {
    if (pending_r0 >= 0) pending.copyTo(s.rowRange(pending_r0, pending_r0 + pending.rows));
    pending_r0 = r0;
    pending = rows;
  });
  pending.copyTo(s.rowRange(pending_r0, pending_r0 + pending.rows));
}

// Levels of int16 values by comparison instead of the 64 KiB table, whose scattered reads cost
// about half as much as the median they follow. A value's level is the number of breaks at or
// below it (std::upper_bound), and for an integer v, b <= v exactly when ceil(b) <= v: so the
// level is `base` (the breaks at or below -32768, which every value reaches) plus one for each
// threshold ceil(b) within int16 that v reaches; breaks above 32767 are reached by none. Same
// levels as the table, bit for bit (tests/unit/test_level_map_compare.cpp checks every value).
constexpr std::size_t kMaxCompareBreaks = 16;  // beyond, the table is cheaper than the comparisons

struct Int16Levels {
  bool usable = false;
  int base = 0;
  std::vector<std::int16_t> at;
};

Int16Levels int16_levels(const std::vector<double>& breaks) {
  Int16Levels l;
  for (double b : breaks) {
    const double t = std::ceil(b);
    if (t <= std::numeric_limits<std::int16_t>::min()) ++l.base;
    else if (t <= std::numeric_limits<std::int16_t>::max()) l.at.push_back(static_cast<std::int16_t>(t));
  }
  l.usable = l.at.size() <= kMaxCompareBreaks;
  return l;
}

// The levels of p[0, n) into o, 16 at a time; returns how many it did (the caller does the rest).
int int16_levels_simd(const Int16Levels& l, const std::int16_t* p, std::uint8_t* o, int n) {
  int c = 0;
#if CV_SIMD128
  // v >= t as v > t - 1 (t > -32768 here): one instruction on SSE2/NEON, where >= takes two.
  cv::v_int16x8 below[kMaxCompareBreaks];
  const int k = static_cast<int>(l.at.size());
  for (int i = 0; i < k; ++i) below[i] = cv::v_setall_s16(static_cast<std::int16_t>(l.at[static_cast<std::size_t>(i)] - 1));
  const cv::v_int16x8 base = cv::v_setall_s16(static_cast<std::int16_t>(l.base));
  for (; c + 16 <= n; c += 16) {
    const cv::v_int16x8 a = cv::v_load(p + c), b = cv::v_load(p + c + 8);
    cv::v_int16x8 la = base, lb = base;
    for (int i = 0; i < k; ++i) {  // a reached threshold compares to -1 (all ones): subtract it
      la = cv::v_sub_wrap(la, a > below[i]);
      lb = cv::v_sub_wrap(lb, b > below[i]);
    }
    cv::v_store(o + c, cv::v_pack_u(la, lb));  // levels <= 255
  }
#else
  (void)l, (void)p, (void)o, (void)n;
#endif
  return c;
}

}  // namespace

void median_filter(std::vector<cv::Mat>& slices, int ksize) {
  check_stack(slices, -1, "median_filter");
  if (ksize != 3 && ksize != 5) throw std::invalid_argument(fmt::format("median_filter: ksize {} (3 or 5)", ksize));
  const int type = slices.front().type();
  if (type != CV_8U && type != CV_16U && type != CV_16S && type != CV_32F)
    throw std::invalid_argument("median_filter: type must be CV_8U, CV_16U, CV_16S or CV_32F");
  cv::parallel_for_(cv::Range(0, static_cast<int>(slices.size())), [&](const cv::Range& r) {
    cv::Mat buf[2];  // per range, reused across its slices
    for (int z = r.start; z < r.end; ++z) median_in_place(slices[static_cast<std::size_t>(z)], ksize, buf);
  });
}

namespace {

// Along-z 1D convolution with a symmetric kernel, in place, keeping only radius+1 original slices.
void convolve_z(std::vector<cv::Mat>& slices, const std::vector<double>& w) {
  const int radius = static_cast<int>(w.size() / 2);
  const int depth = static_cast<int>(slices.size());
  const int type = slices.front().type();
  std::deque<cv::Mat> before;  // originals of slices z-radius .. z-1
  cv::Mat acc, tmp;
  for (int z = 0; z < depth; ++z) {
    acc = cv::Mat::zeros(slices[z].size(), CV_64F);
    for (int k = -radius; k <= radius; ++k) {
      const int zz = std::clamp(z + k, 0, depth - 1);
      const cv::Mat* src = nullptr;
      if (zz >= z) src = &slices[zz];
      else src = &before[before.size() - static_cast<std::size_t>(z - zz)];
      src->convertTo(tmp, CV_64F);
      cv::scaleAdd(tmp, w[static_cast<std::size_t>(k + radius)], acc, acc);
    }
    before.push_back(slices[z].clone());
    if (static_cast<int>(before.size()) > radius) before.pop_front();
    acc.convertTo(slices[z], type);  // rounds and saturates for integer types
  }
}

}  // namespace

void gaussian_filter(std::vector<cv::Mat>& slices, const Spacing& spacing, double sigma_inplane_mm,
                     double sigma_slice_mm) {
  check_stack(slices, -1, "gaussian_filter");
  check_spacing(spacing, "gaussian_filter");
  if (!(sigma_inplane_mm >= 0) || !(sigma_slice_mm >= 0))
    throw std::invalid_argument("gaussian_filter: sigma must be >= 0");
  if (sigma_inplane_mm > 0) {
    const double sx = sigma_inplane_mm / spacing.col, sy = sigma_inplane_mm / spacing.row;
    const cv::Size k(2 * static_cast<int>(std::ceil(3 * sx)) + 1, 2 * static_cast<int>(std::ceil(3 * sy)) + 1);
    // BORDER_ISOLATED: slices are often row ranges of one block, and without it OpenCV would take
    // the rows of the neighbouring slices (being filtered on another thread) as the border.
    parallel_slices(0, static_cast<int>(slices.size()), [&](int z) {
      cv::Mat& s = slices[static_cast<std::size_t>(z)];
      cv::GaussianBlur(s, s, k, sx, sy, cv::BORDER_REFLECT_101 | cv::BORDER_ISOLATED);
    });
  }
  if (sigma_slice_mm > 0 && slices.size() > 1) {
    const double sz = sigma_slice_mm / spacing.slice;
    const int radius = static_cast<int>(std::ceil(3 * sz));
    std::vector<double> w(static_cast<std::size_t>(2 * radius + 1));
    double sum = 0;
    for (int k = -radius; k <= radius; ++k) sum += w[static_cast<std::size_t>(k + radius)] = std::exp(-0.5 * k * k / (sz * sz));
    for (auto& v : w) v /= sum;
    convolve_z(slices, w);
  }
}

void resample_inplane(std::vector<cv::Mat>& slices, Spacing& spacing, double target_col_mm, double target_row_mm,
                      Interpolation interp) {
  check_stack(slices, -1, "resample_inplane");
  check_spacing(spacing, "resample_inplane");
  if (!(target_col_mm > 0) || !(target_row_mm > 0) || !std::isfinite(target_col_mm) || !std::isfinite(target_row_mm))
    throw std::invalid_argument("resample_inplane: target spacing must be finite and > 0");
  const int cols = slices.front().cols, rows = slices.front().rows;
  const int new_cols = std::max(1, static_cast<int>(std::lround(cols * spacing.col / target_col_mm)));
  const int new_rows = std::max(1, static_cast<int>(std::lround(rows * spacing.row / target_row_mm)));
  int flag = cv::INTER_LINEAR;
  switch (interp) {
    case Interpolation::nearest: flag = cv::INTER_NEAREST_EXACT; break;
    case Interpolation::linear: flag = cv::INTER_LINEAR; break;
    case Interpolation::cubic: flag = cv::INTER_CUBIC; break;
    case Interpolation::area: flag = cv::INTER_AREA; break;
  }
  if (new_cols != cols || new_rows != rows) {  // into one new block, straight from the old slices
    const int depth = static_cast<int>(slices.size());
    const cv::Mat block = dicom::allocate_planes(depth, new_rows, new_cols, slices.front().type());
    parallel_slices(0, depth, [&](int z) {
      cv::Mat out = block.rowRange(z * new_rows, (z + 1) * new_rows);
      dicom::prefault_rows(out);
      cv::resize(slices[static_cast<std::size_t>(z)], out, cv::Size(new_cols, new_rows), 0, 0, flag);
    });
    for (int z = 0; z < depth; ++z)
      slices[static_cast<std::size_t>(z)] = block.rowRange(z * new_rows, (z + 1) * new_rows);
  }
  spacing.col = spacing.col * cols / new_cols;
  spacing.row = spacing.row * rows / new_rows;
}

void resample_inplane(dicom::Volume& volume, double target_col_mm, double target_row_mm, Interpolation interp) {
  Spacing sp = spacing_of(volume.geom);
  const Spacing old = sp;
  resample_inplane(volume.slices, sp, target_col_mm, target_row_mm, interp);
  auto& g = volume.geom;
  const double dc = 0.5 * (sp.col - old.col), dr = 0.5 * (sp.row - old.row);
  for (int i = 0; i < 3; ++i) g.origin[i] += dc * g.row_dir[i] + dr * g.col_dir[i];
  g.spacing_col = sp.col;
  g.spacing_row = sp.row;
}

LabelVolume level_map(const std::vector<cv::Mat>& image, const std::vector<double>& breaks, int median_ksize,
                      double gaussian_sigma_mm, const Spacing& spacing) {
  check_stack(image, -1, "level_map");
  const int type = image.front().type();
  if (type != CV_8U && type != CV_16U && type != CV_16S && type != CV_32F)
    throw std::invalid_argument("level_map: type must be CV_8U, CV_16U, CV_16S or CV_32F");
  if (breaks.size() > 255 || !std::is_sorted(breaks.begin(), breaks.end()) ||
      std::any_of(breaks.begin(), breaks.end(), [](double b) { return std::isnan(b); }))
    throw std::invalid_argument("level_map: breaks must be at most 255 ascending numbers");
  if (median_ksize != 0 && median_ksize != 3 && median_ksize != 5)
    throw std::invalid_argument(fmt::format("level_map: median ksize {} (0, 3 or 5)", median_ksize));
  if (!(gaussian_sigma_mm >= 0)) throw std::invalid_argument("level_map: sigma must be >= 0");
  if (gaussian_sigma_mm > 0) check_spacing(spacing, "level_map");
  const int depth = static_cast<int>(image.size()), rows = image.front().rows, cols = image.front().cols;
  // Integer types: one table entry per value (int16 with few breaks: comparisons, with the table
  // for the last columns of a row).
  std::vector<std::uint8_t> lut;
  const auto level_of = [&](double v) {
    return static_cast<std::uint8_t>(std::upper_bound(breaks.begin(), breaks.end(), v) - breaks.begin());
  };
  const bool smooth = gaussian_sigma_mm > 0;  // a Gaussian gives fractions: compare in float
  if (!smooth && type != CV_32F) {
    const int lo = type == CV_16S ? std::numeric_limits<std::int16_t>::min() : 0;
    const int n = type == CV_8U ? 256 : 65536;
    lut.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) lut[static_cast<std::size_t>(i)] = level_of(lo + i);
  }
  const Int16Levels by_compare = int16_levels(breaks);
  const cv::Mat block = dicom::allocate_planes(depth, rows, cols, CV_8U);
  LabelVolume out(static_cast<std::size_t>(depth));
  for (int z = 0; z < depth; ++z) out[static_cast<std::size_t>(z)] = block.rowRange(z * rows, (z + 1) * rows);
  // Levels of the rows of `s` into the same rows of `o`. The table pointer and the width are
  // locals: a byte store may alias anything captured by reference, which would then be reloaded
  // for every voxel.
  const auto levels = [&](const cv::Mat& s, cv::Mat o_rows) {
    const std::uint8_t* table = lut.data();
    const int n = cols;
    for (int r = 0; r < s.rows; ++r) {
      std::uint8_t* o = o_rows.ptr<std::uint8_t>(r);
      switch (s.type()) {
        case CV_8U: {
          const auto* p = s.ptr<std::uint8_t>(r);
          for (int c = 0; c < n; ++c) o[c] = table[p[c]];
          break;
        }
        case CV_16U: {
          const auto* p = s.ptr<std::uint16_t>(r);
          for (int c = 0; c < n; ++c) o[c] = table[p[c]];
          break;
        }
        case CV_16S: {
          const auto* p = s.ptr<std::int16_t>(r);
          int c = by_compare.usable ? int16_levels_simd(by_compare, p, o, n) : 0;
          for (; c < n; ++c) o[c] = table[p[c] + 32768];
          break;
        }
        default: {
          const auto* p = s.ptr<float>(r);
          for (int c = 0; c < n; ++c) o[c] = level_of(p[c]);
        }
      }
    }
  };
  cv::parallel_for_(cv::Range(0, depth), [&](const cv::Range& range) {
    std::vector<cv::Mat> one(1);
    cv::Mat buf[2];
    for (int z = range.start; z < range.end; ++z) {
      const auto zi = static_cast<std::size_t>(z);
      cv::Mat& o = out[zi];
      dicom::prefault_rows(o);
      if (smooth) {  // the range's buffer: median (or copy), float, Gaussian
        if (median_ksize) cv::medianBlur(image[zi], one[0], median_ksize);
        else image[zi].copyTo(one[0]);
        one[0].convertTo(one[0], CV_32F);
        gaussian_filter(one, spacing, gaussian_sigma_mm, 0.0);
        levels(one[0], o);
      } else if (median_ksize) {  // each band of median rows goes to the table while in cache
        median_bands(image[zi], median_ksize, buf,
                     [&](int r0, const cv::Mat& m) { levels(m, o.rowRange(r0, r0 + m.rows)); });
      } else {
        levels(image[zi], o);
      }
    }
  });
  return out;
}

}  // namespace analysis::kernels
