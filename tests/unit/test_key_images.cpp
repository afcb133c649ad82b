#define BOOST_TEST_MODULE key_images
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <stdlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "analysis/kernels/key_image_render.h"
#include "dicom/check.h"
#include "dicom/key_images.h"
#include "support/paths.h"
#include "support/seg_sources.h"

namespace fs = std::filesystem;
using analysis::kernels::KeyImageParams;
using analysis::kernels::Rgb;
using analysis::kernels::SegmentStyle;
using analysis::kernels::WindowLevel;

namespace {

constexpr const char* kSecondaryCapture = "1.2.840.10008.5.1.4.1.1.7";

using TempDir = testsupport::TempDir;

std::string read_tag(const fs::path& f, const DcmTagKey& tag) {
  DcmFileFormat ff;
  BOOST_TEST_REQUIRE(ff.loadFile(f.c_str(), EXS_Unknown, EGL_noChange, 4096).good());
  OFString v;
  ff.getDataset()->findAndGetOFStringArray(tag, v);
  return v.c_str();
}

// A minimal stand-in for the series decoder (uncompressed 16-bit greyscale CT only), so that
// these tests do not depend on dicom/series_loader: HU = stored * slope + intercept.
dicom::Volume read_volume(const std::vector<fs::path>& files) {
  const testsupport::SourceSeries s = testsupport::load_series(files);
  dicom::Volume v;
  v.geom = s.geom;
  v.sources = s.frames;
  for (const auto& frame : s.frames) {
    DcmFileFormat ff;
    BOOST_TEST_REQUIRE(ff.loadFile(frame.path.c_str()).good());
    DcmDataset& d = *ff.getDataset();
    Uint16 rows = 0, cols = 0, bits = 0, pixrep = 0;
    d.findAndGetUint16(DCM_Rows, rows);
    d.findAndGetUint16(DCM_Columns, cols);
    d.findAndGetUint16(DCM_BitsAllocated, bits);
    d.findAndGetUint16(DCM_PixelRepresentation, pixrep);
    BOOST_TEST_REQUIRE(bits == 16);
    Float64 slope = 1, intercept = 0;
    d.findAndGetFloat64(DCM_RescaleSlope, slope);
    d.findAndGetFloat64(DCM_RescaleIntercept, intercept);
    const Uint16* px = nullptr;
    unsigned long n = 0;
    BOOST_TEST_REQUIRE(d.findAndGetUint16Array(DCM_PixelData, px, &n).good());
    BOOST_TEST_REQUIRE(n >= static_cast<unsigned long>(rows) * cols);
    cv::Mat m(rows, cols, CV_16S);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const Uint16 raw = px[static_cast<size_t>(r) * cols + c];
        const double stored = pixrep ? static_cast<double>(static_cast<Sint16>(raw)) : static_cast<double>(raw);
        m.at<short>(r, c) = cv::saturate_cast<short>(stored * slope + intercept);
      }
    v.slices.push_back(m);
    if (v.info.modality.empty()) {
      v.info.modality = read_tag(frame.path, DCM_Modality);
      v.info.series_description = read_tag(frame.path, DCM_SeriesDescription);
      v.info.protocol_name = read_tag(frame.path, DCM_ProtocolName);
      v.info.body_part = read_tag(frame.path, DCM_BodyPartExamined);
      v.info.study_uid = read_tag(frame.path, DCM_StudyInstanceUID);
      v.info.series_uid = s.series_uid;
      v.info.units = "HU";
    }
  }
  return v;
}

// ---- What key_images_dump.py read back.
struct KeyDump {
  std::string path, sop_class, sop_instance, series, study, instance_number, series_number, modality;
  int rows = 0, cols = 0, spp = 0, bits_allocated = 0, bits_stored = 0, high_bit = 0, pixel_representation = -1;
  std::string photometric, planar;
  std::string burned_in, image_type, conversion, lossy, orientation, laterality, body_part;
  int laterality_present = -1;
  int pixel_spacing_present = -1;
  std::vector<std::array<std::string, 5>> sources;    // class, instance, frame, purpose, spatial preserved
  std::vector<std::array<std::string, 3>> refseries;  // series, class, instance
  int patient_mismatch = -1;
  std::string mismatched, pixels_diff;
};

