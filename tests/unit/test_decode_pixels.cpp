#define BOOST_TEST_MODULE decode_pixels
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <fmt/format.h>
#include <opencv2/core.hpp>

#include "dicom/check.h"
#include "dicom/pixel_decoder.h"
#include "dicom/series_loader.h"
#include "dicom/volume.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using dicom::RealMap;
using dicom::StoredFormat;

namespace {

// Real-world values of every frame of `file`, from tests/scripts/decode_reference.py (pydicom).
struct Reference {
  int frames = 0, rows = 0, cols = 0;
  std::vector<double> values;
  double at(int frame, int r, int c) const {
    return values[(static_cast<std::size_t>(frame) * rows + r) * cols + c];
  }
};

Reference python_reference(const fs::path& file) {
  static int counter = 0;
  const fs::path out = fs::temp_directory_path() / fmt::format("decode_ref_{}_{}.f64", ::getpid(), counter++);
  const fs::path script = testsupport::source_dir() / "tests/scripts/decode_reference.py";
  const std::string cmd =
      fmt::format("{} '{}' pixels '{}' '{}'", testsupport::python(), script.string(), out.string(), file.string());
  Reference ref;
  FILE* p = ::popen(cmd.c_str(), "r");
  BOOST_REQUIRE(p != nullptr);
  const int n = std::fscanf(p, "%d %d %d", &ref.frames, &ref.rows, &ref.cols);
  const int status = ::pclose(p);
  BOOST_REQUIRE_MESSAGE(n == 3 && status == 0, "reference reader failed for " << file);
  ref.values.resize(static_cast<std::size_t>(ref.frames) * ref.rows * ref.cols);
  std::ifstream in(out, std::ios::binary);
  in.read(reinterpret_cast<char*>(ref.values.data()), static_cast<std::streamsize>(ref.values.size() * sizeof(double)));
  BOOST_REQUIRE(in.good());
  in.close();
  fs::remove(out);
  return ref;
}

// The one volume of a single file.
dicom::Volume load_one(const fs::path& file) {
  auto r = dicom::load_files({file});
  for (const auto& rej : r.rejected) BOOST_TEST_MESSAGE("rejected " << rej.path << ": " << rej.reason);
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 1u);
  return std::move(r.volumes.front());
}

double value(const cv::Mat& m, int r, int c) {
  return m.type() == CV_16S ? m.at<std::int16_t>(r, c) : static_cast<double>(m.at<float>(r, c));
}

// Largest |volume - reference| over all voxels; frames matched through SourceFrame::frame_number.
double max_difference(const dicom::Volume& v, const Reference& ref) {
  BOOST_REQUIRE_EQUAL(v.rows(), ref.rows);
  BOOST_REQUIRE_EQUAL(v.cols(), ref.cols);
  BOOST_REQUIRE_EQUAL(v.depth(), ref.frames);
  double worst = 0;
  for (int z = 0; z < v.depth(); ++z) {
    const int frame = std::max(0, v.sources[static_cast<std::size_t>(z)].frame_number - 1);
    for (int r = 0; r < ref.rows; ++r)
      for (int c = 0; c < ref.cols; ++c) {
        const bool as_float = v.slices[static_cast<std::size_t>(z)].type() == CV_32F;
        // A float volume holds the reference rounded to float; relative difference for it.
        const double want = as_float ? static_cast<float>(ref.at(frame, r, c)) : ref.at(frame, r, c);
        const double got = value(v.slices[static_cast<std::size_t>(z)], r, c);
        worst = std::max(worst, std::abs(got - want) / (as_float ? std::max(1.0, std::abs(want)) : 1.0));
      }
  }
  return worst;
}

