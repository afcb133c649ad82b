#include "analysis/kernels/ibsi/neighbourhood.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <vector>

#include <fmt/format.h>
#include <opencv2/core.hpp>

#include "analysis/kernels/ibsi/zones.h"

namespace analysis::kernels::ibsi {
namespace {

constexpr FeatureDef kNgtdm[] = {
    {"ngt_coarseness", "QCDE", "Coarseness", ""},
    {"ngt_contrast", "65HE", "Contrast", ""},
    {"ngt_busyness", "NQ30", "Busyness", ""},
    {"ngt_complexity", "HDEZ", "Complexity", ""},
    {"ngt_strength", "1X9X", "Strength", ""},
};

constexpr FeatureDef kNgldm[] = {
    {"ngl_lde", "SODN", "Low dependence emphasis", ""},
    {"ngl_hde", "IMOQ", "High dependence emphasis", ""},
    {"ngl_lgce", "TL9H", "Low grey level count emphasis", ""},
    {"ngl_hgce", "OAE7", "High grey level count emphasis", ""},
    {"ngl_ldlge", "EQ3F", "Low dependence low grey level emphasis", ""},
    {"ngl_ldhge", "JA6D", "Low dependence high grey level emphasis", ""},
    {"ngl_hdlge", "NBZI", "High dependence low grey level emphasis", ""},
    {"ngl_hdhge", "9QMG", "High dependence high grey level emphasis", ""},
    {"ngl_glnu", "FP8K", "Grey level non-uniformity", ""},
    {"ngl_glnu_norm", "5SPA", "Normalised grey level non-uniformity", ""},
    {"ngl_dcnu", "Z87G", "Dependence count non-uniformity", ""},
    {"ngl_dcnu_norm", "OKJI", "Normalised dependence count non-uniformity", ""},
    {"ngl_dc_perc", "6XV8", "Dependence count percentage", ""},
    {"ngl_gl_var", "1PFV", "Grey level variance", ""},
    {"ngl_dc_var", "DNX2", "Dependence count variance", ""},
    {"ngl_dc_entr", "FCBV", "Dependence count entropy", ""},
    {"ngl_dc_energy", "CAS9", "Dependence count energy", ""},
};

// NGTDM of one slice or the volume: per grey level (index level - 1), the voxel count n and s.
struct Ngtdm {
  std::vector<std::int64_t> n;
  std::vector<double> s;
  explicit Ngtdm(int ng = 0) : n(static_cast<std::size_t>(ng), 0), s(static_cast<std::size_t>(ng), 0.0) {}
  void add(const Ngtdm& o) {
    for (std::size_t i = 0; i < n.size(); ++i) {
      n[i] += o.n[i];
      s[i] += o.s[i];
    }
  }
};

// NGLDM: counts per grey level (index level - 1) and dependence k = 0..kmax (j = k + 1).
struct Ngldm {
  int columns = 0;
  std::vector<std::int64_t> c;
  Ngldm(int ng = 0, int kmax = 0)
      : columns(kmax + 1), c(static_cast<std::size_t>(ng) * static_cast<std::size_t>(kmax + 1), 0) {}
  void add(const Ngldm& o) {
    for (std::size_t i = 0; i < c.size(); ++i) c[i] += o.c[i];
  }
  std::int64_t voxels() const {
    std::int64_t t = 0;
    for (const auto v : c) t += v;
    return t;
  }
  std::vector<detail::MatrixEntry> entries() const {
    std::vector<detail::MatrixEntry> e;
    for (std::size_t cell = 0; cell < c.size(); ++cell)
      if (c[cell])
        e.push_back({static_cast<int>(cell / static_cast<std::size_t>(columns)) + 1,
                     static_cast<std::int64_t>(cell % static_cast<std::size_t>(columns)) + 1, static_cast<double>(c[cell])});
    return e;
  }
};

using NgtdmFeatures = std::array<double, 5>;

NgtdmFeatures ngtdm_values(const Ngtdm& m) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<int> present;
  double nvc = 0;
  for (std::size_t i = 0; i < m.n.size(); ++i)
    if (m.n[i] > 0) {
      present.push_back(static_cast<int>(i));
      nvc += static_cast<double>(m.n[i]);
    }
  if (present.empty()) return {nan, nan, nan, nan, nan};
  const double ngp = static_cast<double>(present.size());
  std::vector<double> p(present.size()), s(present.size()), lvl(present.size());
  double sum_ps = 0, sum_s = 0;
  for (std::size_t a = 0; a < present.size(); ++a) {
    const auto i = static_cast<std::size_t>(present[a]);
    p[a] = static_cast<double>(m.n[i]) / nvc;
    s[a] = m.s[i];
    lvl[a] = static_cast<double>(present[a] + 1);
    sum_ps += p[a] * s[a];
    sum_s += s[a];
  }
  double contrast_pairs = 0, busy_denominator = 0, complexity = 0, strength_pairs = 0;
  for (std::size_t a = 0; a < present.size(); ++a)
    for (std::size_t b = 0; b < present.size(); ++b) {
      const double d = lvl[a] - lvl[b];
      contrast_pairs += p[a] * p[b] * d * d;
      busy_denominator += std::abs(lvl[a] * p[a] - lvl[b] * p[b]);
      complexity += std::abs(d) * (p[a] * s[a] + p[b] * s[b]) / (p[a] + p[b]);
      strength_pairs += (p[a] + p[b]) * d * d;
    }
  const double coarseness = sum_ps < 1e-6 ? 1e6 : 1.0 / sum_ps;
  const double contrast = ngp > 1 ? contrast_pairs / (ngp * (ngp - 1)) * sum_s / nvc : 0.0;
  const double busyness = ngp > 1 && busy_denominator > 0 ? sum_ps / busy_denominator : 0.0;
  const double strength = sum_s > 0 ? strength_pairs / sum_s : 0.0;
  return {coarseness, contrast, busyness, complexity / nvc, strength};
}


// Mean over the slices whose matrix is not empty (features not NaN).
template <std::size_t N>
std::array<double, N> slice_mean(const std::vector<std::array<double, N>>& per_slice) {
  std::array<double, N> mean{};
  int n = 0;
  for (const auto& f : per_slice) {
    if (std::isnan(f[0])) continue;
    for (std::size_t k = 0; k < N; ++k) mean[k] += f[k];
    ++n;
  }
  for (auto& v : mean) v = n ? v / n : std::numeric_limits<double>::quiet_NaN();
  return mean;
}

// Adds the neighbours in one row of three voxels (x - 1, x, x + 1; the centre is left out when
// `centre` is set) to the sum, count and same-level count.
inline void row3(const int* r, int x, bool has_left, bool has_right, bool centre, int g, int& sum, int& count,
                 int& same) {
  if (has_left && r[x - 1] > 0) {
    sum += r[x - 1];
    ++count;
    same += r[x - 1] == g;
  }
  if (!centre && r[x] > 0) {
    sum += r[x];
    ++count;
    same += r[x] == g;
  }
  if (has_right && r[x + 1] > 0) {
    sum += r[x + 1];
    ++count;
    same += r[x + 1] == g;
  }
}

// For x in [xa, xb) of a row whose every neighbour lies in the grid (1 <= xa, xb <= nx - 1, the
// rows above and below it, and the slices before and after it when three_d): the in-plane
// neighbours' level sum, ROI count and same-level count (s2, c2, e2), and the same over all 26
// neighbours (s3, c3, e3) when three_d. Integers, so in any order: vectorised across x (also built
// for AVX2, picked at load time), the same values as row3_inside voxel by voxel.
template <int N>
inline void add_rows(const int* const (&rows)[N], int x, int v, int& s, int& c, int& e) {
  for (int k = 0; k < N; ++k)
    for (int dx = -1; dx <= 1; ++dx) {
      const int u = rows[k][x + dx];
      s += u;
      c += u > 0;
      e += u == v;
    }
}

__attribute__((target_clones("avx2", "default"))) void neighbour_sums(const int* row, std::ptrdiff_t gy, std::ptrdiff_t gz,
                                                                       int xa, int xb, bool three_d, int* __restrict s2,
                                                                       int* __restrict c2, int* __restrict e2,
                                                                       int* __restrict s3, int* __restrict c3,
                                                                       int* __restrict e3) {
  const int* const plane[2] = {row - gy, row + gy};
  const int* const others[6] = {row - gz - gy, row - gz, row - gz + gy, row + gz - gy, row + gz, row + gz + gy};
  if (!three_d) {
    for (int x = xa; x < xb; ++x) {
      const int v = row[x], l = row[x - 1], r = row[x + 1];
      int s = l + r, c = (l > 0) + (r > 0), e = (l == v) + (r == v);
      add_rows(plane, x, v, s, c, e);
      s2[x] = s, c2[x] = c, e2[x] = e;
    }
    return;
  }
  for (int x = xa; x < xb; ++x) {
    const int v = row[x], l = row[x - 1], r = row[x + 1];
    int s = l + r, c = (l > 0) + (r > 0), e = (l == v) + (r == v);
    add_rows(plane, x, v, s, c, e);
    s2[x] = s, c2[x] = c, e2[x] = e;
    add_rows(others, x, v, s, c, e);
    s3[x] = s, c3[x] = c, e3[x] = e;
  }
}

void run(const CheckedLevels& checked, const TextureScope& scope, bool want_ngtdm, bool want_ngldm, Features& out) {
  const Levels& levels = checked.get();
  const Grid& g = levels.grid;
  const int ng = levels.ng;
  // Bounding box of the ROI in z and y (x is scanned whole rows; rows without ROI voxels are cheap).
  int z0 = g.nz, z1 = -1;
  for (int z = 0; z < g.nz; ++z) {
    const auto* b = &levels.level[g.index(0, 0, z)];
    if (std::any_of(b, b + static_cast<std::ptrdiff_t>(g.nx) * g.ny, [](int v) { return v > 0; })) {
      z0 = std::min(z0, z);
      z1 = z;
    }
  }
  const int nz = z1 - z0 + 1;
  std::vector<Ngtdm> t2(scope.two_d ? static_cast<std::size_t>(nz) : 0, Ngtdm(ng));
  std::vector<Ngldm> d2(scope.two_d ? static_cast<std::size_t>(nz) : 0, Ngldm(ng, 8));
  Ngtdm t3(ng);
  Ngldm d3(ng, 26);
  std::mutex merge;
  // Each stripe's 3D counts, merged in stripe order afterwards: the sums are the same whatever
  // order the threads finish in.
  std::map<int, std::pair<Ngtdm, Ngldm>> stripe_3d;
  const std::ptrdiff_t gy = g.nx, gz = static_cast<std::ptrdiff_t>(g.nx) * g.ny;
  const int stripes = std::max(1, std::min(nz, 4 * cv::getNumThreads()));
  cv::parallel_for_(
      cv::Range(0, nz),
      [&](const cv::Range& r) {
        Ngtdm t3_local(scope.three_d ? ng : 0);
        Ngldm d3_local(scope.three_d ? ng : 0, 26);
        // Neighbour sums of the current row (neighbour_sums), at the row's indices.
        std::vector<int> sums(6 * static_cast<std::size_t>(g.nx));
        int* const ns2 = sums.data();
        int* const nc2 = ns2 + g.nx;
        int* const ne2 = nc2 + g.nx;
        int* const ns3 = ne2 + g.nx;
        int* const nc3 = ns3 + g.nx;
        int* const ne3 = nc3 + g.nx;
        for (int zi = r.start; zi < r.end; ++zi) {
          const int z = z0 + zi;
          const bool below = z > 0, above = z + 1 < g.nz;
          for (int y = 0; y < g.ny; ++y) {
            const int* row = &levels.level[g.index(0, y, z)];
            const bool up = y > 0, down = y + 1 < g.ny;
            // The row's ROI extent [xa, xe]; its voxels away from the grid's faces take the sums
            // computed ahead for the row.
            int xa = 0, xe = g.nx - 1;
            while (xa < g.nx && row[xa] == 0) ++xa;
            if (xa == g.nx) continue;
            while (row[xe] == 0) --xe;
            const bool row_inside = up && down && (!scope.three_d || (below && above));
            const int fa = std::max(xa, 1), fb = std::min(xe + 1, g.nx - 1);  // [fa, fb): inside along x
            if (row_inside && fa < fb) neighbour_sums(row, gy, gz, fa, fb, scope.three_d, ns2, nc2, ne2, ns3, nc3, ne3);
            for (int x = xa; x <= xe; ++x) {
              const int v = row[x];
              if (v == 0) continue;
              const bool left = x > 0, right = x + 1 < g.nx;
              // Every neighbour in the grid (the 3D ones too when they are wanted): no tests per neighbour.
              const bool inside = left && right && row_inside;
              int s2 = 0, c2 = 0, e2 = 0;  // in-plane neighbours
              if (inside) {
                s2 = ns2[x], c2 = nc2[x], e2 = ne2[x];
              } else {
                row3(row, x, left, right, true, v, s2, c2, e2);
                if (up) row3(row - gy, x, left, right, false, v, s2, c2, e2);
                if (down) row3(row + gy, x, left, right, false, v, s2, c2, e2);
              }
              const auto i = static_cast<std::size_t>(v - 1);
              if (scope.two_d) {
                if (want_ngtdm && c2 > 0) {
                  auto& t = t2[static_cast<std::size_t>(zi)];
                  ++t.n[i];
                  t.s[i] += std::abs(v - static_cast<double>(s2) / c2);
                }
                if (want_ngldm) ++d2[static_cast<std::size_t>(zi)].c[i * 9 + static_cast<std::size_t>(e2)];
              }
              if (scope.three_d) {
                int s3 = s2, c3 = c2, e3 = e2;
                if (inside) {
                  s3 = ns3[x], c3 = nc3[x], e3 = ne3[x];
                } else {
                  for (const int dz : {-1, 1}) {
                    if (dz < 0 ? !below : !above) continue;
                    const int* plane = row + dz * gz;
                    row3(plane, x, left, right, false, v, s3, c3, e3);
                    if (up) row3(plane - gy, x, left, right, false, v, s3, c3, e3);
                    if (down) row3(plane + gy, x, left, right, false, v, s3, c3, e3);
                  }
                }
                if (want_ngtdm && c3 > 0) {
                  ++t3_local.n[i];
                  t3_local.s[i] += std::abs(v - static_cast<double>(s3) / c3);
                }
                if (want_ngldm) ++d3_local.c[i * 27 + static_cast<std::size_t>(e3)];
              }
            }
          }
        }
        if (scope.three_d) {
          const std::lock_guard lock(merge);
          stripe_3d.emplace(r.start, std::make_pair(std::move(t3_local), std::move(d3_local)));
        }
      },
      stripes);
  for (const auto& [start, local] : stripe_3d) {
    t3.add(local.first);
    d3.add(local.second);
  }

  if (want_ngtdm) {
    if (scope.two_d) {
      std::vector<NgtdmFeatures> per_slice;
      Ngtdm merged(ng);
      for (const auto& t : t2) {
        per_slice.push_back(ngtdm_values(t));
        merged.add(t);
      }
      emit(kNgtdm, slice_mean(per_slice), Aggregation::d2, out);
      emit(kNgtdm, ngtdm_values(merged), Aggregation::d25, out);
    }
    if (scope.three_d) emit(kNgtdm, ngtdm_values(t3), Aggregation::d3, out);
  }
  if (want_ngldm) {
    const auto values = [](const Ngldm& m) {
      const auto e = m.entries();
      return detail::sparse_matrix_features(e, static_cast<double>(m.voxels()));
    };
    if (scope.two_d) {
      std::vector<detail::MatrixFeatures> per_slice;
      Ngldm merged(ng, 8);
      for (const auto& d : d2) {
        per_slice.push_back(values(d));
        merged.add(d);
      }
      emit(kNgldm, slice_mean(per_slice), Aggregation::d2, out);
      emit(kNgldm, values(merged), Aggregation::d25, out);
    }
    if (scope.three_d) emit(kNgldm, values(d3), Aggregation::d3, out);
  }
}

}  // namespace

std::span<const FeatureDef> ngtdm_definitions() { return kNgtdm; }
std::span<const FeatureDef> ngldm_definitions() { return kNgldm; }

constexpr const char* kWhat = "neighbourhood features";
void ngtdm_features(const Levels& levels, const TextureScope& scope, Features& out) {
  run(CheckedLevels(levels, kWhat), scope, true, false, out);
}
void ngldm_features(const Levels& levels, const TextureScope& scope, Features& out) {
  run(CheckedLevels(levels, kWhat), scope, false, true, out);
}
void neighbourhood_features(const Levels& levels, const TextureScope& scope, Features& out) {
  run(CheckedLevels(levels, kWhat), scope, true, true, out);
}
void neighbourhood_features(const CheckedLevels& levels, const TextureScope& scope, Features& out) {
  run(levels, scope, true, true, out);
}

}  // namespace analysis::kernels::ibsi
