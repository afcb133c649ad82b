#define BOOST_TEST_MODULE seg_builder
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "dicom/codes.h"
#include "dicom/seg_builder.h"
#include "support/paths.h"
#include "support/seg_sources.h"

namespace fs = std::filesystem;
using namespace dicom;
using testsupport::SourceSeries;

namespace {

// What seg_dump.py rebuilt from one SEG.
struct DumpFrame {
  int segment = 0, src_frame = 0;
  std::string src_class, src_instance, derivation, purpose, dim, spatial_preserved;
  bool has_position = false;
  Vec3 position{};
  std::vector<std::uint8_t> pixels;
};
struct Dump {
  int rows = 0, cols = 0, max_fractional = 0, frames = 0;
  std::string type, sop_class, sop_instance, series, study, frame_of_reference, series_number, modality;
  std::vector<std::string> segment_lines;  // "number category type region algo label"
  std::multimap<std::string, std::string> refinst;  // instance -> series
  std::vector<std::string> dims;
  std::string shared;
  std::vector<DumpFrame> frame_list;
};

std::vector<std::uint8_t> from_hex(const std::string& hex) {
  std::vector<std::uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

Dump run_dump(const fs::path& seg) {
  const auto script = testsupport::source_dir() / "tests/scripts/seg_dump.py";
  const auto r = testsupport::run_command(std::string(testsupport::python()) + " " + testsupport::shell_quote(script.string()) +
                                          " " + testsupport::shell_quote(seg.string()));
  BOOST_TEST_REQUIRE(r.exit_code == 0, "seg_dump.py failed: " << r.output.substr(0, 2000));
  Dump d;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag;
    ls >> tag;
    if (tag == "SEG") {
      ls >> d.rows >> d.cols >> d.type >> d.max_fractional >> d.frames;
    } else if (tag == "UIDS") {
      ls >> d.sop_class >> d.sop_instance >> d.series >> d.study >> d.frame_of_reference;
    } else if (tag == "SERIES") {
      ls >> d.series_number >> d.modality;
    } else if (tag == "SEGMENT") {
      d.segment_lines.push_back(line.substr(8));
    } else if (tag == "REFINST") {
      std::string series, cls, inst;
      ls >> series >> cls >> inst;
      d.refinst.emplace(inst, series);
    } else if (tag == "DIM") {
      std::string a, b;
      ls >> a >> b;
      d.dims.push_back(a + "/" + b);
    } else if (tag == "SHARED") {
      d.shared = line.substr(7);
    } else if (tag == "FRAME") {
      DumpFrame f;
      int index;
      std::string x, y, z;
      ls >> index >> f.segment >> f.src_class >> f.src_instance >> f.src_frame >> x >> y >> z >> f.derivation >> f.purpose >> f.dim >> f.spatial_preserved;
      f.has_position = x != "-";
      if (f.has_position) f.position = {std::stod(x), std::stod(y), std::stod(z)};
      d.frame_list.push_back(f);
    } else if (tag == "PIX") {
      std::string hex;
      ls >> hex;
      BOOST_TEST_REQUIRE(!d.frame_list.empty());
      d.frame_list.back().pixels = from_hex(hex);
    }
  }
  return d;
}

using testsupport::expect_dciodvfy_clean;

std::string read_tag(const fs::path& f, const DcmTagKey& tag) {
  DcmFileFormat ff;
  BOOST_TEST_REQUIRE(ff.loadFile(f.c_str(), EXS_Unknown, EGL_noChange, 4096).good());
  OFString v;
  ff.getDataset()->findAndGetOFString(tag, v);
  return v.c_str();
}

// The stored values the SEG must hold for segment k (1-based) on slice z.
cv::Mat expected_frame(const SegSpec& s, int k, size_t z, int rows, int cols) {
  cv::Mat out(rows, cols, CV_8U, cv::Scalar(0));
  const cv::Mat& m = s.label_map.empty() ? s.segments[k - 1].mask[z] : s.label_map[z];
  if (m.empty()) return out;
  if (!s.label_map.empty()) {
    cv::Mat lm;
    m.convertTo(lm, CV_32S);
    cv::Mat eq = lm == k;
    out.setTo(1, eq);
  } else if (s.type == SegmentationType::fractional) {
    if (m.depth() == CV_32F)
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c)
          out.at<std::uint8_t>(r, c) = static_cast<std::uint8_t>(std::lround(std::clamp(m.at<float>(r, c), 0.f, 1.f) * 255));
    else
      m.copyTo(out);
  } else {
    out.setTo(1, m != 0);
  }
  return out;
}