// Every voxel of a equals the same voxel of b.
bool same_voxels(const dicom::Volume& a, const dicom::Volume& b) {
  if (a.depth() != b.depth() || a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (int z = 0; z < a.depth(); ++z) {
    const auto& x = a.slices[static_cast<std::size_t>(z)];
    const auto& y = b.slices[static_cast<std::size_t>(z)];
    if (x.type() != y.type() || cv::norm(x, y, cv::NORM_INF) != 0) return false;
  }
  return true;
}

fs::path data(const std::string& rel) { return testsupport::test_data(rel); }

}  // namespace

// ---- the pure kernel -------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(kernel_masks_garbage_high_bits_and_sign_extends) {
  StoredFormat f{16, 12, 11, true, false};
  BOOST_TEST(dicom::stored_value(0xF800, f) == -2048);  // proper sign extension kept
  BOOST_TEST(dicom::stored_value(0x0800, f) == -2048);  // same value without the extension
  BOOST_TEST(dicom::stored_value(0x0F0F, f) == -241);   // 0xF0F: negative 12-bit
  BOOST_TEST(dicom::stored_value(0xA7FF, f) == 2047);   // garbage 0xA000 above the high bit dropped
  f.is_signed = false;
  BOOST_TEST(dicom::stored_value(0xFFFF, f) == 4095);
  BOOST_TEST(dicom::stored_value(0x3001, f) == 1);
}

BOOST_AUTO_TEST_CASE(kernel_honours_high_bit_above_bits_stored) {
  const StoredFormat f{16, 12, 15, false, false};  // stored bits are 15..4
  BOOST_TEST(dicom::stored_value(0xFFF0, f) == 4095);
  BOOST_TEST(dicom::stored_value(0x001F, f) == 1);
}

BOOST_AUTO_TEST_CASE(kernel_mirrors_monochrome1_within_stored_range) {
  StoredFormat f{16, 10, 9, false, true};
  BOOST_TEST(dicom::stored_value(0, f) == 1023);
  BOOST_TEST(dicom::stored_value(1023, f) == 0);
  f.is_signed = true;
  BOOST_TEST(dicom::stored_value(0x200, f) == 511);  // -512 -> 511
}

BOOST_AUTO_TEST_CASE(kernel_converts_in_place_when_growing) {
  // 8-bit stored values widened in place to float with rescale.
  std::vector<float> buf(4);
  const std::uint8_t raw[4] = {0, 1, 200, 255};
  std::memcpy(buf.data(), raw, 4);
  BOOST_TEST(dicom::stored_to_real(buf.data(), {8, 8, 7, false, false}, {0.5, -10}, buf.data(), true, 4));
  BOOST_TEST(buf[0] == -10.0f);
  BOOST_TEST(buf[1] == -9.5f);
  BOOST_TEST(buf[2] == 90.0f);
  BOOST_TEST(buf[3] == 117.5f);
}

BOOST_AUTO_TEST_CASE(kernel_reports_values_that_do_not_fit_int16) {
  const std::uint16_t raw[2] = {100, 40000};
  std::int16_t out[2];
  BOOST_TEST(!dicom::stored_to_real(raw, {16, 16, 15, false, false}, {}, out, false, 2));  // 40000 > int16
  BOOST_TEST(!dicom::stored_to_real(raw, {16, 12, 11, false, false}, {0.5, 0}, out, false, 2));  // not integers
  BOOST_TEST(dicom::stored_to_real(raw, {16, 12, 11, false, false}, {1, -1024}, out, false, 2));
  BOOST_TEST(out[0] == -924);
  BOOST_TEST(out[1] == (40000 & 0xFFF) - 1024);
}