std::vector<KeyDump> run_dump(const fs::path& source, const std::vector<std::pair<fs::path, fs::path>>& files) {
  const auto script = testsupport::source_dir() / "tests/scripts/key_images_dump.py";
  std::string cmd = std::string(testsupport::python()) + " " + testsupport::shell_quote(script.string()) + " " +
                    testsupport::shell_quote(source.string());
  for (const auto& [key, rgb] : files)
    cmd += " " + testsupport::shell_quote(key.string()) + " " + (rgb.empty() ? std::string("-") : testsupport::shell_quote(rgb.string()));
  const auto r = testsupport::run_command(cmd);
  BOOST_TEST_REQUIRE(r.exit_code == 0, "key_images_dump.py failed: " << r.output.substr(0, 2000));
  std::vector<KeyDump> out;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag;
    ls >> tag;
    if (tag == "FILE") {
      out.emplace_back();
      ls >> out.back().path;
      continue;
    }
    BOOST_TEST_REQUIRE(!out.empty(), "dump line before FILE: " << line);
    KeyDump& d = out.back();
    if (tag == "SOP") {
      ls >> d.sop_class >> d.sop_instance >> d.series >> d.study >> d.instance_number >> d.series_number >> d.modality;
    } else if (tag == "IMAGE") {
      ls >> d.rows >> d.cols >> d.spp >> d.photometric >> d.planar >> d.bits_allocated >> d.bits_stored >> d.high_bit >>
          d.pixel_representation;
    } else if (tag == "FLAGS") {
      ls >> d.burned_in >> d.image_type >> d.conversion >> d.lossy >> d.pixel_spacing_present >> d.orientation;
    } else if (tag == "SERIES") {
      ls >> d.laterality_present >> d.laterality >> d.body_part;
    } else if (tag == "SOURCE") {
      std::array<std::string, 5> s;
      for (auto& x : s) ls >> x;
      d.sources.push_back(s);
    } else if (tag == "REFSERIES") {
      std::array<std::string, 3> s;
      for (auto& x : s) ls >> x;
      d.refseries.push_back(s);
    } else if (tag == "PATIENT_MISMATCH") {
      ls >> d.patient_mismatch >> d.mismatched;
    } else if (tag == "PIXELS_DIFF") {
      ls >> d.pixels_diff;
    }
  }
  return out;
}

using testsupport::expect_dciodvfy_clean;

// Interleaved RGB of an OpenCV BGR image, as the SC must store it.
void write_rgb(const cv::Mat& bgr, const fs::path& out) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  std::ofstream f(out, std::ios::binary);
  for (int r = 0; r < rgb.rows; ++r) f.write(reinterpret_cast<const char*>(rgb.ptr(r)), static_cast<std::streamsize>(rgb.cols) * 3);
  BOOST_TEST_REQUIRE(f.good());
}

