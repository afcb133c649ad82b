#define BOOST_TEST_MODULE ibsi_glrlm
#include <boost/test/unit_test.hpp>

// IBSI 1 grey level run length matrix features (analysis/kernels/ibsi/glrlm.h): the digital
// phantom against the published reference values in all six aggregation methods, hand-worked
// small cases, a single voxel, a single grey level, bad input, and a large ROI for speed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include "analysis/kernels/ibsi/glrlm.h"
#include "support/ibsi_reference.h"

namespace ib = analysis::kernels::ibsi;
using testsupport::ibsi::check_features;
using testsupport::ibsi::DigitalPhantom;
using testsupport::ibsi::read_reference;

namespace {

constexpr ib::Aggregation kAll[] = {ib::Aggregation::d2_avg, ib::Aggregation::d2_comb, ib::Aggregation::d25_avg,
                                    ib::Aggregation::d25_comb, ib::Aggregation::d3_avg, ib::Aggregation::d3_comb};

using testsupport::ibsi::by_tag;

constexpr auto tag = &ib::aggregated_tag;

ib::Levels make_levels(int nx, int ny, int nz, int ng) {
  ib::Levels l;
  l.grid = {nx, ny, nz, 1, 1, 1};
  l.level.assign(l.grid.size(), 0);
  l.ng = ng;
  return l;
}

}  // namespace

BOOST_AUTO_TEST_CASE(definitions_are_complete) {
  const auto defs = ib::glrlm_definitions();
  BOOST_TEST(defs.size() == 16u);
  for (const auto& d : defs) {
    BOOST_TEST(d.base_tag.rfind("rlm_", 0) == 0u);
    BOOST_TEST(d.code.size() == 4u);
    BOOST_TEST(!d.name.empty());
  }
}

BOOST_AUTO_TEST_CASE(digital_phantom_matches_reference) {
  const DigitalPhantom p;
  ib::Features got;
  ib::glrlm_features(p.levels, {}, got);
  BOOST_TEST(got.size() == 6u * 16u);
  const auto ref = read_reference("ibsi_1_dig_phantom.csv");
  check_features(got, ref, {"rlm_"});
  for (const auto a : kAll) {
    std::map<std::string, testsupport::ibsi::Reference> sub;
    std::string end = "_";
    end += ib::suffix(a);
    for (const auto& [t, r] : ref)
      if (t.rfind("rlm_", 0) == 0 && t.size() > end.size() && t.compare(t.size() - end.size(), end.size(), end) == 0) sub[t] = r;
    BOOST_TEST(sub.size() == 16u);
    BOOST_TEST_MESSAGE("aggregation " << ib::suffix(a) << ":");
    check_features(got, sub, {"rlm_"});
  }
}

BOOST_AUTO_TEST_CASE(scope_selects_aggregations) {
  const DigitalPhantom p;
  ib::Features two, three, all;
  ib::glrlm_features(p.levels, {true, false}, two);
  ib::glrlm_features(p.levels, {false, true}, three);
  ib::glrlm_features(p.levels, {}, all);
  BOOST_TEST(two.size() == 4u * 16u);
  BOOST_TEST(three.size() == 2u * 16u);
  const auto m = by_tag(all);
  for (const auto& f : two) BOOST_TEST(f.value == m.at(f.tag));
  for (const auto& f : three) BOOST_TEST(f.value == m.at(f.tag));
}