BOOST_AUTO_TEST_CASE(kernel_int16_fast_paths_equal_the_definition) {
  // 16-bit samples into int16 take a vectorised path for slope +-1 and the scalar one otherwise;
  // every value and the fits/does-not-fit answer must equal stored_value * slope + intercept.
  cv::RNG rng(20261126);
  int checked = 0, overflows = 0;
  for (const int bits : {8, 10, 12, 15, 16})
    for (const int high : {bits - 1, 15})
      for (const bool is_signed : {false, true})
        for (const bool mono1 : {false, true})
          for (const double slope : {1.0, -1.0, 2.0, -3.0, 1000.0})
            for (const double intercept : {0.0, -1024.0, 32767.0, -32768.0, 40000.0, -65535.0}) {
              const StoredFormat f{16, bits, high, is_signed, mono1};
              const RealMap m{slope, intercept};
              for (const std::size_t n : {std::size_t{1}, std::size_t{8}, std::size_t{37}}) {
                std::vector<std::uint16_t> raw(n);
                for (auto& r : raw) r = static_cast<std::uint16_t>(rng.uniform(0, 65536));
                if (n > 2) raw[1] = 0x0000, raw[2] = 0xFFFF;  // extremes of any format
                bool want_fits = true;
                std::vector<std::int64_t> want(n);
                for (std::size_t i = 0; i < n; ++i) {
                  want[i] = static_cast<std::int64_t>(dicom::stored_value(raw[i], f) * slope + intercept);
                  want_fits = want_fits && want[i] >= INT16_MIN && want[i] <= INT16_MAX;
                }
                std::vector<std::int16_t> out(n);
                const bool fits = dicom::stored_to_real(raw.data(), f, m, out.data(), false, n);
                std::vector<std::uint16_t> in_place = raw;  // the loader converts in place
                const bool fits_in_place = dicom::stored_to_real(in_place.data(), f, m, in_place.data(), false, n);
                BOOST_TEST_CONTEXT("bits " << bits << " high " << high << " signed " << is_signed << " mono1 "
                                           << mono1 << " slope " << slope << " intercept " << intercept << " n " << n) {
                  BOOST_TEST(fits == want_fits);
                  BOOST_TEST(fits_in_place == want_fits);
                  if (want_fits) {
                    for (std::size_t i = 0; i < n; ++i) {
                      BOOST_TEST(out[i] == want[i], "sample " << i << " raw " << raw[i]);
                      BOOST_TEST(static_cast<std::int16_t>(in_place[i]) == want[i], "in place, sample " << i);
                    }
                  }
                }
                ++checked;
                overflows += want_fits ? 0 : 1;
              }
            }
  BOOST_TEST_MESSAGE(checked << " conversions, " << overflows << " with values outside int16");
  BOOST_TEST(overflows > 0);
  BOOST_TEST(overflows < checked);
}

namespace {

std::size_t virtual_pages() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  statm >> pages;
  return pages;
}

}  // namespace

BOOST_AUTO_TEST_CASE(allocate_planes_gives_plane_views_and_zeroes_on_request) {
  dicom::release_cached_planes();
  for (const auto& [planes, rows, cols, type] : {std::tuple{3, 5, 7, CV_8U}, std::tuple{40, 512, 512, CV_16S}}) {
    cv::Mat block = dicom::allocate_planes(planes, rows, cols, type, /*zeroed=*/true);
    BOOST_TEST(block.rows == planes * rows);
    BOOST_TEST(block.cols == cols);
    BOOST_TEST(block.type() == type);
    BOOST_TEST(block.isContinuous());
    BOOST_TEST(cv::countNonZero(block.reshape(1)) == 0);
    cv::Mat plane = block.rowRange(rows, 2 * rows);  // shares the block, keeps it alive
    block.release();
    plane.setTo(7);
    BOOST_TEST(cv::countNonZero(plane.reshape(1)) == rows * cols * plane.channels());
  }
  // Prefaulting is advice: a fresh block stays zero, a plain Mat is left alone.
  {
    const cv::Mat fresh = dicom::allocate_planes(8, 512, 512, CV_16S, /*zeroed=*/true);
    dicom::prefault_rows(fresh.rowRange(512, 1024));
    BOOST_TEST(cv::countNonZero(fresh) == 0);
    cv::Mat plain(4, 4, CV_8U, cv::Scalar(3));
    dicom::prefault_rows(plain);
    BOOST_TEST(cv::countNonZero(plain) == 16);
  }
  dicom::release_cached_planes();
  {
    cv::Mat block = dicom::allocate_planes(40, 512, 512, CV_16S);
    block.rowRange(512, 1024).setTo(7);
  }
  // The 20 MiB block just freed (all 7 in one plane) comes back, zeroed when asked.
  BOOST_TEST(dicom::cached_plane_bytes() >= 40u * 512 * 512 * 2);
  const cv::Mat again = dicom::allocate_planes(40, 512, 512, CV_16S, /*zeroed=*/true);
  BOOST_TEST(dicom::cached_plane_bytes() == 0u);
  BOOST_TEST(cv::countNonZero(again) == 0);
  dicom::release_cached_planes();
}

