#define BOOST_TEST_MODULE seg_builder
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
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
#include "dicom/series_loader.h"
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
    out.setTo(1, lm == k);
    for (int l : s.segments[k - 1].also_labels) out.setTo(1, lm == l);
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

// The attributes that differ between two writes of one spec: new UIDs, and the time of writing.
const DcmTagKey volatile_tags[] = {DCM_SOPInstanceUID,  DCM_MediaStorageSOPInstanceUID, DCM_DimensionOrganizationUID,
                                   DCM_SeriesDate,       DCM_SeriesTime,                 DCM_ContentDate,
                                   DCM_ContentTime,      DCM_InstanceCreationDate,       DCM_InstanceCreationTime};

std::vector<std::string> dump_lines(DcmItem& item) {
  std::ostringstream out;
  item.print(out, DCMTypes::PF_shortenLongTagValues);
  std::vector<std::string> lines;
  std::istringstream in(out.str());
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// write_seg against write_seg_reference (every frame through dcmseg, as before write_seg built the
// per-frame groups and the pixel data itself): the same spec must give the same object, attribute
// for attribute and byte for byte in Pixel Data, apart from new UIDs and the time of writing.
void expect_same_as_reference(SegSpec spec, const fs::path& dir, const std::string& name) {
  spec.series_uid = "1.2.826.0.1.3680043.8.498.1";  // else a new one per write
  for (size_t i = 0; i < spec.segments.size(); ++i)
    spec.segments[i].tracking_uid = "1.2.826.0.1.3680043.8.498.2." + std::to_string(i + 1);
  const auto fast = write_seg(spec, dir / (name + ".seg.dcm"));
  const auto ref = write_seg_reference(spec, dir / (name + ".reference.seg.dcm"));
  BOOST_TEST(fast.number_of_frames == ref.number_of_frames, name);
  DcmFileFormat a, b;
  BOOST_TEST_REQUIRE(a.loadFile(fast.path.c_str()).good());
  BOOST_TEST_REQUIRE(b.loadFile(ref.path.c_str()).good());
  DcmDataset& da = *a.getDataset();
  DcmDataset& db = *b.getDataset();
  const Uint8 *pa = nullptr, *pb = nullptr;
  unsigned long na = 0, nb = 0;
  BOOST_TEST_REQUIRE(da.findAndGetUint8Array(DCM_PixelData, pa, &na).good());
  BOOST_TEST_REQUIRE(db.findAndGetUint8Array(DCM_PixelData, pb, &nb).good());
  BOOST_TEST_REQUIRE(na == nb, name << ": pixel data " << na << " bytes, reference " << nb);
  BOOST_TEST(std::memcmp(pa, pb, na) == 0, name << ": pixel data differs from the reference encoding");
  DcmElement* va = nullptr;
  DcmElement* vb = nullptr;
  BOOST_TEST_REQUIRE(da.findAndGetElement(DCM_PixelData, va).good());
  BOOST_TEST_REQUIRE(db.findAndGetElement(DCM_PixelData, vb).good());
  BOOST_TEST(DcmVR(va->getVR()).getVRName() == std::string(DcmVR(vb->getVR()).getVRName()), name);
  for (const auto& tag : volatile_tags)
    for (DcmDataset* d : {&da, &db}) d->findAndDeleteElement(tag, OFTrue, OFTrue);
  const auto la = dump_lines(da), lb = dump_lines(db);
  BOOST_TEST_REQUIRE(la.size() == lb.size(), name << ": " << la.size() << " dump lines, reference " << lb.size());
  for (size_t i = 0; i < la.size(); ++i)
    if (la[i] != lb[i]) {
      BOOST_ERROR(name << ": line " << i << " differs from the reference encoding:\n  " << la[i] << "\n  " << lb[i]);
      break;
    }
  BOOST_TEST(da.compare(db) == 0, name << ": datasets differ (DcmItem::compare)");
}

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

BOOST_AUTO_TEST_CASE(fast_encoding_equals_dcmseg_reference) {
  // 23 x 38 = 874 pixels: BINARY frames do not end on a byte boundary, so the bits of one frame
  // run on in the byte of the next, and an odd number of bytes gets a pad byte.
  const auto files = testsupport::write_synthetic_ct(path / "odd", 23, 38, 11, {1, 0, 0}, {0, 1, 0}, {-3, 4, 5}, 0.7, 0.9, 2.0);
  const auto src = testsupport::load_series(files);
  auto labels = base_spec(src);  // label map with overlapping segments (also_labels), an empty slice
  for (const char* name : {"body", "left_lung", "right_lung", "bone"}) labels.segments.push_back(segment(name, name));
  labels.segments[0].also_labels = {2, 3, 4};
  labels.label_map.resize(src.frames.size());
  for (size_t z = 0; z < src.frames.size(); ++z) {
    if (z == 4) continue;
    cv::Mat lm(23, 38, CV_8U, cv::Scalar(0));
    cv::ellipse(lm, {19, 11}, {15 - static_cast<int>(z % 3), 9}, 0, 0, 360, cv::Scalar(1), cv::FILLED);
    if (z % 5 != 0) cv::circle(lm, {12, 11}, 3 + static_cast<int>(z % 2), cv::Scalar(2), cv::FILLED);
    cv::circle(lm, {26, 10}, 3, cv::Scalar(3), cv::FILLED);
    if (z > 6) lm(cv::Rect(17, 18, 4, 3)).setTo(4);
    labels.label_map[z] = lm;
  }
  expect_same_as_reference(labels, path, "label_map_odd_frames");
  auto kept = labels;
  kept.keep_empty_frames = true;
  expect_same_as_reference(kept, path, "label_map_keep_empty");
  auto wide = labels;  // CV_16U label values
  for (auto& s : wide.label_map)
    if (!s.empty()) s.convertTo(s, CV_16U);
  expect_same_as_reference(wide, path, "label_map_16bit");

  // Scattered label values: a segment of five separate values (no vector path), one of three, and
  // in a 16-bit map a value above 255.
  auto scattered = base_spec(src);
  for (int k = 1; k <= 10; ++k) scattered.segments.push_back(segment("tissue", "Label " + std::to_string(k)));
  scattered.segments[0].also_labels = {3, 5, 7, 9};
  scattered.segments[1].also_labels = {4, 8};
  scattered.label_map.resize(src.frames.size());
  for (size_t z = 0; z < src.frames.size(); ++z) {
    cv::Mat lm(23, 38, CV_8U, cv::Scalar(0));
    for (int c = 0; c < 38; ++c) lm.col(c).setTo((c + static_cast<int>(z)) % 11);
    scattered.label_map[z] = lm;
  }
  expect_same_as_reference(scattered, path, "scattered_labels");
  auto big = scattered;
  for (auto& s : big.label_map) {
    s.convertTo(s, CV_16U);
    s.row(5).setTo(300);
  }
  big.segments[1].also_labels = {4, 8, 300};
  expect_same_as_reference(big, path, "label_300_in_16bit_map");
  verify_seg(big, write_seg(big, path / "big.seg.dcm"), src);

  // Per-segment masks, more segments than 8 (dcmseg encodes one frame per segment first), a
  // segment empty on every slice but one, and views into one allocation.
  auto masks = base_spec(src);
  cv::Mat volume(23 * 11, 38, CV_8U, cv::Scalar(0));
  for (int k = 0; k < 10; ++k) {
    masks.segments.push_back(segment("tissue", "Segment " + std::to_string(k + 1)));
    auto& m = masks.segments.back().mask;
    m.resize(src.frames.size());
    for (size_t z = 0; z < src.frames.size(); ++z) {
      if (k == 9 && z != 3) continue;
      m[z] = cv::Mat(23, 38, CV_8U, cv::Scalar(0));
      cv::circle(m[z], {4 + 3 * k, 3 + static_cast<int>(z)}, 2 + k % 3, cv::Scalar(k % 2 ? 255 : 1), cv::FILLED);
    }
  }
  masks.segments[1].mask[2] = volume(cv::Rect(0, 23 * 2, 38, 23));  // a view, all zero
  expect_same_as_reference(masks, path, "masks_ten_segments");

  auto fractional = base_spec(src);
  fractional.type = SegmentationType::fractional;
  fractional.segments.push_back(segment("emphysema", "Probability"));
  auto& p = fractional.segments[0].mask;
  p.resize(src.frames.size());
  for (size_t z = 1; z < src.frames.size(); z += 2) {
    p[z] = cv::Mat(23, 38, CV_32F);
    for (int r = 0; r < 23; ++r)
      for (int c = 0; c < 38; ++c) p[z].at<float>(r, c) = std::max(0.f, 1.f - std::hypot(r - 11.f, c - 19.f) / 12.f);
  }
  expect_same_as_reference(fractional, path, "fractional");

  auto none = base_spec(src);  // nothing set: the one empty frame
  none.segments.push_back(segment("tissue", "Nothing"));
  none.segments.back().mask.resize(src.frames.size());
  expect_same_as_reference(none, path, "all_empty");
}

BOOST_AUTO_TEST_CASE(fast_encoding_equals_reference_for_multiframe_and_projection_sources) {
  const auto mf = testsupport::load_series({testsupport::test_data("dcmqi/data/segmentations/23x38x3/multiframe/mf.dcm")});
  auto spec = base_spec(mf);
  spec.segments.push_back(segment("tissue", "Tissue"));
  spec.segments.back().mask = discs(mf, 11, 19, 5, 0, 3);
  expect_same_as_reference(spec, path, "multiframe_source");  // Referenced Frame Number

  const auto dx = testsupport::load_series({testsupport::test_data("highdicom/data/test_files/dx_image.dcm")});
  auto proj = base_spec(dx);  // no frame of reference: no plane position, one dimension
  proj.segments.push_back(segment("lung", "Lung"));
  proj.segments.back().mask.resize(1);
  proj.segments.back().mask[0] = cv::Mat(dx.rows, dx.cols, CV_8U, cv::Scalar(0));
  cv::ellipse(proj.segments.back().mask[0], {60, 80}, {30, 50}, 0, 0, 360, cv::Scalar(1), cv::FILLED);
  expect_same_as_reference(proj, path, "projection");
}

BOOST_AUTO_TEST_CASE(phantom_label_map_fast_encoding_decodes_and_equals_reference) {
  // The shapes of a real analysis: the CT phantom's label map as the pipeline numbers it.
  const auto dir = path / "phantom";
  const auto r = testsupport::run_command(std::string(testsupport::python()) + " " +
                                          testsupport::shell_quote((testsupport::phantom_script()).string()) +
                                          " " + testsupport::shell_quote(dir.string()) + " --slices 12 --size 96");
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  const auto src = testsupport::load_series(testsupport::dicom_files(dir));
  const auto loaded = load_folder(dir);
  BOOST_TEST_REQUIRE(loaded.volumes.size() == 1u);
  const Volume& vol = loaded.volumes.front();
  std::map<std::string, cv::Mat> hu_of;  // the decoded slice of each source instance
  for (size_t z = 0; z < vol.sources.size(); ++z) hu_of[vol.sources[z].sop_instance_uid] = vol.slices[z];
  auto spec = base_spec(src);
  for (const char* name : {"body", "right_lung", "left_lung", "bone"}) spec.segments.push_back(segment(name, name));
  spec.segments[0].also_labels = {2, 3, 4};
  spec.label_map.resize(src.frames.size());
  for (size_t z = 0; z < src.frames.size(); ++z) {
    const cv::Mat& hu = hu_of.at(src.frames[z].sop_instance_uid);
    cv::Mat lm(hu.rows, hu.cols, CV_8U, cv::Scalar(0));
    lm.setTo(1, hu > -500);
    lm.setTo(2, (hu < -500) & (hu > -1000));
    lm.setTo(4, hu > 300);
    cv::Mat left = lm(cv::Rect(hu.cols / 2, 0, hu.cols - hu.cols / 2, hu.rows));
    left.setTo(3, left == 2);
    spec.label_map[z] = lm;
  }
  const auto w = write_seg(spec, path / "phantom_lm.seg.dcm");
  verify_seg(spec, w, src);
  expect_same_as_reference(spec, path, "phantom_label_map");
}

BOOST_AUTO_TEST_CASE(last_pixels_of_the_last_unaligned_frame_are_kept) {
  // 13 x 21 = 273 bits per frame, 3 frames: the last byte holds the last pixel of the last frame in
  // its bit 0 (819 = 102 * 8 + 3). dcmseg 3.6.7 clears that bit when it concatenates frames
  // (write_seg_reference loses the pixel); write_seg keeps it.
  const auto files = testsupport::write_synthetic_ct(path / "last", 13, 21, 3, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 1.0);
  const auto src = testsupport::load_series(files);
  auto spec = base_spec(src);
  spec.segments.push_back(segment("tissue", "Corners"));
  auto& m = spec.segments.back().mask;
  m.resize(3);
  for (size_t z = 0; z < 3; ++z) {
    m[z] = cv::Mat(13, 21, CV_8U, cv::Scalar(0));
    m[z].at<std::uint8_t>(0, 0) = 1;
    m[z].at<std::uint8_t>(12, 20 - static_cast<int>(z)) = 1;
    m[z].at<std::uint8_t>(12, 20) = 1;
  }
  const auto w = write_seg(spec, path / "last.seg.dcm");
  BOOST_TEST(w.number_of_frames == 3);
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
