#include "analysis/kernels/segment.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <numeric>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/core/hal/intrin.hpp>
#include <opencv2/imgproc.hpp>

namespace analysis::kernels {

// ---- thresholds ---------------------------------------------------------------------------

namespace {

void check_image(const std::vector<cv::Mat>& image, const char* what) {
  check_stack(image, -1, what);
  const int t = image.front().type();
  if (t != CV_8U && t != CV_16S && t != CV_16U && t != CV_32F)
    throw std::invalid_argument(fmt::format("{}: image type must be CV_8U, CV_16S, CV_16U or CV_32F", what));
}

Mask empty_like(const std::vector<cv::Mat>& image) {
  return make_mask(static_cast<int>(image.size()), image.front().rows, image.front().cols);
}

}  // namespace

namespace {

// One row of int16 -> 0/1 for lo <= v <= hi, vectorised with OpenCV's universal intrinsics.
void threshold_row_s16(const int16_t* src, uchar* dst, int n, int16_t lo, int16_t hi) {
  int x = 0;
#if CV_SIMD128
  const cv::v_int16x8 vlo = cv::v_setall_s16(lo), vhi = cv::v_setall_s16(hi);
  const cv::v_uint8x16 one = cv::v_setall_u8(1);
  for (; x + 16 <= n; x += 16) {
    const cv::v_int16x8 a = cv::v_load(src + x), b = cv::v_load(src + x + 8);
    const cv::v_int16x8 ma = (a >= vlo) & (a <= vhi), mb = (b >= vlo) & (b <= vhi);  // lanes: -1 or 0
    cv::v_store(dst + x, cv::v_reinterpret_as_u8(cv::v_pack(ma, mb)) & one);
  }
#endif
  for (; x < n; ++x) dst[x] = (src[x] >= lo && src[x] <= hi) ? 1 : 0;
}

}  // namespace

void threshold_into(const std::vector<cv::Mat>& image, Window window, Mask& out) {
  check_image(image, "threshold");
  if (std::isnan(window.lo) || std::isnan(window.hi)) throw std::invalid_argument("threshold: NaN bound");
  const int depth = static_cast<int>(image.size()), rows = image.front().rows, cols = image.front().cols;
  const bool reusable = static_cast<int>(out.size()) == depth &&
                        std::all_of(out.begin(), out.end(), [&](const cv::Mat& s) {
                          return s.type() == CV_8U && s.rows == rows && s.cols == cols;
                        });
  if (!reusable) {  // every voxel is written below: no need to zero
    const cv::Mat block = dicom::allocate_planes(depth, rows, cols, CV_8U);
    out.assign(static_cast<std::size_t>(depth), cv::Mat());
    for (int z = 0; z < depth; ++z) out[static_cast<std::size_t>(z)] = block.rowRange(z * rows, (z + 1) * rows);
  }
  const int t = image.front().type();
  double lo = window.lo, hi = window.hi;
  if (t != CV_32F) {  // integer data: the closed real interval becomes [ceil lo, floor hi]
    double tmin = t == CV_8U ? 0 : t == CV_16U ? 0 : std::numeric_limits<int16_t>::min();
    double tmax = t == CV_8U ? 255 : t == CV_16U ? 65535 : std::numeric_limits<int16_t>::max();
    lo = std::max(std::ceil(lo), tmin);
    hi = std::min(std::floor(hi), tmax);
    if (lo > hi) {
      for (auto& s : out) s.setTo(0);
      return;
    }
  }
  // Slices on OpenCV's threads: besides the compare, a fresh mask's pages are faulted in on both.
  cv::parallel_for_(cv::Range(0, depth), [&](const cv::Range& range) {
    for (int zi = range.start; zi < range.end; ++zi) {
      const auto z = static_cast<std::size_t>(zi);
      dicom::prefault_rows(out[z]);  // a fresh mask: its pages in one call per slice
      if (t == CV_16S) {
        for (int r = 0; r < rows; ++r)
          threshold_row_s16(image[z].ptr<int16_t>(r), out[z].ptr<uchar>(r), cols, static_cast<int16_t>(lo),
                            static_cast<int16_t>(hi));
      } else {
        cv::inRange(image[z], cv::Scalar(lo), cv::Scalar(hi), out[z]);
        cv::bitwise_and(out[z], cv::Scalar(1), out[z]);
      }
    }
  });
}

Mask threshold(const std::vector<cv::Mat>& image, Window window) {
  Mask out;
  threshold_into(image, window, out);
  return out;
}

Mask threshold_above(const std::vector<cv::Mat>& image, double t) {
  check_image(image, "threshold_above");
  if (image.front().type() == CV_32F) {
    Mask out = empty_like(image);
    for (std::size_t z = 0; z < image.size(); ++z) {
      cv::compare(image[z], cv::Scalar(t), out[z], cv::CMP_GT);
      cv::bitwise_and(out[z], cv::Scalar(1), out[z]);
    }
    return out;
  }
  return threshold(image, {std::floor(t) + 1, std::numeric_limits<double>::infinity()});
}

namespace {

// Otsu on a histogram; returns the index of the last bin of the lower class.
std::size_t otsu_index(const std::vector<double>& h) {
  double total = 0, sum = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    total += h[i];
    sum += static_cast<double>(i) * h[i];
  }
  double w0 = 0, s0 = 0, best = -1;
  std::size_t best_i = 0;
  for (std::size_t i = 0; i + 1 < h.size(); ++i) {
    w0 += h[i];
    s0 += static_cast<double>(i) * h[i];
    const double w1 = total - w0;
    if (w0 <= 0 || w1 <= 0) continue;
    const double m0 = s0 / w0, m1 = (sum - s0) / w1;
    const double between = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (between > best) {
      best = between;
      best_i = i;
    }
  }
  return best_i;
}

}  // namespace