BOOST_AUTO_TEST_CASE(cached_blocks_are_reused_bounded_and_released) {
  dicom::release_cached_planes();
  const std::size_t volume = 300u * 512 * 512 * 2;
  const uchar* first = nullptr;
  {
    const cv::Mat v = dicom::allocate_planes(300, 512, 512, CV_16S);
    first = v.data;
  }
  BOOST_TEST(dicom::cached_plane_bytes() == volume);
  {
    // The next volume of that size gets the same memory back; a mask (half the size) then finds
    // nothing that fits and is mapped fresh.
    const cv::Mat v = dicom::allocate_planes(300, 512, 512, CV_16S);
    BOOST_TEST(v.data == first);
    BOOST_TEST(dicom::cached_plane_bytes() == 0u);
    const cv::Mat mask = dicom::allocate_planes(300, 512, 512, CV_8U);
    BOOST_TEST(mask.data != first);
  }
  // Both were freed; the cache keeps at most the largest block asked for (one volume): the mask,
  // the smaller, went back to the system.
  BOOST_TEST(dicom::cached_plane_bytes() == volume);
  // A block larger than anything cached: the cache is emptied before mapping it.
  {
    const cv::Mat big = dicom::allocate_planes(700, 512, 512, CV_16S);
    BOOST_TEST(dicom::cached_plane_bytes() == 0u);
  }
  // Released: nothing cached, and the address space shrinks back (40 rounds of 150 MiB do not add up).
  dicom::release_cached_planes();
  BOOST_TEST(dicom::cached_plane_bytes() == 0u);
  const std::size_t before = virtual_pages();
  for (int i = 0; i < 40; ++i) {
    cv::Mat big = dicom::allocate_planes(300 + i, 512, 512, CV_16S);
    big.row(i).setTo(1);
    dicom::release_cached_planes();
  }
  BOOST_TEST(virtual_pages() <= before + 1000);
}

// ---- real files against the independent reader -----------------------------------------------

BOOST_AUTO_TEST_CASE(nine_transfer_syntaxes_give_identical_pixels) {
  // dcm_qa_ts: one Siemens MR slice as ExplLE, ImplLE, ExplBE, RLE, JPEG lossless (x2), JPEG-LS (x2), J2K lossless.
  const auto ref = python_reference(data("dcm_qa_ts/In/1.dcm"));
  for (int i = 1; i <= 9; ++i) {
    BOOST_TEST_CONTEXT("dcm_qa_ts/In/" << i << ".dcm") {
      const auto v = load_one(data(fmt::format("dcm_qa_ts/In/{}.dcm", i)));
      BOOST_TEST(v.slices[0].type() == CV_16S);
      BOOST_TEST(max_difference(v, ref) == 0.0);
    }
  }
}

