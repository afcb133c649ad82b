#include "analysis/kernels/ibsi/glrlm.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <limits>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/core.hpp>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "analysis/kernels/ibsi/glcm.h"  // detail::roi_box

namespace analysis::kernels::ibsi {
namespace {

constexpr int kFeatures = 16;

constexpr std::array<FeatureDef, kFeatures> kDefs{{
    {"rlm_sre", "22OV", "Short runs emphasis", ""},
    {"rlm_lre", "W4KF", "Long runs emphasis", ""},
    {"rlm_lgre", "V3SW", "Low grey level run emphasis", ""},
    {"rlm_hgre", "G3QZ", "High grey level run emphasis", ""},
    {"rlm_srlge", "HTZT", "Short run low grey level emphasis", ""},
    {"rlm_srhge", "GD3A", "Short run high grey level emphasis", ""},
    {"rlm_lrlge", "IVPO", "Long run low grey level emphasis", ""},
    {"rlm_lrhge", "3KUM", "Long run high grey level emphasis", ""},
    {"rlm_glnu", "R5YN", "Grey level non-uniformity", ""},
    {"rlm_glnu_norm", "OVBL", "Normalised grey level non-uniformity", ""},
    {"rlm_rlnu", "W92Y", "Run length non-uniformity", ""},
    {"rlm_rlnu_norm", "IC23", "Normalised run length non-uniformity", ""},
    {"rlm_r_perc", "9ZK5", "Run percentage", ""},
    {"rlm_gl_var", "8CE5", "Grey level variance", ""},
    {"rlm_rl_var", "SXLW", "Run length variance", ""},
    {"rlm_rl_entr", "HJ9O", "Run entropy", ""},
}};

using Values = std::array<double, kFeatures>;

// One non-zero cell of a run length matrix: grey level i, run length j (both from 1), runs r.
struct Entry {
  int i, j;
  double r;
};

struct Scratch {
  std::vector<double> ri, rj;
  std::vector<Entry> entries;
  Scratch(int ng, int lmax) : ri(static_cast<std::size_t>(ng) + 1), rj(static_cast<std::size_t>(lmax) + 1) {}
};

// Features of one non-empty matrix (scratch.entries) counted over `voxels` voxels (times directions).
Values glrlm_of(double voxels, Scratch& s) {
  std::fill(s.ri.begin(), s.ri.end(), 0.0);
  std::fill(s.rj.begin(), s.rj.end(), 0.0);
  double ns = 0;
  for (const Entry& e : s.entries) ns += e.r;
  double sre = 0, lre = 0, lgre = 0, hgre = 0, srlge = 0, srhge = 0, lrlge = 0, lrhge = 0, entr = 0;
  for (const Entry& e : s.entries) {
    const double i2 = double(e.i) * e.i, j2 = double(e.j) * e.j, r = e.r;
    sre += r / j2;
    lre += r * j2;
    lgre += r / i2;
    hgre += r * i2;
    srlge += r / (i2 * j2);
    srhge += r * i2 / j2;
    lrlge += r * j2 / i2;
    lrhge += r * i2 * j2;
    const double p = r / ns;
    entr -= p * std::log2(p);
    s.ri[static_cast<std::size_t>(e.i)] += r;
    s.rj[static_cast<std::size_t>(e.j)] += r;
  }
  // Non-uniformities, means and variances from the marginals.
  auto moments = [ns](const std::vector<double>& m, double& nu, double& var) {
    double mu = 0, sq = 0;
    for (std::size_t k = 1; k < m.size(); ++k) {
      mu += double(k) * m[k];
      sq += m[k] * m[k];
    }
    mu /= ns;
    var = 0;
    for (std::size_t k = 1; k < m.size(); ++k) var += (double(k) - mu) * (double(k) - mu) * m[k];
    var /= ns;
    nu = sq;
  };
  double glnu = 0, glvar = 0, rlnu = 0, rlvar = 0;
  moments(s.ri, glnu, glvar);
  moments(s.rj, rlnu, rlvar);
  return {sre / ns, lre / ns, lgre / ns, hgre / ns, srlge / ns, srhge / ns, lrlge / ns, lrhge / ns,
          glnu / ns, glnu / (ns * ns), rlnu / ns, rlnu / (ns * ns), ns / voxels, glvar, rlvar, entr};
}

struct Mean {
  Values sum{};
  int n = 0;
  void add(const Values& v) {
    for (int k = 0; k < kFeatures; ++k) sum[static_cast<std::size_t>(k)] += v[static_cast<std::size_t>(k)];
    ++n;
  }
  Values result() const {
    Values r;
    for (int k = 0; k < kFeatures; ++k)
      r[static_cast<std::size_t>(k)] = n > 0 ? sum[static_cast<std::size_t>(k)] / n : std::numeric_limits<double>::quiet_NaN();
    return r;
  }
};

template <typename Count>
void dense_entries(const std::vector<Count>& c, int lmax, std::vector<Entry>& out) {
  out.clear();
  for (std::size_t k = 0; k < c.size(); ++k)
    if (c[k] != 0)
      out.push_back({static_cast<int>(k / static_cast<std::size_t>(lmax)) + 1, static_cast<int>(k % static_cast<std::size_t>(lmax)) + 1,
                     static_cast<double>(c[k])});
}

constexpr int kDirs2 = 4;  // in-plane directions: (1,0,0), (1,1,0), (0,1,0), (-1,1,0)
constexpr int kDirsZ = 9;  // directions (dx, dy, 1), dy outer and dx inner from -1 to 1
constexpr int kDirs3 = kDirs2 + kDirsZ;

struct SliceResult {
  std::array<std::optional<Values>, kDirs2> dir;
  std::optional<Values> comb;
};

// How the runs are counted. Per direction, every line through the ROI's bounding box is followed
// once, keeping for every voxel its position in its run (1 for the first voxel, the predecessor's
// position + 1 when the predecessor along the direction has the same level). Counting voxels by
// (level g, position k) gives A(g, k), the number of runs of level g with length >= k, so the run
// length matrix is A(g, k) - A(g, k + 1): no run end has to be detected, and the loops are
// branch-free. Positions along x come from the last run start before each voxel (a prefix
// maximum); the other in-plane lines keep one row of positions, the lines to the next slice one
// plane of positions (updated in place, rows in the order that reads the old values).
//
// The levels are first copied into a zero-padded box (one voxel before and kPadRight after every
// row, one row before and after every slice, one empty slice before the first) of the smallest
// unsigned type, so that no predecessor lookup needs a bounds check. Only the segments of the rows
// are walked: stretches of ROI voxels, merged when less than kGap voxels apart. Voxels outside the
// intensity mask (level 0) inside a segment are counted in a row g = 0 that is never read. A
// position is only read by a voxel of the same level, so the positions of level-0 voxels and those
// left from earlier rows or slices never matter, and they never exceed the number of steps walked
// (so they stay inside the counts).
//
// Work is split into units: the in-plane directions over slabs of slices (no state crosses a
// slice) and the nine out-of-plane directions in groups (each walks every slice in order).
struct Unit {
  int d0 = 0, d1 = 0;                          // directions [d0, d1)
  int s0 = 0, s1 = 0;                          // in-plane units: slices [s0, s1) of the box
  std::vector<std::vector<std::uint32_t>> a;   // per direction of the unit: A at k * (ng + 1) + g
};

struct Box {
  int bx, by, bz;                              // box size
  std::ptrdiff_t px, plane;                    // padded row length, padded slice size
  std::vector<std::pair<int, int>> extent;     // per (slice, row of the box): padded [first, last + 1)
  const std::pair<int, int>& row(int s, int y) const {  // y from 1 (padded)
    return extent[static_cast<std::size_t>(s) * static_cast<std::size_t>(by) + static_cast<std::size_t>(y - 1)];
  }
};

constexpr int kGap = 16;       // ROI stretches of a row closer than this are walked as one segment
constexpr int kPadRight = 16;  // > 8 + 1: the vector loops read and write up to 8 voxels past a segment
static_assert(kGap > 8 && kPadRight > 9, "the vector loops' writes past a segment must stay in level-0 voxels");

struct Segments {                           // one slice
  std::vector<std::pair<int, int>> seg;     // padded [first, last + 1), at least kGap apart
  std::vector<std::uint32_t> first;         // row y (1..by): seg[first[y - 1], first[y])
  std::uint64_t voxels = 0;                 // ROI voxels
  int width = 0;                            // longest segment
  int y_first = 1, y_last = 0;              // rows with segments
};

// Runs of one slice (A of the four in-plane directions, kmax the longest possible run) into
// features per direction and merged.
void slice_features(const std::array<std::uint32_t*, kDirs2>& a, int ng, int kmax, std::uint64_t voxels, Scratch& scratch,
                    SliceResult& res) {
  const auto g1 = static_cast<std::size_t>(ng) + 1;
  std::vector<Entry>& e = scratch.entries;
  for (int d = 0; d < kDirs2; ++d) {
    e.clear();
    const std::uint32_t* h = a[static_cast<std::size_t>(d)];
    for (int k = 1; k <= kmax; ++k)
      for (int g = 1; g <= ng; ++g) {
        const std::size_t c = static_cast<std::size_t>(k) * g1 + static_cast<std::size_t>(g);
        if (const std::uint32_t r = h[c] - h[c + g1]) e.push_back({g, k, static_cast<double>(r)});
      }
    res.dir[static_cast<std::size_t>(d)] = glrlm_of(double(voxels), scratch);
  }
  e.clear();
  for (int k = 1; k <= kmax; ++k)
    for (int g = 1; g <= ng; ++g) {
      const std::size_t c = static_cast<std::size_t>(k) * g1 + static_cast<std::size_t>(g);
      std::uint64_t r = 0;
      for (const std::uint32_t* h : a) r += h[c] - h[c + g1];
      if (r) e.push_back({g, k, static_cast<double>(r)});
    }
  res.comb = glrlm_of(double(kDirs2) * double(voxels), scratch);
}

// Counts are kept in kCopies interleaved copies (cell c, copy at c * kCopies + copy; neighbouring
// voxels use different copies), so that increments of one cell do not wait for each other.
constexpr std::uint32_t kCopies = 4;

// dst[c] += the copies of cell c, for cells [0, n).
void fold(const std::uint32_t* src, std::size_t n, std::uint32_t* dst) {
  for (std::size_t c = 0; c < n; ++c) {
    const std::uint32_t* q = src + c * kCopies;
    std::uint32_t sum = 0;
    for (std::uint32_t j = 0; j < kCopies; ++j) sum += q[j];
    dst[c] += sum;
  }
}

#if defined(__SSE2__)
// The 8 cells (len * g1 + g) * kCopies + copy of 8 positions and levels (16-bit lanes; both fit
// signed 16 bits, see count_all) into ix[0, 8).
inline void store_cells(__m128i len, __m128i g, __m128i mul, std::uint32_t* ix) {
  const __m128i lane = _mm_setr_epi32(0, 1, 2, 3);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(ix), _mm_add_epi32(_mm_madd_epi16(_mm_unpacklo_epi16(len, g), mul), lane));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(ix + 4), _mm_add_epi32(_mm_madd_epi16(_mm_unpackhi_epi16(len, g), mul), lane));
}
#endif

