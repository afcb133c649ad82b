#define BOOST_TEST_MODULE results_conformance
#include <boost/test/unit_test.hpp>

// "Results as standard DICOM", checked on the real pipeline output (not hand-made masks): for a
// synthetic chest CT, a real CT, a 2D projection image and multi-frame sources, decode > run the
// matching profile > write_seg_and_sr, then
//   * dciodvfy (dicom3tools) reports no error on the SEG and the SR (warnings are listed);
//   * pixelmed's DicomSRValidator reports no error on the SR;
//   * pydicom rebuilds the label map from the SEG alone (frames + functional groups) and it equals
//     the pipeline's final label map voxel for voxel, every frame at its source's position
//     (tests/scripts/conformance_seg_rebuild.py);
//   * the SR's referenced segments, source series and evidence resolve to the SEG and source
//     actually written (tests/scripts/conformance_sr_refs.py).
// PACSNODE_KEEP_TEST_OUTPUT=1 keeps the written files (and label dumps) for inspection.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "analysis/pipeline.h"
#include "analysis/results.h"
#include "support/paths.h"
#include "support/seg_sources.h"

namespace fs = std::filesystem;
using namespace analysis;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/pacsnode-results-conformance-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    if (!std::getenv("PACSNODE_KEEP_TEST_OUTPUT"))
      fs::remove_all(path, ec);
    else
      BOOST_TEST_MESSAGE("kept " << path);
  }
};

// The one Pipeline of the module: SeriesContext::profile points into its profiles.
const Pipeline& pipeline() {
  static const Pipeline p;
  return p;
}

// Decoded study -> the single volume, run with the profile the pipeline selects for it.
SeriesContext analyse(StudyContext study, const std::string& expected_profile) {
  for (const auto& r : study.rejected) BOOST_TEST_MESSAGE("decode rejected " << r.path << ": " << r.reason);
  BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
  SeriesContext c;
  c.profile = pipeline().select(study.volumes[0].info);
  BOOST_TEST_REQUIRE(c.profile != nullptr);
  BOOST_TEST_REQUIRE(c.profile->name == expected_profile);
  c.volume = std::move(study.volumes[0]);
  pipeline().run(c);
  for (const auto& n : c.notes) BOOST_TEST_MESSAGE("pipeline note: " << n);
  return c;
}

std::string number(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

// c.labels as raw uint8 (z-major) and the tab-separated description conformance_*.py read.
void dump_pipeline_labels(const SeriesContext& c, const fs::path& labels, const fs::path& dump) {
  const auto& v = c.volume;
  std::ofstream raw(labels, std::ios::binary);
  for (const auto& s : c.labels)
    for (int r = 0; r < s.rows; ++r) raw.write(s.ptr<char>(r), s.cols);
  raw.close();
  BOOST_TEST_REQUIRE(!raw.fail());
  std::ofstream d(dump);
  d << "VOLUME\t" << v.depth() << '\t' << v.rows() << '\t' << v.cols() << '\t'
    << (v.geom.has_frame_of_reference ? 1 : 0) << '\n';
  d << "SERIES\t" << v.info.series_uid << '\n';
  for (std::size_t i = 0; i < c.segments.size(); ++i) {
    const auto& g = c.segments[i];
    d << "SEGMENT\t" << i + 1 << '\t' << (g.display_name.empty() ? g.name : g.display_name) << '\t';
    for (std::size_t j = 0; j < g.also_labels.size(); ++j) d << (j ? "," : "") << g.also_labels[j];
    d << '\n';
  }
  for (std::size_t z = 0; z < v.sources.size(); ++z) {
    const auto& s = v.sources[z];
    d << "SLICE\t" << z << '\t' << s.sop_class_uid << '\t' << s.sop_instance_uid << '\t' << s.frame_number;
    if (v.geom.has_frame_of_reference)
      d << '\t' << number(s.position[0]) << '\t' << number(s.position[1]) << '\t' << number(s.position[2]);
    else
      d << "\t-\t-\t-";
    d << '\t' << s.path << '\n';
  }
  d.close();
  BOOST_TEST_REQUIRE(!d.fail());
}

std::vector<std::string> lines_starting(const std::string& text, const std::string& word) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(word + " ", 0) == 0) out.push_back(line.substr(word.size() + 1));
  return out;
}