BOOST_AUTO_TEST_CASE(uncompressed_and_big_endian_and_deflated_match_reference) {
  for (const char* rel : {"pydicom/test_files/MR_small.dcm", "pydicom/test_files/MR_small_bigendian.dcm",
                          "pydicom/test_files/MR_small_expb.dcm", "pydicom/test_files/MR_small_implicit.dcm",
                          "pydicom/test_files/MR_small_RLE.dcm", "pydicom/test_files/CT_small.dcm",
                          "pydicom/test_files/image_dfl.dcm", "fo-dicom/TestData/GH227.dcm",
                          "pydicom-data/data_store/data/693_UNCR.dcm", "pydicom/test_files/rtdose.dcm",
                          "pydicom/test_files/rtdose_rle.dcm", "pydicom/test_files/rtdose_expb.dcm",
                          "fo-dicom/TestData/D_CLUNIE_CT1_RLE_FRAGS.dcm"}) {
    BOOST_TEST_CONTEXT(rel) {
      const auto v = load_one(data(rel));
      const auto ref = python_reference(data(rel));
      BOOST_TEST(max_difference(v, ref) == 0.0);
    }
  }
}

BOOST_AUTO_TEST_CASE(lossless_compressed_equal_their_uncompressed_sibling) {
  const std::vector<std::pair<const char*, const char*>> pairs = {
      {"pydicom/test_files/MR_small_jp2klossless.dcm", "pydicom/test_files/MR_small.dcm"},
      {"pydicom/test_files/MR_small_jpeg_ls_lossless.dcm", "pydicom/test_files/MR_small.dcm"},
      {"pydicom/test_files/rtdose_rle.dcm", "pydicom/test_files/rtdose.dcm"},  // 15 frames, 32-bit
      {"pydicom-data/data_store/data/MR2_J2KR.dcm", "pydicom-data/data_store/data/MR2_UNCR.dcm"},
      {"pydicom-data/data_store/data/693_J2KR.dcm", "pydicom-data/data_store/data/693_UNCR.dcm"},
  };
  for (const auto& [compressed, plain] : pairs) {
    BOOST_TEST_CONTEXT(compressed) {
      const auto ref = python_reference(data(plain));
      BOOST_TEST(max_difference(load_one(data(compressed)), ref) == 0.0);
    }
  }
  // Two independent lossless codecs of one CR image (JPEG-LS and JPEG lossless SV1) agree.
  BOOST_TEST(same_voxels(load_one(data("pylibjpeg-data/ljdata/ds/JPEGLSLossless/RG2_JLSL.dcm")),
                         load_one(data("pylibjpeg-data/ljdata/ds/JPEGLosslessSV1/RG2_JPLL.dcm"))));
}

BOOST_AUTO_TEST_CASE(lossy_syntaxes_decode_close_to_the_original) {
  // JPEG baseline 8-bit, JPEG extended 12-bit, JPEG 2000 lossy: decodable, near the uncompressed data.
  const auto nm = python_reference(data("pydicom-data/data_store/data/JPEG2000_UNC.dcm"));
  const auto j2k = load_one(data("pydicom/test_files/JPEG2000.dcm"));
  BOOST_TEST(max_difference(j2k, nm) <= 64.0);
  const auto ext = load_one(data("pydicom/test_files/JPGExtended.dcm"));
  BOOST_TEST(ext.rows() == 1024);
  BOOST_TEST(ext.cols() == 256);
  const auto base = load_one(data("pylibjpeg-data/ljdata/ds/JPEGBaseline/JPEGBaseline_1s_1f_u_08_08.dcm"));
  double lo = 0, hi = 0;
  cv::minMaxLoc(base.slices[0], &lo, &hi);
  BOOST_TEST(lo >= 0);
  BOOST_TEST(hi <= 255);
  BOOST_TEST(hi > lo);
}