// Cells of the voxels x in [xa, xb) of one segment along x into ix[x - xa]; the voxel before xa is
// outside the ROI. The SSE2 version writes ix up to 7 entries past xb - xa.
template <typename Lev>
inline void x_cells(const Lev* row, int xa, int xb, std::uint32_t g1, std::uint32_t* ix) {
#if defined(__SSE2__)
  if constexpr (std::is_same_v<Lev, std::uint8_t>) {
    // Run start s = (offset in the segment + 1) where the level changes, else 0; the position is
    // offset + 2 - (the largest s so far).
    const __m128i zero = _mm_setzero_si128();
    const __m128i mul = _mm_set1_epi32(static_cast<int>(kCopies * g1) | static_cast<int>(kCopies << 16));
    __m128i offset = _mm_setr_epi16(1, 2, 3, 4, 5, 6, 7, 8);  // offset + 1
    const __m128i eight = _mm_set1_epi16(8), one = _mm_set1_epi16(1);
    __m128i carry = zero;  // the last run start of the chunks before, in every lane
    for (int x = xa; x < xb; x += 8) {
      const __m128i g = _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + x)), zero);
      const __m128i q = _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + x - 1)), zero);
      __m128i st = _mm_andnot_si128(_mm_cmpeq_epi16(g, q), offset);
      st = _mm_max_epi16(st, _mm_slli_si128(st, 2));
      st = _mm_max_epi16(st, _mm_slli_si128(st, 4));
      st = _mm_max_epi16(st, _mm_slli_si128(st, 8));
      st = _mm_max_epi16(st, carry);
      const __m128i top = _mm_shufflehi_epi16(st, 0xff);
      carry = _mm_unpackhi_epi64(top, top);
      store_cells(_mm_add_epi16(_mm_sub_epi16(offset, st), one), g, mul, ix + (x - xa));
      offset = _mm_add_epi16(offset, eight);
    }
    return;
  }