double otsu_threshold(const std::vector<cv::Mat>& image, const Mask* roi, int bins) {
  check_image(image, "otsu_threshold");
  if (roi) {
    check_stack(*roi, CV_8U, "otsu_threshold roi");
    check_same_shape(image, *roi, "otsu_threshold");
  }
  const int t = image.front().type();
  const int rows = image.front().rows, cols = image.front().cols;
  auto inside = [&](std::size_t z, int r) -> const uchar* { return roi ? (*roi)[z].ptr<uchar>(r) : nullptr; };
  if (t != CV_32F) {
    std::vector<std::int64_t> counts(65536, 0);
    const int offset = t == CV_16S ? 32768 : 0;
    for (std::size_t z = 0; z < image.size(); ++z)
      for (int r = 0; r < rows; ++r) {
        const uchar* m = inside(z, r);
        if (t == CV_8U) {
          const uchar* p = image[z].ptr<uchar>(r);
          for (int c = 0; c < cols; ++c) counts[p[c]] += (!m || m[c]) ? 1 : 0;
        } else if (t == CV_16U) {
          const uint16_t* p = image[z].ptr<uint16_t>(r);
          for (int c = 0; c < cols; ++c) counts[p[c]] += (!m || m[c]) ? 1 : 0;
        } else {
          const int16_t* p = image[z].ptr<int16_t>(r);
          for (int c = 0; c < cols; ++c) counts[p[c] + offset] += (!m || m[c]) ? 1 : 0;
        }
      }
    std::size_t lo = 0, hi = counts.size();
    while (lo < hi && counts[lo] == 0) ++lo;
    while (hi > lo && counts[hi - 1] == 0) --hi;
    if (lo >= hi) throw std::invalid_argument("otsu_threshold: no voxels");
    std::vector<double> h(counts.begin() + static_cast<std::ptrdiff_t>(lo), counts.begin() + static_cast<std::ptrdiff_t>(hi));
    return static_cast<double>(lo + otsu_index(h)) - offset;
  }
  if (bins < 2) throw std::invalid_argument("otsu_threshold: bins must be >= 2");
  double vmin = std::numeric_limits<double>::infinity(), vmax = -vmin;
  for (std::size_t z = 0; z < image.size(); ++z)
    for (int r = 0; r < rows; ++r) {
      const uchar* m = inside(z, r);
      const float* p = image[z].ptr<float>(r);
      for (int c = 0; c < cols; ++c)
        if ((!m || m[c]) && std::isfinite(p[c])) {
          vmin = std::min<double>(vmin, p[c]);
          vmax = std::max<double>(vmax, p[c]);
        }
    }
  if (!(vmin <= vmax)) throw std::invalid_argument("otsu_threshold: no voxels");
  if (vmin == vmax) return vmin;
  std::vector<double> h(static_cast<std::size_t>(bins), 0.0);
  const double scale = bins / (vmax - vmin);
  for (std::size_t z = 0; z < image.size(); ++z)
    for (int r = 0; r < rows; ++r) {
      const uchar* m = inside(z, r);
      const float* p = image[z].ptr<float>(r);
      for (int c = 0; c < cols; ++c)
        if ((!m || m[c]) && std::isfinite(p[c]))
          h[std::min<std::size_t>(static_cast<std::size_t>((p[c] - vmin) * scale), bins - 1)] += 1;
    }
  return vmin + static_cast<double>(otsu_index(h) + 1) / scale;
}