BOOST_AUTO_TEST_CASE(twelve_bit_with_garbage_high_bits) {
  for (const char* rel : {"dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm", "dcm_qa_12bit/In/12bitUnsigned.dcm",
                          "dcm_qa_12bit/In/12bitUnsigned_0x0F0F.dcm"}) {
    BOOST_TEST_CONTEXT(rel) {
      const auto v = load_one(data(rel));
      BOOST_TEST(v.slices[0].type() == CV_16S);
      BOOST_TEST(max_difference(v, python_reference(data(rel))) == 0.0);
      double lo = 0, hi = 0;
      cv::minMaxLoc(v.slices[0], &lo, &hi);
      BOOST_TEST(lo >= -2048);
      BOOST_TEST(hi <= 4095);
    }
  }
  // The stripes of the dataset's README: 0x0F0F and 0xFFFF read as 3855/4095 unsigned, -241/-1 signed.
  auto count = [](const dicom::Volume& v, int value) { return cv::countNonZero(v.slices[0] == value); };
  const auto u = load_one(data("dcm_qa_12bit/In/12bitUnsigned_0x0F0F.dcm"));
  const auto s = load_one(data("dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm"));
  BOOST_TEST(count(u, 3855) > 100);
  BOOST_TEST(count(u, 4095) > 100);
  BOOST_TEST(count(s, -241) > 100);
  BOOST_TEST(count(s, -1) > 100);
}

BOOST_AUTO_TEST_CASE(monochrome1_is_inverted) {
  const auto path = data("fo-dicom/TestData/CR-MONO1-10-chest");  // 10-bit CR, no file meta
  const auto v = load_one(path);
  BOOST_TEST(v.info.photometric == "MONOCHROME1");
  BOOST_TEST(!v.geom.has_frame_of_reference);
  BOOST_TEST(max_difference(v, python_reference(path)) == 0.0);
  const auto dx = load_one(data("highdicom/data/test_files/dx_image.dcm"));
  BOOST_TEST(dx.info.photometric == "MONOCHROME1");
  BOOST_TEST(max_difference(dx, python_reference(data("highdicom/data/test_files/dx_image.dcm"))) == 0.0);
}

BOOST_AUTO_TEST_CASE(ct_gives_int16_hounsfield_units) {
  const auto v = load_one(data("pydicom/test_files/CT_small.dcm"));
  BOOST_TEST(v.info.units == "HU");
  BOOST_TEST(v.slices[0].type() == CV_16S);
  double lo = 0, hi = 0;
  cv::minMaxLoc(v.slices[0], &lo, &hi);
  BOOST_TEST(lo < -500);  // air-ish, i.e. the intercept was applied
}

BOOST_AUTO_TEST_CASE(non_integer_rescale_gives_float) {
  const auto pet = data("ibsi-data_sets/ibsi_validation/dicom/STS_001/PET/image/000000.dcm");
  const auto v = load_one(pet);
  BOOST_TEST(v.slices[0].type() == CV_32F);
  BOOST_TEST(max_difference(v, python_reference(pet)) == 0.0);
  // Unsigned 16-bit data above 32767 cannot be int16 either.
  const auto big = load_one(data("pydicom/test_files/JPEGLSNearLossless_16.dcm"));
  BOOST_TEST(big.slices[0].type() == CV_32F);
}

BOOST_AUTO_TEST_CASE(enhanced_multiframe_per_frame_rescale) {
  const auto path = data("dicom2nifti/tests/data/philips_enhanced/anatomical/001/IM-0001-0170-0001.dcm");
  const auto v = load_one(path);
  BOOST_TEST(v.depth() == 8);
  BOOST_TEST(v.slices[0].type() == CV_32F);
  BOOST_TEST(max_difference(v, python_reference(path)) == 0.0);
  // All frames of a multi-frame file share its one allocation.
  BOOST_TEST(v.slices[0].u == v.slices[7].u);
}

