#define BOOST_TEST_MODULE ibsi_neighbourhood
#include <boost/test/unit_test.hpp>

// IBSI 1 NGTDM and NGLDM (analysis/kernels/ibsi/neighbourhood.h): the digital phantom against the
// published reference values, hand-worked small cases, bad input, and a large synthetic ROI.
#include <array>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include "analysis/kernels/ibsi/neighbourhood.h"
#include "support/ibsi_reference.h"

namespace ib = analysis::kernels::ibsi;

namespace {

ib::Levels make_levels(int nx, int ny, int nz, std::vector<int> level) {
  ib::Levels lv;
  lv.grid.nx = nx;
  lv.grid.ny = ny;
  lv.grid.nz = nz;
  lv.level = std::move(level);
  for (int v : lv.level) lv.ng = std::max(lv.ng, v);
  return lv;
}

using testsupport::ibsi::by_tag;

}  // namespace

BOOST_AUTO_TEST_CASE(digital_phantom_matches_the_reference) {
  const testsupport::ibsi::DigitalPhantom p;
  const auto ref = testsupport::ibsi::read_reference("ibsi_1_dig_phantom.csv");
  ib::Features got;
  ib::ngtdm_features(p.levels, {}, got);
  ib::ngldm_features(p.levels, {}, got);
  BOOST_TEST(got.size() == (5u + 17u) * 3u);
  testsupport::ibsi::check_features(got, ref, {"ngt_", "ngl_"});

  ib::Features both;
  ib::neighbourhood_features(p.levels, {}, both);
  BOOST_REQUIRE(both.size() == got.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    BOOST_TEST(both[i].tag == got[i].tag);
    BOOST_TEST(both[i].value == got[i].value);
  }
  BOOST_TEST(ib::ngtdm_definitions().size() == 5u);
  BOOST_TEST(ib::ngldm_definitions().size() == 17u);
}

BOOST_AUTO_TEST_CASE(two_voxels_hand_worked) {
  // Two adjacent voxels of grey levels 1 and 3. Each one's neighbourhood is the other voxel alone:
  // s_1 = |1 - 3| = 2, s_3 = 2; n_1 = n_3 = 1, p = 1/2 each, N_v,c = 2, N_g,p = 2.
  //  coarseness 1 / (1/2 * 2 + 1/2 * 2) = 0.5
  //  contrast   [2 * 1/4 * 4] / (2 * 1) * (4 / 2) = 2
  //  busyness   2 / (|1/2 - 3/2| + |3/2 - 1/2|) = 1
  //  complexity (1/2) * 2 * |1 - 3| * (1 + 1) / 1 = 4
  //  strength   2 * (1 * 4) / 4 = 2
  // NGLDM: no neighbour has the same level: j = 1 for both: lde = hde = 1, glnu = (1 + 1) / 2 = 1,
  // glnu_norm 1/2, gl_var 1, dcnu = 2^2 / 2 = 2, dc_entr = 1 (two cells of p 1/2), dc_energy 1/2.
  const auto lv = make_levels(2, 1, 1, {1, 3});
  ib::Features f;
  ib::neighbourhood_features(lv, {}, f);
  const auto m = by_tag(f);
  const auto tol = boost::test_tools::tolerance(1e-12);
  for (const char* a : {"2D", "2_5D", "3D"}) {
    const std::string s = std::string("_") + a;
    BOOST_TEST(m.at("ngt_coarseness" + s) == 0.5, tol);
    BOOST_TEST(m.at("ngt_contrast" + s) == 2.0, tol);
    BOOST_TEST(m.at("ngt_busyness" + s) == 1.0, tol);
    BOOST_TEST(m.at("ngt_complexity" + s) == 4.0, tol);
    BOOST_TEST(m.at("ngt_strength" + s) == 2.0, tol);
    BOOST_TEST(m.at("ngl_lde" + s) == 1.0, tol);
    BOOST_TEST(m.at("ngl_hde" + s) == 1.0, tol);
    BOOST_TEST(m.at("ngl_glnu" + s) == 1.0, tol);
    BOOST_TEST(m.at("ngl_glnu_norm" + s) == 0.5, tol);
    BOOST_TEST(m.at("ngl_gl_var" + s) == 1.0, tol);
    BOOST_TEST(m.at("ngl_dcnu" + s) == 2.0, tol);
    BOOST_TEST(m.at("ngl_dc_perc" + s) == 1.0, tol);
    BOOST_TEST(m.at("ngl_dc_entr" + s) == 1.0, tol);
    BOOST_TEST(m.at("ngl_dc_energy" + s) == 0.5, tol);
  }
}

