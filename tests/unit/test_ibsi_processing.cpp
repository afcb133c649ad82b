#define BOOST_TEST_MODULE ibsi_processing
#include <boost/test/unit_test.hpp>

// The IBSI 1 image processing chain (analysis/kernels/ibsi/processing.h): hand-worked cases for
// grid alignment, interpolation, re-segmentation and discretisation; the diagnostic features of
// the CT radiomics phantom, configurations A-E, against the IBSI reference values; and the time to
// prepare a lung-sized ROI of a 300x512x512 CT.
//
// The CT phantom is licensed CC BY-NC and is not in the repository: it is read from
// $PACSNODE_IBSI_CT_PHANTOM, else from <source>/../shared/data/ibsi-data_sets/ibsi_1_ct_radiomics_phantom;
// without it those cases are skipped with a message.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

#include "analysis/kernels/ibsi/processing.h"
#include "analysis/kernels/nifti.h"
#include "support/ibsi_reference.h"
#include "support/paths.h"

namespace ib = analysis::kernels::ibsi;
namespace fs = std::filesystem;
using Method = ib::Interpolation::Method;

namespace {

// A 1-row, 1-slice image with the given values along x, and a full mask.
std::vector<cv::Mat> row_image(const std::vector<float>& v) {
  cv::Mat m(1, static_cast<int>(v.size()), CV_32F);
  for (std::size_t i = 0; i < v.size(); ++i) m.at<float>(0, static_cast<int>(i)) = v[i];
  return {m};
}
analysis::Mask full_mask(int rows, int cols, int slices = 1) {
  analysis::Mask m;
  for (int z = 0; z < slices; ++z) m.push_back(cv::Mat(rows, cols, CV_8U, cv::Scalar(1)));
  return m;
}

ib::ProcessingSettings in_plane(double sx, Method m) {
  ib::ProcessingSettings s;
  s.interpolation.spacing = std::array<double, 3>{sx, 1.0, 1.0};
  s.interpolation.in_plane_only = true;
  s.interpolation.image_method = m;
  s.interpolation.mask_method = Method::linear;
  return s;
}

// An RoiImage of one row with the given intensities, all in the mask.
ib::RoiImage roi_of(const std::vector<float>& v) {
  ib::RoiImage r;
  r.grid = ib::Grid{static_cast<int>(v.size()), 1, 1, 1, 1, 1};
  r.intensity = v;
  r.morph.assign(v.size(), 1);
  r.mask = r.morph;
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(grid_centres_are_aligned) {
  // 5 voxels of 1 mm -> 2 mm: n_b = ceil(5 * 1 / 2) = 3; offset = (1 * 4 - 2 * 2) / 2 = 0 mm, so the new
  // centres sit on source voxels 0, 2, 4. A ramp 0, 10, .., 40 gives 0, 20, 40.
  const auto img = row_image({0, 10, 20, 30, 40});
  auto r = ib::prepare_roi(img, full_mask(1, 5), {1, 1, 1}, in_plane(2, Method::linear));
  BOOST_TEST(r.grid.nx == 3);
  BOOST_TEST(r.grid.sx == 2.0);
  BOOST_TEST(r.grid.sz == 1.0);  // in-plane only: the slice spacing is kept
  BOOST_TEST(r.intensity == (std::vector<float>{0, 20, 40}), boost::test_tools::per_element());

  // 5 voxels of 1 mm -> 3 mm: n_b = ceil(5 / 3) = 2; offset = (4 - 3) / 2 = 0.5 mm: the centres sit at
  // source positions 0.5 and 3.5, i.e. 5 and 35 on the ramp.
  r = ib::prepare_roi(img, full_mask(1, 5), {1, 1, 1}, in_plane(3, Method::linear));
  BOOST_TEST(r.grid.nx == 2);
  BOOST_TEST(r.intensity == (std::vector<float>{5, 35}), boost::test_tools::per_element());

  // 2 voxels of 2 mm (values 0, 10) -> 1 mm: n_b = 4; offset = (2 * 1 - 1 * 3) / 2 = -0.5 mm: source
  // positions (i - 0.5) / 2 = -0.25, 0.25, 0.75, 1.25; outside 0..1 the edge value is kept:
  // 0, 2.5, 7.5, 10. Nearest neighbour: 0, 0, 10, 10.
  const auto two = row_image({0, 10});
  r = ib::prepare_roi(two, full_mask(1, 2), {2, 1, 1}, in_plane(1, Method::linear));
  BOOST_TEST(r.intensity == (std::vector<float>{0, 2.5f, 7.5f, 10}), boost::test_tools::per_element());
  r = ib::prepare_roi(two, full_mask(1, 2), {2, 1, 1}, in_plane(1, Method::nearest));
  BOOST_TEST(r.intensity == (std::vector<float>{0, 0, 10, 10}), boost::test_tools::per_element());

  // With rounding (CT): 2.5 -> 3, 7.5 -> 8 (half away from zero).
  auto s = in_plane(1, Method::linear);
  s.interpolation.round_intensities = true;
  r = ib::prepare_roi(two, full_mask(1, 2), {2, 1, 1}, s);
  BOOST_TEST(r.intensity == (std::vector<float>{0, 3, 8, 10}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(mask_is_interpolated_as_partial_volume) {
  // Mask 0 0 1 1 1 0 0 (1 mm) -> 2 mm: n_b = ceil(7 / 2) = 4, offset = (6 - 6) / 2 = 0: positions
  // 0, 2, 4, 6 -> partial volumes 0, 1, 1, 0 -> morph mask 0 1 1 0. To 1.5 mm: n_b = 5,
  // offset = (6 - 6) / 2 = 0, positions 0, 1.5, 3, 4.5, 6 -> 0, 0.5, 1, 0.5, 0: with the threshold
  // 0.5 (>=) the mask is 0 1 1 1 0; with 0.6 it is 0 0 1 0 0.
  const auto img = row_image({1, 2, 3, 4, 5, 6, 7});
  analysis::Mask m{cv::Mat(1, 7, CV_8U, cv::Scalar(0))};
  for (int x = 2; x <= 4; ++x) m[0].at<uchar>(0, x) = 1;
  auto s = in_plane(2, Method::linear);
  s.interpolation.margin_mm = 100;  // keep the whole row in the RoiImage
  auto r = ib::prepare_roi(img, m, {1, 1, 1}, s);
  BOOST_TEST(r.morph == (std::vector<std::uint8_t>{0, 1, 1, 0}), boost::test_tools::per_element());
  s = in_plane(1.5, Method::linear);
  s.interpolation.margin_mm = 100;
  r = ib::prepare_roi(img, m, {1, 1, 1}, s);
  BOOST_TEST(r.morph == (std::vector<std::uint8_t>{0, 1, 1, 1, 0}), boost::test_tools::per_element());
  s.interpolation.mask_threshold = 0.6;
  r = ib::prepare_roi(img, m, {1, 1, 1}, s);
  BOOST_TEST(r.morph == (std::vector<std::uint8_t>{0, 0, 1, 0, 0}), boost::test_tools::per_element());

  // The RoiImage covers the new voxels the mask can reach plus the margin: at 2 mm with no margin
  // only new voxels 1..2 (source positions 2 and 4: intensities 3 and 5; positions 0 and 6 are
  // outside the mask's bounding box 2..4).
  s = in_plane(2, Method::linear);
  s.interpolation.margin_mm = 0;
  r = ib::prepare_roi(img, m, {1, 1, 1}, s);
  BOOST_TEST(r.grid.nx == 2);
  BOOST_TEST(r.intensity == (std::vector<float>{3, 5}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(original_grid_copies_the_samples) {
  // Without interpolation prepare_roi copies the voxels (a fast path); that must give bit for bit
  // what the interpolation machinery gives on the same grid: linear interpolation to the original
  // spacing (spacings whose multiples are exact, so the taps sit on the samples with weights 1 and
  // 0). Random int16 and float intensities (with -0, which both make +0), a random blob as mask.
  std::mt19937 rng(7);
  const int nx = 37, ny = 23, nz = 11;
  const analysis::Spacing sp{0.75, 0.5, 2.0};
  for (const int type : {CV_16S, CV_32F}) {
    std::vector<cv::Mat> img;
    analysis::Mask mask;
    std::uniform_real_distribution<float> u(-1000, 1000);
    for (int z = 0; z < nz; ++z) {
      cv::Mat f(ny, nx, CV_32F), m(ny, nx, CV_8U, cv::Scalar(0));
      for (int y = 0; y < ny; ++y)
        for (int x = 0; x < nx; ++x) {
          f.at<float>(y, x) = (x + y + z) % 13 == 0 ? -0.f : u(rng);
          const double r2 = (x - 18) * (x - 18) / 100.0 + (y - 11) * (y - 11) / 36.0 + (z - 5) * (z - 5) / 9.0;
          m.at<uchar>(y, x) = r2 < 1 && rng() % 8 != 0 ? 1 : 0;
        }
      cv::Mat t;
      f.convertTo(t, type);
      img.push_back(t);
      mask.push_back(m);
    }
    for (const double margin : {0.0, 3.0}) {
      ib::ProcessingSettings plain;
      plain.interpolation.margin_mm = margin;
      plain.resegmentation.min = -500;
      ib::ProcessingSettings same = plain;
      same.interpolation.spacing = std::array<double, 3>{sp.col, sp.row, sp.slice};
      same.interpolation.image_method = Method::linear;
      same.interpolation.mask_method = Method::linear;
      const auto a = ib::prepare_roi(img, mask, sp, plain);
      const auto b = ib::prepare_roi(img, mask, sp, same);
      BOOST_TEST_REQUIRE(a.grid.nx == b.grid.nx);
      BOOST_TEST_REQUIRE(a.grid.ny == b.grid.ny);
      BOOST_TEST_REQUIRE(a.grid.nz == b.grid.nz);
      BOOST_TEST(a.morph == b.morph);
      BOOST_TEST(a.mask == b.mask);
      BOOST_TEST_REQUIRE(a.intensity.size() == b.intensity.size());
      BOOST_TEST(std::memcmp(a.intensity.data(), b.intensity.data(), a.intensity.size() * sizeof(float)) == 0);
      BOOST_TEST(std::none_of(a.intensity.begin(), a.intensity.end(), [](float v) { return v == 0 && std::signbit(v); }));
    }
  }
}

BOOST_AUTO_TEST_CASE(cubic_spline_interpolates_the_samples) {
  // An interpolating cubic B-spline passes through the samples: resampling to the same spacing
  // (positions 0..n-1 exactly) returns the input, also next to the edges (mirror boundaries).
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1000, 1000);
  std::vector<float> v(40);
  for (auto& x : v) x = u(rng);
  ib::ProcessingSettings s = in_plane(1, Method::cubic);
  s.interpolation.spacing = std::array<double, 3>{1.0, 1.0, 1.0};
  const auto r = ib::prepare_roi(row_image(v), full_mask(1, 40), {1, 1, 1}, s);
  BOOST_REQUIRE(r.intensity.size() == v.size());
  for (std::size_t i = 0; i < v.size(); ++i) BOOST_TEST(std::abs(r.intensity[i] - v[i]) < 0.01, i << ": " << r.intensity[i] << " vs " << v[i]);
  // A constant stays constant; in 3D too.
  std::vector<cv::Mat> c;
  for (int z = 0; z < 6; ++z) c.push_back(cv::Mat(7, 9, CV_16S, cv::Scalar(-321)));
  s.interpolation.spacing = std::array<double, 3>{0.7, 1.3, 2.2};
  s.interpolation.in_plane_only = false;
  const auto k = ib::prepare_roi(c, full_mask(7, 9, 6), {1, 1, 3}, s);
  for (float f : k.intensity) BOOST_TEST(std::abs(f + 321) < 0.01);
}

BOOST_AUTO_TEST_CASE(resegmentation_range_and_outliers) {
  // No interpolation: the mask's ten voxels -600, -100, 0, 10, 20, 30, 40, 50, 500, 1000. The range
  // [-500, 400] removes -600, 500 and 1000: seven voxels left in the intensity mask, all ten in the
  // morphological mask.
  const auto img = row_image({-600, -100, 0, 10, 20, 30, 40, 50, 500, 1000});
  ib::ProcessingSettings s;
  s.resegmentation.min = -500.0;
  s.resegmentation.max = 400.0;
  ib::Features diag;
  auto r = ib::prepare_roi(img, full_mask(1, 10), {1, 1, 1}, s, &diag);
  BOOST_TEST(std::count(r.morph.begin(), r.morph.end(), 1) == 10);
  BOOST_TEST(r.mask == (std::vector<std::uint8_t>{0, 1, 1, 1, 1, 1, 1, 1, 0, 0}), boost::test_tools::per_element());
  auto value = [&](const std::string& tag) {
    for (const auto& f : diag)
      if (f.tag == tag) return f.value;
    BOOST_FAIL("no " << tag);
    return 0.0;
  };
  BOOST_TEST(value("int_mask_vox_count_reseg_roi") == 7);
  BOOST_TEST(value("morph_mask_vox_count_reseg_roi") == 10);
  BOOST_TEST(value("int_mask_min_int_reseg_roi") == -100);
  BOOST_TEST(value("int_mask_max_int_reseg_roi") == 50);
  BOOST_TEST(value("int_mask_bb_dim_x_reseg_roi") == 7);
  BOOST_TEST(value("morph_mask_bb_dim_x_reseg_roi") == 10);
  BOOST_TEST(value("int_mask_mean_int_init_roi") == 95);  // 950 / 10
  BOOST_TEST(diag.size() == ib::diagnostics_definitions().size());

  // Outliers: nineteen voxels of 0 and one of 100: mean 5, population sd
  // sqrt((19 * 25 + 95^2) / 20) = sqrt(475) = 21.8; mean + 3 sd = 70.4 < 100: the 100 goes.
  std::vector<float> v(20, 0.f);
  v[13] = 100;
  ib::ProcessingSettings o;
  o.resegmentation.outlier_3sigma = true;
  r = ib::prepare_roi(row_image(v), full_mask(1, 20), {1, 1, 1}, o);
  BOOST_TEST(std::count(r.mask.begin(), r.mask.end(), 1) == 19);
  BOOST_TEST(r.mask[13] == 0);

  // Everything removed: an error, not an empty ROI.
  ib::ProcessingSettings all;
  all.resegmentation.min = 2000.0;
  BOOST_CHECK_THROW(ib::prepare_roi(img, full_mask(1, 10), {1, 1, 1}, all), std::invalid_argument);
  BOOST_CHECK_THROW(ib::prepare_roi(img, analysis::Mask{cv::Mat(1, 10, CV_8U, cv::Scalar(0))}, {1, 1, 1}, s), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fixed_bin_size_and_number) {
  // FBS, width 25 from -500: floor((x + 500) / 25) + 1:
  //   -500 -> 1, -476 -> 1 (24/25), -475 -> 2, -1 -> 20 (499/25 = 19.96), 0 -> 21, 399 -> 36 (899/25 = 35.96).
  const auto roi = roi_of({-500, -476, -475, -1, 0, 399});
  ib::Discretisation fbs{ib::Discretisation::Method::fixed_bin_size, 25, -500.0, 0};
  auto l = ib::discretise(roi, fbs);
  BOOST_TEST(l.level == (std::vector<int>{1, 1, 2, 20, 21, 36}), boost::test_tools::per_element());
  BOOST_TEST(l.ng == 36);
  // Without a lower bound, x_min is the ROI's minimum (-500 here too): the same levels.
  fbs.lower_bound.reset();
  BOOST_TEST(ib::discretise(roi, fbs).level == l.level, boost::test_tools::per_element());

  // FBN, 2 bins over 0..4: floor(2 (x - 0) / 4) + 1 -> 0: 1, 1: 1 (0.5), 2: 2, 3: 2 (1.5), 4 (the
  // maximum): 3 -> clipped to 2. Ng = 2.
  ib::Discretisation fbn{ib::Discretisation::Method::fixed_bin_number, 0, std::nullopt, 2};
  l = ib::discretise(roi_of({0, 1, 2, 3, 4}), fbn);
  BOOST_TEST(l.level == (std::vector<int>{1, 1, 2, 2, 2}), boost::test_tools::per_element());
  BOOST_TEST(l.ng == 2);
  // A single intensity: every voxel in bin 1.
  l = ib::discretise(roi_of({7, 7, 7}), fbn);
  BOOST_TEST(l.level == (std::vector<int>{1, 1, 1}), boost::test_tools::per_element());

  // Voxels outside the intensity mask get level 0.
  auto masked = roi_of({0, 1, 2, 3, 4});
  masked.mask[4] = 0;  // the maximum is now 3: 0 -> 1, 1 -> 1 (2/3), 2 -> 2 (4/3), 3 -> 2
  l = ib::discretise(masked, fbn);
  BOOST_TEST(l.level == (std::vector<int>{1, 1, 2, 2, 0}), boost::test_tools::per_element());

  // None: the digital phantom's intensities are its grey levels (1..6).
  const testsupport::ibsi::DigitalPhantom p;
  l = ib::discretise(p.roi, {});
  BOOST_TEST(l.level == p.levels.level, boost::test_tools::per_element());
  BOOST_TEST(l.ng == 6);
  BOOST_CHECK_THROW(ib::discretise(roi_of({1.5f}), {}), std::invalid_argument);
  BOOST_CHECK_THROW(ib::discretise(roi_of({0}), {}), std::invalid_argument);
  BOOST_CHECK_THROW(ib::discretise(roi_of({-600}), ib::Discretisation{ib::Discretisation::Method::fixed_bin_size, 25, -500.0, 0}),
                    std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fixed_bin_size_levels_are_the_formula_per_voxel) {
  // The fixed-bin-size levels are computed for every voxel and kept inside the mask (vectorised):
  // random intensities and bin widths against floor((X - x0) / w) + 1 voxel by voxel, with any
  // value outside the mask (NaN, infinities, huge) giving 0 and disturbing nothing; rows of every
  // length up to a few vectors.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1024, 3071);
  const float odd[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity(), 3e38f, -3e38f, -1e9f};
  for (int n = 1; n <= 70; n += 3)
    for (const double w : {25.0, 2.5, 1.3, 500.0}) {  // at most 4096 levels over the range
      ib::RoiImage r = roi_of(std::vector<float>(static_cast<std::size_t>(n)));
      for (int i = 0; i < n; ++i) {
        const bool in = i == 0 || rng() % 3 != 0;
        r.mask[static_cast<std::size_t>(i)] = in ? 1 : 0;
        r.morph[static_cast<std::size_t>(i)] = 1;
        r.intensity[static_cast<std::size_t>(i)] = in ? std::round(u(rng) * 4) / 4 : odd[rng() % std::size(odd)];
      }
      for (const std::optional<double> x0 : {std::optional<double>{}, std::optional<double>{-2000.0}}) {
        const auto l = ib::discretise(r, ib::Discretisation{ib::Discretisation::Method::fixed_bin_size, w, x0, 0});
        double lo = std::numeric_limits<double>::infinity();
        for (int i = 0; i < n; ++i)
          if (r.mask[static_cast<std::size_t>(i)]) lo = std::min(lo, static_cast<double>(r.intensity[static_cast<std::size_t>(i)]));
        const double from = x0.value_or(lo);
        int top = 0;
        for (int i = 0; i < n; ++i) {
          const auto k = static_cast<std::size_t>(i);
          const int want = r.mask[k] ? static_cast<int>(std::floor((r.intensity[k] - from) / w)) + 1 : 0;
          BOOST_TEST_REQUIRE(l.level[k] == want, "n " << n << " w " << w << " voxel " << i);
          top = std::max(top, want);
        }
        BOOST_TEST(l.ng == top);
      }
    }
}

BOOST_AUTO_TEST_CASE(phantom_configurations_are_as_in_the_manual) {
  const auto a = ib::ct_phantom_configuration('A');
  BOOST_TEST(!a.interpolation.spacing.has_value());
  BOOST_TEST(*a.resegmentation.min == -500.0);
  BOOST_TEST(*a.discretisation.lower_bound == -500.0);
  const auto b = ib::ct_phantom_configuration('b');
  BOOST_TEST(b.interpolation.in_plane_only);
  BOOST_TEST(b.discretisation.bins == 32);
  const auto e = ib::ct_phantom_configuration('E');
  BOOST_TEST((e.interpolation.image_method == Method::cubic));
  BOOST_TEST(e.resegmentation.outlier_3sigma);
  BOOST_TEST(*e.resegmentation.max == 400.0);
  BOOST_TEST(ib::ct_phantom_texture_scope('B').two_d);
  BOOST_TEST(!ib::ct_phantom_texture_scope('C').two_d);
  BOOST_TEST(ib::ct_phantom_ivh_discretisation('E').bins == 1000);
  BOOST_TEST(ib::ct_phantom_ivh_discretisation('C').bin_width == 2.5);
  BOOST_CHECK_THROW(ib::ct_phantom_configuration('F'), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// The CT radiomics phantom.

namespace {

fs::path ct_phantom_dir() {
  if (const char* e = std::getenv("PACSNODE_IBSI_CT_PHANTOM"); e && *e) return e;
  return testsupport::source_dir() / ".." / "shared" / "data" / "ibsi-data_sets" / "ibsi_1_ct_radiomics_phantom";
}

struct CtPhantomPresent {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    const auto d = ct_phantom_dir();
    if (fs::exists(d / "nifti/image/phantom.nii.gz") && fs::exists(d / "nifti/mask/mask.nii.gz")) return true;
    boost::test_tools::assertion_result r(false);
    r.message() << "IBSI CT radiomics phantom not found in " << d.string()
                << " (CC BY-NC, not in the repository): set PACSNODE_IBSI_CT_PHANTOM to its folder; skipped";
    static bool told = false;  // also at the default log level, once
    if (!told) std::cout << "test_ibsi_processing: " << r.message().str() << " (the CT phantom cases A-E)\n";
    told = true;
    return r;
  }
};

struct CtPhantom {
  analysis::kernels::NiftiImage image;
  analysis::Mask mask;
  analysis::Spacing spacing;
  CtPhantom() {
    const auto d = ct_phantom_dir();
    image = analysis::kernels::read_nifti(d / "nifti/image/phantom.nii.gz");
    mask = analysis::kernels::read_nifti_mask(d / "nifti/mask/mask.nii.gz", &spacing);
  }
};
const CtPhantom& ct_phantom() {
  static const CtPhantom p;
  return p;
}

const std::vector<std::string> diagnostic_prefixes = {"img_dim_", "vox_dim_", "mean_int_", "min_int_", "max_int_",
                                                      "int_mask_", "morph_mask_"};

void check_configuration(char config) {
  const auto& p = ct_phantom();
  const auto settings = ib::ct_phantom_configuration(config);
  ib::Features diag;
  const auto t0 = std::chrono::steady_clock::now();
  const auto roi = ib::prepare_roi(p.image.slices, p.mask, p.spacing, settings, &diag);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const auto ref = testsupport::ibsi::read_reference(std::string("ibsi_1_chest_config_") +
                                                     static_cast<char>(std::tolower(config)) + ".csv");
  testsupport::ibsi::check_features(diag, ref, diagnostic_prefixes);
  // One line per configuration: every diagnostic reference tag, and how many are within tolerance.
  int total = 0, passed = 0;
  for (const auto& entry : ref) {  // not a structured binding: captured below (clang 14)
    const std::string& tag = entry.first;
    const auto& r = entry.second;
    if (std::none_of(diagnostic_prefixes.begin(), diagnostic_prefixes.end(), [&](const auto& x) { return tag.rfind(x, 0) == 0; }))
      continue;
    ++total;
    for (const auto& f : diag)
      if (f.tag == tag) passed += std::abs(f.value - r.value) <= r.tolerance + r.half_ulp + 1e-12;
  }
  BOOST_TEST_MESSAGE("configuration " << config << ": diagnostics " << passed << "/" << total << " within tolerance (prepare_roi "
                                      << ms << " ms with the whole-image diagnostics)");
  BOOST_TEST(total == 60);

  // The discretisation on the phantom: the mean, minimum and maximum grey level against the
  // reference's intensity histogram (ih_*), which is the histogram of these levels.
  const auto levels = ib::discretise(roi, settings.discretisation);
  double sum = 0;
  int lo = levels.ng + 1, hi = 0;
  std::size_t n = 0;
  for (int v : levels.level)
    if (v > 0) {
      sum += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      ++n;
    }
  auto near = [&](const char* tag, double x) {
    const auto it = ref.find(tag);
    BOOST_REQUIRE(it != ref.end());
    BOOST_TEST(std::abs(x - it->second.value) <= it->second.tolerance + it->second.half_ulp + 1e-12,
               config << " " << tag << ": " << x << " vs " << it->second.value);
  };
  near("ih_mean", sum / static_cast<double>(n));
  near("ih_min", lo);
  near("ih_max", hi);
}

}  // namespace

BOOST_AUTO_TEST_CASE(ct_phantom_config_a, *boost::unit_test::precondition(CtPhantomPresent{})) { check_configuration('A'); }
BOOST_AUTO_TEST_CASE(ct_phantom_config_b, *boost::unit_test::precondition(CtPhantomPresent{})) { check_configuration('B'); }
BOOST_AUTO_TEST_CASE(ct_phantom_config_c, *boost::unit_test::precondition(CtPhantomPresent{})) { check_configuration('C'); }
BOOST_AUTO_TEST_CASE(ct_phantom_config_d, *boost::unit_test::precondition(CtPhantomPresent{})) { check_configuration('D'); }
BOOST_AUTO_TEST_CASE(ct_phantom_config_e, *boost::unit_test::precondition(CtPhantomPresent{})) { check_configuration('E'); }

// ---------------------------------------------------------------------------------------------
// A chest CT's size: 300 slices of 512 x 512 (0.7 x 0.7 x 1 mm), two lung-sized ellipsoids
// (~12 million voxels). Asserts sanity only; the times are printed (best of 3).
BOOST_AUTO_TEST_CASE(large_chest_ct_is_prepared_quickly) {
  const int nz = 300, ny = 512, nx = 512;
  std::vector<cv::Mat> img;
  analysis::Mask mask;
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(-800, 60);
  cv::Mat noise_plane(ny, nx, CV_16S);
  for (int y = 0; y < ny; ++y)
    for (int x = 0; x < nx; ++x) noise_plane.at<short>(y, x) = static_cast<short>(noise(rng));
  std::size_t in_mask = 0;
  for (int z = 0; z < nz; ++z) {
    cv::Mat m(ny, nx, CV_8U, cv::Scalar(0));
    for (int side : {-1, 1}) {
      const double cx = 256 + side * 110, cy = 250, cz = 150, ax = 90, ay = 140, az = 130;
      const double dz = (z - cz) / az;
      if (dz * dz >= 1) continue;
      const double r = std::sqrt(1 - dz * dz);
      cv::ellipse(m, cv::Point(static_cast<int>(cx), static_cast<int>(cy)),
                  cv::Size(static_cast<int>(ax * r), static_cast<int>(ay * r)), 0, 0, 360, cv::Scalar(1), cv::FILLED);
    }
    in_mask += static_cast<std::size_t>(cv::countNonZero(m));
    cv::Mat slice;
    cv::add(noise_plane, cv::Scalar(z % 7), slice);
    slice.setTo(cv::Scalar(40), m == 0);  // soft tissue outside the lungs
    img.push_back(slice);
    mask.push_back(m);
  }
  BOOST_TEST_MESSAGE("large CT: " << in_mask << " mask voxels");
  const analysis::Spacing sp{0.7, 0.7, 1.0};
  auto time_best_of_3 = [&](const ib::ProcessingSettings& s, const char* what) {
    double best = 1e9;
    ib::RoiImage roi;
    for (int i = 0; i < 3; ++i) {
      ib::Features diag;
      const auto t0 = std::chrono::steady_clock::now();
      roi = ib::prepare_roi(img, mask, sp, s, &diag);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto levels = ib::discretise(roi, s.discretisation);
    const double dms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto n = std::count(roi.mask.begin(), roi.mask.end(), 1);
    BOOST_TEST(n > 0);
    BOOST_TEST(levels.ng >= 1);
    BOOST_TEST(std::all_of(roi.intensity.begin(), roi.intensity.end(), [](float f) { return std::isfinite(f); }));
    BOOST_TEST_MESSAGE("large CT, " << what << ": prepare_roi best of 3 " << best << " ms (grid " << roi.grid.nx << "x"
                                    << roi.grid.ny << "x" << roi.grid.nz << ", " << n << " ROI voxels), discretise " << dms << " ms");
  };
  ib::ProcessingSettings s;
  s.image_diagnostics = false;
  s.resegmentation.min = -1000.0;
  s.resegmentation.max = 400.0;
  s.discretisation = {ib::Discretisation::Method::fixed_bin_size, 25, -1000.0, 0};
  time_best_of_3(s, "no interpolation");
  s.interpolation.spacing = std::array<double, 3>{1.0, 1.0, 1.0};
  s.interpolation.round_intensities = true;
  time_best_of_3(s, "trilinear to 1 mm");
  s.interpolation.spacing = std::array<double, 3>{2.0, 2.0, 2.0};
  time_best_of_3(s, "trilinear to 2 mm");
  s.interpolation.image_method = Method::cubic;
  time_best_of_3(s, "tricubic to 2 mm");
}

// A grid finer than any image (a mistyped or hostile spacing) is refused before anything is
// allocated, instead of overflowing the voxel counts or exhausting memory.
BOOST_AUTO_TEST_CASE(absurd_interpolation_grids_are_refused) {
  const std::vector<cv::Mat> img{cv::Mat(8, 8, CV_16S, cv::Scalar(5))};
  ib::ProcessingSettings s;
  s.interpolation.spacing = std::array<double, 3>{1e-9, 1e-9, 1e-9};
  BOOST_CHECK_THROW(ib::prepare_roi(img, full_mask(8, 8), {1, 1, 1}, s), std::invalid_argument);
  s.interpolation.spacing = std::array<double, 3>{0.01, 0.01, 0.01};  // 6400 per axis: allowed...
  const std::vector<cv::Mat> stack(64, cv::Mat(64, 64, CV_16S, cv::Scalar(5)));
  BOOST_CHECK_THROW(ib::prepare_roi(stack, full_mask(64, 64, 64), {1, 1, 1}, s),  // ... 6400^3 voxels in all
                    std::invalid_argument);
}

// A bin width far below the intensities' spread would make Ng x Ng texture matrices of gigabytes.
BOOST_AUTO_TEST_CASE(too_many_grey_levels_are_refused) {
  ib::RoiImage r = roi_of({-1000, 0, 1000});
  ib::Discretisation d;
  d.method = ib::Discretisation::Method::fixed_bin_size;
  d.bin_width = 0.1;  // 20001 levels
  BOOST_CHECK_THROW(ib::discretise(r, d), std::invalid_argument);
  d.bin_width = 1;  // 2001 levels: fine
  BOOST_TEST(ib::discretise(r, d).ng == 2001);
}