// Runs a conformance script; every ERROR line fails the test; returns the SUMMARY fields.
std::vector<long> run_script(const std::string& script, const std::vector<fs::path>& args, const std::string& what) {
  std::string cmd = std::string(testsupport::python()) + " " +
                    testsupport::shell_quote((testsupport::source_dir() / "tests/scripts" / script).string());
  for (const auto& a : args) cmd += " " + testsupport::shell_quote(a.string());
  const auto r = testsupport::run_command(cmd);
  for (const auto& e : lines_starting(r.output, "ERROR")) BOOST_ERROR(what << ": " << e);
  const auto summary = lines_starting(r.output, "SUMMARY");
  BOOST_TEST_REQUIRE(summary.size() == 1u,
                     script << " gave no summary (status " << r.exit_code << "): " << r.output.substr(0, 3000));
  BOOST_TEST(r.exit_code == 0, script << " exit status " << r.exit_code);
  std::vector<long> fields;
  std::istringstream in(summary.front());
  for (long x; in >> x;) fields.push_back(x);
  return fields;
}

// dciodvfy: checked as `iod` (the IOD name it prints on a line of its own), no "Error" line;
// warnings listed. Returns the number of warnings.
int dciodvfy_errors_fail(const fs::path& f, const std::string& iod, const std::string& what) {
  const auto r = testsupport::dciodvfy(f);
  bool checked_as_iod = false;  // a line holding just the IOD name
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) checked_as_iod = checked_as_iod || line == iod;
  BOOST_TEST(checked_as_iod, "dciodvfy did not check " << what << " as " << iod << ": " << r.output.substr(0, 500));
  const auto warnings = testsupport::lines_with(r.output, "Warning");
  for (const auto& w : warnings) BOOST_TEST_MESSAGE("dciodvfy " << what << ": " << w);
  const auto errors = testsupport::lines_with(r.output, "Error");
  for (const auto& e : errors) BOOST_ERROR("dciodvfy " << what << ": " << e);
  return static_cast<int>(warnings.size());
}

// pixelmed DicomSRValidator: no "Error" line, no exception. Returns the number of warnings.
int pixelmed_errors_fail(const fs::path& f, const std::string& what) {
  const auto r = testsupport::pixelmed_sr_validator(f);
  const auto warnings = testsupport::lines_with(r.output, "Warning");
  for (const auto& w : warnings) BOOST_TEST_MESSAGE("pixelmed " << what << ": " << w);
  const auto errors = testsupport::lines_with(r.output, "Error");
  for (const auto& e : errors) BOOST_ERROR("pixelmed " << what << ": " << e);
  BOOST_TEST(r.output.find("Exception") == std::string::npos, "DicomSRValidator failed: " << r.output.substr(0, 1000));
  // It ran to the end and validated the content tree against TID 1500.
  BOOST_TEST(r.output.find("Found Root Template TID_1500") != std::string::npos, r.output.substr(0, 1000));
  BOOST_TEST(r.output.find("Root Template Validation Complete") != std::string::npos, r.output.substr(0, 1000));
  BOOST_TEST(r.output.find("IOD validation complete") != std::string::npos, r.output.substr(0, 1000));
  return static_cast<int>(warnings.size());
}

// SR measurement groups results.cpp writes: segments with at least one measurement.
std::size_t groups_expected(const SeriesContext& c) {
  std::size_t n = 0;
  const bool hu = c.volume.info.units == "HU";
  for (const auto& s : c.segments)
    if (s.features.count("volume_ml") || (hu && s.features.count("mean_hu")) || s.features.count("laa950_percent")) ++n;
  return n;
}