#endif
  Lev gp = 0;
  std::uint32_t len = 0;
  for (int x = xa; x < xb; ++x) {
    const Lev g = row[x];
    len = (len & (0u - static_cast<std::uint32_t>(g == gp))) + 1;  // arithmetic, not a branch
    gp = g;
    ix[x - xa] = (len * g1 + g) * kCopies + (static_cast<std::uint32_t>(x) & (kCopies - 1));
  }
}

// Positions of the voxels x in [xa, xb) of one segment along another direction: t[x] = pp[x] + 1
// when the predecessor's level pred[x] equals row[x], else 1; their cells into ix[x - xa]. The
// SSE2 version writes t and ix up to 7 entries past the segment (into the gap after it or the
// row's padding: level-0 voxels).
template <typename Lev, typename Len>
inline void positions(const Lev* row, const Lev* pred, const Len* pp, int xa, int xb, std::uint32_t g1, Len* t, std::uint32_t* ix) {
#if defined(__SSE2__)
  if constexpr (std::is_same_v<Lev, std::uint8_t> && std::is_same_v<Len, std::uint16_t>) {
    const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi16(1);
    const __m128i mul = _mm_set1_epi32(static_cast<int>(kCopies * g1) | static_cast<int>(kCopies << 16));
    for (int x = xa; x < xb; x += 8) {
      const __m128i g = _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + x)), zero);
      const __m128i q = _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pred + x)), zero);
      const __m128i prev = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pp + x));
      const __m128i len = _mm_add_epi16(_mm_and_si128(prev, _mm_cmpeq_epi16(g, q)), one);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(t + x), len);
      store_cells(len, g, mul, ix + (x - xa));
    }
    return;
  }