BOOST_AUTO_TEST_CASE(single_voxel_roi) {
  // One voxel: no neighbour in the ROI, so the NGTDM has no voxel with a defined neighbourhood (its
  // features are undefined: NaN, as in mirp); the NGLDM has one neighbourhood with j = 1.
  std::vector<int> v(27, 0);
  v[13] = 2;
  const auto lv = make_levels(3, 3, 3, v);
  ib::Features f;
  ib::neighbourhood_features(lv, {}, f);
  const auto m = by_tag(f);
  for (const char* a : {"2D", "2_5D", "3D"}) {
    const std::string s = std::string("_") + a;
    BOOST_TEST(std::isnan(m.at("ngt_coarseness" + s)));
    BOOST_TEST(std::isnan(m.at("ngt_strength" + s)));
    BOOST_TEST(m.at("ngl_lde" + s) == 1.0);
    BOOST_TEST(m.at("ngl_lgce" + s) == 0.25);
    BOOST_TEST(m.at("ngl_dc_perc" + s) == 1.0);
    BOOST_TEST(m.at("ngl_dc_entr" + s) == 0.0);
    BOOST_TEST(m.at("ngl_dc_energy" + s) == 1.0);
  }
}

BOOST_AUTO_TEST_CASE(single_grey_level) {
  // A 2x2x2 cube of grey level 1 in a 4x4x4 grid. Every neighbourhood average is 1: s = 0, so
  // coarseness is 10^6 and contrast, busyness, complexity and strength are 0. NGLDM 3D: each voxel
  // has the 7 others as dependent neighbours: j = 8, lde = 1/64, hde = 64; 2D: 3 in its slice, j = 4.
  std::vector<int> v(64, 0);
  for (int z = 1; z <= 2; ++z)
    for (int y = 1; y <= 2; ++y)
      for (int x = 1; x <= 2; ++x) v[static_cast<std::size_t>((z * 4 + y) * 4 + x)] = 1;
  const auto lv = make_levels(4, 4, 4, v);
  ib::Features f;
  ib::neighbourhood_features(lv, {}, f);
  const auto m = by_tag(f);
  for (const char* a : {"2D", "2_5D", "3D"}) {
    const std::string s = std::string("_") + a;
    BOOST_TEST(m.at("ngt_coarseness" + s) == 1e6);
    BOOST_TEST(m.at("ngt_contrast" + s) == 0.0);
    BOOST_TEST(m.at("ngt_busyness" + s) == 0.0);
    BOOST_TEST(m.at("ngt_complexity" + s) == 0.0);
    BOOST_TEST(m.at("ngt_strength" + s) == 0.0);
    BOOST_TEST(m.at("ngl_gl_var" + s) == 0.0);
    BOOST_TEST(m.at("ngl_dc_var" + s) == 0.0);
  }
  BOOST_TEST(m.at("ngl_lde_3D") == 1.0 / 64.0);
  BOOST_TEST(m.at("ngl_hde_3D") == 64.0);
  BOOST_TEST(m.at("ngl_lde_2D") == 1.0 / 16.0);
  BOOST_TEST(m.at("ngl_hde_2_5D") == 16.0);
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused) {
  const testsupport::ibsi::DigitalPhantom p;
  ib::Features f;
  auto lv = p.levels;
  lv.level.pop_back();
  BOOST_CHECK_THROW(ib::ngtdm_features(lv, {}, f), std::invalid_argument);
  lv = p.levels;
  std::fill(lv.level.begin(), lv.level.end(), 0);
  BOOST_CHECK_THROW(ib::ngldm_features(lv, {}, f), std::invalid_argument);
  lv = p.levels;
  lv.level[0] = -1;
  BOOST_CHECK_THROW(ib::neighbourhood_features(lv, {}, f), std::invalid_argument);
  lv = p.levels;
  lv.grid.nx = 0;
  BOOST_CHECK_THROW(ib::ngtdm_features(lv, {}, f), std::invalid_argument);
  BOOST_TEST(f.empty());
}