// Everything a reader can check about one written SEG against its spec.
void verify_seg(const SegSpec& spec, const WrittenObject& w, const SourceSeries& src) {
  BOOST_TEST_REQUIRE(fs::exists(w.path));
  expect_dciodvfy_clean(w.path);
  const Dump d = run_dump(w.path);
  BOOST_TEST(d.rows == src.rows);
  BOOST_TEST(d.cols == src.cols);
  BOOST_TEST(d.type == (spec.type == SegmentationType::binary ? "BINARY" : "FRACTIONAL"));
  if (spec.type == SegmentationType::fractional) BOOST_TEST(d.max_fractional == 255);
  BOOST_TEST(d.sop_class == w.sop_class_uid);
  BOOST_TEST(d.sop_instance == w.sop_instance_uid);
  BOOST_TEST(d.series == w.series_uid);
  BOOST_TEST(d.series != src.series_uid);
  BOOST_TEST(d.study == read_tag(src.first_file, DCM_StudyInstanceUID));
  BOOST_TEST(d.modality == "SEG");
  BOOST_TEST(d.series_number == std::to_string(spec.series_number));
  BOOST_TEST(d.frames == w.number_of_frames);
  BOOST_TEST(static_cast<int>(d.frame_list.size()) == d.frames);
  if (spec.geom.has_frame_of_reference) {
    BOOST_TEST(d.frame_of_reference == read_tag(src.first_file, DCM_FrameOfReferenceUID));
    BOOST_TEST(d.dims == (std::vector<std::string>{"0062000B/0062000A", "00200032/00209113"}), boost::test_tools::per_element());
    std::istringstream sh(d.shared);
    double v[9];
    for (double& x : v) sh >> x;
    for (int i = 0; i < 3; ++i) {
      BOOST_TEST(v[i] == spec.geom.row_dir[i], boost::test_tools::tolerance(1e-6));
      BOOST_TEST(v[3 + i] == spec.geom.col_dir[i], boost::test_tools::tolerance(1e-6));
    }
    BOOST_TEST(v[6] == spec.geom.spacing_row, boost::test_tools::tolerance(1e-6));
    BOOST_TEST(v[7] == spec.geom.spacing_col, boost::test_tools::tolerance(1e-6));
  } else {
    BOOST_TEST(d.frame_of_reference == "-");
    BOOST_TEST(d.dims == (std::vector<std::string>{"0062000B/0062000A"}), boost::test_tools::per_element());
    BOOST_TEST(d.shared.substr(0, 2) == "- ");  // no plane orientation
  }
  // Segments: numbered 1..N, codes as given, never SRT.
  BOOST_TEST_REQUIRE(d.segment_lines.size() == spec.segments.size());
  for (size_t i = 0; i < spec.segments.size(); ++i) {
    const auto& s = spec.segments[i];
    std::ostringstream want;
    want << (i + 1) << " " << s.category.scheme << ":" << s.category.value << " " << s.type.scheme << ":" << s.type.value << " "
         << (s.anatomic_region ? s.anatomic_region->scheme + ":" + s.anatomic_region->value : std::string("-")) << " AUTOMATIC "
         << s.label;
    BOOST_TEST(d.segment_lines[i] == want.str());
  }
  // Referenced Series Sequence lists every source instance once, in the source series.
  std::set<std::string> instances;
  for (const auto& f : spec.sources) instances.insert(f.sop_instance_uid);
  BOOST_TEST(d.refinst.size() == instances.size());
  for (const auto& uid : instances) {
    BOOST_TEST(d.refinst.count(uid) == 1u, "source " << uid << " not referenced once");
    auto it = d.refinst.find(uid);
    if (it != d.refinst.end()) BOOST_TEST(it->second == src.series_uid);
  }
  // Rebuild every segment voxel for voxel from frames + functional groups.
  std::map<std::pair<std::string, int>, size_t> slice_of;
  for (size_t z = 0; z < spec.sources.size(); ++z) slice_of[{spec.sources[z].sop_instance_uid, spec.sources[z].frame_number}] = z;
  std::set<std::pair<int, size_t>> seen;
  for (const auto& f : d.frame_list) {
    BOOST_TEST(f.derivation == "113076");
    BOOST_TEST(f.purpose == "121322");
    BOOST_TEST(f.spatial_preserved == "YES");
    auto it = slice_of.find({f.src_instance, f.src_frame});
    BOOST_TEST_REQUIRE((it != slice_of.end()), "frame derived from an unknown source " << f.src_instance << ":" << f.src_frame);
    const size_t z = it->second;
    BOOST_TEST(f.src_class == spec.sources[z].sop_class_uid);
    BOOST_TEST(seen.insert({f.segment, z}).second, "segment " << f.segment << " slice " << z << " twice");
    BOOST_TEST(f.has_position == spec.geom.has_frame_of_reference);
    if (f.has_position) {
      for (int i = 0; i < 3; ++i) BOOST_TEST(f.position[i] == spec.sources[z].position[i], boost::test_tools::tolerance(1e-4));
      BOOST_TEST(f.dim == std::to_string(f.segment) + "," + std::to_string(z + 1));
    } else {
      BOOST_TEST(f.dim == std::to_string(f.segment));
    }
    BOOST_TEST_REQUIRE(f.pixels.size() == static_cast<size_t>(src.rows) * src.cols);
    const cv::Mat want = expected_frame(spec, f.segment, z, src.rows, src.cols);
    const cv::Mat got(src.rows, src.cols, CV_8U, const_cast<std::uint8_t*>(f.pixels.data()));
    BOOST_TEST(cv::countNonZero(want != got) == 0, "segment " << f.segment << " slice " << z << " differs");
  }
  // Omitted frames are exactly the empty ones (or none with keep_empty_frames).
  for (int k = 1; k <= static_cast<int>(spec.segments.size()); ++k)
    for (size_t z = 0; z < spec.sources.size(); ++z)
      if (!seen.count({k, z})) {
        BOOST_TEST(!spec.keep_empty_frames, "segment " << k << " slice " << z << " dropped with keep_empty_frames");
        BOOST_TEST(cv::countNonZero(expected_frame(spec, k, z, src.rows, src.cols)) == 0,
                   "segment " << k << " slice " << z << " is not empty but has no frame");
      }
}