#endif
  for (int x = xa; x < xb; ++x) {
    const Lev g = row[x];
    const Len len = static_cast<Len>(static_cast<std::uint32_t>(g == pred[x]) * pp[x] + 1);
    t[x] = len;
    ix[x - xa] = (len * g1 + g) * kCopies + (static_cast<std::uint32_t>(x) & (kCopies - 1));
  }
}

inline void count_cells(const std::uint32_t* ix, int n, std::uint32_t* h) {
  for (int i = 0; i < n; ++i) ++h[ix[i]];
}

template <typename Lev, typename Len>
void count_runs(const std::vector<Lev>& vol, const Box& b, const std::vector<Segments>& segs, int ng, int lmax, bool two_d,
                Unit& u, std::vector<SliceResult>& per_slice) {
  const std::uint32_t g1 = static_cast<std::uint32_t>(ng) + 1;
  const std::size_t cells = static_cast<std::size_t>(g1) * (static_cast<std::size_t>(lmax) + 2);
  const std::ptrdiff_t px = b.px;
  for (auto& h : u.a) h.assign(cells, 0);
  std::vector<std::uint32_t> ix(static_cast<std::size_t>(px) + 8);  // cells of one segment
  std::vector<Len> tmp(static_cast<std::size_t>(px) + 8);            // positions of one row (out-of-plane, dy = 0)
  std::vector<std::vector<std::uint32_t>> work(u.a.size());
  for (auto& h : work) h.assign(cells * kCopies, 0);

  if (u.d0 < kDirs2) {  // in-plane directions over slices [s0, s1)
    std::array<std::uint32_t*, kDirs2> a{};
    for (int d = 0; d < kDirs2; ++d) a[static_cast<std::size_t>(d)] = work[static_cast<std::size_t>(d)].data();
    std::array<std::vector<std::uint32_t>, kDirs2> plain;  // 2D: one slice's counts
    if (two_d)
      for (auto& h : plain) h.assign(cells, 0);
    std::array<std::vector<Len>, 6> rows;  // previous and current row of positions for (1,1,0), (0,1,0), (-1,1,0)
    Scratch scratch(ng, lmax);
    for (int s = u.s0; s < u.s1; ++s) {
      const Segments& sg = segs[static_cast<std::size_t>(s)];
      if (sg.voxels == 0) continue;  // no ROI in this slice: empty matrices, left out of the averages
      const Lev* slice = vol.data() + (static_cast<std::ptrdiff_t>(s) + 1) * b.plane;
      for (auto& r : rows) r.assign(static_cast<std::size_t>(px) + 9, 0);  // from x = -1 (read for x = 0 - dx)
      std::array<Len*, 3> prev{rows[0].data() + 1, rows[1].data() + 1, rows[2].data() + 1},
          cur{rows[3].data() + 1, rows[4].data() + 1, rows[5].data() + 1};
      for (int y = sg.y_first; y <= sg.y_last; ++y) {
        const Lev* row = slice + y * px;
        const Lev* up = row - px;
        for (std::uint32_t k = sg.first[static_cast<std::size_t>(y - 1)]; k < sg.first[static_cast<std::size_t>(y)]; ++k) {
          const int xa = sg.seg[k].first, xb = sg.seg[k].second;  // no structured binding: captured below (clang 14)
          x_cells(row, xa, xb, g1, ix.data());
          count_cells(ix.data(), xb - xa, a[0]);
          auto diagonal = [&]<int DX>(std::uint32_t* h, const Len* pv, Len* cv) {
            positions<Lev, Len>(row, up - DX, pv - DX, xa, xb, g1, cv, ix.data());
            count_cells(ix.data(), xb - xa, h);
          };
          diagonal.template operator()<1>(a[1], prev[0], cur[0]);
          diagonal.template operator()<0>(a[2], prev[1], cur[1]);
          diagonal.template operator()<-1>(a[3], prev[2], cur[2]);
        }
        std::swap(prev, cur);
      }
      if (!two_d) continue;
      // Positions in this slice (also those of level-0 voxels) are at most kmax: counts in rows k <= kmax + 1.
      const int kmax = std::max(sg.width, sg.y_last - sg.y_first + 1);
      const std::size_t used = static_cast<std::size_t>(g1) * (static_cast<std::size_t>(kmax) + 2);
      std::array<std::uint32_t*, kDirs2> p{};
      for (int d = 0; d < kDirs2; ++d) {
        auto& h = plain[static_cast<std::size_t>(d)];
        std::fill(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(used), 0u);
        fold(a[static_cast<std::size_t>(d)], used, h.data());
        std::fill(a[static_cast<std::size_t>(d)], a[static_cast<std::size_t>(d)] + used * kCopies, 0u);
        auto& acc = u.a[static_cast<std::size_t>(d)];
        for (std::size_t c = 0; c < used; ++c) acc[c] += h[c];
        p[static_cast<std::size_t>(d)] = h.data();
      }
      slice_features(p, ng, kmax, sg.voxels, scratch, per_slice[static_cast<std::size_t>(s)]);
    }
    for (std::size_t d = 0; d < work.size(); ++d) fold(work[d].data(), cells, u.a[d].data());
    return;
  }

  // Directions to the next slice: one plane of positions per direction, over every slice in order.
  std::vector<std::vector<Len>> planes(static_cast<std::size_t>(u.d1 - u.d0));
  for (auto& p : planes) p.assign(static_cast<std::size_t>(b.plane) + 1, 0);  // from index -1 (read for x = 0 - dx)
  for (int s = 0; s < b.bz; ++s) {
    const Segments& sg = segs[static_cast<std::size_t>(s)];
    if (sg.voxels == 0) continue;  // the positions left in the planes are never read (level 0 here)
    const Lev* slice = vol.data() + (static_cast<std::ptrdiff_t>(s) + 1) * b.plane;
    const Lev* before = slice - b.plane;
    for (int d = u.d0; d < u.d1; ++d) {
      std::uint32_t* h = work[static_cast<std::size_t>(d - u.d0)].data();
      Len* pos = planes[static_cast<std::size_t>(d - u.d0)].data() + 1;
      auto walk = [&]<int DX, int DY>() {
        auto line = [&](int y) {
          const Lev* row = slice + y * px;
          const Lev* prow = before + (y - DY) * px - DX;  // predecessors
          Len* p = pos + y * px;
          const Len* pp = pos + (y - DY) * px - DX;
          for (std::uint32_t k = sg.first[static_cast<std::size_t>(y - 1)]; k < sg.first[static_cast<std::size_t>(y)]; ++k) {
            const int xa = sg.seg[k].first, xb = sg.seg[k].second;  // no structured binding: captured below (clang 14)
            if constexpr (DY == 0 && DX != 0) {  // the predecessors are in this row: positions into tmp first
              positions<Lev, Len>(row, prow, pp, xa, xb, g1, tmp.data(), ix.data());
              std::copy(tmp.data() + xa, tmp.data() + xb, p + xa);
            } else {
              positions<Lev, Len>(row, prow, pp, xa, xb, g1, p, ix.data());
            }
            count_cells(ix.data(), xb - xa, h);
          }
        };
        if constexpr (DY == 1) {  // in place: read row y - 1 before writing it
          for (int y = sg.y_last; y >= sg.y_first; --y) line(y);
        } else {
          for (int y = sg.y_first; y <= sg.y_last; ++y) line(y);
        }
      };
      switch (d - kDirs2) {
        case 0: walk.template operator()<-1, -1>(); break;
        case 1: walk.template operator()<0, -1>(); break;
        case 2: walk.template operator()<1, -1>(); break;
        case 3: walk.template operator()<-1, 0>(); break;
        case 4: walk.template operator()<0, 0>(); break;
        case 5: walk.template operator()<1, 0>(); break;
        case 6: walk.template operator()<-1, 1>(); break;
        case 7: walk.template operator()<0, 1>(); break;
        default: walk.template operator()<1, 1>(); break;
      }
    }
  }
  for (std::size_t d = 0; d < work.size(); ++d) fold(work[d].data(), cells, u.a[d].data());
}

