#define BOOST_TEST_MODULE ibsi_zones
#include <boost/test/unit_test.hpp>

// IBSI 1 GLSZM and GLDZM (analysis/kernels/ibsi/zones.h): the digital phantom against the published
// reference values, hand-worked small cases, bad input, and a large synthetic ROI for speed.
#include <chrono>
#include <cmath>
#include <algorithm>
#include <array>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include "analysis/kernels/ibsi/zones.h"
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

std::vector<std::uint8_t> mask_of(const ib::Levels& lv) {
  std::vector<std::uint8_t> m(lv.level.size());
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = lv.level[i] > 0;
  return m;
}

using testsupport::ibsi::by_tag;

// A 5x5x5 cube: a shell of grey level 1 around a 3x3x3 core of grey level 2.
ib::Levels shell_and_core() {
  std::vector<int> v(125);
  for (int z = 0; z < 5; ++z)
    for (int y = 0; y < 5; ++y)
      for (int x = 0; x < 5; ++x) {
        const bool core = x >= 1 && x <= 3 && y >= 1 && y <= 3 && z >= 1 && z <= 3;
        v[static_cast<std::size_t>((z * 5 + y) * 5 + x)] = core ? 2 : 1;
      }
  return make_levels(5, 5, 5, std::move(v));
}

}  // namespace

BOOST_AUTO_TEST_CASE(digital_phantom_matches_the_reference) {
  const testsupport::ibsi::DigitalPhantom p;
  const auto ref = testsupport::ibsi::read_reference("ibsi_1_dig_phantom.csv");
  ib::Features got;
  ib::glszm_features(p.levels, {}, got);
  ib::gldzm_features(p.levels, p.roi.morph, {}, got);
  BOOST_TEST(got.size() == 2u * 16u * 3u);
  testsupport::ibsi::check_features(got, ref, {"szm_", "dzm_"});

  // One labelling for both families gives the same features.
  ib::Features both;
  ib::zone_features(p.levels, p.roi.morph, {}, both);
  BOOST_REQUIRE(both.size() == got.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    BOOST_TEST(both[i].tag == got[i].tag);
    BOOST_TEST(both[i].value == got[i].value);
  }
}

BOOST_AUTO_TEST_CASE(scope_selects_the_aggregations) {
  const testsupport::ibsi::DigitalPhantom p;
  ib::Features only3d;
  ib::glszm_features(p.levels, {.two_d = false, .three_d = true}, only3d);
  BOOST_TEST(only3d.size() == 16u);
  for (const auto& f : only3d) BOOST_TEST(f.tag.ends_with("_3D"));
  ib::Features only2d;
  ib::gldzm_features(p.levels, p.roi.morph, {.two_d = true, .three_d = false}, only2d);
  BOOST_TEST(only2d.size() == 32u);
  BOOST_TEST(ib::glszm_definitions().size() == 16u);
  BOOST_TEST(ib::gldzm_definitions().size() == 16u);
}