// Everything a reader can check about the key images of one call against the spec and sources.
void verify_key_images(const dicom::KeyImageSpec& spec, const std::vector<dicom::WrittenObject>& written,
                       const std::vector<fs::path>& source_files, const fs::path& tmp) {
  BOOST_TEST_REQUIRE(written.size() == spec.images.size());
  std::set<std::string> real_instances;
  for (const auto& f : source_files) real_instances.insert(read_tag(f, DCM_SOPInstanceUID));
  const std::string study = read_tag(spec.source_file, DCM_StudyInstanceUID);
  const std::string source_series = read_tag(spec.source_file, DCM_SeriesInstanceUID);
  std::vector<std::pair<fs::path, fs::path>> files;
  for (size_t i = 0; i < written.size(); ++i) {
    BOOST_TEST_REQUIRE(fs::exists(written[i].path));
    expect_dciodvfy_clean(written[i].path);
    const fs::path rgb = tmp / ("expected_" + std::to_string(i + 1) + ".rgb");
    write_rgb(spec.images[i], rgb);
    files.emplace_back(written[i].path, rgb);
  }
  const auto dumps = run_dump(spec.source_file, files);
  BOOST_TEST_REQUIRE(dumps.size() == written.size());
  std::set<std::string> instances;
  for (size_t i = 0; i < dumps.size(); ++i) {
    BOOST_TEST_CONTEXT("key image " << i + 1) {
      const KeyDump& d = dumps[i];
      const cv::Mat& img = spec.images[i];
      const dicom::SourceFrame& src = spec.sources[spec.slice_index[i]];
      BOOST_TEST(d.sop_class == kSecondaryCapture);
      BOOST_TEST(written[i].sop_class_uid == kSecondaryCapture);
      BOOST_TEST(d.sop_instance == written[i].sop_instance_uid);
      instances.insert(d.sop_instance);
      BOOST_TEST(d.series == written.front().series_uid);  // one new series for the call
      BOOST_TEST(d.series == written[i].series_uid);
      BOOST_TEST(d.series != source_series);
      BOOST_TEST(d.study == study);
      BOOST_TEST(written[i].study_uid == study);
      BOOST_TEST(d.instance_number == std::to_string(i + 1));
      BOOST_TEST(d.series_number == std::to_string(spec.series_number));
      BOOST_TEST(d.modality == spec.modality);
      BOOST_TEST(d.rows == img.rows);
      BOOST_TEST(d.cols == img.cols);
      BOOST_TEST(d.spp == 3);
      BOOST_TEST(d.photometric == "RGB");
      BOOST_TEST(d.planar == "0");
      BOOST_TEST(d.bits_allocated == 8);
      BOOST_TEST(d.bits_stored == 8);
      BOOST_TEST(d.high_bit == 7);
      BOOST_TEST(d.pixel_representation == 0);
      BOOST_TEST(d.burned_in == "YES");
      BOOST_TEST(d.image_type.rfind("DERIVED/SECONDARY", 0) == 0u, "ImageType " << d.image_type);
      BOOST_TEST(d.conversion == "WSD");
      BOOST_TEST(d.lossy == "00");
      BOOST_TEST(d.pixel_spacing_present == 0);  // resized rendering: no Pixel Spacing
      std::string orientation = spec.patient_orientation.empty() ? "-" : spec.patient_orientation;
      std::replace(orientation.begin(), orientation.end(), '\\', '/');
      BOOST_TEST(d.orientation == orientation);
      BOOST_TEST_REQUIRE(d.sources.size() == 1u);
      BOOST_TEST(d.sources[0][0] == src.sop_class_uid);
      BOOST_TEST(d.sources[0][1] == src.sop_instance_uid);
      BOOST_TEST(real_instances.count(d.sources[0][1]) == 1u, "Source Image Sequence names no source file's instance");
      BOOST_TEST(d.sources[0][2] == std::to_string(src.frame_number));
      BOOST_TEST(d.sources[0][3] == "DCM:121322");
      BOOST_TEST(d.sources[0][4] == "NO");
      BOOST_TEST_REQUIRE(d.refseries.size() == 1u);
      BOOST_TEST(d.refseries[0][0] == source_series);
      BOOST_TEST(d.refseries[0][2] == src.sop_instance_uid);
      BOOST_TEST(d.patient_mismatch == 0, "patient/study attributes differ from the source: " << d.mismatched);
      BOOST_TEST(d.pixels_diff == "0");
    }
  }
  BOOST_TEST(instances.size() == written.size());
}

// ---- In-memory volumes for the rendering tests.
constexpr short kBodyHu = 100, kAirHu = -1000;

// depth x rows x cols CT in HU: air with a body rectangle (rows/cols 1/8..7/8).
dicom::Volume phantom(int depth, int rows, int cols, double spacing_row = 1.0, double spacing_col = 1.0) {
  dicom::Volume v;
  v.info.modality = "CT";
  v.info.series_description = "key image test";
  v.geom.spacing_row = spacing_row;
  v.geom.spacing_col = spacing_col;
  for (int z = 0; z < depth; ++z) {
    cv::Mat m(rows, cols, CV_16S, cv::Scalar(kAirHu));
    m(cv::Rect(cols / 8, rows / 8, cols * 3 / 4, rows * 3 / 4)).setTo(kBodyHu);
    v.slices.push_back(m);
  }
  return v;
}