// Copies the levels into the padded box and finds the rows' segments, then runs the units.
// Returns the ROI voxels.
template <typename Lev, typename Len>
std::uint64_t count_all(const Levels& levels, const detail::RoiBox& rb, const Box& b, int lmax, bool two_d,
                        std::vector<Unit>& units, std::vector<SliceResult>& per_slice) {
  std::vector<Lev> vol(static_cast<std::size_t>(b.plane) * (static_cast<std::size_t>(b.bz) + 1), Lev{0});
  std::vector<Segments> segs(static_cast<std::size_t>(b.bz));
  const Grid& gr = levels.grid;
  cv::parallel_for_(cv::Range(0, b.bz), [&](const cv::Range& r) {
    for (int s = r.start; s < r.end; ++s) {
      Segments& sg = segs[static_cast<std::size_t>(s)];
      sg.first.assign(static_cast<std::size_t>(b.by) + 1, 0);
      for (int y = 1; y <= b.by; ++y) {
        const auto [xa, xb] = b.row(s, y);
        const int* src = levels.level.data() + gr.index(rb.x0, rb.y0 + y - 1, rb.z0 + s) - 1;  // at padded x
        Lev* dst = vol.data() + (static_cast<std::ptrdiff_t>(s) + 1) * b.plane + y * b.px;
        const std::size_t row_first = sg.seg.size();
        for (int x = xa; x < xb;) {  // src[x] != 0
          int e = x;
          while (e < xb && src[e] != 0) {
            dst[e] = static_cast<Lev>(src[e]);
            ++e;
          }
          sg.voxels += static_cast<std::uint64_t>(e - x);
          if (sg.seg.size() > row_first && x - sg.seg.back().second < kGap)
            sg.seg.back().second = e;
          else
            sg.seg.emplace_back(x, e);
          x = e;
          while (x < xb && src[x] == 0) ++x;
        }
        sg.first[static_cast<std::size_t>(y)] = static_cast<std::uint32_t>(sg.seg.size());
        if (sg.seg.size() > row_first) {
          if (sg.y_last < sg.y_first) sg.y_first = y;
          sg.y_last = y;
        }
      }
      for (const auto& [xa, xb] : sg.seg) sg.width = std::max(sg.width, xb - xa);
    }
  });
  cv::parallel_for_(cv::Range(0, static_cast<int>(units.size())), [&](const cv::Range& r) {
    for (int i = r.start; i < r.end; ++i)
      count_runs<Lev, Len>(vol, b, segs, levels.ng, lmax, two_d, units[static_cast<std::size_t>(i)], per_slice);
  }, static_cast<double>(units.size()));
  std::uint64_t voxels = 0;
  for (const Segments& sg : segs) voxels += sg.voxels;
  return voxels;
}


}  // namespace