// ---- connected components -----------------------------------------------------------------

namespace {

// Calls on_run(begin, end) for each run [begin, end) of non-zero bytes of p[0, n), left to right.
// 64 bytes at a time: a bit per byte (non-zero or not), and a run starts or ends where a bit differs
// from the one before it, so a 64-byte stretch without a change costs a few vector instructions.
template <class F>
void for_each_row_run(const uchar* p, int n, F&& on_run) {
  int x = 0, begin = 0;
  bool inside = false;
#if CV_SIMD128
  const cv::v_uint8x16 zero = cv::v_setzero_u8();
  for (; x + 64 <= n; x += 64) {
    std::uint64_t w = 0;
    for (int k = 0; k < 4; ++k)
      w |= static_cast<std::uint64_t>(static_cast<unsigned>(cv::v_signmask(cv::v_load(p + x + 16 * k) != zero)))
           << (16 * k);
    for (std::uint64_t change = w ^ ((w << 1) | (inside ? 1u : 0u)); change != 0; change &= change - 1) {
      const int at = x + std::countr_zero(change);
      if (!inside) begin = at;
      else on_run(begin, at);
      inside = !inside;
    }
  }
#endif
  for (; x < n; ++x)
    if ((p[x] != 0) != inside) {
      if (!inside) begin = x;
      else on_run(begin, x);
      inside = !inside;
    }
  if (inside) on_run(begin, n);
}

struct UnionFind {
  std::vector<std::int32_t, UninitializedAllocator<std::int32_t>> parent;
  std::int32_t find(std::int32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  }
  // The root of a set is always its smallest index, whatever the order of the unions.
  void unite(std::int32_t a, std::int32_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (a < b) parent[b] = a;
    else parent[a] = b;
  }
};

}  // namespace

