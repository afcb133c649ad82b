#define BOOST_TEST_MODULE kernels_preprocess
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "analysis/kernels/preprocess.h"

namespace k = analysis::kernels;

namespace {

// Reference median with replicated borders (OpenCV's medianBlur border rule).
template <typename T>
cv::Mat naive_median(const cv::Mat& s, int ksize) {
  cv::Mat out(s.size(), s.type());
  const int h = ksize / 2;
  std::vector<T> w;
  for (int r = 0; r < s.rows; ++r)
    for (int c = 0; c < s.cols; ++c) {
      w.clear();
      for (int dr = -h; dr <= h; ++dr)
        for (int dc = -h; dc <= h; ++dc)
          w.push_back(s.at<T>(std::clamp(r + dr, 0, s.rows - 1), std::clamp(c + dc, 0, s.cols - 1)));
      std::nth_element(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(w.size() / 2), w.end());
      out.at<T>(r, c) = w[w.size() / 2];
    }
  return out;
}

std::vector<cv::Mat> random_int16(int d, int r, int c, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(-32768, 32767);
  std::vector<cv::Mat> v;
  for (int z = 0; z < d; ++z) {
    cv::Mat s(r, c, CV_16S);
    for (int y = 0; y < r; ++y)
      for (int x = 0; x < c; ++x) s.at<int16_t>(y, x) = static_cast<int16_t>(u(rng));
    s.at<int16_t>(0, 0) = -32768;  // extremes must survive the offset trick
    s.at<int16_t>(1, 1) = 32767;
    v.push_back(s);
  }
  return v;
}

}  // namespace

BOOST_AUTO_TEST_CASE(median_int16_is_exact_for_3_and_5) {
  for (int ksize : {3, 5}) {
    auto img = random_int16(3, 17, 23, static_cast<unsigned>(ksize));
    std::vector<cv::Mat> expected;
    for (const auto& s : img) expected.push_back(naive_median<int16_t>(s, ksize));
    k::median_filter(img, ksize);
    for (std::size_t z = 0; z < img.size(); ++z) {
      BOOST_TEST(img[z].type() == CV_16S);
      BOOST_TEST(cv::countNonZero(img[z] != expected[z]) == 0, "ksize " << ksize << " slice " << z);
    }
  }
}

BOOST_AUTO_TEST_CASE(median_int16_on_shared_allocation) {
  // Slices that are row ranges of one block (as decode may produce) are filtered independently.
  cv::Mat block(2 * 9, 11, CV_16S);
  cv::randu(block, cv::Scalar(-2000), cv::Scalar(2000));
  std::vector<cv::Mat> img{block.rowRange(0, 9), block.rowRange(9, 18)};
  const cv::Mat e0 = naive_median<int16_t>(img[0].clone(), 3), e1 = naive_median<int16_t>(img[1].clone(), 3);
  k::median_filter(img, 3);
  BOOST_TEST(cv::countNonZero(block.rowRange(0, 9) != e0) == 0);
  BOOST_TEST(cv::countNonZero(block.rowRange(9, 18) != e1) == 0);
}

BOOST_AUTO_TEST_CASE(median_float_and_bad_arguments) {
  std::vector<cv::Mat> img{cv::Mat(13, 15, CV_32F)};
  cv::randn(img[0], 0, 100);
  const cv::Mat e = naive_median<float>(img[0], 5);
  k::median_filter(img, 5);
  BOOST_TEST(cv::countNonZero(img[0] != e) == 0);
  BOOST_CHECK_THROW(k::median_filter(img, 7), std::invalid_argument);
  std::vector<cv::Mat> i32{cv::Mat::zeros(3, 3, CV_32S)};
  BOOST_CHECK_THROW(k::median_filter(i32, 3), std::invalid_argument);
  std::vector<cv::Mat> none;
  BOOST_CHECK_THROW(k::median_filter(none, 3), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(gaussian_keeps_constants_and_spreads_impulses) {
  const analysis::Spacing sp{0.5, 0.5, 2.0};
  std::vector<cv::Mat> c;
  for (int z = 0; z < 5; ++z) c.push_back(cv::Mat(20, 20, CV_16S, cv::Scalar(-300)));
  k::gaussian_filter(c, sp, 1.0, 2.0);
  for (const auto& s : c) BOOST_TEST(cv::countNonZero(s != -300) == 0);

  std::vector<cv::Mat> imp;
  for (int z = 0; z < 9; ++z) imp.push_back(cv::Mat::zeros(31, 31, CV_32F));
  imp[4].at<float>(15, 15) = 1000.0f;
  k::gaussian_filter(imp, sp, 1.0, 2.0);
  double total = 0;
  for (const auto& s : imp) total += cv::sum(s)[0];
  BOOST_TEST(total == 1000.0, boost::test_tools::tolerance(1e-3));
  // Symmetric in-plane, and along z the profile follows exp(-dz^2 / (2 sigma_z^2)), sigma_z = 1 slice.
  BOOST_TEST(imp[4].at<float>(15, 13) == imp[4].at<float>(13, 15), boost::test_tools::tolerance(1e-5f));
  const double ratio = imp[5].at<float>(15, 15) / imp[4].at<float>(15, 15);
  BOOST_TEST(ratio == std::exp(-0.5), boost::test_tools::tolerance(1e-4));
  BOOST_TEST(imp[3].at<float>(15, 15) == imp[5].at<float>(15, 15), boost::test_tools::tolerance(1e-5f));
  BOOST_CHECK_THROW(k::gaussian_filter(imp, sp, -1.0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(resample_updates_size_spacing_and_origin) {
  dicom::Volume v;
  v.geom.spacing_col = 0.5;
  v.geom.spacing_row = 0.6;
  v.geom.spacing_slice = 3.0;
  v.geom.origin = {10, 20, 30};
  for (int z = 0; z < 3; ++z) v.slices.push_back(cv::Mat(80, 100, CV_16S, cv::Scalar(42)));
  k::resample_inplane(v, 1.0, 1.2);
  BOOST_TEST(v.cols() == 50);
  BOOST_TEST(v.rows() == 40);
  BOOST_TEST(v.geom.spacing_col == 1.0);
  BOOST_TEST(v.geom.spacing_row == 1.2);
  BOOST_TEST(v.geom.spacing_slice == 3.0);
  BOOST_TEST(v.geom.origin[0] == 10.25, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(v.geom.origin[1] == 20.3, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(v.geom.origin[2] == 30.0);
  for (const auto& s : v.slices) BOOST_TEST(cv::countNonZero(s != 42) == 0);
  // Non-divisible sizes: achieved spacing keeps the field of view.
  std::vector<cv::Mat> m{cv::Mat::ones(7, 9, CV_8U)};
  analysis::Spacing sp{0.9, 0.9, 1.0};
  k::resample_inplane(m, sp, 2.0, 2.0, k::Interpolation::nearest);
  BOOST_TEST(m[0].cols == 4);  // round(9 * 0.9 / 2)
  BOOST_TEST(sp.col * m[0].cols == 9 * 0.9, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(cv::countNonZero(m[0] != 1) == 0);
}
