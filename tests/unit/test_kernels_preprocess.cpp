#define BOOST_TEST_MODULE kernels_preprocess
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include <opencv2/imgproc.hpp>

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

// ---- slices in parallel: equal to a serial reference ------------------------------------------

namespace {

// `depth` slices of rows x cols that are row ranges of one block, as decode allocates them.
std::vector<cv::Mat> block_stack(int depth, int rows, int cols, int type) {
  const cv::Mat block(depth * rows, cols, type);
  std::vector<cv::Mat> v;
  for (int z = 0; z < depth; ++z) v.push_back(block.rowRange(z * rows, (z + 1) * rows));
  return v;
}

// CT-like int16: values over the whole HU range and beyond, both extremes included.
std::vector<cv::Mat> ct_like(int depth, int rows, int cols, unsigned seed) {
  auto v = block_stack(depth, rows, cols, CV_16S);
  cv::RNG rng(seed);
  for (auto& s : v) {
    rng.fill(s, cv::RNG::UNIFORM, cv::Scalar(-1100), cv::Scalar(1500));
    s.at<int16_t>(0, 0) = -32768;
    s.at<int16_t>(rows - 1, cols - 1) = 32767;
    s.at<int16_t>(rows / 2, 0) = -32768;
  }
  return v;
}

std::vector<cv::Mat> clones(const std::vector<cv::Mat>& v) {
  std::vector<cv::Mat> out;
  for (const auto& s : v) out.push_back(s.clone());
  return out;
}

// The previous median_filter, one slice at a time on its own copy: int16 mapped to uint16 by
// XOR 0x8000, OpenCV's median, mapped back.
cv::Mat xor_median(const cv::Mat& s16, int ksize) {
  cv::Mat u(s16.size(), CV_16U), out;
  cv::bitwise_xor(cv::Mat(s16.rows, s16.cols, CV_16U, s16.data, s16.step), cv::Scalar(0x8000), u);
  cv::medianBlur(u, out, ksize);
  cv::bitwise_xor(out, cv::Scalar(0x8000), out);
  return cv::Mat(out.rows, out.cols, CV_16S, out.data, out.step).clone();
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::countNonZero(a.reshape(1) != b.reshape(1)) == 0;
}

}  // namespace

BOOST_AUTO_TEST_CASE(median_int16_parallel_equals_the_xor_implementation) {
  // The filter works in bands of 128 KiB of output: 32 rows of 2048 int16 columns. Row counts
  // around them: one row, a band and one or two rows, a partial last band, ...
  for (int ksize : {3, 5})
    for (int rows : {1, 2, 5, 31, 32, 33, 34, 65, 100}) {
      auto img = ct_like(5, rows, 2048, static_cast<unsigned>(ksize * 1000 + rows));
      std::vector<cv::Mat> expected;
      for (const auto& s : img) expected.push_back(xor_median(s, ksize));
      k::median_filter(img, ksize);
      for (std::size_t z = 0; z < img.size(); ++z)
        BOOST_TEST(same(img[z], expected[z]), "ksize " << ksize << " rows " << rows << " slice " << z);
    }
}

BOOST_AUTO_TEST_CASE(median_int16_negatives_match_the_naive_median) {
  for (int ksize : {3, 5}) {
    auto img = ct_like(3, 70, 1500, static_cast<unsigned>(ksize));  // bands of 43 rows
    std::vector<cv::Mat> expected;
    for (const auto& s : img) expected.push_back(naive_median<int16_t>(s.clone(), ksize));
    k::median_filter(img, ksize);
    for (std::size_t z = 0; z < img.size(); ++z) BOOST_TEST(same(img[z], expected[z]), "ksize " << ksize);
  }
}

BOOST_AUTO_TEST_CASE(median_other_types_parallel_equal_opencv_per_slice) {
  for (int type : {CV_8U, CV_16U, CV_32F})
    for (int ksize : {3, 5}) {
      auto img = block_stack(6, 67, 3000, type);  // bands of 43, 21 and 10 rows
      cv::RNG rng(static_cast<std::uint64_t>(type * 10 + ksize));
      for (auto& s : img) rng.fill(s, cv::RNG::UNIFORM, cv::Scalar(0), cv::Scalar(type == CV_8U ? 256 : 60000));
      std::vector<cv::Mat> expected;
      for (const auto& s : img) {
        cv::Mat e;
        cv::medianBlur(s.clone(), e, ksize);
        expected.push_back(e);
      }
      k::median_filter(img, ksize);
      for (std::size_t z = 0; z < img.size(); ++z) BOOST_TEST(same(img[z], expected[z]), "type " << type << " ksize " << ksize);
    }
}