BOOST_AUTO_TEST_CASE(roi_on_the_grid_faces_equals_the_padded_roi) {
  // Voxels with every neighbour in the grid take a path without per-neighbour tests; those on the
  // grid's faces the general one. A random ROI filling its grid (so on every face) and the same ROI
  // padded with a layer of background (every voxel inside) must give bit-identical features, in
  // every aggregation.
  std::mt19937 rng(11);
  for (const auto [nx, ny, nz] : {std::array<int, 3>{13, 9, 7}, std::array<int, 3>{45, 11, 6}}) {  // rows shorter and longer than vectors
    const int ng = 5;
    std::vector<int> level(static_cast<std::size_t>(nx * ny * nz));
    for (auto& v : level) v = rng() % 4 == 0 ? 0 : 1 + static_cast<int>(rng() % ng);
    std::vector<int> padded(static_cast<std::size_t>((nx + 2) * (ny + 2) * (nz + 2)), 0);
    for (int z = 0; z < nz; ++z)
      for (int y = 0; y < ny; ++y)
        for (int x = 0; x < nx; ++x)
          padded[static_cast<std::size_t>(((z + 1) * (ny + 2) + y + 1) * (nx + 2) + x + 1)] =
              level[static_cast<std::size_t>((z * ny + y) * nx + x)];
    const auto a = make_levels(nx, ny, nz, level);
    const auto b = make_levels(nx + 2, ny + 2, nz + 2, padded);
    for (const ib::TextureScope scope : {ib::TextureScope{true, true}, ib::TextureScope{true, false}, ib::TextureScope{false, true}}) {
      ib::Features fa, fb;
      ib::neighbourhood_features(a, scope, fa);
      ib::neighbourhood_features(b, scope, fb);
      BOOST_TEST_REQUIRE(fa.size() == fb.size());
      BOOST_TEST_REQUIRE(!fa.empty());
      for (std::size_t i = 0; i < fa.size(); ++i) {
        BOOST_TEST_CONTEXT(fa[i].tag) {
          BOOST_TEST(fa[i].tag == fb[i].tag);
          BOOST_TEST((fa[i].value == fb[i].value || (std::isnan(fa[i].value) && std::isnan(fb[i].value))));
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(large_synthetic_roi) {
  // 120 x 256 x 256, random grey levels 1..40 inside an ellipsoid.
  const int nx = 256, ny = 256, nz = 120;
  std::mt19937 rng(13);
  std::uniform_int_distribution<int> level(1, 40);
  std::vector<int> v(static_cast<std::size_t>(nx) * ny * nz, 0);
  std::size_t n = 0;
  for (int z = 0; z < nz; ++z)
    for (int y = 0; y < ny; ++y)
      for (int x = 0; x < nx; ++x) {
        const double a = (x - 127.5) / 120.0, b = (y - 127.5) / 110.0, c = (z - 59.5) / 58.0;
        if (a * a + b * b + c * c <= 1.0) {
          v[static_cast<std::size_t>((z * ny + y) * nx + x)] = level(rng);
          ++n;
        }
      }
  const auto lv = make_levels(nx, ny, nz, std::move(v));
  double best = 1e9;
  ib::Features f;
  for (int run = 0; run < 3; ++run) {
    f.clear();
    const auto t0 = std::chrono::steady_clock::now();
    ib::neighbourhood_features(lv, {}, f);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  BOOST_TEST_MESSAGE("NGTDM + NGLDM, 2D/2.5D/3D, " << n << " voxels: best of 3 " << best * 1e3 << " ms");
  BOOST_TEST(f.size() == (5u + 17u) * 3u);
  for (const auto& x : f) BOOST_TEST(std::isfinite(x.value), x.tag);
  const auto m = by_tag(f);
  BOOST_TEST(m.at("ngl_dc_perc_3D") == 1.0);
  BOOST_TEST(m.at("ngl_glnu_norm_3D") == 1.0 / 40.0, boost::test_tools::tolerance(0.05));
  // Uniform random levels: a neighbour has the same level with probability 1/40, so j is mostly 1.
  BOOST_TEST(m.at("ngl_lde_3D") > 0.4);
  BOOST_TEST(m.at("ngt_coarseness_3D") > 0.0);
}