BOOST_AUTO_TEST_CASE(multiframe_transfer_syntaxes_decode_identically) {
  // emri_small: 10-frame enhanced MR without frame geometry (so not a volume), in five syntaxes;
  // decoded straight through decode_stored + stored_to_real.
  const auto ref = python_reference(data("pydicom-data/data_store/data/emri_small.dcm"));
  BOOST_REQUIRE_EQUAL(ref.frames, 10);
  for (const char* rel : {"pydicom-data/data_store/data/emri_small.dcm", "pydicom-data/data_store/data/emri_small_RLE.dcm",
                          "pydicom-data/data_store/data/emri_small_big_endian.dcm",
                          "pydicom-data/data_store/data/emri_small_jpeg_2k_lossless.dcm",
                          "pydicom-data/data_store/data/emri_small_jpeg_ls_lossless.dcm"}) {
    BOOST_TEST_CONTEXT(rel) {
      std::vector<std::uint16_t> raw;
      const auto layout = dicom::decode_stored(data(rel), [&](const dicom::DecodedLayout& l) {
        raw.resize(l.bytes() / 2);
        return static_cast<void*>(raw.data());
      });
      BOOST_TEST(layout.frames == 10);
      BOOST_TEST(layout.bits_allocated == 16);
      std::vector<std::int16_t> out(raw.size());
      BOOST_REQUIRE(dicom::stored_to_real(raw.data(), {16, 12, 11, false, false}, {}, out.data(), false, out.size()));
      BOOST_REQUIRE_EQUAL(out.size(), ref.values.size());
      std::size_t differing = 0;
      for (std::size_t i = 0; i < out.size(); ++i) differing += out[i] != ref.values[i];
      BOOST_TEST(differing == 0u);
    }
  }
  // A J2K stream cut short is an error with a reason, not a crash.
  BOOST_CHECK_THROW(dicom::decode_stored(data("pydicom-data/data_store/data/emri_small_jpeg_2k_lossless_too_short.dcm"),
                                         [](const dicom::DecodedLayout& l) -> void* { return nullptr; }),
                    dicom::DicomError);
}

BOOST_AUTO_TEST_CASE(modality_lut_is_applied) {
  const auto path = data("pydicom-data/data_store/data/mlut_18.dcm");  // 12-bit signed, LUT from -2048
  const auto v = load_one(path);
  BOOST_TEST(v.info.units == "US");  // Modality LUT Type
  BOOST_TEST(max_difference(v, python_reference(path)) == 0.0);
  // The LUT maps to 0..65520 here: beyond int16, so float.
  BOOST_TEST(v.slices[0].type() == CV_32F);
}

BOOST_AUTO_TEST_CASE(empty_modality_lut_item_is_identity) {
  // An empty Modality LUT Sequence item (vendor test files have one) is read as no LUT: the
  // values are those of the same file without the sequence (its Rescale Slope/Intercept apply).
  const auto src = data("pydicom/test_files/CT_small.dcm");
  const fs::path dir = fs::temp_directory_path() / fmt::format("empty_mlut_{}", ::getpid());
  fs::create_directories(dir);
  for (const bool with_item : {true, false}) {
    DcmFileFormat ff;
    BOOST_REQUIRE(ff.loadFile(src.c_str()).good());
    auto* seq = new DcmSequenceOfItems(DCM_ModalityLUTSequence);
    if (with_item) seq->append(new DcmItem());
    BOOST_REQUIRE(ff.getDataset()->insert(seq, true).good());
    const fs::path out = dir / (with_item ? "empty_item.dcm" : "no_item.dcm");
    BOOST_REQUIRE(ff.saveFile(out.c_str(), EXS_LittleEndianExplicit).good());
    BOOST_TEST_CONTEXT(out.filename()) {
      const auto v = load_one(out);
      const auto plain = load_one(src);
      BOOST_TEST(v.info.units == plain.info.units);
      BOOST_TEST(cv::norm(v.slices[0], plain.slices[0], cv::NORM_INF) == 0.0);
    }
  }
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(float_pixel_data_is_loaded_as_float) {
  for (const char* rel : {"pydicom-data/data_store/data/parametric_map_float.dcm",
                          "pydicom-data/data_store/data/parametric_map_double_float.dcm"}) {
    BOOST_TEST_CONTEXT(rel) {
      const auto v = load_one(data(rel));
      BOOST_TEST(v.slices[0].type() == CV_32F);
      BOOST_TEST(v.geom.has_frame_of_reference);
      BOOST_TEST(max_difference(v, python_reference(data(rel))) == 0.0);
    }
  }
}
