#define BOOST_TEST_MODULE ibsi_glcm
#include <boost/test/unit_test.hpp>

// IBSI 1 grey level co-occurrence matrix features (analysis/kernels/ibsi/glcm.h): the digital
// phantom against the published reference values in all six aggregation methods, hand-worked
// small cases, the undefined cases, bad input, and a large ROI for speed.
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include "analysis/kernels/ibsi/glcm.h"
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
  const auto defs = ib::glcm_definitions();
  BOOST_TEST(defs.size() == 25u);
  for (const auto& d : defs) {
    BOOST_TEST(d.base_tag.rfind("cm_", 0) == 0u);
    BOOST_TEST(d.code.size() == 4u);
    BOOST_TEST(!d.name.empty());
  }
}

BOOST_AUTO_TEST_CASE(digital_phantom_matches_reference) {
  const DigitalPhantom p;
  ib::Features got;
  ib::glcm_features(p.levels, {}, got);
  BOOST_TEST(got.size() == 6u * 25u);
  const auto ref = read_reference("ibsi_1_dig_phantom.csv");
  check_features(got, ref, {"cm_"});
  // Per aggregation: the reference rows of that suffix only.
  for (const auto a : kAll) {
    std::map<std::string, testsupport::ibsi::Reference> sub;
    std::string end = "_";
    end += ib::suffix(a);
    for (const auto& [t, r] : ref)
      if (t.rfind("cm_", 0) == 0 && t.size() > end.size() && t.compare(t.size() - end.size(), end.size(), end) == 0)
        sub[t] = r;
    BOOST_TEST(sub.size() == 25u);
    BOOST_TEST_MESSAGE("aggregation " << ib::suffix(a) << ":");
    check_features(got, sub, {"cm_"});
  }
}

BOOST_AUTO_TEST_CASE(scope_selects_aggregations) {
  const DigitalPhantom p;
  ib::Features two, three;
  ib::glcm_features(p.levels, {true, false}, two);
  ib::glcm_features(p.levels, {false, true}, three);
  BOOST_TEST(two.size() == 4u * 25u);
  BOOST_TEST(three.size() == 2u * 25u);
  ib::Features all;
  ib::glcm_features(p.levels, {}, all);
  const auto m = by_tag(all);
  for (const auto& f : two) BOOST_TEST(f.value == m.at(f.tag));
  for (const auto& f : three) BOOST_TEST(f.value == m.at(f.tag));
}

// Two voxels side by side in x, levels 1 and 2, Ng = 5 (levels 3..5 absent, as after FBN). Only the
// x direction of the one slice has a pair; the other 3 in-plane and all 9 out-of-plane matrices are
// empty and must be left out of the averages, so every aggregation gives the features of the one
// symmetric matrix p(1,2) = p(2,1) = 1/2:
//   joint max 1/2, joint average mu = 1.5, joint variance (0.25 + 0.25)/2 = 0.25, joint entropy 1,
//   difference average 1 (p_{x-y}(1) = 1), difference variance and entropy 0, sum average 3
//   (p_{x+y}(3) = 1), sum variance and entropy 0, energy 1/2, contrast 1, dissimilarity 1,
//   inverse difference 1/2, normalised 1/(1 + 1/Ng) = 5/6, moment 1/2, normalised moment
//   1/(1 + 1/25) = 25/26, inverse variance 1, correlation sum (i-mu)(j-mu)p / var = -0.25/0.25 = -1,
//   autocorrelation 2, cluster tendency/shade/prominence 0 (i + j - 2 mu = 0 in both cells),
//   HX = 1, HXY = 1, HXY1 = -sum p log2(1/4) = 2 -> information correlation 1 = (1 - 2)/1 = -1,
//   HXY2 = 2 HX = 2 -> information correlation 2 = sqrt(1 - exp(-2)).
BOOST_AUTO_TEST_CASE(one_pair_hand_worked) {
  auto l = make_levels(4, 3, 3, 5);
  l.level[l.grid.index(1, 1, 1)] = 1;
  l.level[l.grid.index(2, 1, 1)] = 2;
  ib::Features got;
  ib::glcm_features(l, {}, got);
  const auto m = by_tag(got);
  const std::map<std::string, double> expect{
      {"cm_joint_max", 0.5},   {"cm_joint_avg", 1.5},        {"cm_joint_var", 0.25},         {"cm_joint_entr", 1},
      {"cm_diff_avg", 1},      {"cm_diff_var", 0},           {"cm_diff_entr", 0},            {"cm_sum_avg", 3},
      {"cm_sum_var", 0},       {"cm_sum_entr", 0},           {"cm_energy", 0.5},             {"cm_contrast", 1},
      {"cm_dissimilarity", 1}, {"cm_inv_diff", 0.5},         {"cm_inv_diff_norm", 5.0 / 6},  {"cm_inv_diff_mom", 0.5},
      {"cm_inv_diff_mom_norm", 25.0 / 26}, {"cm_inv_var", 1}, {"cm_corr", -1},               {"cm_auto_corr", 2},
      {"cm_clust_tend", 0},    {"cm_clust_shade", 0},        {"cm_clust_prom", 0},           {"cm_info_corr1", -1},
      {"cm_info_corr2", std::sqrt(1 - std::exp(-2.0))}};
  BOOST_TEST(expect.size() == 25u);
  for (const auto a : kAll)
    for (const auto& [base, v] : expect) BOOST_TEST(m.at(tag(base, a)) == v, boost::test_tools::tolerance(1e-12));
}

