#define BOOST_TEST_MODULE kernels_nifti
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <filesystem>
#include <fstream>
#include <random>

#include "analysis/kernels/gzip.h"
#include "analysis/kernels/nifti.h"
#include "support/paths.h"

namespace k = analysis::kernels;
namespace fs = std::filesystem;

namespace {

using TempDir = testsupport::TempDir;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_types_plain_and_gzip) {
  TempDir tmp;
  const analysis::Spacing sp{0.75, 0.8, 2.5};
  for (int type : {CV_8U, CV_16S, CV_32F})
    for (const char* name : {"v.nii", "v.nii.gz"}) {
      std::vector<cv::Mat> in;
      for (int z = 0; z < 3; ++z) {
        cv::Mat s(7, 9, type);
        cv::randu(s, cv::Scalar(type == CV_8U ? 0 : -1000), cv::Scalar(type == CV_8U ? 255 : 1000));
        if (type == CV_32F) s.at<float>(0, 0) = 0.5f;  // forces float on read
        in.push_back(s);
      }
      k::write_nifti(tmp.path / name, in, sp);
      const auto img = k::read_nifti(tmp.path / name);
      BOOST_TEST_REQUIRE(img.slices.size() == 3u);
      BOOST_TEST(img.spacing.col == sp.col, boost::test_tools::tolerance(1e-6));
      BOOST_TEST(img.spacing.row == sp.row, boost::test_tools::tolerance(1e-6));
      BOOST_TEST(img.spacing.slice == sp.slice, boost::test_tools::tolerance(1e-6));
      for (int z = 0; z < 3; ++z) {
        BOOST_TEST(img.slices[static_cast<std::size_t>(z)].type() == type);
        BOOST_TEST(cv::norm(img.slices[static_cast<std::size_t>(z)], in[static_cast<std::size_t>(z)], cv::NORM_INF) == 0.0);
      }
    }
}

BOOST_AUTO_TEST_CASE(mask_reader_binarises) {
  TempDir tmp;
  std::vector<cv::Mat> in{(cv::Mat_<int16_t>(2, 2) << 0, 3, -1, 0)};
  k::write_nifti(tmp.path / "m.nii.gz", in, {});
  analysis::Spacing sp{9, 9, 9};
  const auto m = k::read_nifti_mask(tmp.path / "m.nii.gz", &sp);
  BOOST_TEST(m[0].type() == CV_8U);
  BOOST_TEST(m[0].at<uchar>(0, 1) == 1);
  BOOST_TEST(m[0].at<uchar>(1, 0) == 1);
  BOOST_TEST(m[0].at<uchar>(0, 0) == 0);
  BOOST_TEST(sp.col == 1.0);
}

