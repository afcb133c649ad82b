#include "analysis/kernels/ibsi/glrlm.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/core.hpp>

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

// Dense Ng x L run counts (cell (g - 1) * L + length - 1) with the list of cells that became non-zero.
struct SparseCounts {
  std::vector<std::uint32_t> c;
  std::vector<std::uint32_t> touched;
  explicit SparseCounts(std::size_t cells) : c(cells, 0) { touched.reserve(cells); }
  void add(std::uint32_t idx, std::uint32_t n = 1) {
    if (c[idx] == 0) touched.push_back(idx);
    c[idx] += n;
  }
  bool empty() const { return touched.empty(); }
  void to_entries(int lmax, std::vector<Entry>& out) const {
    out.clear();
    const auto l = static_cast<std::uint32_t>(lmax);
    for (std::uint32_t idx : touched) out.push_back({static_cast<int>(idx / l) + 1, static_cast<int>(idx % l) + 1, static_cast<double>(c[idx])});
  }
  void clear() {
    for (std::uint32_t idx : touched) c[idx] = 0;
    touched.clear();
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

constexpr int kDirs2 = 4;  // in-plane directions
constexpr int kDirsZ = 9;  // directions with a step to the next slice
constexpr int kDirs3 = kDirs2 + kDirsZ;

struct Worker {
  std::array<SparseCounts, kDirs2> slice;
  SparseCounts comb;
  std::array<std::vector<std::uint32_t>, kDirs3> volume;  // 2.5D per direction (0..3), then 3D z-directions
  std::uint64_t voxels = 0;
  Scratch scratch;
  Worker(int ng, int lmax, std::size_t cells)
      : slice{SparseCounts(cells), SparseCounts(cells), SparseCounts(cells), SparseCounts(cells)}, comb(cells), scratch(ng, lmax) {
    for (auto& v : volume) v.assign(cells, 0);
  }
};

struct SliceResult {
  std::array<std::optional<Values>, kDirs2> dir;
  std::optional<Values> comb;
};

void emit(const Values& v, Aggregation a, Features& out) {
  for (int k = 0; k < kFeatures; ++k)
    out.push_back({fmt::format("{}_{}", kDefs[static_cast<std::size_t>(k)].base_tag, suffix(a)), v[static_cast<std::size_t>(k)]});
}

}  // namespace

std::span<const FeatureDef> glrlm_definitions() { return kDefs; }

void glrlm_features(const Levels& levels, const TextureScope& scope, Features& out) {
  check_levels(levels, "glrlm");
  if (!scope.two_d && !scope.three_d) return;
  const int ng = levels.ng;
  const detail::RoiBox box = detail::roi_box(levels);
  const Grid& gr = levels.grid;
  const int lmax = std::max({box.x1 - box.x0, box.y1 - box.y0, box.z1 - box.z0}) + 1;  // longest possible run
  const std::size_t cells = static_cast<std::size_t>(ng) * static_cast<std::size_t>(lmax);
  if (cells >= (std::size_t{1} << 32)) throw std::invalid_argument("glrlm: grey levels times run lengths too large");
  const std::ptrdiff_t W = gr.nx, S = static_cast<std::ptrdiff_t>(gr.nx) * gr.ny;
  const int slices = box.z1 - box.z0 + 1;
  const int workers = std::max(1, std::min(cv::getNumThreads(), slices));
  std::vector<Worker> state;
  state.reserve(static_cast<std::size_t>(workers));
  for (int t = 0; t < workers; ++t) state.emplace_back(ng, lmax, cells);
  std::vector<SliceResult> per_slice(static_cast<std::size_t>(slices));
  const auto ul = static_cast<std::uint32_t>(lmax);
  constexpr int kFar = std::numeric_limits<int>::max();

  std::atomic<int> next{0};
  cv::parallel_for_(cv::Range(0, workers), [&](const cv::Range& r) {
    for (int t = r.start; t < r.end; ++t) {
      Worker& w = state[static_cast<std::size_t>(t)];
      for (int s; (s = next.fetch_add(1)) < slices;) {
        const int z = box.z0 + s;
        const int zback = z - box.z0, zfwd = box.z1 - z;  // slices of the box before and after z
        std::uint64_t voxels = 0;
        for (int y = box.y0; y <= box.y1; ++y) {
          const auto [xa, xb] = box.row(y, z);
          const int* row = levels.level.data() + gr.index(0, y, z);
          const int up = y - box.y0, down = box.y1 - y;
          for (int x = xa; x < xb; ++x) {
            const int g = row[x];
            if (g == 0) continue;
            ++voxels;
            const std::uint32_t base = (static_cast<std::uint32_t>(g) - 1) * ul - 1;  // cell (g, length) at base + length
            const int left = x - box.x0, right = box.x1 - x;
            // The run through this voxel along (dx, dy, dz), counted from its first voxel (the one
            // whose predecessor, if inside the box, differs); 0 when this is not the first voxel.
            auto run = [&](int dx, int dy, int dz) __attribute__((always_inline)) -> std::uint32_t {
              const std::ptrdiff_t o = dz * S + dy * W + dx;
              const bool has_prev = (dx > 0 ? left : dx < 0 ? right : 1) > 0 && (dy > 0 ? up : dy < 0 ? down : 1) > 0 &&
                                    (dz > 0 ? zback : 1) > 0;
              if (has_prev && row[x - o] == g) return 0;
              const int steps = std::min({dx > 0 ? right : dx < 0 ? left : kFar, dy > 0 ? down : dy < 0 ? up : kFar, dz > 0 ? zfwd : kFar});
              std::uint32_t n = 1;
              for (const int* q = row + x + o; static_cast<int>(n) <= steps && *q == g; q += o) ++n;
              return n;
            };
            if (const auto n = run(1, 0, 0)) w.slice[0].add(base + n);
            if (const auto n = run(1, 1, 0)) w.slice[1].add(base + n);
            if (const auto n = run(0, 1, 0)) w.slice[2].add(base + n);
            if (const auto n = run(-1, 1, 0)) w.slice[3].add(base + n);
            if (scope.three_d) {  // spelled out so that every direction's bounds logic folds to constants
              auto vol = [&](int d, std::uint32_t n) {
                if (n) ++w.volume[static_cast<std::size_t>(d)][base + n];
              };
              vol(4, run(-1, -1, 1));
              vol(5, run(0, -1, 1));
              vol(6, run(1, -1, 1));
              vol(7, run(-1, 0, 1));
              vol(8, run(0, 0, 1));
              vol(9, run(1, 0, 1));
              vol(10, run(-1, 1, 1));
              vol(11, run(0, 1, 1));
              vol(12, run(1, 1, 1));
            }
          }
        }
        w.voxels += voxels;
        if (voxels == 0) continue;  // no ROI in this slice: empty matrices, left out of the averages
        SliceResult& res = per_slice[static_cast<std::size_t>(s)];
        for (int d = 0; d < kDirs2; ++d) {
          SparseCounts& m = w.slice[static_cast<std::size_t>(d)];
          auto& vol = w.volume[static_cast<std::size_t>(d)];
          for (std::uint32_t idx : m.touched) {
            vol[idx] += m.c[idx];
            w.comb.add(idx, m.c[idx]);
          }
          if (scope.two_d) {
            m.to_entries(lmax, w.scratch.entries);
            res.dir[static_cast<std::size_t>(d)] = glrlm_of(double(voxels), w.scratch);
          }
          m.clear();
        }
        if (scope.two_d) {
          w.comb.to_entries(lmax, w.scratch.entries);
          res.comb = glrlm_of(double(kDirs2) * double(voxels), w.scratch);
        }
        w.comb.clear();
      }
    }
  });

  std::uint64_t voxels = 0;
  for (const Worker& w : state) voxels += w.voxels;
  std::array<std::vector<std::uint64_t>, kDirs3> volume;
  for (int d = 0; d < kDirs3; ++d) {
    auto& v = volume[static_cast<std::size_t>(d)];
    v.assign(cells, 0);
    for (const Worker& w : state) {
      const auto& src = w.volume[static_cast<std::size_t>(d)];
      for (std::size_t k = 0; k < cells; ++k) v[k] += src[k];
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
    emit(avg2.result(), Aggregation::d2_avg, out);
    emit(comb2.result(), Aggregation::d2_comb, out);
    emit(avg25.result(), Aggregation::d25_avg, out);
    emit(comb25.result(), Aggregation::d25_comb, out);
  }
  if (scope.three_d) {
    Mean avg3, comb3;
    for (int d = 0; d < kDirs3; ++d) avg3.add(features_of(volume[static_cast<std::size_t>(d)], 1));
    comb3.add(features_of(merged(0, kDirs3), kDirs3));
    emit(avg3.result(), Aggregation::d3_avg, out);
    emit(comb3.result(), Aggregation::d3_comb, out);
  }
}

}  // namespace analysis::kernels::ibsi