// The whole acceptance list on one analysed series.
void check_results(SeriesContext& c, const fs::path& out, const std::string& what) {
  BOOST_TEST_REQUIRE(!c.resampled);
  BOOST_TEST_REQUIRE(!c.segments.empty(), what << ": the pipeline found no segment");
  const DicomOutputs files = write_seg_and_sr(c, out);
  BOOST_TEST_REQUIRE(fs::exists(files.seg));
  BOOST_TEST_REQUIRE(fs::exists(files.sr));

  // After write_seg_and_sr c.labels holds the SEG segment numbers 1..N, one CV_8U slice per source.
  const auto& v = c.volume;
  const int n_segments = static_cast<int>(c.segments.size());
  BOOST_TEST_REQUIRE(c.labels.size() == v.sources.size());
  int expected_frames = 0, slices_with_labels = 0;
  long labelled = 0;
  std::vector<long> voxels(n_segments + 1, 0);
  for (const auto& s : c.labels) {
    BOOST_TEST_REQUIRE(s.type() == CV_8U);
    BOOST_TEST_REQUIRE(s.rows == v.rows());
    BOOST_TEST_REQUIRE(s.cols == v.cols());
    std::array<long, 256> count{};
    for (int r = 0; r < s.rows; ++r)
      for (const std::uint8_t* p = s.ptr<std::uint8_t>(r); p != s.ptr<std::uint8_t>(r) + s.cols; ++p) ++count[*p];
    int here = 0;
    for (int k = 1; k < 256; ++k) {
      if (count[k] == 0) continue;
      BOOST_TEST_REQUIRE(k <= n_segments, "label " << k << " is no segment");
      labelled += count[k], ++here;
    }
    // A segment's frame holds its own label and the labels it covers (the body holds the lungs).
    for (int k = 1; k <= n_segments; ++k) {
      long n = 0;
      for (int l = 1; l < 256; ++l)
        if (count[l] && c.segments[k - 1].covers(l)) n += count[l];
      voxels[k] += n;
      expected_frames += n ? 1 : 0;
    }
    slices_with_labels += here ? 1 : 0;
  }
  for (int k = 1; k <= n_segments; ++k) {
    BOOST_TEST(c.segments[k - 1].label == k);
    // The SEG segment is what was measured.
    BOOST_TEST(voxels[k] == c.segments[k - 1].voxels, what << " segment " << c.segments[k - 1].name);
  }

  const fs::path labels = out / "labels.u8", dump = out / "labels.tsv";
  dump_pipeline_labels(c, labels, dump);
  const auto seg = run_script("conformance_seg_rebuild.py", {files.seg, dump, labels}, what + " SEG");
  BOOST_TEST_REQUIRE(seg.size() == 5u);
  BOOST_TEST(seg[0] == std::max(expected_frames, 1), what << ": SEG frames");
  BOOST_TEST(seg[1] == n_segments, what << ": SEG segments");
  BOOST_TEST(seg[2] == slices_with_labels);
  BOOST_TEST(seg[3] == labelled);
  BOOST_TEST(seg[4] == 0, what << ": voxels differing between SEG and pipeline");

  const auto sr = run_script("conformance_sr_refs.py", {files.sr, files.seg, dump}, what + " SR");
  BOOST_TEST_REQUIRE(sr.size() == 4u);
  BOOST_TEST(sr[0] == static_cast<long>(groups_expected(c)), what << ": SR measurement groups");
  BOOST_TEST(sr[1] == static_cast<long>(groups_expected(c)), what << ": SEG segments referenced by the SR");
  BOOST_TEST(sr[2] == sr[0]);
  std::set<std::string> instances;
  for (const auto& s : v.sources) instances.insert(s.sop_instance_uid);
  BOOST_TEST(sr[3] == static_cast<long>(instances.size() + 1), what << ": evidence = source instances + SEG");

  const int seg_warnings = dciodvfy_errors_fail(files.seg, "Segmentation", what + " SEG");
  const int sr_warnings = dciodvfy_errors_fail(files.sr, "Comprehensive3DSR", what + " SR");
  const int pixelmed_warnings = pixelmed_errors_fail(files.sr, what + " SR");

  std::ostringstream names;
  for (const auto& s : c.segments) names << ' ' << s.label << ':' << s.name << '(' << s.voxels << ')';
  BOOST_TEST_MESSAGE(what << ": profile " << c.profile->name << ", " << v.depth() << "x" << v.rows() << "x" << v.cols()
                          << ", " << n_segments << " segments" << names.str() << ", SEG " << seg[0] << " frames on "
                          << seg[2] << " slices, SR " << sr[0] << " groups, evidence " << sr[3]
                          << " instances; warnings: dciodvfy SEG " << seg_warnings << ", dciodvfy SR " << sr_warnings
                          << ", pixelmed SR " << pixelmed_warnings);
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(results_conformance, TempDir)

// The segments' Recommended Display CIELab Value against published sRGB (D65) L*a*b* values: white
// and black (exact), mid grey 128 (L* 53.59) and the sRGB primaries (L*, a*, b* from the CIE
// formulas with the IEC 61966-2-1 matrix), to 0.1 unit.
BOOST_AUTO_TEST_CASE(display_colours_as_dicom_cielab) {
  const auto check = [](analysis::kernels::Rgb rgb, double l, double a, double b) {
    const auto v = analysis::cielab_of(rgb);
    const double got_l = v[0] / 65535.0 * 100.0, got_a = v[1] / 65535.0 * 255.0 - 128.0,
                 got_b = v[2] / 65535.0 * 255.0 - 128.0;
    BOOST_TEST(std::abs(got_l - l) <= 0.1, int(rgb.r) << "," << int(rgb.g) << "," << int(rgb.b) << " L* " << got_l);
    BOOST_TEST(std::abs(got_a - a) <= 0.1, int(rgb.r) << "," << int(rgb.g) << "," << int(rgb.b) << " a* " << got_a);
    BOOST_TEST(std::abs(got_b - b) <= 0.1, int(rgb.r) << "," << int(rgb.g) << "," << int(rgb.b) << " b* " << got_b);
  };
  BOOST_TEST((analysis::cielab_of({255, 255, 255}) == std::array<std::uint16_t, 3>{65535, 32896, 32896}));
  BOOST_TEST((analysis::cielab_of({0, 0, 0}) == std::array<std::uint16_t, 3>{0, 32896, 32896}));
  check({128, 128, 128}, 53.59, 0, 0);
  check({255, 0, 0}, 53.24, 80.09, 67.20);
  check({0, 255, 0}, 87.73, -86.18, 83.18);
  check({0, 0, 255}, 32.30, 79.19, -107.86);
}

BOOST_AUTO_TEST_CASE(synthetic_chest_ct) {
  const auto dir = path / "phantom";
  const auto r = testsupport::run_command(
      std::string(testsupport::python()) + " " +
      testsupport::shell_quote(testsupport::phantom_script().string()) + " " +
      testsupport::shell_quote(dir.string()) + " --slices 24 --size 96");
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  SeriesContext c = analyse(decode_folder(dir), "ct-chest");
  BOOST_TEST(c.volume.depth() == 24);
  for (const char* name : {"body", "right_lung", "left_lung"}) BOOST_TEST(c.segment(name) != nullptr, name);
  fs::create_directories(path / "out");
  check_results(c, path / "out", "synthetic chest CT");
}

BOOST_AUTO_TEST_CASE(real_chest_abdomen_ct) {
  SeriesContext c =
      analyse(decode_folder(testsupport::test_data("mirp/ct_images_seg/CRLM-CT-1004/image")), "ct-chest");
  BOOST_TEST(c.volume.depth() == 18);  // slices 1-01..1-18 of 41 (tests/data/README.md)
  BOOST_TEST(c.volume.rows() == 512);
  for (const char* name : {"body", "right_lung", "left_lung"}) BOOST_TEST(c.segment(name) != nullptr, name);
  check_results(c, path, "real CT CRLM-CT-1004");
}

BOOST_AUTO_TEST_CASE(projection_2d_image) {
  SeriesContext c =
      analyse(decode_files({testsupport::test_data("highdicom/data/test_files/dx_image.dcm")}), "generic");
  BOOST_TEST(c.volume.depth() == 1);
  BOOST_TEST(!c.volume.geom.has_frame_of_reference);
  check_results(c, path, "2D DX image");
}

BOOST_AUTO_TEST_CASE(multiframe_source) {
  const auto mf = testsupport::test_data("dcmqi/data/segmentations/24x38x3/multiframe/mf.dcm");
  SeriesContext c = analyse(decode_files({mf}), "generic");
  BOOST_TEST_REQUIRE(c.volume.depth() == 3);
  BOOST_TEST(c.volume.rows() == 38);
  BOOST_TEST(c.volume.cols() == 24);
  // A multi-frame SEG source: every slice is a numbered frame of the one instance.
  std::set<int> frames;
  for (const auto& s : c.volume.sources) {
    BOOST_TEST(s.sop_instance_uid == c.volume.sources.front().sop_instance_uid);
    BOOST_TEST(s.frame_number >= 1);
    frames.insert(s.frame_number);
  }
  BOOST_TEST(frames.size() == 3u);
  check_results(c, path, "multi-frame Legacy Converted Enhanced CT");
}

// mf.dcm is itself a mask (only frame 2 is non-zero), so its SEG has a single frame. An Enhanced MR
// (Bruker, 4 frames of 128x256, per-frame positions) gives a multi-frame source whose segment spans
// several frames, so that the frame -> Referenced Frame Number mapping is checked on each of them.
BOOST_AUTO_TEST_CASE(enhanced_mr_multiframe_source) {
  const auto mf = testsupport::test_data("fo-dicom/TestData/mr_brucker.dcm");
  SeriesContext c = analyse(decode_files({mf}), "generic");
  BOOST_TEST_REQUIRE(c.volume.depth() == 4);
  BOOST_TEST(c.volume.rows() == 128);
  BOOST_TEST(c.volume.cols() == 256);
  std::set<int> frames;
  for (const auto& s : c.volume.sources) {
    BOOST_TEST(s.sop_instance_uid == c.volume.sources.front().sop_instance_uid);
    frames.insert(s.frame_number);
  }
  BOOST_TEST(frames == (std::set<int>{1, 2, 3, 4}), boost::test_tools::per_element());
  int slices_with_segment = 0;
  for (const auto& s : c.labels) slices_with_segment += cv::countNonZero(s) > 0 ? 1 : 0;
  BOOST_TEST(slices_with_segment >= 2);
  check_results(c, path, "multi-frame Enhanced MR (Bruker)");
}

BOOST_AUTO_TEST_SUITE_END()