BOOST_AUTO_TEST_CASE(inflate_matches_python_gzip) {
  // Python's zlib output (fixed and dynamic Huffman blocks, long matches) must decode exactly,
  // and Python must read our stored-block gzip.
  TempDir tmp;
  const std::string script =
      "import gzip,random,sys\n"
      "random.seed(1)\n"
      "d=bytes(random.choice(b'ACGT') for _ in range(50000))+b'x'*70000+bytes(random.getrandbits(8) for _ in range(3000))\n"
      "open(sys.argv[1]+'/raw','wb').write(d)\n"
      "open(sys.argv[1]+'/d.gz','wb').write(gzip.compress(d,9))\n"
      "open(sys.argv[1]+'/small.gz','wb').write(gzip.compress(b'hello hello hello',1))\n";
  {
    std::ofstream(tmp.path / "make.py") << script;
  }
  const std::string cmd = std::string(testsupport::python()) + " " + (tmp.path / "make.py").string() + " " + tmp.path.string();
  BOOST_TEST_REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string raw = slurp(tmp.path / "raw");
  BOOST_TEST(k::gunzip(slurp(tmp.path / "d.gz")) == raw);
  BOOST_TEST(k::gunzip(slurp(tmp.path / "small.gz")) == "hello hello hello");
  {
    std::ofstream f(tmp.path / "ours.gz", std::ios::binary);
    const std::string g = k::gzip(raw);
    f.write(g.data(), static_cast<std::streamsize>(g.size()));
  }
  const std::string check = std::string(testsupport::python()) +
                            " -c \"import gzip,sys; sys.exit(0 if gzip.open(sys.argv[1]).read()==open(sys.argv[2],'rb').read() else 1)\" " +
                            (tmp.path / "ours.gz").string() + " " + (tmp.path / "raw").string();
  BOOST_TEST(std::system(check.c_str()) == 0);
  std::string corrupt = slurp(tmp.path / "d.gz");
  corrupt[corrupt.size() - 6] ^= 0x55;  // CRC
  BOOST_CHECK_THROW(k::gunzip(corrupt), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(rejects_malformed_files) {
  TempDir tmp;
  { std::ofstream(tmp.path / "short.nii") << "not a nifti"; }
  BOOST_CHECK_THROW(k::read_nifti(tmp.path / "short.nii"), std::runtime_error);
  BOOST_CHECK_THROW(k::read_nifti(tmp.path / "missing.nii"), std::runtime_error);
  std::vector<cv::Mat> in{cv::Mat::zeros(4, 4, CV_16S)};
  k::write_nifti(tmp.path / "t.nii", in, {});
  std::string b = slurp(tmp.path / "t.nii");
  b.resize(b.size() - 5);  // truncated voxel data
  { std::ofstream(tmp.path / "t.nii", std::ios::binary | std::ios::trunc) << b; }
  BOOST_CHECK_THROW(k::read_nifti(tmp.path / "t.nii"), std::runtime_error);
  std::vector<cv::Mat> bad{cv::Mat::zeros(2, 2, CV_64F)};
  BOOST_CHECK_THROW(k::write_nifti(tmp.path / "x.nii", bad, {}), std::invalid_argument);
}

// Regression (issue 9, fuzz_nifti): vox_offset is a float; NaN, negative and huge values were cast
// to size_t (undefined; a huge one wrapped offset + size past the truncation check). The fuzzer's
// inputs are in fuzz/regressions/fuzz_nifti; here each class of value on a valid file.
BOOST_AUTO_TEST_CASE(vox_offset_outside_the_file_is_refused) {
  TempDir tmp;
  std::vector<cv::Mat> in{cv::Mat::ones(4, 4, CV_16S)};
  k::write_nifti(tmp.path / "t.nii", in, {});
  const std::string good = slurp(tmp.path / "t.nii");
  BOOST_TEST(k::read_nifti(tmp.path / "t.nii").slices.size() == 1u);
  for (const float v : {std::numeric_limits<float>::quiet_NaN(), -2.0f, 347.0f, 1e20f, 3.4e38f,
                        std::numeric_limits<float>::infinity(), static_cast<float>(good.size()) + 4096.0f}) {
    std::string b = good;
    std::memcpy(b.data() + 108, &v, sizeof v);
    { std::ofstream(tmp.path / "bad.nii", std::ios::binary | std::ios::trunc) << b; }
    BOOST_CHECK_EXCEPTION(k::read_nifti(tmp.path / "bad.nii"), std::runtime_error, [](const std::runtime_error& e) {
      return std::string(e.what()).find("vox_offset") != std::string::npos;
    });
  }
}

// A gzip stream is not inflated beyond the limit asked for (a .nii.gz bomb).
BOOST_AUTO_TEST_CASE(gunzip_stops_at_its_output_limit) {
  const std::string zeros(1 << 20, '\0');
  const std::string packed = k::gzip(zeros);
  BOOST_TEST(packed.size() < 2000u);
  BOOST_TEST(k::gunzip(packed, 1 << 20) == zeros);  // exactly the limit
  BOOST_CHECK_EXCEPTION(k::gunzip(packed, (1 << 20) - 1), std::runtime_error, [](const std::runtime_error& e) {
    return std::string(e.what()).find("inflates to more than") != std::string::npos;
  });
}

BOOST_AUTO_TEST_CASE(reads_ibsi_phantom) {
  const auto img = k::read_nifti(testsupport::test_data("ibsi-data_sets/ibsi_1_digital_phantom/nifti/image/phantom.nii.gz"));
  BOOST_TEST_REQUIRE(img.slices.size() == 4u);
  BOOST_TEST(img.datatype == 4);
  // First row of slice 0 as stored (i fastest): 1 4 4 1 1; the masked-out 9 sits in slice 2.
  BOOST_TEST(img.slices[0].at<int16_t>(0, 1) == 4);
  BOOST_TEST(img.slices[2].at<int16_t>(2, 2) == 9);
}