// One slice, three voxels in a row along x with levels 1 1 2 (Ng = 3). Runs (level, length):
//   x:                   (1,2) (2,1)                 2 runs over 3 voxels
//   the other 3 in-plane: (1,1) (1,1) (2,1) each      3 runs
//   the 9 out-of-plane:   (1,1) (1,1) (2,1) each      3 runs (no neighbour in another slice)
// 2D_avg (= 2_5D_avg, one slice) averages the 4 in-plane matrices:
//   SRE = ((1/4 + 1)/2 + 3 * 1)/4 = 29/32, LRE = ((4 + 1)/2 + 3)/4 = 11/8,
//   run percentage = (2/3 + 3 * 1)/4 = 11/12.
// 2D_comb (= 2_5D_comb) merges them: (1,1) 6, (1,2) 1, (2,1) 4, Ns = 11 runs over 4 x 3 voxels:
//   SRE = (6 + 1/4 + 4)/11 = 41/44, LRE = (6 + 4 + 4)/11 = 14/11, run percentage 11/12,
//   GLNU = (7^2 + 4^2)/11 = 65/11, RLNU = (10^2 + 1^2)/11 = 101/11.
// 3D_avg: 13 matrices, 12 of them all runs of length 1: SRE = (5/8 + 12)/13 = 101/104.
// 3D_comb: (1,1) 24, (1,2) 1, (2,1) 13, Ns = 38 over 13 x 3 voxels: run percentage 38/39,
//   LRE = (24 + 4 + 13)/38 = 41/38.
BOOST_AUTO_TEST_CASE(three_voxels_hand_worked) {
  auto l = make_levels(5, 3, 3, 3);
  l.level[l.grid.index(1, 1, 1)] = 1;
  l.level[l.grid.index(2, 1, 1)] = 1;
  l.level[l.grid.index(3, 1, 1)] = 2;
  ib::Features got;
  ib::glrlm_features(l, {}, got);
  const auto m = by_tag(got);
  const auto tol = boost::test_tools::tolerance(1e-12);
  for (const auto a : {ib::Aggregation::d2_avg, ib::Aggregation::d25_avg}) {
    BOOST_TEST(m.at(tag("rlm_sre", a)) == 29.0 / 32, tol);
    BOOST_TEST(m.at(tag("rlm_lre", a)) == 11.0 / 8, tol);
    BOOST_TEST(m.at(tag("rlm_r_perc", a)) == 11.0 / 12, tol);
  }
  for (const auto a : {ib::Aggregation::d2_comb, ib::Aggregation::d25_comb}) {
    BOOST_TEST(m.at(tag("rlm_sre", a)) == 41.0 / 44, tol);
    BOOST_TEST(m.at(tag("rlm_lre", a)) == 14.0 / 11, tol);
    BOOST_TEST(m.at(tag("rlm_r_perc", a)) == 11.0 / 12, tol);
    BOOST_TEST(m.at(tag("rlm_glnu", a)) == 65.0 / 11, tol);
    BOOST_TEST(m.at(tag("rlm_rlnu", a)) == 101.0 / 11, tol);
  }
  BOOST_TEST(m.at("rlm_sre_3D_avg") == 101.0 / 104, tol);
  BOOST_TEST(m.at("rlm_r_perc_3D_comb") == 38.0 / 39, tol);
  BOOST_TEST(m.at("rlm_lre_3D_comb") == 41.0 / 38, tol);
}

// One voxel of level 3 (Ng = 4): in every direction one run of length 1, so every matrix is the
// single cell (3, 1) with one run over one voxel per direction. All features are defined:
// SRE = LRE = 1, low grey level emphases 1/9, high ones 9, normalised non-uniformities 1, run
// percentage 1, variances and run entropy 0. The non-normalised non-uniformities are (runs)^2/runs:
// 1 for a single direction, 4 for the 4 merged in-plane matrices, 13 for the 13 merged 3D ones.
BOOST_AUTO_TEST_CASE(single_voxel) {
  auto l = make_levels(3, 3, 3, 4);
  l.level[l.grid.index(1, 1, 1)] = 3;
  ib::Features got;
  ib::glrlm_features(l, {}, got);
  BOOST_TEST(got.size() == 96u);
  const auto m = by_tag(got);
  const std::map<std::string, double> expect{
      {"rlm_sre", 1},      {"rlm_lre", 1},           {"rlm_lgre", 1.0 / 9}, {"rlm_hgre", 9},          {"rlm_srlge", 1.0 / 9},
      {"rlm_srhge", 9},    {"rlm_lrlge", 1.0 / 9},   {"rlm_lrhge", 9},      {"rlm_glnu", 1},          {"rlm_glnu_norm", 1},
      {"rlm_rlnu", 1},     {"rlm_rlnu_norm", 1},     {"rlm_r_perc", 1},     {"rlm_gl_var", 0},        {"rlm_rl_var", 0},
      {"rlm_rl_entr", 0}};
  BOOST_TEST(expect.size() == 16u);
  const std::map<ib::Aggregation, double> merged{{ib::Aggregation::d2_avg, 1},  {ib::Aggregation::d2_comb, 4},
                                                  {ib::Aggregation::d25_avg, 1}, {ib::Aggregation::d25_comb, 4},
                                                  {ib::Aggregation::d3_avg, 1},  {ib::Aggregation::d3_comb, 13}};
  for (const auto a : kAll)
    for (const auto& [base, v] : expect) {
      const bool nu = base == "rlm_glnu" || base == "rlm_rlnu";
      BOOST_TEST(m.at(tag(base, a)) == (nu ? merged.at(a) : v), boost::test_tools::tolerance(1e-12));
    }
}

