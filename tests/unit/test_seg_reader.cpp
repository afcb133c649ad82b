#define BOOST_TEST_MODULE seg_reader
#include <boost/test/unit_test.hpp>

#include "support/capture.h"

// dicom::read_seg against pydicom on public SEGs, round trips through dicom::write_seg, the common
// grid of analysis/seg_masks.h, and `pacsnode evaluate` on SEG input (in process).
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "analysis/cli.h"
#include "analysis/kernels/evaluate.h"
#include "analysis/kernels/nifti.h"
#include "analysis/seg_masks.h"
#include "dicom/check.h"
#include "dicom/codes.h"
#include "dicom/seg_builder.h"
#include "dicom/seg_reader.h"
#include "support/paths.h"
#include "support/seg_sources.h"

namespace fs = std::filesystem;
using analysis::Mask;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/pacsnode-segread-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {  // PACSNODE_KEEP_TEST_OUTPUT=1 keeps the files for inspection
    std::error_code ec;
    if (!std::getenv("PACSNODE_KEEP_TEST_OUTPUT")) fs::remove_all(path, ec);
  }
};

// ---- pydicom reference (tests/scripts/seg_reader_ref.py)
struct RefFrame {
  int segment = 0;
  long long voxels = 0, index_sum = 0;
};
struct RefSeg {
  int rows = 0, cols = 0, frames = 0;
  std::string type;
  std::map<int, std::pair<long long, std::string>> segments;  // number -> (voxels, label)
  std::vector<RefFrame> frame_list;
};

RefSeg pydicom_reference(const fs::path& seg) {
  const auto script = testsupport::source_dir() / "tests/scripts/seg_reader_ref.py";
  const auto r = testsupport::run_command(std::string(testsupport::python()) + " " +
                                          testsupport::shell_quote(script.string()) + " " +
                                          testsupport::shell_quote(seg.string()));
  BOOST_TEST_REQUIRE(r.exit_code == 0, "seg_reader_ref.py failed: " << r.output.substr(0, 2000));
  RefSeg out;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag;
    ls >> tag;
    if (tag == "SEG") {
      ls >> out.rows >> out.cols >> out.frames >> out.type;
    } else if (tag == "SEGMENT") {
      int no = 0;
      long long n = 0;
      ls >> no >> n;
      std::string label;
      std::getline(ls, label);
      out.segments[no] = {n, label.empty() ? label : label.substr(1)};
    } else if (tag == "FRAME") {
      int index = 0;
      RefFrame f;
      ls >> index >> f.segment >> f.voxels >> f.index_sum;
      out.frame_list.push_back(f);
    }
  }
  return out;
}

long long index_sum(const cv::Mat& m) {
  long long s = 0;
  for (int r = 0; r < m.rows; ++r)
    for (int c = 0; c < m.cols; ++c)
      if (m.at<std::uint8_t>(r, c)) s += static_cast<long long>(r) * m.cols + c;
  return s;
}

void expect_matches_pydicom(const fs::path& file) {
  BOOST_TEST_CONTEXT(file.filename()) {
    const dicom::SegObject seg = dicom::read_seg(file);
    const RefSeg ref = pydicom_reference(file);
    BOOST_TEST(seg.rows == ref.rows);
    BOOST_TEST(seg.cols == ref.cols);
    BOOST_TEST(seg.segmentation_type == ref.type);
    BOOST_TEST_REQUIRE(static_cast<int>(seg.frames.size()) == ref.frames);
    BOOST_TEST_REQUIRE(seg.segments.size() == ref.segments.size());
    std::map<int, long long> voxels;
    for (std::size_t i = 0; i < seg.frames.size(); ++i) {
      const auto& f = seg.frames[i];
      BOOST_TEST_REQUIRE(f.mask.type() == CV_8U);
      BOOST_TEST(f.mask.rows == seg.rows);
      BOOST_TEST(f.mask.cols == seg.cols);
      double lo = 0, hi = 0;
      cv::minMaxLoc(f.mask, &lo, &hi);
      BOOST_TEST(hi <= 1.0);
      const long long n = cv::countNonZero(f.mask);
      BOOST_TEST(f.segment == ref.frame_list[i].segment, "frame " << i);
      BOOST_TEST(n == ref.frame_list[i].voxels, "frame " << i);
      BOOST_TEST(index_sum(f.mask) == ref.frame_list[i].index_sum, "frame " << i);
      voxels[f.segment] += n;
    }
    for (const auto& s : seg.segments) {
      BOOST_TEST_REQUIRE(ref.segments.count(s.number) == 1u, "segment " << s.number);
      BOOST_TEST(s.label == ref.segments.at(s.number).second);
      BOOST_TEST(voxels[s.number] == ref.segments.at(s.number).first, "segment " << s.number);
    }
    BOOST_TEST(seg.has_frame_of_reference);
    BOOST_TEST(seg.has_pixel_spacing);
  }
}