// Segment 1: a centred square of half-size h[z] (area (2h)^2); segment `label2`: a 4x4 square at
// (6, 6) on the slices in `z2` (a 2x2 one on z2_small).
std::vector<cv::Mat> labels_for(int rows, int cols, const std::vector<int>& h, const std::set<int>& z2, int z2_small,
                                std::uint8_t label2 = 3) {
  std::vector<cv::Mat> out;
  for (int z = 0; z < static_cast<int>(h.size()); ++z) {
    cv::Mat l(rows, cols, CV_8U, cv::Scalar(0));
    if (h[z] > 0) l(cv::Rect(cols / 2 - h[z], rows / 2 - h[z], 2 * h[z], 2 * h[z])).setTo(1);
    if (z2.count(z)) l(cv::Rect(6, 6, 4, 4)).setTo(label2);
    if (z == z2_small) l(cv::Rect(6, 6, 2, 2)).setTo(label2);
    out.push_back(l);
  }
  return out;
}

const std::vector<SegmentStyle> kStyles = {{1, "lesion", Rgb{255, 0, 0}}, {3, "nodule", Rgb{0, 255, 0}}};

// Slices of the largest areas of one label, computed directly: the n largest, ties to the lower z.
std::vector<int> largest_slices(const std::vector<cv::Mat>& labels, std::uint8_t label, int n) {
  std::vector<std::pair<int, int>> area_z;
  for (int z = 0; z < static_cast<int>(labels.size()); ++z) {
    const int a = cv::countNonZero(labels[z] == label);
    if (a > 0) area_z.push_back({-a, z});
  }
  std::sort(area_z.begin(), area_z.end());
  std::vector<int> out;
  for (int i = 0; i < std::min<int>(n, static_cast<int>(area_z.size())); ++i) out.push_back(area_z[i].second);
  std::sort(out.begin(), out.end());
  return out;
}

int count_colour(const cv::Mat& bgr, const Rgb& c) {
  cv::Mat eq;
  cv::inRange(bgr, cv::Scalar(c.b, c.g, c.r), cv::Scalar(c.b, c.g, c.r), eq);
  return cv::countNonZero(eq);
}

}  // namespace