// A 3x3x3 cube of level 2 (Ng = 4): every run has level 2, so grey level variance is 0, the
// normalised grey level non-uniformity 1 (all runs in one row), and the grey level emphases are the
// run emphases scaled by 1/4 or 4. Along x each slice has 3 runs of length 3: 2D in that direction
// SRE = 1/9; along the in-plane diagonal the runs have lengths 1 2 3 2 1.
BOOST_AUTO_TEST_CASE(single_grey_level) {
  auto l = make_levels(5, 5, 5, 4);
  for (int z = 1; z < 4; ++z)
    for (int y = 1; y < 4; ++y)
      for (int x = 1; x < 4; ++x) l.level[l.grid.index(x, y, z)] = 2;
  ib::Features got;
  ib::glrlm_features(l, {}, got);
  const auto m = by_tag(got);
  const auto tol = boost::test_tools::tolerance(1e-12);
  for (const auto a : kAll) {
    BOOST_TEST(m.at(tag("rlm_gl_var", a)) == 0.0, tol);
    BOOST_TEST(m.at(tag("rlm_glnu_norm", a)) == 1.0, tol);
    BOOST_TEST(m.at(tag("rlm_lgre", a)) == 0.25, tol);
    BOOST_TEST(m.at(tag("rlm_hgre", a)) == 4.0, tol);
    BOOST_TEST(m.at(tag("rlm_srlge", a)) == m.at(tag("rlm_sre", a)) / 4, tol);
    BOOST_TEST(m.at(tag("rlm_lrhge", a)) == m.at(tag("rlm_lre", a)) * 4, tol);
  }
  // 2D_avg: x and y: 3 runs of length 3 (SRE 1/9); both diagonals: lengths 1 2 3 2 1
  // (SRE (1 + 1/4 + 1/9 + 1/4 + 1)/5 = 47/90). Every slice alike: mean (2/9 + 2 * 47/90)/4 = 19/60.
  BOOST_TEST(m.at("rlm_sre_2D_avg") == 19.0 / 60, tol);
}

BOOST_AUTO_TEST_CASE(bad_input_throws) {
  const DigitalPhantom p;
  ib::Features out;
  auto l = p.levels;
  l.level.pop_back();
  BOOST_CHECK_THROW(ib::glrlm_features(l, {}, out), std::invalid_argument);
  l = p.levels;
  l.level[10] = -1;
  BOOST_CHECK_THROW(ib::glrlm_features(l, {}, out), std::invalid_argument);
  l = p.levels;
  std::fill(l.level.begin(), l.level.end(), 0);
  BOOST_CHECK_THROW(ib::glrlm_features(l, {}, out), std::invalid_argument);
  l = p.levels;
  l.grid.nz = 0;
  BOOST_CHECK_THROW(ib::glrlm_features(l, {}, out), std::invalid_argument);
  BOOST_TEST(out.empty());
}