Components label_components(const Mask& mask, Connectivity connectivity) {
  check_stack(mask, CV_8U, "label_components");
  if (connectivity != Connectivity::c6 && connectivity != Connectivity::c18 && connectivity != Connectivity::c26)
    throw std::invalid_argument("label_components: connectivity must be 6, 18 or 26");
  Components out;
  out.depth = static_cast<int>(mask.size());
  out.rows = mask.front().rows;
  out.cols = mask.front().cols;
  const int depth = out.depth, rows = out.rows, cols = out.cols;
  auto& row_offset = out.row_offset;
  row_offset.assign(static_cast<std::size_t>(depth) * rows + 1, 0);
  auto& runs = out.runs;

  // Pass 1: runs, slices on OpenCV's threads. First the runs of each row are counted, so that
  // every row's place in `runs` is known and the slices then write their runs side by side.
  parallel_slices(0, depth, [&](int z) {
    for (int r = 0; r < rows; ++r) {
      std::int64_t n = 0;
      for_each_row_run(mask[static_cast<std::size_t>(z)].ptr<uchar>(r), cols, [&n](int, int) { ++n; });
      row_offset[static_cast<std::size_t>(z) * rows + r + 1] = n;
    }
  });
  std::partial_sum(row_offset.begin(), row_offset.end(), row_offset.begin());
  if (row_offset.back() > std::numeric_limits<std::int32_t>::max())
    throw std::runtime_error("label_components: too many runs");
  runs.resize(static_cast<std::size_t>(row_offset.back()));
  parallel_slices(0, depth, [&](int z) {
    for (int r = 0; r < rows; ++r) {
      auto* at = runs.data() + row_offset[static_cast<std::size_t>(z) * rows + r];
      for_each_row_run(mask[static_cast<std::size_t>(z)].ptr<uchar>(r), cols,
                       [&at](int b, int e) { *at++ = {b, e}; });
    }
  });

  // Pass 2: union of touching runs in the already visited neighbour rows. The slices are cut into
  // blocks of consecutive slices; a block's own links (within its slices, and between a slice and
  // the one before it in the block) join only that block's runs, so the blocks run in parallel.
  // The links across block boundaries follow, serially. Roots are the smallest index of each set
  // whatever the order of the unions, so the result is the same as one serial pass.
  UnionFind uf;
  uf.parent.resize(runs.size());
  parallel_slices(0, depth, [&](int z) {
    const auto first = row_offset[static_cast<std::size_t>(z) * rows], last = row_offset[static_cast<std::size_t>(z + 1) * rows];
    std::iota(uf.parent.begin() + first, uf.parent.begin() + last, static_cast<std::int32_t>(first));
  });
  auto merge = [&](int z, int r, int zn, int rn, int d) {
    if (zn < 0 || rn < 0 || rn >= rows) return;
    const std::size_t ia = static_cast<std::size_t>(z) * rows + r, ib = static_cast<std::size_t>(zn) * rows + rn;
    std::int64_t i = row_offset[ia], j = row_offset[ib];
    const std::int64_t a1 = row_offset[ia + 1], b1 = row_offset[ib + 1];
    while (i < a1 && j < b1) {
      const auto& A = runs[static_cast<std::size_t>(i)];
      const auto& B = runs[static_cast<std::size_t>(j)];
      if (B.end + d <= A.begin) { ++j; continue; }
      if (A.end + d <= B.begin) { ++i; continue; }
      uf.unite(static_cast<std::int32_t>(i), static_cast<std::int32_t>(j));
      if (A.end < B.end) ++i;
      else ++j;
    }
  };
  auto link_row = [&](int z, int r, bool in_plane, bool across) {
    if (row_offset[static_cast<std::size_t>(z) * rows + r] == row_offset[static_cast<std::size_t>(z) * rows + r + 1])
      return;
    switch (connectivity) {
      case Connectivity::c6:
        if (in_plane) merge(z, r, z, r - 1, 0);
        if (across) merge(z, r, z - 1, r, 0);
        break;
      case Connectivity::c18:
        if (in_plane) merge(z, r, z, r - 1, 1);
        if (across) {
          merge(z, r, z - 1, r, 1);
          merge(z, r, z - 1, r - 1, 0);
          merge(z, r, z - 1, r + 1, 0);
        }
        break;
      case Connectivity::c26:
        if (in_plane) merge(z, r, z, r - 1, 1);
        if (across) {
          merge(z, r, z - 1, r - 1, 1);
          merge(z, r, z - 1, r, 1);
          merge(z, r, z - 1, r + 1, 1);
        }
        break;
    }
  };
  const int blocks = std::clamp(4 * cv::getNumThreads(), 1, depth);
  const auto block_start = [&](int k) { return static_cast<int>(static_cast<std::int64_t>(depth) * k / blocks); };
  cv::parallel_for_(cv::Range(0, blocks), [&](const cv::Range& range) {
    for (int k = range.start; k < range.end; ++k)
      for (int z = block_start(k), z0 = z; z < block_start(k + 1); ++z)
        for (int r = 0; r < rows; ++r) link_row(z, r, true, z > z0);
  });
  for (int k = 1; k < blocks; ++k)
    for (int r = 0; r < rows; ++r) link_row(block_start(k), r, false, true);

  // Pass 3: provisional labels in raster order of first run. Every link points to a smaller
  // index, so parent[i] < i is already relabelled when i is reached and holds i's label.
  auto& label = uf.parent;
  std::int32_t n = 0;
  for (std::size_t i = 0; i < label.size(); ++i)
    label[i] = label[i] == static_cast<std::int32_t>(i) ? n++ : label[static_cast<std::size_t>(label[i])];

  // Pass 4: statistics per provisional label.
  std::vector<ComponentInfo> info(static_cast<std::size_t>(n));
  std::vector<bool> seen(static_cast<std::size_t>(n), false);
  for (int z = 0; z < depth; ++z)
    for (int r = 0; r < rows; ++r) {
      const std::size_t row = static_cast<std::size_t>(z) * rows + r;
      for (auto i = row_offset[row]; i < row_offset[row + 1]; ++i) {
        const auto l = static_cast<std::size_t>(label[static_cast<std::size_t>(i)]);
        const auto& run = runs[static_cast<std::size_t>(i)];
        auto& ci = info[l];
        if (!seen[l]) {
          seen[l] = true;
          ci.z0 = ci.z1 = z;
          ci.r0 = ci.r1 = r;
          ci.c0 = run.begin;
          ci.c1 = run.end - 1;
        }
        ci.voxels += run.end - run.begin;
        ci.z1 = z;  // rows are visited in raster order
        ci.r0 = std::min(ci.r0, r);
        ci.r1 = std::max(ci.r1, r);
        ci.c0 = std::min(ci.c0, run.begin);
        ci.c1 = std::max(ci.c1, run.end - 1);
        if (r == 0 || r == rows - 1 || run.begin == 0 || run.end == cols) ci.touches_inplane_border = true;
        if (z == 0 || z == depth - 1) ci.touches_z_border = true;
      }
    }

  // Order by decreasing size, ties by first appearance (the provisional label order): a counting
  // sort for the (typically many) small components, a comparison sort for the few large ones.
  constexpr std::int64_t kSmall = 4096;
  std::vector<std::int32_t> big, order;
  order.reserve(static_cast<std::size_t>(n));
  std::vector<std::int64_t> bucket(kSmall + 1, 0);
  for (std::int32_t l = 0; l < n; ++l) {
    const auto v = info[static_cast<std::size_t>(l)].voxels;
    if (v >= kSmall) big.push_back(l);
    else ++bucket[static_cast<std::size_t>(v)];
  }
  std::sort(big.begin(), big.end(), [&](std::int32_t a, std::int32_t b) {
    const auto va = info[static_cast<std::size_t>(a)].voxels, vb = info[static_cast<std::size_t>(b)].voxels;
    return va != vb ? va > vb : a < b;
  });
  order = big;
  std::vector<std::int64_t> start(kSmall + 1, 0);  // first slot of each size, largest size first
  std::int64_t pos = static_cast<std::int64_t>(big.size());
  for (std::int64_t v = kSmall - 1; v >= 1; --v) {
    start[static_cast<std::size_t>(v)] = pos;
    pos += bucket[static_cast<std::size_t>(v)];
  }
  order.resize(static_cast<std::size_t>(n));
  for (std::int32_t l = 0; l < n; ++l) {
    const auto v = info[static_cast<std::size_t>(l)].voxels;
    if (v < kSmall) order[static_cast<std::size_t>(start[static_cast<std::size_t>(v)]++)] = l;
  }
  std::vector<std::int32_t> rank(static_cast<std::size_t>(n));
  out.components.resize(static_cast<std::size_t>(n));
  for (std::size_t k = 0; k < order.size(); ++k) {
    rank[static_cast<std::size_t>(order[k])] = static_cast<std::int32_t>(k);
    out.components[k] = info[static_cast<std::size_t>(order[k])];
  }
  for (auto& l : label) l = rank[static_cast<std::size_t>(l)];
  out.run_component = std::move(label);
  return out;
}