SegmentSpec segment(const std::string& name, const std::string& label) {
  const auto c = codes::segment_codes(name);
  BOOST_TEST_REQUIRE(c.has_value());
  SegmentSpec s;
  s.label = label;
  s.category = c->category;
  s.type = c->type;
  s.anatomic_region = c->anatomic_region;
  s.cielab = {40000, 30000, 40000};
  return s;
}

SegSpec base_spec(const SourceSeries& src) {
  SegSpec s = testsupport::seg_spec_over(src);
  s.series_description = "test SEG";
  s.series_number = 901;
  s.algorithm_name = "unit test";
  s.algorithm_version = "1.2.3";
  return s;
}

// A disc of radius rad around (cx, cy) on each slice z in [z0, z1), else empty Mats.
std::vector<cv::Mat> discs(const SourceSeries& src, int cx, int cy, int rad, size_t z0, size_t z1) {
  std::vector<cv::Mat> v(src.frames.size());
  for (size_t z = z0; z < z1 && z < v.size(); ++z) {
    v[z] = cv::Mat(src.rows, src.cols, CV_8U, cv::Scalar(0));
    cv::circle(v[z], {cx, cy}, rad + static_cast<int>(z % 2), cv::Scalar(255), cv::FILLED);
  }
  return v;
}