std::span<const FeatureDef> glrlm_definitions() { return kDefs; }

void glrlm_features(const Levels& levels, const TextureScope& scope, Features& out) {
  glrlm_features(CheckedLevels(levels, "glrlm"), scope, out);
}

void glrlm_features(const CheckedLevels& checked, const TextureScope& scope, Features& out) {
  const Levels& levels = checked.get();
  if (!scope.two_d && !scope.three_d) return;
  const int ng = levels.ng;
  const detail::RoiBox box = detail::roi_box(levels);
  const int lmax = std::max({box.x1 - box.x0, box.y1 - box.y0, box.z1 - box.z0}) + 1;  // longest possible run
  const std::size_t cells = static_cast<std::size_t>(ng) * static_cast<std::size_t>(lmax);
  if ((static_cast<std::size_t>(ng) + 1) * (static_cast<std::size_t>(lmax) + 2) * kCopies >= (std::size_t{1} << 32))
    throw std::invalid_argument("glrlm: grey levels times run lengths too large");
  Box b;
  b.bx = box.x1 - box.x0 + 1;
  b.by = box.y1 - box.y0 + 1;
  b.bz = box.z1 - box.z0 + 1;
  b.px = b.bx + 1 + kPadRight;
  b.plane = b.px * (b.by + 2);
  b.extent.resize(box.extent.size());
  for (std::size_t k = 0; k < box.extent.size(); ++k) {
    const auto [xa, xb] = box.extent[k];
    b.extent[k] = xa == xb ? std::pair{0, 0} : std::pair{xa - box.x0 + 1, xb - box.x0 + 1};
  }
  const int slices = b.bz;

  // Units: the in-plane directions over slabs of slices, the out-of-plane ones in groups.
  const int threads = std::max(1, cv::getNumThreads());
  std::vector<Unit> units;
  const int slabs = std::min(threads, slices);
  for (int k = 0; k < slabs; ++k) {
    Unit u;
    u.d0 = 0;
    u.d1 = kDirs2;
    u.s0 = slices * k / slabs;
    u.s1 = slices * (k + 1) / slabs;
    units.push_back(std::move(u));
  }
  if (scope.three_d) {
    const int groups = std::min(threads, kDirsZ);
    for (int k = 0; k < groups; ++k) {
      Unit u;
      u.d0 = kDirs2 + kDirsZ * k / groups;
      u.d1 = kDirs2 + kDirsZ * (k + 1) / groups;
      units.insert(units.begin(), std::move(u));  // longest first
    }
  }
  for (Unit& u : units) u.a.resize(static_cast<std::size_t>(u.d1 - u.d0));
  std::vector<SliceResult> per_slice(static_cast<std::size_t>(slices));
  // Positions up to lmax + 1 (the zero row past the longest run); the SSE2 code needs positions,
  // offsets in a segment and levels times kCopies in signed 16 bits.
  const int lens = lmax + 1;
  std::uint64_t voxels = 0;
  if (ng <= 0xff && lens <= 0x7fff)
    voxels = count_all<std::uint8_t, std::uint16_t>(levels, box, b, lmax, scope.two_d, units, per_slice);
  else if (ng <= 0xffff && lens <= 0xffff)
    voxels = count_all<std::uint16_t, std::uint16_t>(levels, box, b, lmax, scope.two_d, units, per_slice);
  else
    voxels = count_all<std::uint32_t, std::uint32_t>(levels, box, b, lmax, scope.two_d, units, per_slice);

  // Matrices per direction: runs of level g and length k = A(g, k) - A(g, k + 1).
  const auto g1 = static_cast<std::size_t>(ng) + 1;
  std::array<std::vector<std::uint64_t>, kDirs3> volume;
  {
    std::vector<std::uint64_t> a(g1 * (static_cast<std::size_t>(lmax) + 2));
    const int directions = scope.three_d ? kDirs3 : kDirs2;
    for (int d = 0; d < directions; ++d) {
      std::fill(a.begin(), a.end(), 0);
      for (const Unit& u : units)
        if (d >= u.d0 && d < u.d1) {
          const auto& src = u.a[static_cast<std::size_t>(d - u.d0)];
          for (std::size_t c = 0; c < a.size(); ++c) a[c] += src[c];
        }
      auto& v = volume[static_cast<std::size_t>(d)];
      v.assign(cells, 0);
      for (int g = 1; g <= ng; ++g)
        for (int k = 1; k <= lmax; ++k) {
          const std::size_t c = static_cast<std::size_t>(k) * g1 + static_cast<std::size_t>(g);
          v[static_cast<std::size_t>(g - 1) * static_cast<std::size_t>(lmax) + static_cast<std::size_t>(k - 1)] = a[c] - a[c + g1];
        }
    }
  }
  Scratch scratch(ng, lmax);
  auto features_of = [&](const std::vector<std::uint64_t>& c, int directions) {
    dense_entries(c, lmax, scratch.entries);
    return glrlm_of(double(directions) * double(voxels), scratch);
  };
  auto merged = [&](int from, int to) {
    std::vector<std::uint64_t> m(cells, 0);
    for (int d = from; d < to; ++d)
      for (std::size_t k = 0; k < cells; ++k) m[k] += volume[static_cast<std::size_t>(d)][k];
    return m;
  };

  if (scope.two_d) {
    Mean avg2, comb2, avg25, comb25;
    for (const SliceResult& r : per_slice) {
      for (const auto& f : r.dir)
        if (f) avg2.add(*f);
      if (r.comb) comb2.add(*r.comb);
    }
    for (int d = 0; d < kDirs2; ++d) avg25.add(features_of(volume[static_cast<std::size_t>(d)], 1));
    comb25.add(features_of(merged(0, kDirs2), kDirs2));
    emit(kDefs, avg2.result(), Aggregation::d2_avg, out);
    emit(kDefs, comb2.result(), Aggregation::d2_comb, out);
    emit(kDefs, avg25.result(), Aggregation::d25_avg, out);
    emit(kDefs, comb25.result(), Aggregation::d25_comb, out);
  }
  if (scope.three_d) {
    Mean avg3, comb3;
    for (int d = 0; d < kDirs3; ++d) avg3.add(features_of(volume[static_cast<std::size_t>(d)], 1));
    comb3.add(features_of(merged(0, kDirs3), kDirs3));
    emit(kDefs, avg3.result(), Aggregation::d3_avg, out);
    emit(kDefs, comb3.result(), Aggregation::d3_comb, out);
  }
}

}  // namespace analysis::kernels::ibsi