BOOST_AUTO_TEST_CASE(selection_takes_the_largest_areas_per_segment) {
  //                    z:  0  1  2  3  4  5  6  7
  const std::vector<int> h{0, 2, 5, 3, 6, 0, 4, 1};  // segment 1 areas 0 16 100 36 144 0 64 4
  const auto labels = labels_for(32, 32, h, {1}, 7);  // segment 3: 16 px on z1, 4 px on z7
  const std::span<const SegmentStyle> one(kStyles.data(), 1);

  // One segment: its three largest slices, in slice order.
  const auto three = analysis::kernels::select_key_slices(labels, one, 3);
  BOOST_TEST(three == largest_slices(labels, 1, 3), boost::test_tools::per_element());
  BOOST_TEST(three == (std::vector<int>{2, 4, 6}), boost::test_tools::per_element());
  BOOST_TEST(analysis::kernels::select_key_slices(labels, one, 1) == (std::vector<int>{4}), boost::test_tools::per_element());

  // Two segments: each one's largest first, then the second largest, round-robin.
  const auto both2 = analysis::kernels::select_key_slices(labels, kStyles, 2);
  std::vector<int> want2{largest_slices(labels, 1, 1)[0], largest_slices(labels, 3, 1)[0]};
  std::sort(want2.begin(), want2.end());
  BOOST_TEST(both2 == want2, boost::test_tools::per_element());
  BOOST_TEST(both2 == (std::vector<int>{1, 4}), boost::test_tools::per_element());
  BOOST_TEST(analysis::kernels::select_key_slices(labels, kStyles, 3) == (std::vector<int>{1, 2, 4}),
             boost::test_tools::per_element());
  // More allowed than there are slices with a segment: every such slice once.
  BOOST_TEST(analysis::kernels::select_key_slices(labels, kStyles, 64) == (std::vector<int>{1, 2, 3, 4, 6, 7}),
             boost::test_tools::per_element());

  // Ties go to the lower slice; nothing present gives nothing.
  const auto tie = labels_for(32, 32, {0, 0, 3, 0, 0, 3}, {}, -1);
  BOOST_TEST(analysis::kernels::select_key_slices(tie, one, 1) == (std::vector<int>{2}), boost::test_tools::per_element());
  const auto none = labels_for(32, 32, {0, 0, 0}, {}, -1);
  BOOST_TEST(analysis::kernels::select_key_slices(none, kStyles, 3).empty());

  BOOST_CHECK_THROW(analysis::kernels::select_key_slices(labels, kStyles, 0), std::invalid_argument);
  const std::vector<SegmentStyle> background{{0, "bg", Rgb{1, 2, 3}}};
  BOOST_CHECK_THROW(analysis::kernels::select_key_slices(labels, background, 3), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(rendering_burns_in_overlay_window_and_legend) {
  const int rows = 32, cols = 32;
  const std::vector<int> h{0, 2, 5, 3, 6, 0, 4, 1};
  dicom::Volume v = phantom(static_cast<int>(h.size()), rows, cols);
  const auto labels = labels_for(rows, cols, h, {1}, 7);
  KeyImageParams p;
  p.window = WindowLevel{400, 40};
  p.max_images = 3;
  const auto k = analysis::kernels::render_key_images(v, labels, kStyles, p);

  BOOST_TEST(k.slice_index == analysis::kernels::select_key_slices(labels, kStyles, 3), boost::test_tools::per_element());
  BOOST_TEST(k.slice_index == (std::vector<int>{1, 2, 4}), boost::test_tools::per_element());
  BOOST_TEST_REQUIRE(k.images.size() == k.slice_index.size());
  BOOST_TEST(k.window.width == 400.0);
  BOOST_TEST(k.window.center == 40.0);
  // Square pixels, square slice: the long side gets long_side pixels.
  BOOST_TEST(k.slice_area == cv::Rect(0, 0, p.long_side, p.long_side));
  const double scale = static_cast<double>(p.long_side) / cols;
  auto grey_at = [&](const cv::Mat& img, int r, int c) {  // centre of source pixel (r, c)
    return img.at<cv::Vec3b>(static_cast<int>((r + 0.5) * scale), static_cast<int>((c + 0.5) * scale));
  };
  auto windowed = [&](double hu) {
    const double v8 = (hu - (p.window->center - p.window->width / 2)) * 255.0 / p.window->width;
    return static_cast<int>(std::lround(std::clamp(v8, 0.0, 255.0)));
  };
  for (size_t i = 0; i < k.images.size(); ++i) {
    const int z = k.slice_index[i];
    BOOST_TEST_CONTEXT("slice " << z) {
      const cv::Mat& img = k.images[i];
      BOOST_TEST_REQUIRE(img.type() == CV_8UC3);
      BOOST_TEST(img.cols == p.long_side);
      BOOST_TEST(img.rows > p.long_side);  // legend band below
      const cv::Mat slice = img(k.slice_area), legend = img(cv::Rect(0, p.long_side, img.cols, img.rows - p.long_side));
      for (const auto& s : kStyles) {
        const bool present = cv::countNonZero(labels[z] == s.label) > 0;
        BOOST_TEST((count_colour(slice, s.colour) > 0) == present, s.name << " outline on the slice");
        BOOST_TEST((count_colour(legend, s.colour) > 0) == present, s.name << " swatch in the legend");
      }
      // Away from overlay and letters: the windowed grey value, in all three channels.
      const cv::Vec3b body = grey_at(img, 26, 20), air = grey_at(img, 1, 8);
      BOOST_TEST(static_cast<int>(body[0]) == windowed(kBodyHu));
      BOOST_TEST(static_cast<int>(body[1]) == windowed(kBodyHu));
      BOOST_TEST(static_cast<int>(body[2]) == windowed(kBodyHu));
      BOOST_TEST(static_cast<int>(air[0]) == windowed(kAirHu));
      // Inside segment 1, away from its outline: grey blended with red (fill), red raised.
      const cv::Vec3b fill = grey_at(img, rows / 2, cols / 2);
      if (labels[z].at<std::uint8_t>(rows / 2, cols / 2) == 1) {
        BOOST_TEST(static_cast<int>(fill[2]) > static_cast<int>(fill[1]));
        BOOST_TEST(static_cast<int>(fill[0]) == static_cast<int>(fill[1]));
      }
    }
  }

  // Anisotropic pixels: 16 rows of 2 mm by 32 columns of 1 mm is a square of 32 mm.
  dicom::Volume aniso = phantom(2, 16, 32, 2.0, 1.0);
  std::vector<cv::Mat> al(2, cv::Mat(16, 32, CV_8U, cv::Scalar(0)));
  al[1] = cv::Mat(16, 32, CV_8U, cv::Scalar(0));
  al[1](cv::Rect(10, 4, 8, 4)).setTo(1);
  const auto ka = analysis::kernels::render_key_images(aniso, al, kStyles, p);
  BOOST_TEST(ka.slice_index == (std::vector<int>{1}), boost::test_tools::per_element());
  BOOST_TEST(ka.slice_area == cv::Rect(0, 0, p.long_side, p.long_side));
  dicom::Volume wide = phantom(2, 16, 32, 1.0, 1.0);
  const auto kw = analysis::kernels::render_key_images(wide, al, kStyles, p);
  BOOST_TEST(kw.slice_area == cv::Rect(0, 0, p.long_side, p.long_side / 2));

  // Nothing present: nothing rendered.
  const auto empty = analysis::kernels::render_key_images(v, labels_for(rows, cols, std::vector<int>(h.size(), 0), {}, -1), kStyles, p);
  BOOST_TEST(empty.images.empty());
  BOOST_TEST(empty.slice_index.empty());

  KeyImageParams bad = p;
  bad.long_side = 10;
  BOOST_CHECK_THROW(analysis::kernels::render_key_images(v, labels, kStyles, bad), std::invalid_argument);
  std::vector<cv::Mat> short_labels(labels.begin(), labels.end() - 1);
  BOOST_CHECK_THROW(analysis::kernels::render_key_images(v, short_labels, kStyles, p), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(patient_orientation_from_geometry) {
  dicom::Geometry g;  // axial: rows run to the patient's left, columns to posterior
  BOOST_TEST(analysis::kernels::patient_orientation(g) == "L\\P");
  g.row_dir = {1, 0, 0};
  g.col_dir = {0, 0, -1};  // coronal
  BOOST_TEST(analysis::kernels::patient_orientation(g) == "L\\F");
  g.row_dir = {0, 1, 0};  // sagittal
  BOOST_TEST(analysis::kernels::patient_orientation(g) == "P\\F");
  const double c = std::sqrt(0.5);
  g.row_dir = {c, -c, 0};  // oblique: both axes named
  g.col_dir = {0, 0, -1};
  BOOST_TEST(analysis::kernels::patient_orientation(g) == "LA\\F");
  g.has_frame_of_reference = false;
  BOOST_TEST(analysis::kernels::patient_orientation(g).empty());
}

BOOST_AUTO_TEST_CASE(synthetic_ct_key_images_are_valid_sc) {
  TempDir tmp;
  const auto files = testsupport::write_synthetic_ct(tmp.path / "ct", 64, 64, 8, {1, 0, 0}, {0, 1, 0}, {-32, -32, 10}, 0.7, 0.7, 2.5);
  const dicom::Volume v = read_volume(files);
  BOOST_TEST_REQUIRE(v.depth() == 8);
  // Segment 1: a disc peaking on slice 5; segment 3 on slices 1 and 2 (larger on 2).
  std::vector<cv::Mat> labels;
  for (int z = 0; z < v.depth(); ++z) {
    cv::Mat l(64, 64, CV_8U, cv::Scalar(0));
    const int radius = 16 - 3 * std::abs(z - 5);
    if (radius > 0) cv::circle(l, {32, 32}, radius, cv::Scalar(1), cv::FILLED);
    if (z == 1 || z == 2) l(cv::Rect(4, 4, 4 + 2 * z, 6)).setTo(3);
    labels.push_back(l);
  }
  KeyImageParams p;
  p.max_images = 3;
  auto spec = analysis::kernels::key_image_spec(v, labels, kStyles, p);
  BOOST_TEST(spec.slice_index == (std::vector<int>{2, 4, 5}), boost::test_tools::per_element());
  BOOST_TEST(spec.patient_orientation == "L\\P");
  BOOST_TEST(spec.derivation_descriptions.size() == spec.images.size());
  spec.series_description = "pacsnode key images (test)";
  const auto written = dicom::write_key_images(spec, tmp.path / "out");
  BOOST_TEST_REQUIRE(written.size() == 3u);
  for (size_t i = 0; i < written.size(); ++i)
    BOOST_TEST(written[i].path == tmp.path / "out" / ("key_image_" + std::to_string(i + 1) + ".dcm"));
  verify_key_images(spec, written, files, tmp.path);
}

BOOST_AUTO_TEST_CASE(real_ct_3slice_key_images_are_valid_sc) {
  const auto dir = testsupport::test_data("dcmqi/data/segmentations/ct-3slice");
  BOOST_TEST_REQUIRE(fs::is_directory(dir), "missing " << dir);
  const auto files = testsupport::dicom_files(dir);
  const dicom::Volume v = read_volume(files);
  BOOST_TEST_REQUIRE(v.depth() == 3);
  // Body (HU > -300) and dense bone (HU > 300), as a thresholding stage would label them.
  std::vector<cv::Mat> labels;
  for (const auto& s : v.slices) {
    cv::Mat l(s.size(), CV_8U, cv::Scalar(0));
    l.setTo(1, s > -300);
    l.setTo(2, s > 300);
    labels.push_back(l);
  }
  const std::vector<SegmentStyle> styles{{1, "body", Rgb{255, 200, 0}}, {2, "bone", Rgb{0, 160, 255}}};
  KeyImageParams p;
  p.max_images = 2;
  // Bone only: its two largest slices (of three) are chosen.
  const std::span<const SegmentStyle> bone(styles.data() + 1, 1);
  auto spec = analysis::kernels::key_image_spec(v, labels, bone, p);
  BOOST_TEST(spec.slice_index == largest_slices(labels, 2, 2), boost::test_tools::per_element());
  // Both segments, three images: every slice, each with the body outline burned in.
  p.max_images = 3;
  spec = analysis::kernels::key_image_spec(v, labels, styles, p);
  BOOST_TEST(spec.slice_index == (std::vector<int>{0, 1, 2}), boost::test_tools::per_element());
  BOOST_TEST(spec.patient_orientation == "L\\P");
  for (size_t i = 0; i < spec.images.size(); ++i) {
    const cv::Mat slice = spec.images[i](cv::Rect(0, 0, p.long_side, p.long_side));
    BOOST_TEST(count_colour(slice, styles[0].colour) > 0);
    BOOST_TEST(count_colour(slice, styles[1].colour) > 0);
  }
  const TempDir tmp;
  spec.file_prefix = "ct3";
  const auto written = dicom::write_key_images(spec, tmp.path / "out");
  verify_key_images(spec, written, files, tmp.path);
}

BOOST_AUTO_TEST_CASE(frame_reference_bad_specs_and_nothing_to_write) {
  TempDir tmp;
  const auto files = testsupport::write_synthetic_ct(tmp.path / "ct", 16, 24, 2, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1, 1, 1);
  const auto series = testsupport::load_series(files);
  dicom::KeyImageSpec spec;
  spec.source_file = files.front();
  spec.sources = series.frames;
  // As if slice 1 were frame 2 of a multi-frame (Enhanced CT) source: dciodvfy accepts a
  // Referenced Frame Number only for a multi-frame SOP class.
  spec.sources[1].sop_class_uid = UID_EnhancedCTImageStorage;
  spec.sources[1].frame_number = 2;
  cv::Mat img(5, 7, CV_8UC3);  // odd size: odd pixel data length
  cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(256));
  spec.images = {img};
  spec.slice_index = {1};
  const auto written = dicom::write_key_images(spec, tmp.path / "frames");
  BOOST_TEST_REQUIRE(written.size() == 1u);
  expect_dciodvfy_clean(written[0].path);
  write_rgb(img, tmp.path / "img.rgb");
  const auto dumps = run_dump(spec.source_file, {{written[0].path, tmp.path / "img.rgb"}});
  BOOST_TEST_REQUIRE(dumps.size() == 1u);
  BOOST_TEST_REQUIRE(dumps[0].sources.size() == 1u);
  BOOST_TEST(dumps[0].sources[0][1] == series.frames[1].sop_instance_uid);
  BOOST_TEST(dumps[0].sources[0][2] == "2");
  BOOST_TEST(dumps[0].orientation == "-");  // unknown orientation: present, empty
  BOOST_TEST(dumps[0].pixels_diff == "0");
  BOOST_TEST(dumps[0].modality == "OT");

  // Bad specs are refused before anything is written.
  const fs::path out = tmp.path / "bad";
  auto refused = [&](dicom::KeyImageSpec s) {
    BOOST_CHECK_THROW(dicom::write_key_images(s, out), std::invalid_argument);
    BOOST_TEST((!fs::exists(out) || fs::is_empty(out)));
  };
  auto grey = spec;
  grey.images = {cv::Mat(5, 7, CV_8UC1, cv::Scalar(9))};
  refused(grey);
  auto out_of_range = spec;
  out_of_range.slice_index = {2};
  refused(out_of_range);
  auto mismatch = spec;
  mismatch.slice_index = {0, 1};
  refused(mismatch);
  auto descriptions = spec;
  descriptions.derivation_descriptions = {"a", "b"};
  refused(descriptions);
  auto no_uid = spec;
  no_uid.sources[1].sop_instance_uid.clear();
  refused(no_uid);
  // A missing source file is a DICOM read error, also before anything is written.
  auto missing = spec;
  missing.source_file = tmp.path / "nope.dcm";
  BOOST_CHECK_THROW(dicom::write_key_images(missing, out), dicom::DicomError);
  BOOST_TEST((!fs::exists(out) || fs::is_empty(out)));

  // A write that fails part way (key_image_2.dcm cannot replace a folder) leaves nothing behind.
  const fs::path partial = tmp.path / "partial";
  fs::create_directories(partial / "key_image_2.dcm");
  auto two = spec;
  two.images = {img, img};
  two.slice_index = {0, 1};
  BOOST_CHECK_THROW(dicom::write_key_images(two, partial), std::exception);
  BOOST_TEST(!fs::exists(partial / "key_image_1.dcm"));
  BOOST_TEST(!fs::exists(partial / "key_image_1.dcm.tmp"));
  BOOST_TEST(!fs::exists(partial / "key_image_2.dcm.tmp"));

  // No images: nothing written, nothing returned.
  auto none = spec;
  none.images.clear();
  none.slice_index.clear();
  BOOST_TEST(dicom::write_key_images(none, out).empty());
  BOOST_TEST((!fs::exists(out) || fs::is_empty(out)));
}

BOOST_AUTO_TEST_CASE(laterality_and_body_part_follow_the_source) {
  TempDir tmp;
  const auto files = testsupport::write_synthetic_ct(tmp.path / "ct", 8, 8, 1, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1, 1, 1);
  const auto series = testsupport::load_series(files);
  // (body part, laterality) in the source -> (laterality present, value) in the key image
  struct Case {
    const char* body_part;
    const char* laterality;  // nullptr: absent
    int present;
    std::string value;
  };
  const Case cases[] = {
      {"", nullptr, 1, "-"},       // nothing known: empty (unknown)
      {"CHEST", nullptr, 0, "-"},  // unpaired body part, no laterality in the source: absent
      {"KNEE", "R", 1, "R"},       // paired, known: copied
      {"KNEE", "", 1, "-"},        // paired, unknown in the source: empty
  };
  int n = 0;
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT("body part '" << c.body_part << "', laterality " << (c.laterality ? c.laterality : "absent")) {
      const fs::path src = tmp.path / ("src" + std::to_string(++n) + ".dcm");
      {
        DcmFileFormat ff;
        BOOST_TEST_REQUIRE(ff.loadFile(files.front().c_str()).good());
        DcmDataset& d = *ff.getDataset();
        if (*c.body_part) d.putAndInsertString(DCM_BodyPartExamined, c.body_part);
        if (c.laterality) d.putAndInsertString(DCM_Laterality, c.laterality);
        BOOST_TEST_REQUIRE(ff.saveFile(src.c_str(), EXS_LittleEndianExplicit).good());
      }
      dicom::KeyImageSpec spec;
      spec.source_file = src;
      spec.sources = series.frames;
      spec.images = {cv::Mat(4, 4, CV_8UC3, cv::Scalar(10, 20, 30))};
      spec.slice_index = {0};
      const auto written = dicom::write_key_images(spec, tmp.path / ("out" + std::to_string(n)));
      BOOST_TEST_REQUIRE(written.size() == 1u);
      expect_dciodvfy_clean(written[0].path);
      const auto dumps = run_dump(src, {{written[0].path, fs::path()}});
      BOOST_TEST_REQUIRE(dumps.size() == 1u);
      BOOST_TEST(dumps[0].laterality_present == c.present);
      BOOST_TEST(dumps[0].laterality == c.value);
      BOOST_TEST(dumps[0].body_part == (*c.body_part ? std::string(c.body_part) : std::string("-")));
    }
  }
}
