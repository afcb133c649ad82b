#define BOOST_TEST_MODULE ibsi_intensity
#include <boost/test/unit_test.hpp>

// IBSI 1 local intensity, intensity-based statistics, intensity histogram and intensity-volume
// histogram features: the digital phantom against the published reference values, small
// hand-worked cases, a brute-force check of the sphere means, bad inputs, and a large ROI.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numbers>
#include <random>
#include <stdexcept>

#include <opencv2/core/utility.hpp>

#include "analysis/kernels/ibsi/intensity.h"
#include "support/ibsi_reference.h"

namespace ib = analysis::kernels::ibsi;

namespace {

using testsupport::ibsi::by_tag;

// A 1-row ROI holding `values` (every voxel in both masks).
ib::RoiImage row_roi(const std::vector<float>& values) {
  ib::RoiImage r;
  r.grid = {static_cast<int>(values.size()), 1, 1, 1, 1, 1};
  r.intensity = values;
  r.morph.assign(values.size(), 1);
  r.mask = r.morph;
  return r;
}

ib::Levels row_levels(const std::vector<int>& v, int ng) {
  ib::Levels l;
  l.grid = {static_cast<int>(v.size()), 1, 1, 1, 1, 1};
  l.level = v;
  l.ng = ng;
  return l;
}

template <typename F>
double best_ms(int runs, F&& f) {
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void check_definitions(std::span<const ib::FeatureDef> defs, const ib::Features& got) {
  BOOST_TEST(defs.size() == got.size());
  for (std::size_t i = 0; i < std::min(defs.size(), got.size()); ++i) {
    BOOST_TEST(std::string(defs[i].base_tag) == got[i].tag);
    BOOST_TEST(defs[i].code.size() == 4u);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(digital_phantom_matches_reference) {
  const testsupport::ibsi::DigitalPhantom p;
  const auto ref = testsupport::ibsi::read_reference("ibsi_1_dig_phantom.csv");
  ib::Features loc, stat, ih, ivh;
  ib::local_intensity_features(p.roi, loc);
  ib::statistics_features(p.roi, stat);
  ib::histogram_features(p.levels, ih);
  ib::ivh_features(p.roi, ib::IvhOptions{}, ivh);  // the manual: no discretisation, grey levels 1..6
  check_definitions(ib::local_intensity_definitions(), loc);
  check_definitions(ib::statistics_definitions(), stat);
  check_definitions(ib::histogram_definitions(), ih);
  check_definitions(ib::ivh_definitions(), ivh);
  ib::Features all = loc;
  for (const auto* f : {&stat, &ih, &ivh}) all.insert(all.end(), f->begin(), f->end());
  testsupport::ibsi::check_features(all, ref, {"loc_", "stat_", "ih_", "ivh_"});
  // ivh_auc has no reference value. The phantom's levels 1..6 hold 50, 0, 11?, .. voxels; rather
  // than trust a count, integrate nu(gamma) here from the volume fractions at each level.
  std::vector<int> count(7, 0);
  for (std::size_t i = 0; i < p.levels.level.size(); ++i) ++count[static_cast<std::size_t>(p.levels.level[i])];
  double auc = 0, nu_prev = 1, below = count[1];
  for (int k = 2; k <= 6; ++k) {
    const double nu = 1 - below / 74.0;
    auc += 0.2 * (nu_prev + nu) / 2;
    nu_prev = nu;
    below += count[static_cast<std::size_t>(k)];
  }
  BOOST_TEST(by_tag(ivh)["ivh_auc"] == auc, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(statistics_hand_worked) {
  // {1, 2, 3, 4}: mean 2.5, variance 1.25; NumPy-linear percentiles at (n - 1) p = 3p:
  // P10 = 1.3, P25 = 1.75, median 2.5, P75 = 3.25, P90 = 3.7. MAD = (1.5 + .5 + .5 + 1.5) / 4 = 1;
  // robust MAD over {2, 3} (in [1.3, 3.7]) about 2.5: 0.5; MedAD about 2.5: 1. Kurtosis:
  // m4 = (2 * 1.5^4 + 2 * 0.5^4) / 4 = 2.5625, / 1.25^2 - 3 = -1.36. Energy 30, RMS sqrt(7.5).
  for (const float shift : {0.0f, 0.5f}) {  // integer histogram and sorted-float paths
    ib::Features f;
    ib::statistics_features(row_roi({4 + shift, 1 + shift, 3 + shift, 2 + shift}), f);
    auto m = by_tag(f);
    const auto tol = boost::test_tools::tolerance(1e-12);
    BOOST_TEST(m["stat_mean"] == 2.5 + shift, tol);
    BOOST_TEST(m["stat_var"] == 1.25, tol);
    BOOST_TEST(m["stat_skew"] == 0.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(m["stat_kurt"] == -1.36, tol);
    BOOST_TEST(m["stat_median"] == 2.5 + shift, tol);
    BOOST_TEST(m["stat_min"] == 1 + shift, tol);
    BOOST_TEST(m["stat_p10"] == 1.3 + shift, tol);
    BOOST_TEST(m["stat_p90"] == 3.7 + shift, tol);
    BOOST_TEST(m["stat_max"] == 4 + shift, tol);
    BOOST_TEST(m["stat_iqr"] == 1.5, tol);
    BOOST_TEST(m["stat_range"] == 3.0, tol);
    BOOST_TEST(m["stat_mad"] == 1.0, tol);
    BOOST_TEST(m["stat_rmad"] == 0.5, tol);
    BOOST_TEST(m["stat_medad"] == 1.0, tol);
    BOOST_TEST(m["stat_cov"] == std::sqrt(1.25) / (2.5 + shift), tol);
    BOOST_TEST(m["stat_qcod"] == 1.5 / (5.0 + 2 * shift), tol);
  }
  ib::Features f;
  ib::statistics_features(row_roi({1, 2, 3, 4}), f);
  BOOST_TEST(by_tag(f)["stat_energy"] == 30.0);
  BOOST_TEST(by_tag(f)["stat_rms"] == std::sqrt(7.5), boost::test_tools::tolerance(1e-12));
  // A constant ROI: variance 0, skewness and kurtosis 0, CoV 0.
  f.clear();
  ib::statistics_features(row_roi({-7, -7, -7}), f);
  BOOST_TEST(by_tag(f)["stat_skew"] == 0.0);
  BOOST_TEST(by_tag(f)["stat_kurt"] == 0.0);
  BOOST_TEST(by_tag(f)["stat_cov"] == 0.0);
  // Only voxels of the intensity mask count.
  auto roi = row_roi({1, 2, 3, 1000});
  roi.mask[3] = 0;
  f.clear();
  ib::statistics_features(roi, f);
  BOOST_TEST(by_tag(f)["stat_max"] == 3.0);
}

BOOST_AUTO_TEST_CASE(histogram_hand_worked) {
  // Levels 1,1,3,4 (Ng 4): H = {2, 0, 1, 1}. Gradient: H2 - H1 = -2, (H3 - H1) / 2 = -0.5,
  // (H4 - H2) / 2 = 0.5, H4 - H3 = 0: max 0.5 at 3, min -2 at 1. p = {.5, 0, .25, .25}:
  // entropy 1.5 bits, uniformity 0.375. Mode 1.
  ib::Features f;
  ib::histogram_features(row_levels({1, 3, 1, 4}, 4), f);
  auto m = by_tag(f);
  BOOST_TEST(m["ih_mode"] == 1.0);
  BOOST_TEST(m["ih_max_grad"] == 0.5);
  BOOST_TEST(m["ih_max_grad_g"] == 3.0);
  BOOST_TEST(m["ih_min_grad"] == -2.0);
  BOOST_TEST(m["ih_min_grad_g"] == 1.0);
  BOOST_TEST(m["ih_entropy"] == 1.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(m["ih_uniformity"] == 0.375, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(m["ih_mean"] == 2.25, boost::test_tools::tolerance(1e-12));
  // Tied modes 1 and 3 (H = {2, 0, 2, 1}, mean 2.4): the one closest to the mean, 3.
  f.clear();
  ib::histogram_features(row_levels({1, 1, 3, 3, 4}, 4), f);
  BOOST_TEST(by_tag(f)["ih_mode"] == 3.0);
  // Tied modes 1 and 3 equally far from the mean 2 (H = {2, 1, 2}): the lowest, 1.
  f.clear();
  ib::histogram_features(row_levels({1, 1, 2, 3, 3}, 3), f);
  BOOST_TEST(by_tag(f)["ih_mode"] == 1.0);
  // A single grey level: gradient 0 at level 1.
  f.clear();
  ib::histogram_features(row_levels({1, 1}, 1), f);
  BOOST_TEST(by_tag(f)["ih_max_grad"] == 0.0);
  BOOST_TEST(by_tag(f)["ih_min_grad_g"] == 1.0);
  // Voxels outside the mask (level 0) do not count.
  f.clear();
  ib::histogram_features(row_levels({0, 2, 0, 2}, 2), f);
  BOOST_TEST(by_tag(f)["ih_mean"] == 2.0);
  BOOST_TEST(by_tag(f)["ih_min_grad"] == 2.0);  // H = {0, 2}: one-sided gradient 2 at both ends
}

BOOST_AUTO_TEST_CASE(ivh_hand_worked) {
  const auto tol = boost::test_tools::tolerance(1e-12);
  using M = ib::IvhOptions::Method;
  {
    // none, step 10: levels 0, 10, 20, 30; gamma 0, 1/3, 2/3, 1; nu 1, .75, .5, .25.
    // V10 = nu at gamma 1/3 = .75; V90 = nu at gamma 1 = .25; I10: no nu <= .1, so the level
    // above the top, 40; I90 = 10. AUC = 1/3 (.875 + .625 + .375) = .625.
    ib::IvhOptions o;
    o.step = 10;
    ib::Features f;
    ib::ivh_features(row_roi({0, 10, 20, 30}), o, f);
    auto m = by_tag(f);
    BOOST_TEST(m["ivh_v10"] == 0.75, tol);
    BOOST_TEST(m["ivh_v90"] == 0.25, tol);
    BOOST_TEST(m["ivh_i10"] == 40.0, tol);
    BOOST_TEST(m["ivh_i90"] == 10.0, tol);
    BOOST_TEST(m["ivh_diff_v10_v90"] == 0.5, tol);
    BOOST_TEST(m["ivh_diff_i10_i90"] == 30.0, tol);
    BOOST_TEST(m["ivh_auc"] == 0.625, tol);
  }
  {
    // none with bounds [-10, 30], step 10: levels -10..30 (5), gamma k / 4; voxels 0,10,20,30:
    // nu = 1, 1, .75, .5, .25. V10: gamma .25 -> nu 1; V90: gamma 1 -> .25; I90: first nu <= .9: 10.
    ib::IvhOptions o;
    o.step = 10;
    o.lower = -10;
    o.upper = 30;
    ib::Features f;
    ib::ivh_features(row_roi({0, 10, 20, 30}), o, f);
    auto m = by_tag(f);
    BOOST_TEST(m["ivh_v10"] == 1.0, tol);
    BOOST_TEST(m["ivh_v90"] == 0.25, tol);
    BOOST_TEST(m["ivh_i90"] == 10.0, tol);
  }
  {
    // fixed bin size 2.5 from 0 to 10: n = ceil(10 / 2.5) + 1 = 5 bins, centres 1.25 .. 11.25.
    // Voxels 0, 1, 3, 9, 10 -> bins 1, 1, 2, 4, 5: nu = 1, .6, .4, .4, .2; gamma k / 4.
    // V10 (gamma .25) = .6; V90 (gamma 1) = .2; I10: none -> 11.25 + 2.5 = 13.75; I90 = 3.75.
    ib::IvhOptions o;
    o.method = M::fixed_bin_size;
    o.bin_width = 2.5;
    o.lower = 0;
    o.upper = 10;
    ib::Features f;
    ib::ivh_features(row_roi({0, 1, 3, 9, 10}), o, f);
    auto m = by_tag(f);
    BOOST_TEST(m["ivh_v10"] == 0.6, tol);
    BOOST_TEST(m["ivh_v90"] == 0.2, tol);
    BOOST_TEST(m["ivh_i10"] == 13.75, tol);
    BOOST_TEST(m["ivh_i90"] == 3.75, tol);
  }
  {
    // fixed bin number 4 over the ROI's 0..4: bins floor(4 x / 4) + 1, the maximum in bin 4:
    // voxels 0..4 -> 1, 2, 3, 4, 4: nu = 1, .8, .6, .4; gamma k / 3. V10 (gamma 1/3) = .8;
    // V90 (gamma 1) = .4; I10: none -> bin 5; I90 = bin 2.
    ib::IvhOptions o;
    o.method = M::fixed_bin_number;
    o.bins = 4;
    ib::Features f;
    ib::ivh_features(row_roi({0, 1, 2, 3, 4}), o, f);
    auto m = by_tag(f);
    BOOST_TEST(m["ivh_v10"] == 0.8, tol);
    BOOST_TEST(m["ivh_v90"] == 0.4, tol);
    BOOST_TEST(m["ivh_i10"] == 5.0, tol);
    BOOST_TEST(m["ivh_i90"] == 2.0, tol);
  }
}

BOOST_AUTO_TEST_CASE(sphere_means_match_brute_force) {
  // An anisotropic grid with the ROI touching its borders: every sphere mean against a direct sum
  // over the voxels whose centres lie within r = (3 / (4 pi))^(1/3) cm.
  ib::RoiImage roi;
  roi.grid = {11, 9, 6, 0.9, 1.3, 2.1};
  const auto& g = roi.grid;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> val(-100, 100);
  std::bernoulli_distribution in(0.4);
  for (std::size_t i = 0; i < g.size(); ++i) {
    roi.intensity.push_back(static_cast<float>(val(rng)));
    roi.mask.push_back(in(rng) ? 1 : 0);
  }
  roi.morph = roi.mask;
  for (const float scale : {1.0f, 0.37f}) {  // integer (int32 sums) and fractional (double sums)
  for (auto& v : roi.intensity) v *= scale;
  const double r = 10 * std::cbrt(3 / (4 * std::numbers::pi));
  double glob = -1e300, maxi = -1e300, loc = -1e300;
  for (int z = 0; z < g.nz; ++z)
    for (int y = 0; y < g.ny; ++y)
      for (int x = 0; x < g.nx; ++x) {
        if (!roi.mask[g.index(x, y, z)]) continue;
        double s = 0;
        int n = 0;
        for (int c = 0; c < g.nz; ++c)
          for (int b = 0; b < g.ny; ++b)
            for (int a = 0; a < g.nx; ++a) {
              const double d = std::hypot((a - x) * g.sx, (b - y) * g.sy, (c - z) * g.sz);
              if (d <= r) s += roi.intensity[g.index(a, b, c)], ++n;
            }
        const double mean = s / n, v = roi.intensity[g.index(x, y, z)];
        glob = std::max(glob, mean);
        if (v > maxi) maxi = v, loc = mean;
        else if (v == maxi) loc = std::max(loc, mean);
      }
  ib::Features f;
  ib::local_intensity_features(roi, f);
  BOOST_TEST(by_tag(f)["loc_peak_glob"] == glob, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(by_tag(f)["loc_peak_loc"] == loc, boost::test_tools::tolerance(1e-9));
  }
}

BOOST_AUTO_TEST_CASE(sphere_means_on_many_slices_match_brute_force) {
  // CT-like voxels (0.98 x 0.98 x 1 mm: spheres reach 6 voxels along each axis) on 40 slices, so
  // that the slices' discs are reused through their rings many times, with two blobs of ROI per
  // row (holes, gaps and runs of every length), some touching the grid's borders and some not.
  // Integer intensities: the sphere sums are exact, so the peaks must equal the direct sums'
  // exactly, on one thread and on several (blocks of slices).
  ib::RoiImage roi;
  roi.grid = {30, 22, 40, 0.98, 0.98, 1.0};
  const auto& g = roi.grid;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> val(-1000, 400);
  std::bernoulli_distribution hole(0.1);
  for (int z = 0; z < g.nz; ++z)
    for (int y = 0; y < g.ny; ++y)
      for (int x = 0; x < g.nx; ++x) {
        const double a = (x - 7.0) / 8.0, b = (y - 10.0) / 9.0, c = (z - 20.0) / 17.0;
        const double d = (x - 24.0) / 9.0, e = (y - 12.0) / 12.0, f = (z - 30.0) / 14.0;
        const bool in = (a * a + b * b + c * c <= 1 || d * d + e * e + f * f <= 1) && !hole(rng);
        roi.intensity.push_back(static_cast<float>(val(rng)));
        roi.mask.push_back(in ? 1 : 0);
      }
  roi.morph = roi.mask;
  const double r = 10 * std::cbrt(3 / (4 * std::numbers::pi));
  const auto brute = [&] {
    double glob = -1e300, maxi = -1e300, loc = -1e300;
    for (int z = 0; z < g.nz; ++z)
      for (int y = 0; y < g.ny; ++y)
        for (int x = 0; x < g.nx; ++x) {
          if (!roi.mask[g.index(x, y, z)]) continue;
          double s = 0;
          int n = 0;
          for (int c = std::max(0, z - 8); c < std::min(g.nz, z + 9); ++c)
            for (int b = std::max(0, y - 8); b < std::min(g.ny, y + 9); ++b)
              for (int a = std::max(0, x - 8); a < std::min(g.nx, x + 9); ++a) {
                const double d = std::hypot((a - x) * g.sx, (b - y) * g.sy, (c - z) * g.sz);
                if (d <= r) s += roi.intensity[g.index(a, b, c)], ++n;
              }
          const double mean = s / n, v = roi.intensity[g.index(x, y, z)];
          glob = std::max(glob, mean);
          if (v > maxi) maxi = v, loc = mean;
          else if (v == maxi) loc = std::max(loc, mean);
        }
    return std::pair{loc, glob};
  };
  const int threads = cv::getNumThreads();
  for (const float scale : {1.0f, 0.37f}) {  // integer (int32 sums) and fractional (double sums)
    for (auto& v : roi.intensity) v *= scale;
    const auto [loc, glob] = brute();
    for (const int t : {1, 3}) {
      cv::setNumThreads(t);
      ib::Features f;
      ib::local_intensity_features(roi, f);
      const auto m = by_tag(f);
      if (scale == 1.0f) {
        BOOST_TEST(m.at("loc_peak_glob") == glob);
        BOOST_TEST(m.at("loc_peak_loc") == loc);
      } else {
        BOOST_TEST(m.at("loc_peak_glob") == glob, boost::test_tools::tolerance(1e-12));
        BOOST_TEST(m.at("loc_peak_loc") == loc, boost::test_tools::tolerance(1e-12));
      }
    }
    cv::setNumThreads(threads);
  }
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_refused) {
  const testsupport::ibsi::DigitalPhantom p;
  ib::Features f;
  auto roi = p.roi;
  roi.mask.pop_back();
  BOOST_CHECK_THROW(ib::statistics_features(roi, f), std::invalid_argument);
  BOOST_CHECK_THROW(ib::local_intensity_features(roi, f), std::invalid_argument);
  BOOST_CHECK_THROW(ib::ivh_features(roi, {}, f), std::invalid_argument);
  roi = p.roi;
  std::fill(roi.mask.begin(), roi.mask.end(), 0);
  BOOST_CHECK_THROW(ib::statistics_features(roi, f), std::invalid_argument);
  BOOST_CHECK_THROW(ib::local_intensity_features(roi, f), std::invalid_argument);
  roi = p.roi;
  const auto first = static_cast<std::size_t>(std::find(roi.mask.begin(), roi.mask.end(), 1) - roi.mask.begin());
  roi.intensity[first] = std::numeric_limits<float>::quiet_NaN();
  BOOST_CHECK_THROW(ib::statistics_features(roi, f), std::invalid_argument);
  BOOST_CHECK_THROW(ib::ivh_features(roi, {}, f), std::invalid_argument);
  BOOST_CHECK_THROW(ib::local_intensity_features(roi, f), std::invalid_argument);
  roi = p.roi;  // a NaN outside the mask that a sphere reaches
  const auto outside = static_cast<std::size_t>(std::find(roi.mask.begin(), roi.mask.end(), 0) - roi.mask.begin());
  roi.intensity[outside] = std::numeric_limits<float>::quiet_NaN();
  BOOST_CHECK_THROW(ib::local_intensity_features(roi, f), std::invalid_argument);
  auto lv = p.levels;
  lv.level[0] = lv.ng + 1;
  BOOST_CHECK_THROW(ib::histogram_features(lv, f), std::invalid_argument);
  using M = ib::IvhOptions::Method;
  ib::IvhOptions o;
  o.step = 0;
  BOOST_CHECK_THROW(ib::ivh_features(p.roi, o, f), std::invalid_argument);
  o = {};
  o.method = M::fixed_bin_size;
  o.bin_width = -1;
  BOOST_CHECK_THROW(ib::ivh_features(p.roi, o, f), std::invalid_argument);
  o = {};
  o.method = M::fixed_bin_number;
  o.bins = 1;
  BOOST_CHECK_THROW(ib::ivh_features(p.roi, o, f), std::invalid_argument);
  o.bins = 10;
  o.lower = 0;
  BOOST_CHECK_THROW(ib::ivh_features(p.roi, o, f), std::invalid_argument);  // FBN takes the ROI's range
  o = {};
  o.lower = 5;
  o.upper = 5;
  BOOST_CHECK_THROW(ib::ivh_features(p.roi, o, f), std::invalid_argument);
  o = {};
  o.step = 1e-9;  // 5e9 levels
  BOOST_CHECK_THROW(ib::ivh_features(p.roi, o, f), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(large_roi_sanity_and_timing) {
  // 120 x 256 x 256 voxels of 0.98 x 0.98 x 1 mm, integer HU -1000..400 everywhere, an ellipsoid
  // ROI of about 2.6 million voxels with grey levels 1..40.
  ib::RoiImage roi;
  roi.grid = {256, 256, 120, 0.98, 0.98, 1.0};
  const auto& g = roi.grid;
  ib::Levels lv;
  lv.grid = g;
  lv.ng = 40;
  roi.intensity.resize(g.size());
  roi.mask.resize(g.size());
  lv.level.resize(g.size());
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> hu(-1000, 400), level(1, 40);
  std::int64_t n = 0;
  for (int z = 0; z < g.nz; ++z)
    for (int y = 0; y < g.ny; ++y)
      for (int x = 0; x < g.nx; ++x) {
        const auto i = g.index(x, y, z);
        const double a = (x - 127.5) / 120.0, b = (y - 127.5) / 110.0, c = (z - 59.5) / 56.0;
        const bool inside = a * a + b * b + c * c <= 1;
        roi.intensity[i] = static_cast<float>(hu(rng));
        roi.mask[i] = inside;
        lv.level[i] = inside ? level(rng) : 0;
        n += inside;
      }
  roi.morph = roi.mask;
  BOOST_TEST_MESSAGE("large ROI: " << n << " voxels");
  ib::Features loc, stat, ih, ivh;
  ib::IvhOptions o;
  o.lower = -1000;
  o.upper = 400;
  const double t_loc = best_ms(3, [&] { loc.clear(); ib::local_intensity_features(roi, loc); });
  const double t_stat = best_ms(3, [&] { stat.clear(); ib::statistics_features(roi, stat); });
  const double t_ih = best_ms(3, [&] { ih.clear(); ib::histogram_features(lv, ih); });
  const double t_ivh = best_ms(3, [&] { ivh.clear(); ib::ivh_features(roi, o, ivh); });
  BOOST_TEST_MESSAGE("best of 3, ms: local intensity " << t_loc << ", statistics " << t_stat << ", histogram "
                                                       << t_ih << ", IVH " << t_ivh);
  for (const auto* f : {&loc, &stat, &ih, &ivh})
    for (const auto& x : *f) BOOST_TEST(std::isfinite(x.value), x.tag << " = " << x.value);
  auto m = by_tag(loc);
  BOOST_TEST(m["loc_peak_loc"] <= m["loc_peak_glob"]);
  BOOST_TEST((m["loc_peak_glob"] > -1000 && m["loc_peak_glob"] < 400));
  m = by_tag(stat);
  BOOST_TEST(m["stat_min"] == -1000.0);
  BOOST_TEST(m["stat_max"] == 400.0);
  BOOST_TEST(std::abs(m["stat_mean"] + 300) < 5);  // uniform on -1000..400
  BOOST_TEST(std::abs(m["stat_rms"] * m["stat_rms"] - (m["stat_var"] + m["stat_mean"] * m["stat_mean"])) < 1e-6 * m["stat_energy"] / n);
  m = by_tag(ih);
  BOOST_TEST(std::abs(m["ih_mean"] - 20.5) < 0.1);
  BOOST_TEST(std::abs(m["ih_entropy"] - std::log2(40.0)) < 1e-3);
  m = by_tag(ivh);
  BOOST_TEST((m["ivh_v10"] > 0.85 && m["ivh_v10"] <= 1));  // uniform: about 0.9
  BOOST_TEST((m["ivh_v90"] > 0.05 && m["ivh_v90"] < 0.15));
}