BOOST_AUTO_TEST_CASE(level_map_with_median_equals_median_filter_then_levels) {
  const std::vector<double> breaks{-950, -910, -500, -400.5, -100, 0.5, 300, 1200};
  const analysis::Spacing sp{0.7, 0.8, 1.0};
  for (int ksize : {3, 5}) {
    const auto img = ct_like(6, 77, 1600, static_cast<unsigned>(ksize + 7));  // bands of 40 rows
    auto filtered = clones(img);
    for (auto& s : filtered) s = xor_median(s, ksize);  // the previous median, slice by slice
    const auto expected = k::level_map(filtered, breaks);
    const auto got = k::level_map(img, breaks, ksize);
    for (std::size_t z = 0; z < img.size(); ++z) BOOST_TEST(same(got[z], expected[z]), "ksize " << ksize);

    // Median then Gaussian (in float, per slice).
    std::vector<cv::Mat> smooth;
    const double sx = 1.0 / sp.col, sy = 1.0 / sp.row;
    const cv::Size ks(2 * static_cast<int>(std::ceil(3 * sx)) + 1, 2 * static_cast<int>(std::ceil(3 * sy)) + 1);
    for (const auto& s : filtered) {
      cv::Mat f;
      s.convertTo(f, CV_32F);
      cv::GaussianBlur(f, f, ks, sx, sy, cv::BORDER_REFLECT_101);
      smooth.push_back(f);
    }
    const auto expected_smooth = k::level_map(smooth, breaks);
    const auto got_smooth = k::level_map(img, breaks, ksize, 1.0, sp);
    for (std::size_t z = 0; z < img.size(); ++z)
      BOOST_TEST(same(got_smooth[z], expected_smooth[z]), "smooth, ksize " << ksize);
  }
}

BOOST_AUTO_TEST_CASE(gaussian_inplane_parallel_equals_opencv_per_slice) {
  const analysis::Spacing sp{0.7, 0.9, 1.0};
  for (int type : {CV_8U, CV_16S, CV_32F}) {
    auto img = type == CV_16S ? ct_like(11, 40, 33, 5) : block_stack(11, 40, 33, type);
    for (std::size_t z = 0; type != CV_16S && z < img.size(); ++z) cv::RNG(z + 1).fill(img[z], cv::RNG::UNIFORM, 0, 250);
    const double sx = 1.5 / sp.col, sy = 1.5 / sp.row;
    const cv::Size ks(2 * static_cast<int>(std::ceil(3 * sx)) + 1, 2 * static_cast<int>(std::ceil(3 * sy)) + 1);
    std::vector<cv::Mat> expected;
    for (const auto& s : img) {  // each slice on its own: nothing outside it is read
      cv::Mat e;
      cv::GaussianBlur(s.clone(), e, ks, sx, sy, cv::BORDER_REFLECT_101);
      expected.push_back(e);
    }
    k::gaussian_filter(img, sp, 1.5);
    for (std::size_t z = 0; z < img.size(); ++z) BOOST_TEST(same(img[z], expected[z]), "type " << type << " slice " << z);
  }
}

BOOST_AUTO_TEST_CASE(gaussian_inplane_does_not_read_the_neighbouring_slices_of_a_block) {
  // Slices of one block: a constant slice stays constant whatever its neighbours hold (OpenCV
  // would otherwise take the adjacent rows of the block, i.e. the next slice, as its border).
  auto img = block_stack(3, 20, 20, CV_16S);
  img[0].setTo(1000);
  img[1].setTo(-1000);
  img[2].setTo(1000);
  k::gaussian_filter(img, {1, 1, 1}, 1.0);
  BOOST_TEST(cv::countNonZero(img[0] != 1000) == 0);
  BOOST_TEST(cv::countNonZero(img[1] != -1000) == 0);
  BOOST_TEST(cv::countNonZero(img[2] != 1000) == 0);
}

BOOST_AUTO_TEST_CASE(resample_parallel_equals_opencv_per_slice) {
  for (auto [interp, flag] : {std::pair{k::Interpolation::nearest, int(cv::INTER_NEAREST_EXACT)},
                              std::pair{k::Interpolation::linear, int(cv::INTER_LINEAR)},
                              std::pair{k::Interpolation::cubic, int(cv::INTER_CUBIC)},
                              std::pair{k::Interpolation::area, int(cv::INTER_AREA)}}) {
    auto img = ct_like(9, 61, 47, 11);
    analysis::Spacing sp{0.7, 0.75, 2.0};
    std::vector<cv::Mat> expected;
    const cv::Size size(static_cast<int>(std::lround(47 * 0.7 / 1.1)), static_cast<int>(std::lround(61 * 0.75 / 1.1)));
    for (const auto& s : img) {
      cv::Mat e;
      cv::resize(s.clone(), e, size, 0, 0, flag);
      expected.push_back(e);
    }
    k::resample_inplane(img, sp, 1.1, 1.1, interp);
    for (std::size_t z = 0; z < img.size(); ++z) BOOST_TEST(same(img[z], expected[z]), "flag " << flag << " slice " << z);
  }
}
