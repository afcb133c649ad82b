#include "analysis/kernels/ibsi/glcm.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <opencv2/core.hpp>

namespace analysis::kernels::ibsi {

namespace detail {

RoiBox roi_box(const Levels& levels) {
  const Grid& g = levels.grid;
  // Per slice, on OpenCV's threads: the extent of every row, and the slice's box.
  std::vector<std::pair<int, int>> rows(static_cast<std::size_t>(g.ny) * static_cast<std::size_t>(g.nz), {0, 0});
  cv::parallel_for_(cv::Range(0, g.nz), [&](const cv::Range& r) {
    for (int z = r.start; z < r.end; ++z)
      for (int y = 0; y < g.ny; ++y) {
        const int* row = levels.level.data() + g.index(0, y, z);
        int x = 0;
        while (x < g.nx && row[x] == 0) ++x;
        if (x == g.nx) continue;
        int xe = g.nx - 1;
        while (row[xe] == 0) --xe;
        rows[static_cast<std::size_t>(z) * static_cast<std::size_t>(g.ny) + static_cast<std::size_t>(y)] = {x, xe + 1};
      }
  });
  RoiBox b;
  b.x0 = g.nx;
  b.y0 = g.ny;
  b.z0 = g.nz;
  for (int z = 0; z < g.nz; ++z)
    for (int y = 0; y < g.ny; ++y) {
      const auto [xa, xb] = rows[static_cast<std::size_t>(z) * static_cast<std::size_t>(g.ny) + static_cast<std::size_t>(y)];
      if (xa == xb) continue;
      b.x0 = std::min(b.x0, xa);
      b.x1 = std::max(b.x1, xb - 1);
      b.y0 = std::min(b.y0, y);
      b.y1 = std::max(b.y1, y);
      b.z0 = std::min(b.z0, z);
      b.z1 = std::max(b.z1, z);
    }
  if (b.x1 < 0) throw std::invalid_argument("texture matrices: empty intensity mask");
  const int by = b.y1 - b.y0 + 1;
  b.extent.resize(static_cast<std::size_t>(by) * static_cast<std::size_t>(b.z1 - b.z0 + 1));
  for (int z = b.z0; z <= b.z1; ++z)
    for (int y = b.y0; y <= b.y1; ++y)
      b.extent[static_cast<std::size_t>(z - b.z0) * static_cast<std::size_t>(by) + static_cast<std::size_t>(y - b.y0)] =
          rows[static_cast<std::size_t>(z) * static_cast<std::size_t>(g.ny) + static_cast<std::size_t>(y)];
  return b;
}

}  // namespace detail

namespace {

constexpr int kFeatures = 25;
constexpr int kInvVar = 17;  // index of cm_inv_var in the definitions

constexpr std::array<FeatureDef, kFeatures> kDefs{{
    {"cm_joint_max", "GYBY", "Joint maximum", ""},
    {"cm_joint_avg", "60VM", "Joint average", ""},
    {"cm_joint_var", "UR99", "Joint variance", ""},
    {"cm_joint_entr", "TU9B", "Joint entropy", ""},
    {"cm_diff_avg", "TF7R", "Difference average", ""},
    {"cm_diff_var", "D3YU", "Difference variance", ""},
    {"cm_diff_entr", "NTRS", "Difference entropy", ""},
    {"cm_sum_avg", "ZGXS", "Sum average", ""},
    {"cm_sum_var", "OEEB", "Sum variance", ""},
    {"cm_sum_entr", "P6QZ", "Sum entropy", ""},
    {"cm_energy", "8ZQL", "Angular second moment", ""},
    {"cm_contrast", "ACUI", "Contrast", ""},
    {"cm_dissimilarity", "8S9J", "Dissimilarity", ""},
    {"cm_inv_diff", "IB1Z", "Inverse difference", ""},
    {"cm_inv_diff_norm", "NDRX", "Normalised inverse difference", ""},
    {"cm_inv_diff_mom", "WF0Z", "Inverse difference moment", ""},
    {"cm_inv_diff_mom_norm", "1QCO", "Normalised inverse difference moment", ""},
    {"cm_inv_var", "E8JP", "Inverse variance", ""},
    {"cm_corr", "NI2N", "Correlation", ""},
    {"cm_auto_corr", "QWB0", "Autocorrelation", ""},
    {"cm_clust_tend", "DG8W", "Cluster tendency", ""},
    {"cm_clust_shade", "7NFM", "Cluster shade", ""},
    {"cm_clust_prom", "AE86", "Cluster prominence", ""},
    {"cm_info_corr1", "R8DG", "Information correlation 1", ""},
    {"cm_info_corr2", "JN9H", "Information correlation 2", ""},
}};

using Values = std::array<double, kFeatures>;

struct MatrixFeatures {
  Values v{};
  bool inv_var_defined = false;  // the matrix has off-diagonal cells
};

// One cell of the upper triangle of a symmetric GLCM: levels i <= j (1-based) and the number of
// unordered voxel pairs with these levels. The symmetric matrix has n at (i, j) and at (j, i)
// (2n on the diagonal), its sum is twice the number of pairs.
struct Entry {
  int i, j;
  double n;
};

struct Scratch {
  std::vector<double> px, pd, ps;
  std::vector<Entry> entries;
  explicit Scratch(int ng) : px(static_cast<std::size_t>(ng) + 1), pd(static_cast<std::size_t>(ng)), ps(2 * static_cast<std::size_t>(ng) + 1) {}
};

double plog2p(double p) { return p > 0 ? p * std::log2(p) : 0.0; }

// Features of one non-empty matrix given by its upper-triangle entries (scratch.entries): one pass
// over the entries, the rest from the marginal px, the difference marginal p_{x-y} and the sum
// marginal p_{x+y}. The matrix is symmetric, so both marginals are px, both marginal means are the
// joint average mu and both marginal variances equal the joint variance.
MatrixFeatures glcm_of(int ng, Scratch& s) {
  double pairs = 0;
  for (const Entry& e : s.entries) pairs += e.n;
  const double norm = 1.0 / (2.0 * pairs);
  std::fill(s.px.begin(), s.px.end(), 0.0);
  std::fill(s.pd.begin(), s.pd.end(), 0.0);
  std::fill(s.ps.begin(), s.ps.end(), 0.0);
  double jmax = 0, mu = 0, jentr = 0, energy = 0, autoc = 0;
  for (const Entry& e : s.entries) {
    const bool diag = e.i == e.j;
    const double p = (diag ? 2.0 : 1.0) * e.n * norm;  // the value of the cell (i, j), and of (j, i)
    const double cells = diag ? 1.0 : 2.0;             // cells of the full matrix with value p
    const double mass = cells * p;
    jmax = std::max(jmax, p);
    mu += 0.5 * (e.i + e.j) * mass;
    jentr -= cells * plog2p(p);
    energy += cells * p * p;
    autoc += double(e.i) * e.j * mass;
    s.px[static_cast<std::size_t>(e.i)] += p;
    if (!diag) s.px[static_cast<std::size_t>(e.j)] += p;
    s.pd[static_cast<std::size_t>(e.j - e.i)] += mass;
    s.ps[static_cast<std::size_t>(e.i + e.j)] += mass;
  }
  double var = 0, hx = 0;
  for (int i = 1; i <= ng; ++i) {
    const double p = s.px[static_cast<std::size_t>(i)];
    var += (i - mu) * (i - mu) * p;
    hx -= plog2p(p);
  }
  double davg = 0, dentr = 0, contrast = 0, idiff = 0, idn = 0, idm = 0, idmn = 0, ivar = 0;
  bool off_diagonal = false;
  const double g = ng;
  for (int k = 0; k < ng; ++k) {
    const double p = s.pd[static_cast<std::size_t>(k)];
    if (p == 0) continue;
    const double k2 = double(k) * k;
    davg += k * p;
    dentr -= plog2p(p);
    contrast += k2 * p;
    idiff += p / (1.0 + k);
    idn += p / (1.0 + k / g);
    idm += p / (1.0 + k2);
    idmn += p / (1.0 + k2 / (g * g));
    if (k > 0) {
      ivar += p / k2;
      off_diagonal = true;
    }
  }
  double dvar = 0;
  for (int k = 0; k < ng; ++k) dvar += (k - davg) * (k - davg) * s.pd[static_cast<std::size_t>(k)];
  double savg = 0, sentr = 0;
  for (int k = 2; k <= 2 * ng; ++k) {
    const double p = s.ps[static_cast<std::size_t>(k)];
    savg += k * p;
    sentr -= plog2p(p);
  }
  // Sum variance around the sum average; cluster features around 2 mu (= the sum average).
  double svar = 0, ctend = 0, cshade = 0, cprom = 0;
  for (int k = 2; k <= 2 * ng; ++k) {
    const double p = s.ps[static_cast<std::size_t>(k)];
    if (p == 0) continue;
    svar += (k - savg) * (k - savg) * p;
    const double t = k - 2 * mu, t2 = t * t;
    ctend += t2 * p;
    cshade += t2 * t * p;
    cprom += t2 * t2 * p;
  }
  // HXY1 = -sum_ij p_ij log2(px(i) py(j)) and HXY2 = -sum_ij px(i) py(j) log2(px(i) py(j)) both equal
  // HX + HY = 2 HX (sum over j of p_ij is px(i)).
  const double hxy1 = 2 * hx, hxy2 = 2 * hx;
  // Correlation: sum_ij (i - mu)(j - mu) p_ij / var = (autocorrelation - mu^2) / var.
  const double cov = autoc - mu * mu;
  MatrixFeatures f;
  f.v = {jmax,
         mu,
         var,
         jentr,
         davg,
         dvar,
         dentr,
         savg,
         svar,
         sentr,
         energy,
         contrast,
         davg,  // dissimilarity = sum |i - j| p_ij = the difference average
         idiff,
         idn,
         idm,
         idmn,
         ivar,
         var > 0 ? cov / var : 1.0,
         autoc,
         ctend,
         cshade,
         cprom,
         hx > 0 ? (jentr - hxy1) / hx : 0.0,
         std::sqrt(std::max(0.0, 1.0 - std::exp(-2.0 * (hxy2 - jentr))))};
  f.inv_var_defined = off_diagonal;
  return f;
}

// Mean of the features over the non-empty matrices of one aggregation.
struct Mean {
  Values sum{};
  int n = 0;
  double inv_var_sum = 0;
  int inv_var_n = 0;
  void add(const MatrixFeatures& f) {
    for (int k = 0; k < kFeatures; ++k)
      if (k != kInvVar) sum[static_cast<std::size_t>(k)] += f.v[static_cast<std::size_t>(k)];
    ++n;
    if (f.inv_var_defined) {
      inv_var_sum += f.v[kInvVar];
      ++inv_var_n;
    }
  }
  Values result() const {
    Values r;
    if (n == 0) {
      r.fill(std::numeric_limits<double>::quiet_NaN());
      return r;
    }
    for (int k = 0; k < kFeatures; ++k) r[static_cast<std::size_t>(k)] = sum[static_cast<std::size_t>(k)] / n;
    r[kInvVar] = inv_var_n > 0 ? inv_var_sum / inv_var_n : 0.0;
    return r;
  }
};

// Dense Ng x Ng counts of ordered pairs (first voxel, neighbour along the direction) with the list
// of cells that became non-zero, so that reading and clearing cost O(cells) rather than O(Ng^2).
struct SparseCounts {
  std::vector<std::uint32_t> c;
  std::vector<std::uint32_t> touched;
  explicit SparseCounts(int ng) : c(static_cast<std::size_t>(ng) * static_cast<std::size_t>(ng), 0) {
    touched.reserve(c.size());
  }
  void add(std::uint32_t idx, std::uint32_t n = 1) {
    if (c[idx] == 0) touched.push_back(idx);
    c[idx] += n;
  }
  bool empty() const { return touched.empty(); }
  // The upper triangle of the symmetric matrix: cell (a, b) and (b, a) together.
  void to_entries(int ng, std::vector<Entry>& out) const {
    out.clear();
    const auto g = static_cast<std::uint32_t>(ng);
    for (std::uint32_t idx : touched) {
      const std::uint32_t a = idx / g, b = idx % g;
      if (a < b) {
        out.push_back({static_cast<int>(a) + 1, static_cast<int>(b) + 1, static_cast<double>(c[idx]) + c[b * g + a]});
      } else if (a == b) {
        out.push_back({static_cast<int>(a) + 1, static_cast<int>(a) + 1, static_cast<double>(c[idx])});
      } else if (c[b * g + a] == 0) {  // else counted with (b, a)
        out.push_back({static_cast<int>(b) + 1, static_cast<int>(a) + 1, static_cast<double>(c[idx])});
      }
    }
  }
  void clear() {
    for (std::uint32_t idx : touched) c[idx] = 0;
    touched.clear();
  }
};

template <typename Count>
void dense_entries(const std::vector<Count>& c, int ng, std::vector<Entry>& out) {
  out.clear();
  const auto g = static_cast<std::size_t>(ng);
  for (std::size_t i = 0; i < g; ++i)
    for (std::size_t j = i; j < g; ++j) {
      const Count n = i == j ? c[i * g + i] : c[i * g + j] + c[j * g + i];
      if (n != 0) out.push_back({static_cast<int>(i) + 1, static_cast<int>(j) + 1, static_cast<double>(n)});
    }
}

constexpr int kDirs2 = 4;   // in-plane directions
constexpr int kDirsZ = 9;   // directions to the next slice
constexpr int kDirs3 = kDirs2 + kDirsZ;

// Per worker: the current slice's in-plane matrices and the worker's share of the volume matrices.
struct Worker {
  std::array<SparseCounts, kDirs2> slice;
  SparseCounts comb;
  std::array<std::vector<std::uint32_t>, kDirs3> volume;  // 2.5D per direction (0..3), then 3D z-directions
  Scratch scratch;
  explicit Worker(int ng)
      : slice{SparseCounts(ng), SparseCounts(ng), SparseCounts(ng), SparseCounts(ng)}, comb(ng), scratch(ng) {
    for (auto& v : volume) v.assign(static_cast<std::size_t>(ng) * static_cast<std::size_t>(ng), 0);
  }
};

struct SliceResult {
  std::array<std::optional<MatrixFeatures>, kDirs2> dir;
  std::optional<MatrixFeatures> comb;
};


}  // namespace

std::span<const FeatureDef> glcm_definitions() { return kDefs; }

void glcm_features(const Levels& levels, const TextureScope& scope, Features& out) {
  glcm_features(CheckedLevels(levels, "glcm"), scope, out);
}

void glcm_features(const CheckedLevels& checked, const TextureScope& scope, Features& out) {
  const Levels& levels = checked.get();
  if (!scope.two_d && !scope.three_d) return;
  const int ng = levels.ng;
  const detail::RoiBox box = detail::roi_box(levels);
  const Grid& gr = levels.grid;
  const std::ptrdiff_t W = gr.nx, S = static_cast<std::ptrdiff_t>(gr.nx) * gr.ny;
  const int slices = box.z1 - box.z0 + 1;
  const int workers = std::max(1, std::min(cv::getNumThreads(), slices));
  std::vector<Worker> state;
  state.reserve(static_cast<std::size_t>(workers));
  for (int t = 0; t < workers; ++t) state.emplace_back(ng);
  std::vector<SliceResult> per_slice(static_cast<std::size_t>(slices));
  const auto ung = static_cast<std::uint32_t>(ng);

  std::atomic<int> next{0};
  cv::parallel_for_(cv::Range(0, workers), [&](const cv::Range& r) {
    for (int t = r.start; t < r.end; ++t) {
      Worker& w = state[static_cast<std::size_t>(t)];
      for (int s; (s = next.fetch_add(1)) < slices;) {
        const int z = box.z0 + s;
        const bool znext = scope.three_d && z < box.z1;
        for (int y = box.y0; y <= box.y1; ++y) {
          const auto [xa, xb] = box.row(y, z);
          const int* row = levels.level.data() + gr.index(0, y, z);
          const bool up = y > box.y0, down = y < box.y1;
          for (int x = xa; x < xb; ++x) {
            const auto a = static_cast<std::uint32_t>(row[x]);
            if (a == 0) continue;
            const std::uint32_t base = (a - 1) * ung - 1;  // cell (a, b) at base + b
            // Forward neighbours only (every unordered pair is visited once, from its first voxel),
            // and only inside the ROI's box: outside it every level is 0.
            const bool left = x > box.x0, right = x < box.x1;
            // In-plane pairs: into the slice's matrices (2D features, merged into the volume's after
            // the slice) or, without 2D features, straight into the volume's: the same counts.
            auto pair = [&](int d, std::ptrdiff_t o) {
              if (const auto b = static_cast<std::uint32_t>(row[x + o]); b != 0) {
                if (scope.two_d) w.slice[static_cast<std::size_t>(d)].add(base + b);
                else ++w.volume[static_cast<std::size_t>(d)][base + b];
              }
            };
            if (right) pair(0, 1);
            if (down) {
              if (right) pair(1, W + 1);
              pair(2, W);
              if (left) pair(3, W - 1);
            }
            if (znext) {
              const bool vx[3] = {left, true, right}, vy[3] = {up, true, down};
              int d = kDirs2;
              for (int dy = -1; dy <= 1; ++dy)
                for (int dx = -1; dx <= 1; ++dx, ++d)
                  if (vx[dx + 1] && vy[dy + 1])
                    if (const auto b = static_cast<std::uint32_t>(row[x + S + dy * W + dx]); b != 0) ++w.volume[static_cast<std::size_t>(d)][base + b];
            }
          }
        }
        SliceResult& res = per_slice[static_cast<std::size_t>(s)];
        for (int d = 0; d < kDirs2; ++d) {
          SparseCounts& m = w.slice[static_cast<std::size_t>(d)];
          if (m.empty()) continue;
          auto& vol = w.volume[static_cast<std::size_t>(d)];
          for (std::uint32_t idx : m.touched) {
            vol[idx] += m.c[idx];
            w.comb.add(idx, m.c[idx]);
          }
          if (scope.two_d) {
            m.to_entries(ng, w.scratch.entries);
            res.dir[static_cast<std::size_t>(d)] = glcm_of(ng, w.scratch);
          }
          m.clear();
        }
        if (scope.two_d && !w.comb.empty()) {
          w.comb.to_entries(ng, w.scratch.entries);
          res.comb = glcm_of(ng, w.scratch);
        }
        w.comb.clear();
      }
    }
  });

  // Volume matrices: the workers' shares summed.
  const std::size_t cells = static_cast<std::size_t>(ng) * static_cast<std::size_t>(ng);
  std::array<std::vector<std::uint64_t>, kDirs3> volume;
  for (int d = 0; d < kDirs3; ++d) {
    auto& v = volume[static_cast<std::size_t>(d)];
    v.assign(cells, 0);
    for (const Worker& w : state) {
      const auto& src = w.volume[static_cast<std::size_t>(d)];
      for (std::size_t k = 0; k < cells; ++k) v[k] += src[k];
    }
  }
  Scratch scratch(ng);
  auto features_of = [&](const std::vector<std::uint64_t>& c) -> std::optional<MatrixFeatures> {
    dense_entries(c, ng, scratch.entries);
    if (scratch.entries.empty()) return std::nullopt;
    return glcm_of(ng, scratch);
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
    for (int d = 0; d < kDirs2; ++d)
      if (auto f = features_of(volume[static_cast<std::size_t>(d)])) avg25.add(*f);
    if (auto f = features_of(merged(0, kDirs2))) comb25.add(*f);
    emit(kDefs, avg2.result(), Aggregation::d2_avg, out);
    emit(kDefs, comb2.result(), Aggregation::d2_comb, out);
    emit(kDefs, avg25.result(), Aggregation::d25_avg, out);
    emit(kDefs, comb25.result(), Aggregation::d25_comb, out);
  }
  if (scope.three_d) {
    Mean avg3, comb3;
    for (int d = 0; d < kDirs3; ++d)
      if (auto f = features_of(volume[static_cast<std::size_t>(d)])) avg3.add(*f);
    if (auto f = features_of(merged(0, kDirs3))) comb3.add(*f);
    emit(kDefs, avg3.result(), Aggregation::d3_avg, out);
    emit(kDefs, comb3.result(), Aggregation::d3_comb, out);
  }
}

}  // namespace analysis::kernels::ibsi