// ---- writing SEGs with our builder
dicom::SegmentSpec segment_spec(const std::string& name, const std::string& label) {
  const auto c = dicom::codes::segment_codes(name);
  BOOST_TEST_REQUIRE(c.has_value());
  dicom::SegmentSpec s;
  s.label = label;
  s.category = c->category;
  s.type = c->type;
  s.anatomic_region = c->anatomic_region;
  return s;
}

fs::path write_binary_seg(const testsupport::SourceSeries& src, const std::vector<std::vector<cv::Mat>>& masks,
                          const fs::path& out, bool keep_empty = false) {
  auto spec = testsupport::seg_spec_over(src);
  spec.keep_empty_frames = keep_empty;
  for (std::size_t k = 0; k < masks.size(); ++k) {
    spec.segments.push_back(segment_spec(k == 0 ? "organ" : "tissue", "Segment " + std::to_string(k + 1)));
    spec.segments.back().mask = masks[k];
  }
  return dicom::write_seg(spec, out).path;
}

// A ball of radius r_mm around (cx, cy, cz) (voxel indices, may be fractional) in mm.
Mask ball(int depth, int rows, int cols, const analysis::Spacing& sp, double cx, double cy, double cz, double r_mm) {
  Mask m(static_cast<std::size_t>(depth));
  for (int z = 0; z < depth; ++z) {
    m[z] = cv::Mat(rows, cols, CV_8U, cv::Scalar(0));
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const double dx = (c - cx) * sp.col, dy = (r - cy) * sp.row, dz = (z - cz) * sp.slice;
        if (dx * dx + dy * dy + dz * dz <= r_mm * r_mm) m[z].at<std::uint8_t>(r, c) = 1;
      }
  }
  return m;
}

bool same_mask(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat aa = a.empty() ? cv::Mat() : (a != 0), bb = b.empty() ? cv::Mat() : (b != 0);
  const int na = aa.empty() ? 0 : cv::countNonZero(aa), nb = bb.empty() ? 0 : cv::countNonZero(bb);
  if (aa.empty() || bb.empty()) return na == 0 && nb == 0;
  return aa.size() == bb.size() && cv::countNonZero(aa != bb) == 0;
}

// ---- `pacsnode evaluate` in process

using testsupport::Captured;
using testsupport::capture;

// The number after "key": in the evaluate JSON (null -> NaN).
double json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  BOOST_TEST_REQUIRE(at != std::string::npos, key << " not in " << json);
  const std::string rest = json.substr(at + key.size() + 3);
  if (rest.find_first_not_of(' ') == rest.find("null")) return std::nan("");
  return std::stod(rest);
}