using TempDir = testsupport::TempDir;

}  // namespace

BOOST_FIXTURE_TEST_SUITE(seg, TempDir)

BOOST_AUTO_TEST_CASE(phantom_ct_overlapping_binary_segments) {
  const auto dir = path / "phantom";
  const auto r = testsupport::run_command(std::string(testsupport::python()) + " " +
                                          testsupport::shell_quote((testsupport::phantom_script()).string()) +
                                          " " + testsupport::shell_quote(dir.string()) + " --slices 8 --size 64");
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  const auto src = testsupport::load_series(testsupport::dicom_files(dir));
  BOOST_TEST_REQUIRE(src.frames.size() == 8u);
  auto spec = base_spec(src);
  spec.segments.push_back(segment("body", "Body"));
  spec.segments.back().mask = discs(src, 32, 32, 20, 0, 8);
  spec.segments.push_back(segment("lung", "Lungs"));
  spec.segments.back().mask = discs(src, 28, 30, 8, 2, 6);  // overlaps Body, empty on 4 slices
  const auto w = write_seg(spec, path / "phantom.seg.dcm");
  BOOST_TEST(w.number_of_frames == 8 + 4);
  BOOST_TEST(w.tracking_uids.size() == 2u);
  verify_seg(spec, w, src);
}

BOOST_AUTO_TEST_CASE(non_square_coronal_label_map) {
  // 24 rows x 40 columns, coronal planes, different row/column spacing: a swap would show.
  const auto files = testsupport::write_synthetic_ct(path / "coronal", 24, 40, 5, {1, 0, 0}, {0, 0, -1}, {-20, 10, 30}, 0.9, 0.6, 2.5);
  const auto src = testsupport::load_series(files);
  BOOST_TEST_REQUIRE(src.rows == 24);
  BOOST_TEST_REQUIRE(src.cols == 40);
  auto spec = base_spec(src);
  spec.segments.push_back(segment("left_lung", "Left lung"));
  spec.segments.push_back(segment("right_lung", "Right lung"));
  spec.label_map.resize(src.frames.size());
  for (size_t z = 0; z < spec.label_map.size(); ++z) {
    if (z == 2) continue;  // empty slice: no frame for either segment
    cv::Mat lm(24, 40, CV_8U, cv::Scalar(0));
    cv::rectangle(lm, cv::Rect(2, 3, 10 + static_cast<int>(z), 5), cv::Scalar(1), cv::FILLED);  // asymmetric
    cv::rectangle(lm, cv::Rect(30, 15, 7, 8), cv::Scalar(2), cv::FILLED);
    spec.label_map[z] = lm;
  }
  const auto w = write_seg(spec, path / "coronal.seg.dcm");
  BOOST_TEST(w.number_of_frames == 2 * 4);
  verify_seg(spec, w, src);
}

BOOST_AUTO_TEST_CASE(keep_empty_frames_writes_every_slice) {
  const auto files = testsupport::write_synthetic_ct(path / "keep", 16, 12, 4, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 3.0);
  const auto src = testsupport::load_series(files);
  auto spec = base_spec(src);
  spec.keep_empty_frames = true;
  spec.segments.push_back(segment("bone", "Bone"));
  spec.segments.back().mask = discs(src, 5, 6, 2, 1, 2);
  const auto w = write_seg(spec, path / "keep.seg.dcm");
  BOOST_TEST(w.number_of_frames == 4);
  verify_seg(spec, w, src);
}

