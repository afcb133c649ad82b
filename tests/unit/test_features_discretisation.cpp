#define BOOST_TEST_MODULE features_discretisation
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>

#include "analysis/kernels/features.h"

namespace k = analysis::kernels;
using Method = k::Discretisation::Method;

namespace {

std::vector<cv::Mat> row_image(std::vector<float> v) {
  cv::Mat s(1, static_cast<int>(v.size()), CV_32F);
  for (std::size_t i = 0; i < v.size(); ++i) s.at<float>(0, static_cast<int>(i)) = v[i];
  return {s};
}

analysis::Mask full_roi(const std::vector<cv::Mat>& img) {
  analysis::Mask m;
  for (const auto& s : img) m.push_back(cv::Mat::ones(s.size(), CV_8U));
  return m;
}

}  // namespace

BOOST_AUTO_TEST_CASE(fixed_bin_size_from_lower_bound) {
  const auto img = row_image({-1000, -976, -975, -951, -950});
  k::Discretisation d{Method::fixed_bin_size, 25.0, -1000.0, 0};
  const auto levels = k::discretise_roi(img, full_roi(img), d);
  BOOST_TEST(levels == (std::vector<int>{1, 1, 2, 2, 3}), boost::test_tools::per_element());
  d.lower_bound = -975.0;  // above the ROI minimum: re-segmentation is required first
  BOOST_CHECK_THROW(k::discretise_roi(img, full_roi(img), d), std::invalid_argument);
  d.lower_bound.reset();  // default: ROI minimum
  BOOST_TEST(k::discretise_roi(img, full_roi(img), d).back() == 3);
  d.bin_width = 0;
  BOOST_CHECK_THROW(k::discretise_roi(img, full_roi(img), d), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fixed_bin_number_maps_maximum_to_last_bin) {
  const auto img = row_image({0, 2.4f, 2.5f, 5, 9.99f, 10});
  const k::Discretisation d{Method::fixed_bin_number, 0, std::nullopt, 4};
  const auto levels = k::discretise_roi(img, full_roi(img), d);
  BOOST_TEST(levels == (std::vector<int>{1, 1, 2, 3, 4, 4}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(none_requires_grey_levels) {
  const auto img = row_image({1, 2.5f});
  const k::Discretisation d{Method::none, 0, std::nullopt, 0};
  BOOST_CHECK_THROW(k::discretise_roi(img, full_roi(img), d), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(glcm_of_a_single_pair) {
  const auto img = row_image({1, 2});
  const auto g = k::glcm_features_3d_merged(img, full_roi(img), {Method::none, 0, std::nullopt, 0});
  // One pair in one direction, counted symmetrically: p(1,2) = p(2,1) = 1/2.
  BOOST_TEST(g.grey_levels == 2);
  BOOST_TEST(g.joint_maximum == 0.5);
  BOOST_TEST(g.contrast == 1.0);
  BOOST_TEST(g.dissimilarity == 1.0);
  BOOST_TEST(g.joint_entropy == 1.0);
  BOOST_TEST(g.angular_second_moment == 0.5);
  BOOST_TEST(g.inverse_difference == 0.5);
  BOOST_TEST(g.inverse_difference_moment == 0.5);
  BOOST_TEST(g.inverse_variance == 1.0);
  BOOST_TEST(g.joint_average == 1.5);
  BOOST_TEST(g.joint_variance == 0.25);
  BOOST_TEST(g.correlation == -1.0);
}

BOOST_AUTO_TEST_CASE(glcm_merged_over_directions_is_transpose_invariant) {
  cv::RNG rng(9);
  std::vector<cv::Mat> img, transposed;
  analysis::Mask roi, roi_t;
  for (int z = 0; z < 4; ++z) {
    cv::Mat s(6, 7, CV_16S);
    rng.fill(s, cv::RNG::UNIFORM, -100, 100);
    cv::Mat m(6, 7, CV_8U);
    rng.fill(m, cv::RNG::UNIFORM, 0, 2);
    img.push_back(s);
    roi.push_back(m);
    transposed.push_back(s.t());
    roi_t.push_back(m.t());
  }
  const k::Discretisation d{Method::fixed_bin_size, 20.0, -100.0, 0};
  const auto a = k::glcm_features_3d_merged(img, roi, d);
  const auto b = k::glcm_features_3d_merged(transposed, roi_t, d);
  const auto tol = boost::test_tools::tolerance(1e-12);
  BOOST_TEST(a.contrast == b.contrast, tol);
  BOOST_TEST(a.correlation == b.correlation, tol);
  BOOST_TEST(a.joint_entropy == b.joint_entropy, tol);
  BOOST_TEST(a.angular_second_moment == b.angular_second_moment, tol);
  BOOST_TEST(a.inverse_difference == b.inverse_difference, tol);
  const auto h = k::intensity_histogram_features(img, roi, d);
  BOOST_TEST(h.grey_levels == a.grey_levels);
  BOOST_TEST(h.uniformity > 0.0);
  BOOST_TEST(h.uniformity <= 1.0);
}

BOOST_AUTO_TEST_CASE(statistics_of_float_and_integer_images_agree) {
  cv::RNG rng(4);
  std::vector<cv::Mat> i16, f32;
  analysis::Mask roi;
  for (int z = 0; z < 3; ++z) {
    cv::Mat s(9, 8, CV_16S);
    rng.fill(s, cv::RNG::NORMAL, 0, 200);
    cv::Mat f;
    s.convertTo(f, CV_32F);
    i16.push_back(s);
    f32.push_back(f);
    cv::Mat m(9, 8, CV_8U);
    rng.fill(m, cv::RNG::UNIFORM, 0, 2);
    roi.push_back(m);
  }
  const auto a = k::intensity_statistics(i16, roi), b = k::intensity_statistics(f32, roi);
  const auto tol = boost::test_tools::tolerance(1e-9);
  BOOST_TEST(a.voxels == b.voxels);
  BOOST_TEST(a.mean == b.mean, tol);
  BOOST_TEST(a.variance == b.variance, tol);
  BOOST_TEST(a.skewness == b.skewness, tol);
  BOOST_TEST(a.excess_kurtosis == b.excess_kurtosis, tol);
  BOOST_TEST(a.median == b.median, tol);
  BOOST_TEST(a.percentile_10 == b.percentile_10, tol);
  BOOST_TEST(a.percentile_90 == b.percentile_90, tol);
  BOOST_TEST(a.energy == b.energy, tol);
  // Population variance by definition (divisor N).
  double sum = 0, sum2 = 0;
  std::size_t n = 0;
  for (int z = 0; z < 3; ++z)
    for (int r = 0; r < 9; ++r)
      for (int c = 0; c < 8; ++c)
        if (roi[static_cast<std::size_t>(z)].at<uchar>(r, c)) {
          const double v = i16[static_cast<std::size_t>(z)].at<int16_t>(r, c);
          sum += v;
          sum2 += v * v;
          ++n;
        }
  BOOST_TEST(a.variance == sum2 / n - (sum / n) * (sum / n), boost::test_tools::tolerance(1e-9));
}

// Regression (issue 9, mutation fuzzing of `analyze`): an infinite value in the ROI (a float image
// whose rescale overflowed) made the FBS level floor(inf) + 1, cast to int (INT_MIN on x86), and
// intensity_histogram_features indexed its histogram with it: a segfault. Now every kernel that
// discretises refuses such a ROI with std::invalid_argument, and valid values around it still work.
BOOST_AUTO_TEST_CASE(non_finite_values_are_refused_not_discretised) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const auto& values : {std::vector<float>{-1000, inf, -950}, std::vector<float>{-inf, -1000, -950},
                             std::vector<float>{-1000, nan, -950}}) {
    const auto img = row_image(values);
    for (const auto& d : {k::Discretisation{Method::fixed_bin_size, 25.0, std::nullopt, 0},
                          k::Discretisation{Method::fixed_bin_size, 25.0, -1000.0, 0},
                          k::Discretisation{Method::fixed_bin_number, 0, std::nullopt, 32},
                          k::Discretisation{Method::none, 0, std::nullopt, 0}}) {
      BOOST_CHECK_THROW(k::intensity_histogram_features(img, full_roi(img), d), std::invalid_argument);
      BOOST_CHECK_THROW(k::glcm_features_3d_merged(img, full_roi(img), d), std::invalid_argument);
      BOOST_CHECK_THROW(k::discretise_roi(img, full_roi(img), d), std::invalid_argument);
    }
  }
  // Outside the ROI a non-finite value is irrelevant.
  const auto img = row_image({-1000, inf, -950});
  analysis::Mask roi = full_roi(img);
  roi[0].at<uchar>(0, 1) = 0;
  const auto h = k::intensity_histogram_features(img, roi, {Method::fixed_bin_size, 25.0, std::nullopt, 0});
  BOOST_TEST(h.grey_levels == 3);
  BOOST_TEST(h.entropy == 1.0);  // two voxels, two levels
}

// Levels beyond the int range (a bin width tiny for the range) are refused too, instead of being
// cast to int: FBS with w = 1e-300 over [0, 1e6] asks for 1e306 levels.
BOOST_AUTO_TEST_CASE(levels_beyond_the_limit_are_refused) {
  const auto img = row_image({0, 1e6f});
  const k::Discretisation tiny{Method::fixed_bin_size, 1e-300, std::nullopt, 0};
  BOOST_CHECK_THROW(k::intensity_histogram_features(img, full_roi(img), tiny), std::invalid_argument);
  BOOST_CHECK_THROW(k::glcm_features_3d_merged(img, full_roi(img), tiny), std::invalid_argument);
  const k::Discretisation nan_bound{Method::fixed_bin_size, 25.0, std::numeric_limits<double>::quiet_NaN(), 0};
  BOOST_CHECK_THROW(k::discretise_roi(img, full_roi(img), nan_bound), std::invalid_argument);
}
