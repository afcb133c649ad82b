// kernels::write_png (libpng): what it writes reads back (OpenCV's decoder) as the same pixels,
// grey and colour (BGR in, RGB in the file); bad input and unwritable paths throw.
#define BOOST_TEST_MODULE png_writer
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "analysis/kernels/png.h"

namespace fs = std::filesystem;
namespace k = analysis::kernels;

namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("pacsnode-png-" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

cv::Mat random_image(int rows, int cols, int type, unsigned seed) {
  cv::Mat m(rows, cols, type);
  cv::RNG(seed).fill(m, cv::RNG::UNIFORM, 0, 256);
  return m;
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

}  // namespace

BOOST_AUTO_TEST_CASE(grey_and_colour_read_back_unchanged) {
  TempDir tmp;
  for (int level : {0, 6, 9}) {
    const cv::Mat grey = random_image(37, 53, CV_8UC1, 1 + level);
    const cv::Mat bgr = random_image(41, 29, CV_8UC3, 2 + level);
    k::write_png(tmp.path / "grey.png", grey, level);
    k::write_png(tmp.path / "colour.png", bgr, level);
    BOOST_TEST(same(cv::imread((tmp.path / "grey.png").string(), cv::IMREAD_UNCHANGED), grey), "level " << level);
    BOOST_TEST(same(cv::imread((tmp.path / "colour.png").string(), cv::IMREAD_UNCHANGED), bgr), "level " << level);
    k::write_png(tmp.path / "grey_raw_rows.png", grey, level, /*row_filters=*/false);  // as the preview
    k::write_png(tmp.path / "colour_raw_rows.png", bgr, level, false);
    BOOST_TEST(same(cv::imread((tmp.path / "grey_raw_rows.png").string(), cv::IMREAD_UNCHANGED), grey), "level " << level);
    BOOST_TEST(same(cv::imread((tmp.path / "colour_raw_rows.png").string(), cv::IMREAD_UNCHANGED), bgr), "level " << level);
  }
  // A view into a larger image (rows not contiguous) and a file that starts as a PNG should.
  const cv::Mat big = random_image(64, 64, CV_8UC3, 9);
  const cv::Mat view = big(cv::Rect(5, 7, 30, 20));
  k::write_png(tmp.path / "view.png", view);
  BOOST_TEST(same(cv::imread((tmp.path / "view.png").string(), cv::IMREAD_UNCHANGED), view));
  std::ifstream in(tmp.path / "view.png", std::ios::binary);
  char sig[8] = {};
  in.read(sig, 8);
  BOOST_TEST(std::string(sig, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
}

BOOST_AUTO_TEST_CASE(bad_input_and_unwritable_path_throw) {
  TempDir tmp;
  BOOST_CHECK_THROW(k::write_png(tmp.path / "a.png", cv::Mat()), std::invalid_argument);
  BOOST_CHECK_THROW(k::write_png(tmp.path / "a.png", cv::Mat(4, 4, CV_16UC1, cv::Scalar(1))), std::invalid_argument);
  BOOST_CHECK_THROW(k::write_png(tmp.path / "a.png", cv::Mat(4, 4, CV_8UC1), 10), std::invalid_argument);
  BOOST_CHECK_THROW(k::write_png(tmp.path / "no" / "such" / "dir.png", cv::Mat(4, 4, CV_8UC1, cv::Scalar(3))),
                    std::runtime_error);
  if (fs::exists("/dev/full")) {  // the disk is full: libpng's or the flush's write fails
    BOOST_CHECK_THROW(k::write_png("/dev/full", random_image(300, 300, CV_8UC3, 4)), std::runtime_error);
  }
}