namespace {

void check_components_shape(const std::vector<cv::Mat>& m, const Components& c, const char* what) {
  if (static_cast<int>(m.size()) != c.depth || m.empty() || m.front().rows != c.rows || m.front().cols != c.cols)
    throw std::invalid_argument(fmt::format("{}: mask shape differs from the labelled one", what));
}

}  // namespace

void select_components(Mask& mask, const Components& comps, const std::vector<bool>& keep) {
  check_stack(mask, CV_8U, "select_components");
  check_components_shape(mask, comps, "select_components");
  if (keep.size() != comps.count()) throw std::invalid_argument("select_components: keep has the wrong size");
  parallel_slices(0, comps.depth, [&](int z) {
    for (int r = 0; r < comps.rows; ++r) {
      const std::size_t row = static_cast<std::size_t>(z) * comps.rows + r;
      uchar* p = mask[static_cast<std::size_t>(z)].ptr<uchar>(r);
      for (auto i = comps.row_offset[row]; i < comps.row_offset[row + 1]; ++i) {
        const auto& run = comps.runs[static_cast<std::size_t>(i)];
        const bool k = keep[static_cast<std::size_t>(comps.run_component[static_cast<std::size_t>(i)])];
        std::memset(p + run.begin, k ? 1 : 0, static_cast<std::size_t>(run.end - run.begin));
      }
    }
  });
}