// One voxel: no voxel pair in any direction, every matrix is empty, and no aggregation has a matrix
// to compute a feature from: every feature is NaN (MIRP likewise returns NaN), but every tag is there.
BOOST_AUTO_TEST_CASE(single_voxel_gives_nan) {
  auto l = make_levels(3, 3, 3, 4);
  l.level[l.grid.index(1, 1, 1)] = 3;
  ib::Features got;
  ib::glcm_features(l, {}, got);
  BOOST_TEST(got.size() == 150u);
  for (const auto& f : got) BOOST_TEST(std::isnan(f.value), f.tag);
}

// A 3x3x3 cube of level 2 (Ng = 4): every matrix holds only the cell (2,2), p = 1. Then joint
// maximum 1, averages 2 (joint) and 4 (sum), energy 1, every variance, entropy, contrast and
// cluster feature 0, every inverse difference 1, autocorrelation 4. Undefined ones:
//  - correlation 0/0 (zero marginal variance): 1, as MIRP and pyradiomics;
//  - inverse variance: no off-diagonal cell in any matrix, the manual's sum over k >= 1 is empty: 0;
//  - information correlation 1: (HXY - HXY1)/HX = 0/0: 0; information correlation 2:
//    sqrt(1 - exp(-2 (HXY2 - HXY))) = sqrt(1 - exp(0)) = 0.
BOOST_AUTO_TEST_CASE(single_grey_level) {
  auto l = make_levels(5, 5, 5, 4);
  for (int z = 1; z < 4; ++z)
    for (int y = 1; y < 4; ++y)
      for (int x = 1; x < 4; ++x) l.level[l.grid.index(x, y, z)] = 2;
  ib::Features got;
  ib::glcm_features(l, {}, got);
  const auto m = by_tag(got);
  const std::map<std::string, double> expect{
      {"cm_joint_max", 1},     {"cm_joint_avg", 2},    {"cm_joint_var", 0},        {"cm_joint_entr", 0},
      {"cm_diff_avg", 0},      {"cm_diff_var", 0},     {"cm_diff_entr", 0},        {"cm_sum_avg", 4},
      {"cm_sum_var", 0},       {"cm_sum_entr", 0},     {"cm_energy", 1},           {"cm_contrast", 0},
      {"cm_dissimilarity", 0}, {"cm_inv_diff", 1},     {"cm_inv_diff_norm", 1},    {"cm_inv_diff_mom", 1},
      {"cm_inv_diff_mom_norm", 1}, {"cm_inv_var", 0},  {"cm_corr", 1},             {"cm_auto_corr", 4},
      {"cm_clust_tend", 0},    {"cm_clust_shade", 0},  {"cm_clust_prom", 0},       {"cm_info_corr1", 0},
      {"cm_info_corr2", 0}};
  for (const auto a : kAll)
    for (const auto& [base, v] : expect) BOOST_TEST(m.at(tag(base, a)) == v, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(roi_box_extents_match_a_scan) {
  // detail::roi_box finds each row's extent 16 levels at a time: rows of 1..100 columns with a few
  // ROI voxels anywhere (at the ends, in one block, none), against a plain scan.
  std::mt19937 rng(9);
  for (int nx = 1; nx <= 100; nx += nx < 20 ? 1 : 13) {
    ib::Levels lv;
    lv.grid.nx = nx;
    lv.grid.ny = 9;
    lv.grid.nz = 3;
    lv.ng = 3;
    lv.level.assign(lv.grid.size(), 0);
    for (int z = 0; z < 3; ++z)
      for (int y = 0; y < 9; ++y) {
        if ((y + z) % 4 == 3) continue;  // rows without ROI
        const int k = 1 + static_cast<int>(rng() % 3);
        for (int j = 0; j < k; ++j) {
          const int x = j == 0 && y % 3 == 0 ? (y % 2 ? nx - 1 : 0) : static_cast<int>(rng() % static_cast<unsigned>(nx));
          lv.level[lv.grid.index(x, y, z)] = 1 + static_cast<int>(rng() % 3);
        }
      }
    const auto box = ib::detail::roi_box(lv);
    for (int z = box.z0; z <= box.z1; ++z)
      for (int y = box.y0; y <= box.y1; ++y) {
        int first = -1, last = -1;
        for (int x = 0; x < nx; ++x)
          if (lv.level[lv.grid.index(x, y, z)] > 0) {
            if (first < 0) first = x;
            last = x;
          }
        const auto want = first < 0 ? std::pair<int, int>{0, 0} : std::pair<int, int>{first, last + 1};
        BOOST_TEST_REQUIRE((box.row(y, z) == want), "nx " << nx << " y " << y << " z " << z);
      }
  }
}

BOOST_AUTO_TEST_CASE(bad_input_throws) {
  const DigitalPhantom p;
  ib::Features out;
  auto l = p.levels;
  l.level.pop_back();
  BOOST_CHECK_THROW(ib::glcm_features(l, {}, out), std::invalid_argument);
  l = p.levels;
  l.level[10] = l.ng + 1;
  BOOST_CHECK_THROW(ib::glcm_features(l, {}, out), std::invalid_argument);
  l = p.levels;
  std::fill(l.level.begin(), l.level.end(), 0);
  BOOST_CHECK_THROW(ib::glcm_features(l, {}, out), std::invalid_argument);
  l = p.levels;
  l.ng = 0;
  BOOST_CHECK_THROW(ib::glcm_features(l, {}, out), std::invalid_argument);
  BOOST_TEST(out.empty());
}

// 120 x 256 x 256 voxels, random levels 1..40 in an ellipsoid filling most of it (~4 M voxels).
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
    ib::glcm_features(l, {}, got);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  BOOST_TEST_MESSAGE("glcm, all six aggregations: best of 3 " << best * 1000 << " ms");
  BOOST_TEST(got.size() == 150u);
  const auto m = by_tag(got);
  for (const auto& f : got) BOOST_TEST(std::isfinite(f.value), f.tag);
  // Independent uniform levels: joint average near (1 + 40)/2, correlation near 0.
  for (const auto a : kAll) {
    BOOST_TEST(std::abs(m.at(tag("cm_joint_avg", a)) - 20.5) < 0.2);
    BOOST_TEST(std::abs(m.at(tag("cm_corr", a))) < 0.02);
    BOOST_TEST(m.at(tag("cm_joint_max", a)) <= 1.0);
  }
}
