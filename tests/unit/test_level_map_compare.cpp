// kernels::level_map on int16 images: the levels by comparison (vectorised, few breaks) and by
// the table (many breaks) are those of std::upper_bound over the breaks, for every int16 value,
// with fractional, duplicate, infinite and out-of-range breaks, and for rows whose width is not
// a multiple of the vector width (the last columns go through the table).
#define BOOST_TEST_MODULE level_map_compare
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "analysis/kernels/preprocess.h"

namespace k = analysis::kernels;

namespace {

std::uint8_t expected_level(const std::vector<double>& breaks, double v) {
  return static_cast<std::uint8_t>(std::upper_bound(breaks.begin(), breaks.end(), v) - breaks.begin());
}

// Every int16 value once, in a shuffled order, as `depth` slices of rows x cols (cycling when the
// stack holds more than 65536 voxels).
std::vector<cv::Mat> every_int16(int depth, int rows, int cols, unsigned seed) {
  std::vector<std::int16_t> values(65536);
  for (int i = 0; i < 65536; ++i) values[static_cast<std::size_t>(i)] = static_cast<std::int16_t>(i - 32768);
  std::shuffle(values.begin(), values.end(), std::mt19937(seed));
  std::vector<cv::Mat> out;
  std::size_t next = 0;
  for (int z = 0; z < depth; ++z) {
    cv::Mat s(rows, cols, CV_16S);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) s.at<std::int16_t>(r, c) = values[next++ % values.size()];
    out.push_back(s);
  }
  return out;
}

void check_levels(const std::vector<cv::Mat>& img, const std::vector<double>& breaks, const std::string& what) {
  const auto got = k::level_map(img, breaks);
  BOOST_TEST_REQUIRE(got.size() == img.size());
  std::size_t wrong = 0, checked = 0;
  for (std::size_t z = 0; z < img.size(); ++z) {
    BOOST_TEST_REQUIRE(got[z].type() == CV_8U);
    for (int r = 0; r < img[z].rows; ++r)
      for (int c = 0; c < img[z].cols; ++c, ++checked)
        if (got[z].at<std::uint8_t>(r, c) != expected_level(breaks, img[z].at<std::int16_t>(r, c))) ++wrong;
  }
  BOOST_TEST(checked >= 65536u);
  BOOST_TEST(wrong == 0u, what << ": " << wrong << " of " << checked << " voxels with another level");
}

}  // namespace

BOOST_AUTO_TEST_CASE(int16_levels_equal_upper_bound_for_every_value) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::pair<std::string, std::vector<double>>> cases = {
      {"ct-chest-like", {-950, -910, -500, -400.5, -100, 0.5, 300, 1200}},
      {"fractional and negative fractions", {-1000.5, -999.9, -0.5, -0.25, 0.25, 99.99}},
      {"duplicates", {-400, -400, -400, 0, 0}},
      {"infinite", {-inf, -1, inf}},
      {"out of int16 range", {-1e9, -32768.5, -32768, 32767, 32767.5, 40000, 1e9}},
      {"edges", {-32767.5, 32766.5}},
      {"none", {}},
      {"one", {-400.5}},
  };
  // 131 x 509: 509 = 31 vectors of 16 and 13 columns for the tail.
  const auto img = every_int16(1, 131, 509, 7);
  for (const auto& [name, breaks] : cases) check_levels(img, breaks, name);
}

BOOST_AUTO_TEST_CASE(int16_levels_with_many_breaks_equal_upper_bound) {
  for (int n : {15, 16, 17, 40, 255}) {  // around the limit of the comparisons, and the table
    std::vector<double> breaks;
    for (int i = 0; i < n; ++i) breaks.push_back(-30000.0 + i * (60000.0 / n) + 0.5 * (i % 2));
    check_levels(every_int16(2, 64, 515, static_cast<unsigned>(n)), breaks, std::to_string(n) + " breaks");
  }
}

BOOST_AUTO_TEST_CASE(int16_levels_after_median_equal_upper_bound_of_median) {
  const std::vector<double> breaks{-950, -910, -500, -400.5, -100, 0.5, 300, 1200};
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> u(-1100, 1500);
  std::vector<cv::Mat> img;
  for (int z = 0; z < 3; ++z) {
    cv::Mat s(300, 203, CV_16S);  // several median bands per slice, an odd width
    for (int r = 0; r < s.rows; ++r)
      for (int c = 0; c < s.cols; ++c) s.at<std::int16_t>(r, c) = static_cast<std::int16_t>(u(rng));
    img.push_back(s);
  }
  for (int ksize : {3, 5}) {
    const auto got = k::level_map(img, breaks, ksize);
    std::size_t wrong = 0;
    for (std::size_t z = 0; z < img.size(); ++z) {
      cv::Mat m;
      cv::medianBlur(img[z], m, ksize);
      for (int r = 0; r < m.rows; ++r)
        for (int c = 0; c < m.cols; ++c)
          if (got[z].at<std::uint8_t>(r, c) != expected_level(breaks, m.at<std::int16_t>(r, c))) ++wrong;
    }
    BOOST_TEST(wrong == 0u, "ksize " << ksize << ": " << wrong << " voxels with another level");
  }
}