LabelVolume label_map(const Components& comps, int max_labels) {
  if (max_labels < 1 || max_labels > 255) throw std::invalid_argument("label_map: max_labels must be 1..255");
  if (comps.depth <= 0) throw std::invalid_argument("label_map: no volume");
  LabelVolume out = make_mask(comps.depth, comps.rows, comps.cols);
  parallel_slices(0, comps.depth, [&](int z) {
    for (int r = 0; r < comps.rows; ++r) {
      const std::size_t row = static_cast<std::size_t>(z) * comps.rows + r;
      uchar* p = out[static_cast<std::size_t>(z)].ptr<uchar>(r);
      for (auto i = comps.row_offset[row]; i < comps.row_offset[row + 1]; ++i) {
        const auto c = comps.run_component[static_cast<std::size_t>(i)];
        if (c >= max_labels) continue;
        const auto& run = comps.runs[static_cast<std::size_t>(i)];
        std::memset(p + run.begin, c + 1, static_cast<std::size_t>(run.end - run.begin));
      }
    }
  });
  return out;
}

void keep_largest_components(Mask& mask, int k, Connectivity connectivity) {
  if (k < 1) throw std::invalid_argument("keep_largest_components: k must be >= 1");
  const Components c = label_components(mask, connectivity);
  std::vector<bool> keep(c.count());
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = i < static_cast<std::size_t>(k);
  select_components(mask, c, keep);
}

void remove_border_components(Mask& mask, bool z_border_counts, Connectivity connectivity) {
  const Components c = label_components(mask, connectivity);
  std::vector<bool> keep(c.count());
  for (std::size_t i = 0; i < keep.size(); ++i)
    keep[i] = !c.components[i].touches_inplane_border && !(z_border_counts && c.components[i].touches_z_border);
  select_components(mask, c, keep);
}

void remove_small_components(Mask& mask, std::int64_t min_voxels, Connectivity connectivity) {
  const Components c = label_components(mask, connectivity);
  std::vector<bool> keep(c.count());
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = c.components[i].voxels >= min_voxels;
  select_components(mask, c, keep);
}

// ---- morphology ---------------------------------------------------------------------------

StructuringElement element_mm(double radius_mm, const Spacing& spacing, bool three_d, Footprint footprint) {
  check_spacing(spacing, "element_mm");
  if (!(radius_mm >= 0) || !std::isfinite(radius_mm)) throw std::invalid_argument("element_mm: radius must be >= 0");
  StructuringElement se;
  se.radius_col = static_cast<int>(std::lround(radius_mm / spacing.col));
  se.radius_row = static_cast<int>(std::lround(radius_mm / spacing.row));
  se.radius_slice = three_d ? static_cast<int>(std::lround(radius_mm / spacing.slice)) : 0;
  se.footprint = footprint;
  return se;
}

namespace {

void check_element(const Mask& mask, const StructuringElement& se, const char* what) {
  check_stack(mask, CV_8U, what);
  if (se.radius_col < 0 || se.radius_row < 0 || se.radius_slice < 0)
    throw std::invalid_argument("morphology: radii must be >= 0");
}

cv::Mat inplane_kernel(const StructuringElement& se) {
  const int shape = se.footprint == Footprint::box ? cv::MORPH_RECT
                    : se.footprint == Footprint::cross ? cv::MORPH_CROSS : cv::MORPH_ELLIPSE;
  return cv::getStructuringElement(shape, cv::Size(2 * se.radius_col + 1, 2 * se.radius_row + 1));
}

// One in-plane erosion or dilation of a slice. BORDER_ISOLATED: slices are often row ranges of one
// block, and without it OpenCV would read the neighbouring slices' rows (being written on another
// thread) as if they were rows of this one; with it, outside the slice is neutral (OpenCV's
// default border value for either operation), as documented.
void morph_slice(const cv::Mat& src, cv::Mat& dst, const cv::Mat& k, bool is_erode) {
  constexpr int border = cv::BORDER_CONSTANT | cv::BORDER_ISOLATED;
  if (is_erode) cv::erode(src, dst, k, cv::Point(-1, -1), 1, border);
  else cv::dilate(src, dst, k, cv::Point(-1, -1), 1, border);
}

void morph(Mask& mask, const StructuringElement& se, bool is_erode) {
  check_element(mask, se, is_erode ? "erode" : "dilate");
  if (se.radius_col > 0 || se.radius_row > 0) {
    const cv::Mat k = inplane_kernel(se);
    parallel_slices(0, static_cast<int>(mask.size()), [&](int z) {
      cv::Mat& m = mask[static_cast<std::size_t>(z)];
      morph_slice(m, m, k, is_erode);
    });
  }
  const int rz = se.radius_slice;
  if (rz == 0) return;
  // Along z: running min/max over 2*rz+1 slices; out-of-volume slices are neutral. Keeps the
  // originals of the rz previous slices only.
  const int depth = static_cast<int>(mask.size());
  std::deque<cv::Mat> before;
  cv::Mat acc;
  for (int z = 0; z < depth; ++z) {
    mask[static_cast<std::size_t>(z)].copyTo(acc);
    for (int k = 1; k <= rz && z + k < depth; ++k) {
      if (is_erode) cv::min(acc, mask[static_cast<std::size_t>(z + k)], acc);
      else cv::max(acc, mask[static_cast<std::size_t>(z + k)], acc);
    }
    for (const auto& b : before) {
      if (is_erode) cv::min(acc, b, acc);
      else cv::max(acc, b, acc);
    }
    before.push_back(mask[static_cast<std::size_t>(z)].clone());
    if (static_cast<int>(before.size()) > rz) before.pop_front();
    acc.copyTo(mask[static_cast<std::size_t>(z)]);
  }
}

}  // namespace