BOOST_AUTO_TEST_CASE(all_empty_still_writes_one_frame) {
  const auto files = testsupport::write_synthetic_ct(path / "empty", 8, 8, 3, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 1.0);
  const auto src = testsupport::load_series(files);
  auto spec = base_spec(src);
  spec.segments.push_back(segment("tissue", "Nothing"));
  spec.segments.back().mask.resize(3);
  const auto w = write_seg(spec, path / "empty.seg.dcm");
  BOOST_TEST(w.number_of_frames == 1);
  expect_dciodvfy_clean(w.path);
  const auto d = run_dump(w.path);
  BOOST_TEST_REQUIRE(d.frame_list.size() == 1u);
  BOOST_TEST(d.frame_list[0].segment == 1);
}

BOOST_AUTO_TEST_CASE(dcmqi_single_frame_38x23) {
  const auto src = testsupport::load_series(testsupport::dicom_files(testsupport::test_data("dcmqi/data/segmentations/23x38x3/image")));
  BOOST_TEST_REQUIRE(src.frames.size() == 3u);
  BOOST_TEST_REQUIRE(src.rows == 38);
  BOOST_TEST_REQUIRE(src.cols == 23);
  auto spec = base_spec(src);
  spec.segments.push_back(segment("organ", "Organ"));
  auto& m = spec.segments.back().mask;
  m.resize(3);
  for (size_t z = 0; z < 3; ++z) {
    m[z] = cv::Mat(38, 23, CV_8U, cv::Scalar(0));
    m[z](cv::Rect(1 + static_cast<int>(z), 2, 5, 30)).setTo(1);  // tall, thin: rows/cols swap would show
  }
  const auto w = write_seg(spec, path / "dcmqi_sf.seg.dcm");
  BOOST_TEST(w.number_of_frames == 3);
  verify_seg(spec, w, src);
}

BOOST_AUTO_TEST_CASE(dcmqi_multiframe_source_references_frames) {
  const auto src = testsupport::load_series({testsupport::test_data("dcmqi/data/segmentations/23x38x3/multiframe/mf.dcm")});
  BOOST_TEST_REQUIRE(src.frames.size() == 3u);
  BOOST_TEST(src.frames[0].frame_number >= 1);
  auto spec = base_spec(src);
  spec.segments.push_back(segment("tissue", "Tissue"));
  spec.segments.back().mask = discs(src, 11, 19, 5, 0, 3);
  const auto w = write_seg(spec, path / "dcmqi_mf.seg.dcm");
  BOOST_TEST(w.number_of_frames == 3);
  verify_seg(spec, w, src);
}

BOOST_AUTO_TEST_CASE(projection_image_without_frame_of_reference) {
  const auto src = testsupport::load_series({testsupport::test_data("highdicom/data/test_files/dx_image.dcm")});
  BOOST_TEST_REQUIRE(!src.geom.has_frame_of_reference);
  auto spec = base_spec(src);
  spec.segments.push_back(segment("lung", "Lung"));
  spec.segments.back().mask.resize(1);
  spec.segments.back().mask[0] = cv::Mat(src.rows, src.cols, CV_8U, cv::Scalar(0));
  cv::ellipse(spec.segments.back().mask[0], {60, 80}, {30, 50}, 0, 0, 360, cv::Scalar(1), cv::FILLED);
  const auto w = write_seg(spec, path / "dx.seg.dcm");
  BOOST_TEST(w.number_of_frames == 1);
  verify_seg(spec, w, src);
}