// 120 x 256 x 256 voxels, random levels 1..40 in an ellipsoid filling most of it (~3.4 M voxels).
BOOST_AUTO_TEST_CASE(large_roi_sanity) {
  auto l = make_levels(256, 256, 120, 40);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> lv(1, 40);
  std::size_t n = 0;
  for (int z = 0; z < 120; ++z)
    for (int y = 0; y < 256; ++y)
      for (int x = 0; x < 256; ++x) {
        const double dx = (x - 127.5) / 126, dy = (y - 127.5) / 110, dz = (z - 59.5) / 58;
        if (dx * dx + dy * dy + dz * dz <= 1) {
          l.level[l.grid.index(x, y, z)] = lv(rng);
          ++n;
        }
      }
  BOOST_TEST_MESSAGE("large ROI: " << n << " voxels");
  double best = 1e9;
  ib::Features got;
  for (int rep = 0; rep < 3; ++rep) {
    got.clear();
    const auto t0 = std::chrono::steady_clock::now();
    ib::glrlm_features(l, {}, got);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  BOOST_TEST_MESSAGE("glrlm, all six aggregations: best of 3 " << best * 1000 << " ms");
  BOOST_TEST(got.size() == 96u);
  const auto m = by_tag(got);
  for (const auto& f : got) BOOST_TEST(std::isfinite(f.value), f.tag);
  // Independent levels 1..40: a neighbour has the same level with probability 1/40, so almost
  // every run has length 1 and the run percentage is close to (1 - 1/40).
  for (const auto a : kAll) {
    BOOST_TEST(std::abs(m.at(tag("rlm_r_perc", a)) - 0.975) < 0.01);
    BOOST_TEST(m.at(tag("rlm_sre", a)) > 0.95);
    BOOST_TEST(m.at(tag("rlm_sre", a)) <= 1.0);
  }
}

namespace {

// A brute-force run length matrix (level, length) -> runs: every run found by walking from its
// first voxel (the one whose predecessor along the direction is outside the grid or differs).
using Matrix = std::map<std::pair<int, int>, double>;

void naive_runs(const ib::Levels& l, int dx, int dy, int dz, int z_only, Matrix& m) {
  const ib::Grid& g = l.grid;
  auto at = [&](int x, int y, int z) {
    if (x < 0 || y < 0 || z < 0 || x >= g.nx || y >= g.ny || z >= g.nz) return 0;
    return l.level[g.index(x, y, z)];
  };
  for (int z = 0; z < g.nz; ++z) {
    if (z_only >= 0 && z != z_only) continue;
    for (int y = 0; y < g.ny; ++y)
      for (int x = 0; x < g.nx; ++x) {
        const int v = at(x, y, z);
        if (v == 0 || at(x - dx, y - dy, z - dz) == v) continue;
        int n = 1;
        while (at(x + n * dx, y + n * dy, z + n * dz) == v) ++n;
        m[{v, n}] += 1;
      }
  }
}

// Five of the features, straight from the manual's definitions.
std::map<std::string, double> naive_features(const Matrix& m, double voxels) {
  double ns = 0, sre = 0, lre = 0;
  std::map<int, double> ri, rj;
  for (const auto& [ij, r] : m) {
    const double j = ij.second;
    ns += r;
    sre += r / (j * j);
    lre += r * j * j;
    ri[ij.first] += r;
    rj[ij.second] += r;
  }
  double glnu = 0, rlnu = 0;
  for (const auto& [i, r] : ri) glnu += r * r;
  for (const auto& [j, r] : rj) rlnu += r * r;
  return {{"rlm_sre", sre / ns}, {"rlm_lre", lre / ns}, {"rlm_glnu", glnu / ns}, {"rlm_rlnu", rlnu / ns}, {"rlm_r_perc", ns / voxels}};
}

void add_to(std::map<std::string, double>& sum, const std::map<std::string, double>& f) {
  for (const auto& [k, v] : f) sum[k] += v;
}

// Every aggregation of the five features, from brute-force matrices, against glrlm_features.
void check_against_naive(const ib::Levels& l) {
  constexpr int kDirs[13][3] = {{1, 0, 0},  {1, 1, 0},  {0, 1, 0},  {-1, 1, 0}, {-1, -1, 1}, {0, -1, 1}, {1, -1, 1},
                                {-1, 0, 1}, {0, 0, 1},  {1, 0, 1},  {-1, 1, 1}, {0, 1, 1},   {1, 1, 1}};
  const ib::Grid& g = l.grid;
  std::vector<double> slice_voxels(static_cast<std::size_t>(g.nz), 0);
  double voxels = 0;
  for (int z = 0; z < g.nz; ++z)
    for (int y = 0; y < g.ny; ++y)
      for (int x = 0; x < g.nx; ++x)
        if (l.level[g.index(x, y, z)] != 0) ++slice_voxels[static_cast<std::size_t>(z)], ++voxels;
  std::map<ib::Aggregation, std::map<std::string, double>> want;
  int slices = 0;
  for (int z = 0; z < g.nz; ++z) {
    const double n = slice_voxels[static_cast<std::size_t>(z)];
    if (n == 0) continue;
    ++slices;
    Matrix comb;
    for (int d = 0; d < 4; ++d) {
      Matrix m;
      naive_runs(l, kDirs[d][0], kDirs[d][1], kDirs[d][2], z, m);
      naive_runs(l, kDirs[d][0], kDirs[d][1], kDirs[d][2], z, comb);
      add_to(want[ib::Aggregation::d2_avg], naive_features(m, n));
    }
    add_to(want[ib::Aggregation::d2_comb], naive_features(comb, 4 * n));
  }
  Matrix comb25, comb3;
  for (int d = 0; d < 13; ++d) {
    Matrix m;
    naive_runs(l, kDirs[d][0], kDirs[d][1], kDirs[d][2], -1, m);
    for (const auto& [k, r] : m) {
      comb3[k] += r;
      if (d < 4) comb25[k] += r;
    }
    if (d < 4) add_to(want[ib::Aggregation::d25_avg], naive_features(m, voxels));
    add_to(want[ib::Aggregation::d3_avg], naive_features(m, voxels));
  }
  add_to(want[ib::Aggregation::d25_comb], naive_features(comb25, 4 * voxels));
  add_to(want[ib::Aggregation::d3_comb], naive_features(comb3, 13 * voxels));
  const std::map<ib::Aggregation, double> terms{{ib::Aggregation::d2_avg, 4.0 * slices}, {ib::Aggregation::d2_comb, slices},
                                                {ib::Aggregation::d25_avg, 4},         {ib::Aggregation::d25_comb, 1},
                                                {ib::Aggregation::d3_avg, 13},         {ib::Aggregation::d3_comb, 1}};
  ib::Features got;
  ib::glrlm_features(l, {}, got);
  const auto m = by_tag(got);
  for (const auto& [a, f] : want)
    for (const auto& [base, sum] : f) BOOST_TEST(m.at(tag(base, a)) == sum / terms.at(a), boost::test_tools::tolerance(1e-9));
}

}  // namespace

// Random ROIs (holes, several pieces, touching every face of the grid, empty slices) with few grey
// levels (long runs, also through the ROI's bounding box edges) and many (more than 255, up to the
// limit of 4096 levels, kMaxGreyLevels), against brute-force matrices.
BOOST_AUTO_TEST_CASE(random_rois_match_brute_force) {
  std::mt19937 rng(11);
  struct Case {
    int nx, ny, nz, ng;
    double fill;
  };
  for (const Case c : {Case{9, 7, 6, 2, 0.8}, Case{12, 10, 8, 3, 0.6}, Case{6, 11, 9, 5, 0.95}, Case{15, 4, 5, 1, 0.7},
                       Case{10, 10, 10, 300, 0.9}, Case{8, 8, 8, ib::kMaxGreyLevels, 0.9}, Case{1, 1, 12, 2, 0.9}, Case{13, 1, 1, 2, 1.0}}) {
    for (int rep = 0; rep < 3; ++rep) {
      auto l = make_levels(c.nx, c.ny, c.nz, c.ng);
      std::bernoulli_distribution in(c.fill);
      // Few levels: neighbouring voxels often share one (runs of several voxels in all directions).
      std::uniform_int_distribution<int> lv(1, c.ng);
      const int empty_slice = c.nz > 4 ? rep + 1 : -1;
      for (int z = 0; z < c.nz; ++z)
        for (int y = 0; y < c.ny; ++y)
          for (int x = 0; x < c.nx; ++x)
            if (z != empty_slice && in(rng)) l.level[l.grid.index(x, y, z)] = lv(rng);
      if (std::count(l.level.begin(), l.level.end(), 0) == static_cast<std::ptrdiff_t>(l.level.size())) l.level[0] = 1;
      BOOST_TEST_CONTEXT("grid " << c.nx << "x" << c.ny << "x" << c.nz << " ng " << c.ng << " rep " << rep) { check_against_naive(l); }
    }
  }
}

// A run longer than 65535 voxels along x (and shorter ones in the other directions).
BOOST_AUTO_TEST_CASE(very_long_run_matches_brute_force) {
  auto l = make_levels(70000, 2, 2, 3);
  for (int x = 2; x < 69000; ++x) l.level[l.grid.index(x, 0, 0)] = 2;
  for (int x = 0; x < 70000; x += 3) l.level[l.grid.index(x, 1, 1)] = 1 + x % 3;
  check_against_naive(l);
}

// Rows with several ROI stretches: gaps of 1 to 40 voxels (short gaps are walked through, long ones
// skipped), stretches of 1 to 40 voxels, few grey levels so that runs cross slices and rows.
BOOST_AUTO_TEST_CASE(gapped_rows_match_brute_force) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> len(1, 40), lv(1, 3);
  for (int rep = 0; rep < 4; ++rep) {
    auto l = make_levels(150, 9, 7, 3);
    for (int z = 0; z < 7; ++z)
      for (int y = 0; y < 9; ++y)
        for (int x = len(rng) % 20; x < 150;) {
          const int e = std::min(150, x + len(rng));
          // Mostly one level per stretch (long runs along x), some voxels changed.
          const int g = lv(rng);
          for (; x < e; ++x) l.level[l.grid.index(x, y, z)] = rng() % 5 == 0 ? lv(rng) : g;
          x += len(rng);
        }
    BOOST_TEST_CONTEXT("rep " << rep) { check_against_naive(l); }
  }
}