void erode(Mask& mask, const StructuringElement& se) { morph(mask, se, true); }
void dilate(Mask& mask, const StructuringElement& se) { morph(mask, se, false); }
namespace {

// Opening (erode first) or closing. In-plane only: both steps per slice in one pass over the
// volume, through a scratch slice per range; with a z radius, as two whole passes.
void open_close(Mask& mask, const StructuringElement& se, bool erode_first) {
  check_element(mask, se, erode_first ? "open" : "close");
  if (se.radius_slice > 0 || (se.radius_col == 0 && se.radius_row == 0)) {
    morph(mask, se, erode_first);
    morph(mask, se, !erode_first);
    return;
  }
  const cv::Mat k = inplane_kernel(se);
  cv::parallel_for_(cv::Range(0, static_cast<int>(mask.size())), [&](const cv::Range& r) {
    cv::Mat tmp;
    for (int z = r.start; z < r.end; ++z) {
      cv::Mat& s = mask[static_cast<std::size_t>(z)];
      morph_slice(s, tmp, k, erode_first);
      morph_slice(tmp, s, k, !erode_first);
    }
  });
}

}  // namespace

void open(Mask& mask, const StructuringElement& se) { open_close(mask, se, true); }
void close(Mask& mask, const StructuringElement& se) { open_close(mask, se, false); }

namespace {

// Fills the holes of one plane (background not 4-connected to its border) with 1, given the
// bounding box of its foreground; foreground keeps its values. Works in that box only: outside it
// everything is background joined to the border, so the box with a frame of background around it
// has the same holes (the coronal planes of one lung in the box of both are half empty). `pad` is
// scratch.
void fill_holes_in_box(cv::Mat& s, const cv::Rect& box, cv::Mat& pad) {
  if (box.width < 3 || box.height < 3) return;  // nothing can be enclosed
  const int rows = box.height, cols = box.width;
  if (pad.rows < rows + 2 || pad.cols < cols + 2) pad.create(std::max(pad.rows, rows + 2), std::max(pad.cols, cols + 2), CV_8U);
  cv::Mat frame = pad(cv::Rect(0, 0, cols + 2, rows + 2));  // 255 inside, a frame of 0 around
  cv::Mat inner = frame(cv::Rect(1, 1, cols, rows));
  frame.row(0).setTo(0);
  frame.row(rows + 1).setTo(0);
  frame.col(0).setTo(0);
  frame.col(cols + 1).setTo(0);
  cv::Mat in_box = s(box);
  cv::compare(in_box, 0, inner, cv::CMP_NE);
  cv::floodFill(frame, cv::Point(0, 0), cv::Scalar(128), nullptr, cv::Scalar(0), cv::Scalar(0), 4);
  // Still 0: background not reached from the border = hole.
  for (int r = 0; r < rows; ++r) {
    const std::uint8_t* in = inner.ptr<std::uint8_t>(r);
    std::uint8_t* p = in_box.ptr<std::uint8_t>(r);
    for (int c = 0; c < cols; ++c) p[c] = in[c] ? p[c] : 1;
  }
}

}  // namespace

void fill_holes_2d(Mask& mask) {
  check_stack(mask, CV_8U, "fill_holes_2d");
  cv::parallel_for_(cv::Range(0, static_cast<int>(mask.size())), [&](const cv::Range& range) {
    cv::Mat pad;  // per range
    for (int z = range.start; z < range.end; ++z) {
      cv::Mat& s = mask[static_cast<std::size_t>(z)];
      fill_holes_in_box(s, cv::boundingRect(s), pad);  // the box of the non-zero pixels
    }
  });
}