BOOST_AUTO_TEST_CASE(fractional_probabilities) {
  const auto files = testsupport::write_synthetic_ct(path / "frac", 20, 30, 3, {0, 1, 0}, {0, 0, -1}, {5, -5, 100}, 0.5, 0.75, 1.5);
  const auto src = testsupport::load_series(files);
  auto spec = base_spec(src);
  spec.type = SegmentationType::fractional;
  spec.segments.push_back(segment("emphysema", "Emphysema probability"));
  spec.segments.push_back(segment("lung", "Lung probability (8-bit)"));
  auto& p = spec.segments[0].mask;
  auto& q = spec.segments[1].mask;
  p.resize(3);
  q.resize(3);
  for (size_t z = 0; z < 3; ++z) {
    if (z == 1) continue;
    p[z] = cv::Mat(20, 30, CV_32F);
    for (int r = 0; r < 20; ++r)
      for (int c = 0; c < 30; ++c) p[z].at<float>(r, c) = std::max(0.f, 1.f - (std::hypot(r - 10.f, c - 12.f - z) / 9.f));
    q[z] = cv::Mat(20, 30, CV_8U, cv::Scalar(0));
    q[z](cv::Rect(20, 2, 6, 16)).setTo(200);
  }
  const auto w = write_seg(spec, path / "frac.seg.dcm");
  BOOST_TEST(w.number_of_frames == 4);
  verify_seg(spec, w, src);
}

BOOST_AUTO_TEST_CASE(bad_specs_are_refused_with_a_reason) {
  const auto files = testsupport::write_synthetic_ct(path / "bad", 10, 12, 2, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 1.0);
  const auto src = testsupport::load_series(files);
  auto good = base_spec(src);
  good.segments.push_back(segment("bone", "Bone"));
  good.segments.back().mask = discs(src, 5, 5, 2, 0, 2);
  auto expect_refusal = [&](SegSpec s, const std::string& needle) {
    try {
      write_seg(s, path / "bad.seg.dcm");
      BOOST_ERROR("accepted a spec that should fail with '" << needle << "'");
    } catch (const std::invalid_argument& e) {
      BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
    BOOST_TEST(!fs::exists(path / "bad.seg.dcm"));
  };
  auto swapped = good;  // rows and columns swapped
  swapped.segments[0].mask[0] = cv::Mat(12, 10, CV_8U, cv::Scalar(1));
  expect_refusal(swapped, "cols x rows");
  auto srt = good;
  srt.segments[0].type = Code{"T-D016E", "SRT", "Bone"};
  expect_refusal(srt, "SRT");
  auto short_mask = good;
  short_mask.segments[0].mask.pop_back();
  expect_refusal(short_mask, "slices");
  auto none = good;
  none.segments.clear();
  expect_refusal(none, "no segments");
  auto frac8 = good;  // float mask in a BINARY SEG
  frac8.segments[0].mask[0] = cv::Mat(10, 12, CV_32F, cv::Scalar(0.5));
  expect_refusal(frac8, "BINARY");
}

BOOST_AUTO_TEST_CASE(profile_code_table_is_sct_and_complete) {
  for (const char* name : {"body", "lung", "left_lung", "right_lung", "bone", "tissue", "organ", "emphysema"}) {
    const auto c = codes::segment_codes(name);
    BOOST_TEST_REQUIRE(c.has_value(), name);
    for (const Code* code : {&c->category, &c->type}) {
      BOOST_TEST(code->scheme == "SCT", name);
      BOOST_TEST(!code->value.empty());
      BOOST_TEST(!code->meaning.empty());
    }
    if (c->anatomic_region) BOOST_TEST(c->anatomic_region->scheme == "SCT");
  }
  BOOST_TEST(!codes::segment_codes("no such profile").has_value());
  BOOST_TEST(codes::segment_codes("lung")->type.value == "39607008");
  BOOST_TEST(codes::segment_codes("left_lung")->type.value == "44029006");
  BOOST_TEST(codes::segment_codes("right_lung")->type.value == "3341006");
  BOOST_TEST(codes::intensity_unit("HU").value == "[hnsf'U]");
  BOOST_TEST(codes::intensity_unit("US").value == "[arb'U]");
  BOOST_TEST(codes::procedure_for_modality("CT").value == "25045-6");
  BOOST_TEST(codes::known_private_scheme("99PACSNODE").has_value());
  BOOST_TEST(!codes::known_private_scheme("SCT").has_value());
}

BOOST_AUTO_TEST_SUITE_END()