BOOST_AUTO_TEST_CASE(single_voxel_roi) {
  // One voxel of grey level 3 (ng 3) in a 3x3x3 grid: one zone of size 1 at distance 1, in every
  // aggregation. Emphases: 1/j^2 = j^2 = 1, 1/i^2 = 1/9, i^2 = 9; non-uniformities 1^2/1 = 1;
  // percentage 1/1; variances 0; entropy -1 log2 1 = 0.
  std::vector<int> v(27, 0);
  v[13] = 3;
  const auto lv = make_levels(3, 3, 3, v);
  ib::Features f;
  ib::zone_features(lv, mask_of(lv), {}, f);
  const auto m = by_tag(f);
  for (const char* a : {"2D", "2_5D", "3D"}) {
    const std::string s = std::string("_") + a;
    BOOST_TEST(m.at("szm_sze" + s) == 1.0);
    BOOST_TEST(m.at("szm_lze" + s) == 1.0);
    BOOST_TEST(m.at("szm_lgze" + s) == 1.0 / 9.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(m.at("szm_hgze" + s) == 9.0);
    BOOST_TEST(m.at("szm_lzhge" + s) == 9.0);
    BOOST_TEST(m.at("szm_glnu_norm" + s) == 1.0);
    BOOST_TEST(m.at("szm_z_perc" + s) == 1.0);
    BOOST_TEST(m.at("szm_gl_var" + s) == 0.0);
    BOOST_TEST(m.at("szm_zs_var" + s) == 0.0);
    BOOST_TEST(m.at("szm_zs_entr" + s) == 0.0);
    BOOST_TEST(m.at("dzm_sde" + s) == 1.0);  // an edge voxel: distance 1
    BOOST_TEST(m.at("dzm_lde" + s) == 1.0);
    BOOST_TEST(m.at("dzm_zd_entr" + s) == 0.0);
  }
}

BOOST_AUTO_TEST_CASE(single_grey_level) {
  // A 3x3x3 cube of grey level 1 in a 5x5x5 grid. 3D: one zone of 27 voxels: sze 1/27^2, lze 27^2,
  // z_perc 1/27. 2D: per slice one zone of 9: sze 1/81, z_perc 1/9; 2.5D: three zones of 9 in 27
  // voxels: zsnu = 3^2/3 = 3, zsnu_norm 1. Distances: the cube's faces touch the edge, so 1.
  std::vector<int> v(125, 0);
  for (int z = 1; z <= 3; ++z)
    for (int y = 1; y <= 3; ++y)
      for (int x = 1; x <= 3; ++x) v[static_cast<std::size_t>((z * 5 + y) * 5 + x)] = 1;
  const auto lv = make_levels(5, 5, 5, v);
  ib::Features f;
  ib::zone_features(lv, mask_of(lv), {}, f);
  const auto m = by_tag(f);
  const auto tol = boost::test_tools::tolerance(1e-12);
  BOOST_TEST(m.at("szm_sze_3D") == 1.0 / 729.0, tol);
  BOOST_TEST(m.at("szm_lze_3D") == 729.0, tol);
  BOOST_TEST(m.at("szm_z_perc_3D") == 1.0 / 27.0, tol);
  BOOST_TEST(m.at("szm_sze_2D") == 1.0 / 81.0, tol);
  BOOST_TEST(m.at("szm_z_perc_2D") == 1.0 / 9.0, tol);
  BOOST_TEST(m.at("szm_zsnu_2_5D") == 3.0, tol);
  BOOST_TEST(m.at("szm_zsnu_norm_2_5D") == 1.0, tol);
  BOOST_TEST(m.at("szm_gl_var_3D") == 0.0);
  BOOST_TEST(m.at("szm_glnu_norm_3D") == 1.0);
  BOOST_TEST(m.at("dzm_sde_3D") == 1.0);
  BOOST_TEST(m.at("dzm_z_perc_2_5D") == 1.0 / 9.0, tol);
}

BOOST_AUTO_TEST_CASE(distance_to_the_edge_is_city_block) {
  // Shell of level 1 around a 3x3x3 core of level 2 (5x5x5). 3D: two zones, the shell (26-connected,
  // distance 1) and the core, whose face voxels are 2 steps from outside (city block): distances 1
  // and 2, sde = (1 + 1/4) / 2 = 0.625, lde = (1 + 4) / 2 = 2.5, zd_var = 0.25.
  // 2D: slices 0 and 4 are one zone of level 1 at distance 1; slices 1-3 have the ring (distance 1) and
  // the 3x3 core (distance 2). 2.5D: 8 zones, distances 1 x5 and 2 x3: sde = (5 + 3/4) / 8.
  const auto lv = shell_and_core();
  ib::Features f;
  ib::gldzm_features(lv, mask_of(lv), {}, f);
  const auto m = by_tag(f);
  const auto tol = boost::test_tools::tolerance(1e-12);
  BOOST_TEST(m.at("dzm_sde_3D") == 0.625, tol);
  BOOST_TEST(m.at("dzm_lde_3D") == 2.5, tol);
  BOOST_TEST(m.at("dzm_zd_var_3D") == 0.25, tol);
  BOOST_TEST(m.at("dzm_sde_2_5D") == 5.75 / 8.0, tol);
  // 2D mean: slices 0 and 4 give sde 1; slices 1-3 give 0.625: (2 + 3 * 0.625) / 5.
  BOOST_TEST(m.at("dzm_sde_2D") == (2.0 + 3 * 0.625) / 5.0, tol);
  // The 3D centre voxel is 3 steps from outside; a lone zone there has distance 3.
  auto centre = lv;
  centre.level[62] = 3;
  centre.ng = 3;
  ib::Features g3;
  ib::gldzm_features(centre, mask_of(centre), {.two_d = false, .three_d = true}, g3);
  // Zones: shell (d 1), core minus centre (d 2), centre (d 3): lde = (1 + 4 + 9) / 3.
  BOOST_TEST(by_tag(g3).at("dzm_lde_3D") == 14.0 / 3.0, tol);
}

BOOST_AUTO_TEST_CASE(the_morphological_mask_defines_the_edge) {
  // Re-segmentation removed the shell from the intensity mask (levels 0) but not from the
  // morphological mask: the core is still 2 steps from the ROI edge (sde 1/4), not 1.
  auto lv = shell_and_core();
  const auto morph = mask_of(lv);
  for (auto& v : lv.level)
    if (v == 1) v = 0;
  ib::Features f;
  ib::gldzm_features(lv, morph, {.two_d = false, .three_d = true}, f);
  BOOST_TEST(by_tag(f).at("dzm_sde_3D") == 0.25);
  BOOST_TEST(by_tag(f).at("dzm_z_perc_3D") == 1.0 / 27.0);  // voxels of the intensity mask
  ib::Features g;
  ib::gldzm_features(lv, mask_of(lv), {.two_d = false, .three_d = true}, g);
  BOOST_TEST(by_tag(g).at("dzm_sde_3D") == 1.0);
}

// Brute force: zones by flood fill, distances as the L1 distance to the nearest voxel outside the
// morphological mask or the grid, then the same matrix features.
std::vector<ib::detail::MatrixEntry> brute_force_matrix(const ib::Levels& lv, const std::vector<std::uint8_t>& morph,
                                                       bool three_d, int only_z, bool by_size, double& n_voxels) {
  const auto& g = lv.grid;
  auto at = [&](int x, int y, int z) { return lv.level[g.index(x, y, z)]; };
  auto distance = [&](int x, int y, int z) {
    int d = std::min({x + 1, g.nx - x, y + 1, g.ny - y});
    if (three_d) d = std::min({d, z + 1, g.nz - z});
    for (int c = 0; c < g.nz; ++c)
      for (int b = 0; b < g.ny; ++b)
        for (int a = 0; a < g.nx; ++a)
          if (!morph[g.index(a, b, c)] && (three_d || c == z))
            d = std::min(d, std::abs(a - x) + std::abs(b - y) + std::abs(c - z));
    return d;
  };
  std::vector<char> seen(g.size(), 0);
  std::map<std::pair<int, std::int64_t>, double> cells;
  n_voxels = 0;
  for (int z = 0; z < g.nz; ++z)
    for (int y = 0; y < g.ny; ++y)
      for (int x = 0; x < g.nx; ++x) {
        if ((!three_d && z != only_z) || at(x, y, z) == 0 || seen[g.index(x, y, z)]) continue;
        const int v = at(x, y, z);
        std::vector<std::array<int, 3>> stack{{x, y, z}};
        seen[g.index(x, y, z)] = 1;
        std::int64_t size = 0;
        int dmin = 1 << 30;
        while (!stack.empty()) {
          const auto [a, b, c] = stack.back();
          stack.pop_back();
          ++size;
          dmin = std::min(dmin, distance(a, b, c));
          for (int dz = three_d ? -1 : 0; dz <= (three_d ? 1 : 0); ++dz)
            for (int dy = -1; dy <= 1; ++dy)
              for (int dx = -1; dx <= 1; ++dx) {
                const int p = a + dx, q = b + dy, r = c + dz;
                if (p < 0 || q < 0 || r < 0 || p >= g.nx || q >= g.ny || r >= g.nz) continue;
                if (at(p, q, r) != v || seen[g.index(p, q, r)]) continue;
                seen[g.index(p, q, r)] = 1;
                stack.push_back({p, q, r});
              }
        }
        n_voxels += static_cast<double>(size);
        cells[{v, by_size ? size : dmin}] += 1;
      }
  std::vector<ib::detail::MatrixEntry> e;
  for (const auto& [k, c] : cells) e.push_back({k.first, k.second, c});
  return e;
}

BOOST_AUTO_TEST_CASE(random_volumes_match_a_brute_force_count) {
  // Random grey levels 1..3 (large zones winding across slices) in a random mask, with the
  // morphological mask a little larger than the intensity mask.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 6; ++trial) {
    const int nx = 9 + trial, ny = 7 + trial % 3, nz = 5 + trial % 4;
    std::vector<int> v(static_cast<std::size_t>(nx) * ny * nz);
    std::vector<std::uint8_t> morph(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      morph[i] = rng() % 10 < 8;
      v[i] = morph[i] && rng() % 10 < 9 ? 1 + static_cast<int>(rng() % 3) : 0;
    }
    const auto lv = make_levels(nx, ny, nz, v);
    ib::Features f;
    ib::zone_features(lv, morph, {}, f);
    const auto m = by_tag(f);
    for (const bool by_size : {true, false}) {
      const auto defs = by_size ? ib::glszm_definitions() : ib::gldzm_definitions();
      double nv = 0;
      const auto e3 = brute_force_matrix(lv, morph, true, 0, by_size, nv);
      const auto f3 = ib::detail::sparse_matrix_features(e3, nv);
      std::vector<ib::detail::MatrixEntry> all;
      ib::detail::MatrixFeatures mean{};
      double nv25 = 0;
      int slices = 0;
      for (int z = 0; z < nz; ++z) {
        double n = 0;
        const auto e = brute_force_matrix(lv, morph, false, z, by_size, n);
        if (n == 0) continue;
        const auto fz = ib::detail::sparse_matrix_features(e, n);
        for (std::size_t k = 0; k < fz.size(); ++k) mean[k] += fz[k];
        ++slices;
        nv25 += n;
        all.insert(all.end(), e.begin(), e.end());
      }
      const auto f25 = ib::detail::sparse_matrix_features(ib::detail::merge_entries(all), nv25);
      for (std::size_t k = 0; k < defs.size(); ++k) {
        const std::string base(defs[k].base_tag);
        BOOST_TEST_INFO(base << (by_size ? " size" : " distance"));
        BOOST_TEST(m.at(base + "_3D") == f3[k], boost::test_tools::tolerance(1e-9));
        BOOST_TEST(m.at(base + "_2_5D") == f25[k], boost::test_tools::tolerance(1e-9));
        BOOST_TEST(m.at(base + "_2D") == mean[k] / slices, boost::test_tools::tolerance(1e-9));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(runs_that_touch_only_at_a_corner_are_one_zone) {
  // Zones are built from runs along x. Rows "1 1 2 2" and "2 2 1 1": both runs of a row end where
  // the runs of the other row end, and the runs of one level touch only at a corner (8-connected
  // in a slice, 26-connected across slices). So: two zones of 4 voxels, lze 4^2 = 16, z_perc 2/8.
  const std::vector<int> rows = {1, 1, 2, 2, 2, 2, 1, 1};
  const auto in_slice = make_levels(4, 2, 1, rows);  // the rows one above the other
  ib::Features f;
  ib::glszm_features(in_slice, {}, f);
  auto m = by_tag(f);
  for (const char* a : {"2D", "2_5D", "3D"}) {
    const std::string s = std::string("_") + a;
    BOOST_TEST(m.at("szm_lze" + s) == 16.0);
    BOOST_TEST(m.at("szm_z_perc" + s) == 0.25);
  }
  const auto across = make_levels(4, 1, 2, rows);  // one row per slice: they touch in 3D only
  f.clear();
  ib::glszm_features(across, {}, f);
  m = by_tag(f);
  BOOST_TEST(m.at("szm_lze_3D") == 16.0);
  BOOST_TEST(m.at("szm_z_perc_3D") == 0.25);
  BOOST_TEST(m.at("szm_lze_2D") == 4.0);  // per slice: two zones of 2 voxels
  BOOST_TEST(m.at("szm_z_perc_2D") == 0.5);
  // Shifted by one voxel the runs of one level no longer touch: "1 1 2 2 2" over "2 2 2 1 1".
  f.clear();
  ib::glszm_features(make_levels(5, 2, 1, {1, 1, 2, 2, 2, 2, 2, 2, 1, 1}), {.two_d = false, .three_d = true}, f);
  // Zones: {1 1}, {1 1} and the 6 voxels of level 2: lze = (4 + 4 + 36) / 3.
  BOOST_TEST(by_tag(f).at("szm_lze_3D") == 44.0 / 3.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(blocky_random_volumes_match_a_brute_force_count) {
  // Long runs (levels constant over random stretches of a row, rows that repeat), so that the scan
  // for runs skips whole vectors, and rows wider than those vectors; against the flood fill.
  std::mt19937 rng(11);
  for (int trial = 0; trial < 4; ++trial) {
    const int nx = 29 + 4 * trial, ny = 5 + trial % 2, nz = 4;
    std::vector<int> v(static_cast<std::size_t>(nx) * ny * nz);
    std::vector<std::uint8_t> morph(v.size(), 1);
    for (int z = 0; z < nz; ++z)
      for (int y = 0; y < ny; ++y) {
        int* row = &v[static_cast<std::size_t>((z * ny + y) * nx)];
        if (y > 0 && rng() % 3 == 0) {  // a copy of the row above
          std::copy(row - nx, row, row);
          continue;
        }
        for (int x = 0; x < nx;) {
          const int len = 1 + static_cast<int>(rng() % 12), level = static_cast<int>(rng() % 4);  // 0: outside
          for (int k = 0; k < len && x < nx; ++k, ++x) row[x] = level;
        }
      }
    for (std::size_t i = 0; i < v.size(); ++i)
      if (v[i] == 0 && rng() % 4 == 0) morph[i] = 0;  // the morphological mask, with holes
    const auto lv = make_levels(nx, ny, nz, v);
    ib::Features f;
    ib::zone_features(lv, morph, {.two_d = false, .three_d = true}, f);
    const auto m = by_tag(f);
    for (const bool by_size : {true, false}) {
      const auto defs = by_size ? ib::glszm_definitions() : ib::gldzm_definitions();
      double nv = 0;
      const auto e = brute_force_matrix(lv, morph, true, 0, by_size, nv);
      const auto expected = ib::detail::sparse_matrix_features(e, nv);
      for (std::size_t k = 0; k < defs.size(); ++k) {
        BOOST_TEST_INFO(defs[k].base_tag << " trial " << trial);
        BOOST_TEST(m.at(std::string(defs[k].base_tag) + "_3D") == expected[k], boost::test_tools::tolerance(1e-9));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(vector_distance_scan_equals_the_serial_one) {
  // detail::min_plus_scan (eight values at a time) against the serial recurrence it replaces, both
  // directions, rows of every length up to a few vectors and a long one; values as in a distance
  // map (0 outside, runs of large values) and at random up to 65534.
  std::mt19937 rng(5);
  const auto serial = [](std::vector<std::uint16_t> d, bool backward) {
    std::uint16_t run = 0;
    const int n = static_cast<int>(d.size());
    for (int k = 0; k < n; ++k) {
      const int x = backward ? n - 1 - k : k;
      run = d[static_cast<std::size_t>(x)] = std::min<std::uint16_t>(d[static_cast<std::size_t>(x)], static_cast<std::uint16_t>(run + 1));
    }
    return d;
  };
  int checked = 0;
  for (int n = 0; n <= 1000; n = n < 40 ? n + 1 : n * 5)
    for (int pattern = 0; pattern < 3; ++pattern)
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<std::uint16_t> d(static_cast<std::size_t>(n));
        for (auto& v : d) {
          if (pattern == 0) v = static_cast<std::uint16_t>(rng() % 65535);
          else if (pattern == 1) v = rng() % 7 == 0 ? 0 : 60000;
          else v = static_cast<std::uint16_t>(rng() % 12);
        }
        for (const bool backward : {false, true}) {
          auto got = d;
          ib::detail::min_plus_scan(got.data(), n, backward);
          BOOST_TEST_REQUIRE((got == serial(d, backward)), "n " << n << " pattern " << pattern << " backward " << backward);
          ++checked;
        }
      }
  BOOST_TEST(checked > 1000);
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused) {
  const testsupport::ibsi::DigitalPhantom p;
  ib::Features f;
  auto lv = p.levels;
  lv.level.pop_back();
  BOOST_CHECK_THROW(ib::glszm_features(lv, {}, f), std::invalid_argument);
  lv = p.levels;
  std::fill(lv.level.begin(), lv.level.end(), 0);
  BOOST_CHECK_THROW(ib::glszm_features(lv, {}, f), std::invalid_argument);
  lv = p.levels;
  lv.level[0] = lv.ng + 1;
  BOOST_CHECK_THROW(ib::glszm_features(lv, {}, f), std::invalid_argument);
  auto morph = p.roi.morph;
  morph.pop_back();
  BOOST_CHECK_THROW(ib::gldzm_features(p.levels, morph, {}, f), std::invalid_argument);
  morph = p.roi.morph;
  for (std::size_t i = 0; i < morph.size(); ++i)
    if (p.levels.level[i] > 0) {
      morph[i] = 0;  // a grey level outside the morphological mask
      break;
    }
  BOOST_CHECK_THROW(ib::gldzm_features(p.levels, morph, {}, f), std::invalid_argument);
  BOOST_TEST(f.empty());
}

BOOST_AUTO_TEST_CASE(large_synthetic_roi) {
  // 120 x 256 x 256, random grey levels 1..40 inside an ellipsoid (the worst case for zone counts).
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
  const auto morph = mask_of(lv);
  double best = 1e9;
  ib::Features f;
  for (int run = 0; run < 3; ++run) {
    f.clear();
    const auto t0 = std::chrono::steady_clock::now();
    ib::zone_features(lv, morph, {}, f);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  BOOST_TEST_MESSAGE("GLSZM + GLDZM, 2D/2.5D/3D, " << n << " voxels: best of 3 " << best * 1e3 << " ms");
  BOOST_TEST(f.size() == 2u * 16u * 3u);
  for (const auto& x : f) BOOST_TEST(std::isfinite(x.value), x.tag);
  const auto m = by_tag(f);
  BOOST_TEST(m.at("szm_z_perc_3D") > 0.0);
  BOOST_TEST(m.at("szm_z_perc_3D") < m.at("szm_z_perc_2_5D"));  // 26-connected zones merge more voxels
  BOOST_TEST(m.at("szm_z_perc_2_5D") <= 1.0);
  BOOST_TEST(m.at("szm_glnu_norm_3D") == 1.0 / 40.0, boost::test_tools::tolerance(0.05));
  BOOST_TEST(m.at("dzm_z_perc_3D") == m.at("szm_z_perc_3D"));  // same zones
}