void fill_holes_2d(Mask& mask, PlaneAxis axis, std::int64_t max_hole_px) {
  check_stack(mask, CV_8U, "fill_holes_2d");
  const int depth = static_cast<int>(mask.size()), rows = mask.front().rows, cols = mask.front().cols;
  if (depth < 3) return;  // a plane two slices high has no inside
  const int planes = axis == PlaneAxis::coronal ? rows : cols, width = axis == PlaneAxis::coronal ? cols : rows;
  // Planes are gathered kBlock at a time: a sagittal plane is a column of every row, and reading
  // one column at a time touched a new cache line for every byte.
  constexpr int kBlock = 16;
  cv::parallel_for_(cv::Range(0, (planes + kBlock - 1) / kBlock), [&](const cv::Range& range) {
    cv::Mat block(kBlock * depth, width, CV_8U), pad, before;
    for (int blk = range.start; blk < range.end; ++blk) {
      const int k0 = blk * kBlock, count = std::min(kBlock, planes - k0);
      for (int z = 0; z < depth; ++z) {
        const cv::Mat& slice = mask[static_cast<std::size_t>(z)];
        if (axis == PlaneAxis::coronal) {
          for (int b = 0; b < count; ++b)
            std::memcpy(block.ptr<std::uint8_t>(b * depth + z), slice.ptr<std::uint8_t>(k0 + b), static_cast<std::size_t>(cols));
        } else {
          std::uint8_t* o[kBlock];
          for (int b = 0; b < count; ++b) o[b] = block.ptr<std::uint8_t>(b * depth + z);
          for (int r = 0; r < rows; ++r) {
            const std::uint8_t* in = slice.ptr<std::uint8_t>(r) + k0;
            for (int b = 0; b < count; ++b) o[b][r] = in[b];
          }
        }
      }
      for (int b = 0; b < count; ++b) {
        const int k = k0 + b;
        cv::Mat pl = block.rowRange(b * depth, (b + 1) * depth);
        // Holes lie inside the bounding box of the plane's foreground: the work stays in it.
        const cv::Rect box = cv::boundingRect(pl);
        if (box.width < 3 || box.height < 3) continue;  // nothing can be enclosed
        cv::Mat in_box = pl(box);
        in_box.copyTo(before);
        fill_holes_in_box(pl, box, pad);
        cv::Mat holes;
        cv::compare(in_box, before, holes, cv::CMP_NE);
        if (max_hole_px > 0 && cv::countNonZero(holes)) {  // keep the small holes only
          cv::Mat comps, stats, centroids;
          const int n = cv::connectedComponentsWithStats(holes, comps, stats, centroids, 4, CV_32S);
          for (int y = 0; y < box.height; ++y) {
            const int* c = comps.ptr<int>(y);
            std::uint8_t* h = holes.ptr<std::uint8_t>(y);
            for (int i = 0; i < box.width; ++i)
              if (c[i] && c[i] < n && stats.at<int>(c[i], cv::CC_STAT_AREA) > max_hole_px) h[i] = 0;
          }
        }
        for (int y = 0; y < box.height; ++y) {
          const std::uint8_t* h = holes.ptr<std::uint8_t>(y);
          const auto z = static_cast<std::size_t>(box.y + y);
          for (int i = 0; i < box.width; ++i) {
            if (!h[i]) continue;  // only (small enough) filled holes are written back
            if (axis == PlaneAxis::coronal) mask[z].ptr<std::uint8_t>(k)[box.x + i] = 1;
            else mask[z].ptr<std::uint8_t>(box.x + i)[k] = 1;
          }
        }
      }
    }
  });
}

void binarise(Mask& mask) {
  check_stack(mask, CV_8U, "binarise");
  // One pass (0 stays, anything else becomes 1), slices on OpenCV's threads: 3.4 -> 1.6 ms on the
  // 300x512x512 bench mask (OpenCV's compare over it on both threads: 2.2-2.6 ms).
  parallel_slices(0, static_cast<int>(mask.size()), [&](int z) {
    cv::Mat& m = mask[static_cast<std::size_t>(z)];
    cv::min(m, cv::Scalar::all(1), m);
  });
}

}  // namespace analysis::kernels