Captured evaluate(const std::vector<std::string>& args) {
  return capture([&] { return analysis::evaluate_main(args); });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(reference_files)

BOOST_AUTO_TEST_CASE(dcmqi_liver_matches_pydicom) {
  expect_matches_pydicom(testsupport::test_data("dcmqi/data/segmentations/liver.dcm"));
  const auto seg = dicom::read_seg(testsupport::test_data("dcmqi/data/segmentations/liver.dcm"));
  BOOST_TEST(seg.segments.at(0).label == "Liver");
  BOOST_TEST(std::abs(seg.spacing_row - 0.810547) < 1e-6);
}

BOOST_AUTO_TEST_CASE(dcmqi_partial_overlaps_matches_pydicom) {
  expect_matches_pydicom(testsupport::test_data("dcmqi/data/segmentations/partial_overlaps.dcm"));
}

BOOST_AUTO_TEST_CASE(highdicom_ct_binary_matches_pydicom) {
  expect_matches_pydicom(testsupport::test_data("highdicom/data/test_files/seg_image_ct_binary.dcm"));
}

BOOST_AUTO_TEST_CASE(highdicom_ct_true_fractional_matches_pydicom) {
  const auto f = testsupport::test_data("highdicom/data/test_files/seg_image_ct_true_fractional.dcm");
  expect_matches_pydicom(f);
  BOOST_TEST(dicom::read_seg(f).max_fractional_value == 255);
}

BOOST_AUTO_TEST_CASE(partial_overlaps_on_a_grid_and_segment_selection) {
  const auto seg = dicom::read_seg(testsupport::test_data("dcmqi/data/segmentations/partial_overlaps.dcm"));
  const auto all = analysis::seg_masks_on_common_grid({{&seg, std::nullopt, "all"}});
  const auto three = analysis::seg_masks_on_common_grid({{&seg, 3, "three"}});
  BOOST_TEST(all.depth() == three.depth());
  long long seg3 = 0;
  for (const auto& f : seg.frames)
    if (f.segment == 3) seg3 += cv::countNonZero(f.mask);
  BOOST_TEST(static_cast<long long>(analysis::kernels::count_nonzero(three.masks[0])) == seg3);
  BOOST_CHECK_EXCEPTION(analysis::seg_masks_on_common_grid({{&seg, 9, "partial_overlaps.dcm"}}),
                        std::invalid_argument, [](const std::invalid_argument& e) {
                          return std::string(e.what()).find("segment 9 is not defined") != std::string::npos;
                        });
}

BOOST_AUTO_TEST_CASE(non_seg_dicom_is_refused_with_a_reason) {
  const auto ct = testsupport::test_data("highdicom/data/test_files/ct_image.dcm");
  BOOST_TEST(dicom::has_dicom_preamble(ct));
  BOOST_CHECK_EXCEPTION(dicom::read_seg(ct), dicom::DicomError, [](const dicom::DicomError& e) {
    return std::string(e.what()).find("not a Segmentation Storage object") != std::string::npos;
  });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(round_trip, TempDir)

BOOST_AUTO_TEST_CASE(binary_non_square_with_omitted_empty_frames) {
  // 13 x 21 pixels: 273 bits per frame, so frames are not byte aligned in the packed pixel data.
  const auto files = testsupport::write_synthetic_ct(path / "ct", 13, 21, 7, {1, 0, 0}, {0, 0, -1}, {-20, 10, 30}, 0.9,
                                                     0.6, 2.5);
  const auto src = testsupport::load_series(files);
  BOOST_TEST_REQUIRE(src.frames.size() == 7u);
  std::vector<std::vector<cv::Mat>> masks(2, std::vector<cv::Mat>(7));
  for (int z = 1; z < 6; ++z) {
    if (z == 3) continue;  // empty for both: no frame at all, filled back by the grid
    masks[0][z] = cv::Mat(13, 21, CV_8U, cv::Scalar(0));
    cv::rectangle(masks[0][z], cv::Rect(1, 2, 6 + z, 4), cv::Scalar(1), cv::FILLED);  // asymmetric
    masks[0][z].at<std::uint8_t>(12, 20) = 1;                                          // last pixel
  }
  masks[1][2] = cv::Mat(13, 21, CV_8U, cv::Scalar(0));
  cv::circle(masks[1][2], {15, 8}, 3, cv::Scalar(255), cv::FILLED);
  const auto file = write_binary_seg(src, masks, path / "rt.seg.dcm");
  expect_matches_pydicom(file);  // bit unpacking across byte boundaries, checked independently

  const auto seg = dicom::read_seg(file);
  BOOST_TEST(seg.rows == 13);
  BOOST_TEST(seg.cols == 21);
  BOOST_TEST(seg.segmentation_type == "BINARY");
  BOOST_TEST_REQUIRE(seg.frames.size() == 4u + 1u);
  BOOST_TEST(seg.has_frame_of_reference);
  BOOST_TEST(std::abs(seg.spacing_row - 0.9) < 1e-6);
  BOOST_TEST(std::abs(seg.spacing_col - 0.6) < 1e-6);
  BOOST_TEST(seg.segments.size() == 2u);
  BOOST_TEST(seg.segments[1].label == "Segment 2");
  for (const auto& f : seg.frames) {
    // Which source slice: by the referenced instance, and the position must agree.
    int z = -1;
    for (std::size_t i = 0; i < src.frames.size(); ++i)
      if (src.frames[i].sop_instance_uid == f.source_sop_instance_uid) z = static_cast<int>(i);
    BOOST_TEST_REQUIRE(z >= 0);
    for (int i = 0; i < 3; ++i) BOOST_TEST(std::abs(f.position[i] - src.frames[z].position[i]) < 1e-3);
    BOOST_TEST(same_mask(f.mask, masks[f.segment - 1][z]), "segment " << f.segment << " slice " << z);
  }

  // Common grid: slices 1..5 of the source (first to last frame), slice 3 filled with zeros.
  for (int k : {1, 2}) {
    const auto g = analysis::seg_masks_on_common_grid({{&seg, k, "rt"}});
    BOOST_TEST_REQUIRE(g.depth() == 5);
    BOOST_TEST(std::abs(g.spacing.slice - 2.5) < 1e-6);
    BOOST_TEST(std::abs(g.spacing.row - 0.9) < 1e-6);
    BOOST_TEST(std::abs(g.spacing.col - 0.6) < 1e-6);
    for (int j = 0; j < 5; ++j)
      BOOST_TEST(same_mask(g.masks[0][j], masks[k - 1][j + 1]), "segment " << k << " z " << j);
    BOOST_TEST(g.warnings.empty());
  }
  const auto any = analysis::seg_masks_on_common_grid({{&seg, std::nullopt, "rt"}});
  cv::Mat u;
  cv::bitwise_or(masks[0][2] != 0, masks[1][2] != 0, u);
  BOOST_TEST(same_mask(any.masks[0][1], u));
}

BOOST_AUTO_TEST_CASE(fractional_is_thresholded_at_one_half) {
  const auto files = testsupport::write_synthetic_ct(path / "ct", 10, 15, 3, {0, 1, 0}, {0, 0, -1}, {5, -5, 100}, 0.5,
                                                     0.75, 1.5);
  const auto src = testsupport::load_series(files);
  auto spec = testsupport::seg_spec_over(src);
  spec.type = dicom::SegmentationType::fractional;
  spec.segments.push_back(segment_spec("lung", "Probability"));
  auto& p = spec.segments[0].mask;
  p.resize(3);
  std::vector<cv::Mat> expected(3);
  for (int z = 0; z < 3; ++z) {
    p[z] = cv::Mat(10, 15, CV_32F);
    expected[z] = cv::Mat(10, 15, CV_8U);
    for (int r = 0; r < 10; ++r)
      for (int c = 0; c < 15; ++c) {
        const float v = static_cast<float>(((r * 15 + c + 7 * z) % 20) / 19.0);  // never within 1/255 of 0.5
        p[z].at<float>(r, c) = v;
        expected[z].at<std::uint8_t>(r, c) = v >= 0.5f ? 1 : 0;
      }
  }
  const auto file = dicom::write_seg(spec, path / "frac.seg.dcm").path;
  const auto seg = dicom::read_seg(file);
  BOOST_TEST(seg.segmentation_type == "FRACTIONAL");
  BOOST_TEST(seg.max_fractional_value == 255);
  const auto g = analysis::seg_masks_on_common_grid({{&seg, std::nullopt, "frac"}});
  BOOST_TEST_REQUIRE(g.depth() == 3);
  for (int z = 0; z < 3; ++z) BOOST_TEST(same_mask(g.masks[0][z], expected[z]), "z " << z);
}

BOOST_AUTO_TEST_CASE(projection_image_maps_by_source_frame) {
  const auto src = testsupport::load_series({testsupport::test_data("highdicom/data/test_files/dx_image.dcm")});
  BOOST_TEST_REQUIRE(!src.geom.has_frame_of_reference);
  std::vector<std::vector<cv::Mat>> masks(1, std::vector<cv::Mat>(1));
  masks[0][0] = cv::Mat(src.rows, src.cols, CV_8U, cv::Scalar(0));
  cv::ellipse(masks[0][0], {src.cols / 3, src.rows / 2}, {src.cols / 5, src.rows / 4}, 0, 0, 360, cv::Scalar(1),
              cv::FILLED);
  const auto seg = dicom::read_seg(write_binary_seg(src, masks, path / "dx.seg.dcm"));
  BOOST_TEST(!seg.has_frame_of_reference);
  BOOST_TEST_REQUIRE(seg.frames.size() == 1u);
  BOOST_TEST(seg.frames[0].source_sop_instance_uid == src.frames[0].sop_instance_uid);
  const auto g = analysis::seg_masks_on_common_grid({{&seg, std::nullopt, "a"}, {&seg, 1, "b"}});
  BOOST_TEST(!g.physical);
  BOOST_TEST_REQUIRE(g.depth() == 1);
  BOOST_TEST(same_mask(g.masks[0][0], masks[0][0]));
  BOOST_TEST(same_mask(g.masks[1][0], masks[0][0]));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(common_grid)

// A SegObject in memory: one 4x4 frame per position (along z), segment 1, full mask.
dicom::SegObject synthetic(const std::vector<double>& z, double spacing = 1.0) {
  dicom::SegObject s;
  s.rows = s.cols = 4;
  s.spacing_row = s.spacing_col = spacing;
  s.has_pixel_spacing = s.has_frame_of_reference = true;
  s.frame_of_reference_uid = "1.2.3";
  s.segments.push_back({1, "one", {}, {}});
  for (double p : z) {
    dicom::SegFrame f;
    f.segment = 1;
    f.position = {0, 0, p};
    f.has_position = true;
    f.mask = cv::Mat(4, 4, CV_8U, cv::Scalar(1));
    s.frames.push_back(f);
  }
  return s;
}

BOOST_AUTO_TEST_CASE(union_of_positions_with_gaps_filled) {
  const auto a = synthetic({0, 2, 8}), b = synthetic({4.0005, 10});
  const auto g = analysis::seg_masks_on_common_grid({{&a, std::nullopt, "a"}, {&b, std::nullopt, "b"}});
  BOOST_TEST_REQUIRE(g.depth() == 6);  // 0, 2, 4, 6, 8, 10
  BOOST_TEST(std::abs(g.spacing.slice - 2.0) < 1e-9);
  const std::vector<int> in_a{1, 1, 0, 0, 1, 0}, in_b{0, 0, 1, 0, 0, 1};
  for (int z = 0; z < 6; ++z) {
    BOOST_TEST((cv::countNonZero(g.masks[0][z]) > 0) == (in_a[z] == 1), "z " << z);
    BOOST_TEST((cv::countNonZero(g.masks[1][z]) > 0) == (in_b[z] == 1), "z " << z);
  }
}

BOOST_AUTO_TEST_CASE(interleaved_slices_give_a_warning) {
  auto a = synthetic({0, 2.5, 5}), b = synthetic({1.25, 3.75});
  a.spacing_between_slices = b.spacing_between_slices = 2.5;
  const auto g = analysis::seg_masks_on_common_grid({{&a, std::nullopt, "a"}, {&b, std::nullopt, "b"}});
  BOOST_TEST(g.depth() == 5);
  BOOST_TEST(std::abs(g.spacing.slice - 1.25) < 1e-9);
  BOOST_TEST(g.warnings.size() == 2u);
}

BOOST_AUTO_TEST_CASE(irregular_positions_are_refused) {
  const auto a = synthetic({0, 2, 5});
  BOOST_CHECK_EXCEPTION(analysis::seg_masks_on_common_grid({{&a, std::nullopt, "a"}}), std::invalid_argument,
                        [](const std::invalid_argument& e) {
                          return std::string(e.what()).find("regular grid") != std::string::npos;
                        });
}

BOOST_AUTO_TEST_CASE(different_spacing_or_orientation_is_refused) {
  const auto a = synthetic({0, 1}), b = synthetic({0, 1}, 0.5);
  BOOST_CHECK_EXCEPTION(analysis::seg_masks_on_common_grid({{&a, std::nullopt, "a"}, {&b, std::nullopt, "b"}}),
                        std::invalid_argument, [](const std::invalid_argument& e) {
                          return std::string(e.what()).find("different pixel spacings") != std::string::npos;
                        });
  auto c = synthetic({0, 1});
  c.row_dir = {0, 1, 0}, c.col_dir = {1, 0, 0};
  BOOST_CHECK_EXCEPTION(analysis::seg_masks_on_common_grid({{&a, std::nullopt, "a"}, {&c, std::nullopt, "c"}}),
                        std::invalid_argument, [](const std::invalid_argument& e) {
                          return std::string(e.what()).find("different image orientations") != std::string::npos;
                        });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(evaluate_seg, TempDir)

BOOST_AUTO_TEST_CASE(two_offset_spheres_match_overlap_metrics) {
  const int depth = 16, rows = 32, cols = 36;
  const analysis::Spacing sp{0.8, 0.7, 2.0};
  const auto files = testsupport::write_synthetic_ct(path / "ct", rows, cols, depth, {1, 0, 0}, {0, 1, 0},
                                                     {-10, -20, 40}, sp.row, sp.col, sp.slice);
  const auto src = testsupport::load_series(files);
  const Mask ref = ball(depth, rows, cols, sp, 17, 15, 6.5, 7.0);
  const Mask pred = ball(depth, rows, cols, sp, 20.5, 16, 8.2, 6.0);  // different slice range
  const auto ref_seg = write_binary_seg(src, {ref}, path / "ref.seg.dcm");
  const auto pred_seg = write_binary_seg(src, {pred}, path / "pred.seg.dcm");
  const auto m = analysis::kernels::overlap_metrics(ref, pred, sp);
  BOOST_TEST_REQUIRE(m.dice > 0.2);
  BOOST_TEST_REQUIRE(m.dice < 0.95);

  const auto c = evaluate({"--pred", pred_seg.string(), "--ref", ref_seg.string()});
  BOOST_TEST_REQUIRE(c.rc == 0, c.err);
  BOOST_TEST(std::abs(json_number(c.out, "dice") - m.dice) < 1e-9);
  BOOST_TEST(std::abs(json_number(c.out, "jaccard") - m.jaccard) < 1e-9);
  BOOST_TEST(std::abs(json_number(c.out, "hausdorff_mm") - m.hausdorff_mm) < 1e-9);
  BOOST_TEST(std::abs(json_number(c.out, "hausdorff95_mm") - m.hausdorff95_mm) < 1e-9);
  BOOST_TEST(std::abs(json_number(c.out, "mean_surface_distance_mm") - m.mean_surface_distance_mm) < 1e-9);
  BOOST_TEST(json_number(c.out, "reference_voxels") == static_cast<double>(m.reference_voxels));
  BOOST_TEST(json_number(c.out, "test_voxels") == static_cast<double>(m.test_voxels));
  BOOST_TEST(std::abs(json_number(c.out, "reference_volume_mm3") - m.reference_volume_mm3) < 1e-6);

  const auto self = evaluate({"--pred", ref_seg.string(), "--ref", ref_seg.string(), "--label", "1"});
  BOOST_TEST_REQUIRE(self.rc == 0, self.err);
  BOOST_TEST(json_number(self.out, "dice") == 1.0);
  BOOST_TEST(json_number(self.out, "hausdorff_mm") == 0.0);

  // A bare dataset (no preamble, no meta header) is recognised by its SOP class.
  const auto bare = path / "bare.seg";
  {
    DcmFileFormat ff;
    BOOST_TEST_REQUIRE(ff.loadFile(ref_seg.c_str()).good());
    BOOST_TEST_REQUIRE(ff.getDataset()->saveFile(bare.c_str(), EXS_LittleEndianExplicit).good());
  }
  BOOST_TEST(!dicom::has_dicom_preamble(bare));
  BOOST_TEST(dicom::looks_like_dicom(bare));
  const auto b = evaluate({"--pred", bare.string(), "--ref", ref_seg.string()});
  BOOST_TEST_REQUIRE(b.rc == 0, b.err);
  BOOST_TEST(json_number(b.out, "dice") == 1.0);

  const auto text = path / "notes.txt";
  std::ofstream(text) << "not a mask\n";
  BOOST_TEST(!dicom::looks_like_dicom(text));
  const auto neither = evaluate({"--pred", text.string(), "--ref", ref_seg.string()});
  BOOST_TEST(neither.rc == 1);
  BOOST_TEST(neither.err.find("neither a NIfTI mask") != std::string::npos, neither.err);

  const auto missing = evaluate({"--pred", ref_seg.string(), "--ref", ref_seg.string(), "--ref-label", "2"});
  BOOST_TEST(missing.rc == 1);
  BOOST_TEST(missing.err.find("segment 2 is not defined") != std::string::npos, missing.err);
}

BOOST_AUTO_TEST_CASE(seg_against_nifti_needs_the_same_grid) {
  const int depth = 8, rows = 20, cols = 24;
  const analysis::Spacing sp{0.6, 0.9, 1.5};
  const auto files = testsupport::write_synthetic_ct(path / "ct", rows, cols, depth, {1, 0, 0}, {0, 1, 0}, {0, 0, 0},
                                                     sp.row, sp.col, sp.slice);
  const auto src = testsupport::load_series(files);
  const Mask ref = ball(depth, rows, cols, sp, 11, 9, 3.5, 3.5);
  const Mask pred = ball(depth, rows, cols, sp, 12, 10, 3.8, 3.2);
  const auto full = write_binary_seg(src, {pred}, path / "full.seg.dcm", /*keep_empty=*/true);
  const auto cropped = write_binary_seg(src, {pred}, path / "cropped.seg.dcm");
  const auto nii = path / "ref.nii.gz";
  analysis::kernels::write_nifti(nii, ref, sp);
  const auto m = analysis::kernels::overlap_metrics(ref, pred, sp);

  const auto c = evaluate({"--pred", full.string(), "--ref", nii.string()});
  BOOST_TEST_REQUIRE(c.rc == 0, c.err);
  BOOST_TEST(std::abs(json_number(c.out, "dice") - m.dice) < 1e-9);
  BOOST_TEST(std::abs(json_number(c.out, "hausdorff_mm") - m.hausdorff_mm) < 1e-9);

  const auto bad = evaluate({"--pred", cropped.string(), "--ref", nii.string()});
  BOOST_TEST(bad.rc == 1);
  BOOST_TEST(bad.err.find("same voxel grid") != std::string::npos, bad.err);
}

BOOST_AUTO_TEST_CASE(different_pixel_spacing_is_a_clear_error) {
  const analysis::Spacing sp{1.0, 1.0, 2.0};
  const auto a = testsupport::load_series(
      testsupport::write_synthetic_ct(path / "a", 16, 16, 4, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 2.0));
  const auto b = testsupport::load_series(
      testsupport::write_synthetic_ct(path / "b", 16, 16, 4, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.2, 1.2, 2.0));
  const Mask m = ball(4, 16, 16, sp, 8, 8, 1.5, 4.0);
  const auto sa = write_binary_seg(a, {m}, path / "a.seg.dcm");
  const auto sb = write_binary_seg(b, {m}, path / "b.seg.dcm");
  const auto c = evaluate({"--pred", sa.string(), "--ref", sb.string()});
  BOOST_TEST(c.rc == 1);
  BOOST_TEST(c.out.empty());
  BOOST_TEST(c.err.find("different pixel spacings") != std::string::npos, c.err);
  BOOST_TEST(c.err.find("pacsnode evaluate:") != std::string::npos, c.err);
}

BOOST_AUTO_TEST_SUITE_END()

// Regression (issue 9, fuzz_seg): Number of Frames 2147483647 in a 3-frame SEG (highdicom's
// seg_image_ct_binary.dcm, the value changed with dcmodify) sized the frame list before anything
// else was checked: a 377 GB allocation. The Per-frame Functional Groups items are counted first.
// The structural scan's pixel limit now refuses this file earlier (64 GiB of pixels); with a pixel
// limit that lets it through, the reader's own check must still refuse it.
BOOST_AUTO_TEST_CASE(number_of_frames_beyond_the_per_frame_items_is_refused_before_allocating) {
  const fs::path file = testsupport::source_dir() / "fuzz/regressions/fuzz_seg/number-of-frames-2147483647";
  BOOST_CHECK_EXCEPTION(dicom::read_seg(file), dicom::DicomError, [](const dicom::DicomError& e) {
    const std::string what = e.what();
    BOOST_TEST_INFO(what);
    return what.find("exceeds the 4096 MiB pixel limit") != std::string::npos;
  });
  dicom::ScanLimits no_pixel_limit;
  no_pixel_limit.max_pixel_bytes = std::uint64_t{1} << 40;
  BOOST_CHECK_EXCEPTION(dicom::read_seg(file, no_pixel_limit), dicom::DicomError, [](const dicom::DicomError& e) {
    const std::string what = e.what();
    BOOST_TEST_INFO(what);
    return what.find("Per-frame Functional Groups Sequence has 3 items for 2147483647 frames") != std::string::npos;
  });
  // The unmodified file reads (3 frames).
  BOOST_TEST(dicom::read_seg(testsupport::source_dir() / "fuzz/corpus/seg/seg_image_ct_binary.dcm").frames.size() == 3u);
}
