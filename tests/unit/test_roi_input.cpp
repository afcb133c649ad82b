#define BOOST_TEST_MODULE roi_input
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "analysis/kernels/nifti.h"
#include "analysis/roi_input.h"
#include "dicom/codes.h"
#include "dicom/seg_builder.h"
#include "dicom/series_loader.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/seg_sources.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using analysis::Mask;
using analysis::roi_mask_for_volume;

namespace {

// The public RTSTRUCT case: 8 CT slices of STS_001 (a crop of the series) and the structure set of
// the whole tumour (tests/data/ibsi-data_sets/ibsi_validation/dicom/STS_001/CT).
fs::path sts_dir() { return testsupport::test_data("ibsi-data_sets/ibsi_validation/dicom/STS_001/CT"); }

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

dicom::Volume load_volume(const std::vector<fs::path>& files) {
  auto r = dicom::load_files(files);
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 1u);
  return std::move(r.volumes.front());
}

std::size_t count(const Mask& m) { return analysis::kernels::count_nonzero(m); }

// Voxels where a and b differ (both 0/1 or 0/255 masks of the same shape).
std::size_t differ(const Mask& a, const Mask& b) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  std::size_t n = 0;
  for (std::size_t z = 0; z < a.size(); ++z) {
    cv::Mat x = a[z] != 0, y = b[z] != 0, d;
    cv::bitwise_xor(x, y, d);
    n += static_cast<std::size_t>(cv::countNonZero(d));
  }
  return n;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs f, which must throw E with every one of `parts` in its message.
template <typename E>
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    BOOST_ERROR("no exception; expected one with: " << parts.front());
  } catch (const E& e) {
    const std::string what = e.what();
    BOOST_TEST_MESSAGE("error: " << what);
    for (const auto& p : parts) BOOST_TEST(contains(what, p), "'" << p << "' not in: " << what);
  }
}

// A synthetic CT series written as files and read back with the series loader.
struct Series {
  std::vector<fs::path> files;
  dicom::Volume volume;
};

Series make_series(const fs::path& dir, int rows, int cols, int slices, dicom::Vec3 row_dir, dicom::Vec3 col_dir,
                   dicom::Vec3 origin, double spacing_row, double spacing_col, double spacing_slice) {
  Series s;
  s.files = testsupport::write_synthetic_ct(dir, rows, cols, slices, row_dir, col_dir, origin, spacing_row, spacing_col,
                                            spacing_slice);
  s.volume = load_volume(s.files);
  return s;
}

// ---------------------------------------------------------------------------------------------
// RTSTRUCT writer for the synthetic cases: contours given in pixel coordinates of a slice of the
// volume (x = column, y = row), placed in patient space with the volume's geometry.

struct TestContour {
  double slice = 0;  // slice index along the normal (may lie beyond the volume, or between slices)
  std::vector<cv::Point2d> px;
  std::string type = "CLOSED_PLANAR";
  double tilt = 0;  // mm along the normal per pixel of x: a contour not parallel to the slices
};

struct TestRoi {
  int number = 1;
  std::string name;
  std::vector<TestContour> contours;
};

std::vector<cv::Point2d> square(double x0, double y0, double x1, double y1, bool clockwise = false) {
  std::vector<cv::Point2d> p{{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}};
  if (clockwise) std::reverse(p.begin(), p.end());
  return p;
}

std::string ds_list(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += fmt::format("{}{:.10g}", s.empty() ? "" : "\\", x);
  return s;
}

fs::path write_rtstruct(const fs::path& path, const dicom::Volume& v, const std::vector<TestRoi>& rois,
                        std::string frame_of_reference = {}, std::string series_uid = {}) {
  if (frame_of_reference.empty()) frame_of_reference = v.info.frame_of_reference_uid;
  if (series_uid.empty()) series_uid = v.info.series_uid;
  const auto& g = v.geom;
  DcmFileFormat ff;
  DcmDataset& d = *ff.getDataset();
  char uid[100];
  d.putAndInsertString(DCM_SOPClassUID, UID_RTStructureSetStorage);
  d.putAndInsertString(DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT));
  d.putAndInsertString(DCM_StudyInstanceUID, v.info.study_uid.c_str());
  d.putAndInsertString(DCM_SeriesInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_SERIES_UID_ROOT));
  d.putAndInsertString(DCM_Modality, "RTSTRUCT");
  d.putAndInsertString(DCM_StructureSetLabel, "test");
  DcmItem *fr = nullptr, *st = nullptr, *se = nullptr;
  BOOST_REQUIRE(d.findOrCreateSequenceItem(DCM_ReferencedFrameOfReferenceSequence, fr, 0).good());
  fr->putAndInsertString(DCM_FrameOfReferenceUID, frame_of_reference.c_str());
  BOOST_REQUIRE(fr->findOrCreateSequenceItem(DCM_RTReferencedStudySequence, st, 0).good());
  st->putAndInsertString(DCM_ReferencedSOPClassUID, "1.2.840.10008.3.1.2.3.1");
  st->putAndInsertString(DCM_ReferencedSOPInstanceUID, v.info.study_uid.c_str());
  BOOST_REQUIRE(st->findOrCreateSequenceItem(DCM_RTReferencedSeriesSequence, se, 0).good());
  se->putAndInsertString(DCM_SeriesInstanceUID, series_uid.c_str());
  for (std::size_t k = 0; k < rois.size(); ++k) {
    const TestRoi& roi = rois[k];
    DcmItem *ss = nullptr, *rc = nullptr;
    BOOST_REQUIRE(d.findOrCreateSequenceItem(DCM_StructureSetROISequence, ss, static_cast<long>(k)).good());
    ss->putAndInsertString(DCM_ROINumber, std::to_string(roi.number).c_str());
    ss->putAndInsertString(DCM_ReferencedFrameOfReferenceUID, frame_of_reference.c_str());
    ss->putAndInsertString(DCM_ROIName, roi.name.c_str());
    BOOST_REQUIRE(d.findOrCreateSequenceItem(DCM_ROIContourSequence, rc, static_cast<long>(k)).good());
    rc->putAndInsertString(DCM_ReferencedROINumber, std::to_string(roi.number).c_str());
    for (std::size_t i = 0; i < roi.contours.size(); ++i) {
      const TestContour& c = roi.contours[i];
      DcmItem* ci = nullptr;
      BOOST_REQUIRE(rc->findOrCreateSequenceItem(DCM_ContourSequence, ci, static_cast<long>(i)).good());
      ci->putAndInsertString(DCM_ContourGeometricType, c.type.c_str());
      ci->putAndInsertString(DCM_NumberOfContourPoints, std::to_string(c.px.size()).c_str());
      std::vector<double> xyz;
      for (const auto& p : c.px) {
        for (int a = 0; a < 3; ++a)
          xyz.push_back(g.origin[a] + c.slice * g.spacing_slice * g.normal[a] + p.x * g.spacing_col * g.row_dir[a] +
                        p.y * g.spacing_row * g.col_dir[a] + c.tilt * p.x * g.normal[a]);
      }
      ci->putAndInsertString(DCM_ContourData, ds_list(xyz).c_str());
    }
  }
  BOOST_REQUIRE(ff.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
  return path;
}

// The expected slice of a hand-worked case: the pixels (c, r) with pred(c, r) set.
cv::Mat pixels(int rows, int cols, const std::function<bool(int, int)>& pred) {
  cv::Mat m(rows, cols, CV_8U, cv::Scalar(0));
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) m.at<uchar>(r, c) = pred(c, r) ? 1 : 0;
  return m;
}

std::size_t slice_count(const Mask& m, int z) { return static_cast<std::size_t>(cv::countNonZero(m[static_cast<std::size_t>(z)])); }

// The independent rasterisation of the real RTSTRUCT: pydicom reads the images and the structure
// set, skimage.draw.polygon fills each contour (pixel centres inside or on it) on the slice nearest
// its position along the normal (within half the slice spacing), XOR per slice.
const char* kReferenceScript = R"PY(
import sys, glob
import numpy as np
import pydicom
from skimage.draw import polygon
img_dir, rs_path, out = sys.argv[1:4]
ds = [pydicom.dcmread(f) for f in sorted(glob.glob(img_dir + '/*.dcm'))]
iop = np.array([float(v) for v in ds[0].ImageOrientationPatient])
row, col = iop[:3], iop[3:]
n = np.cross(row, col)
ds.sort(key=lambda d: float(np.dot(np.array([float(v) for v in d.ImagePositionPatient]), n)))
pos = [np.array([float(v) for v in d.ImagePositionPatient]) for d in ds]
zs = np.array([float(np.dot(p, n)) for p in pos])
spacing = (zs[-1] - zs[0]) / (len(zs) - 1)
sr, sc = float(ds[0].PixelSpacing[0]), float(ds[0].PixelSpacing[1])
R, C = int(ds[0].Rows), int(ds[0].Columns)
mask = np.zeros((len(ds), R, C), np.uint8)
rs = pydicom.dcmread(rs_path)
used = 0
for c in rs.ROIContourSequence[0].ContourSequence:
    pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
    p = float(np.mean(pts @ n))
    k = int(np.argmin(np.abs(zs - p)))
    if abs(zs[k] - p) > 0.5 * spacing:
        continue
    rel = pts - pos[k]
    rr, cc = polygon((rel @ col) / sr, (rel @ row) / sc, (R, C))
    m = np.zeros((R, C), np.uint8)
    m[rr, cc] = 1
    mask[k] ^= m
    used += 1
mask.tofile(out)
print(len(ds), R, C, used, int(mask.sum()))
)PY";

}  // namespace

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(even_odd_fill_is_the_pixel_centre_rule_hand_worked) {
  using analysis::fill_contours_even_odd;
  // Integer vertices (2,2)-(5,5): the centres on the boundary count, so columns and rows 2..5: 16.
  cv::Mat a = fill_contours_even_odd({square(2, 2, 5, 5)}, 10, 10);
  BOOST_TEST(cv::countNonZero(a) == 16);
  BOOST_TEST(cv::countNonZero(a != pixels(10, 10, [](int c, int r) { return c >= 2 && c <= 5 && r >= 2 && r <= 5; })) == 0);
  // Half-pixel vertices (1.5,1.5)-(11.5,11.5) hold the centres 2..11 (100); a hole (4.5..8.5) takes
  // 5..8 (16) away, whichever way it is drawn: 84; an island in the hole (5.5..7.5: 6..7) adds 4: 88.
  const auto ring = [](int c, int r) { return c >= 2 && c <= 11 && r >= 2 && r <= 11 && !(c >= 5 && c <= 8 && r >= 5 && r <= 8); };
  for (bool cw : {false, true}) {
    cv::Mat h = fill_contours_even_odd({square(1.5, 1.5, 11.5, 11.5), square(4.5, 4.5, 8.5, 8.5, cw)}, 16, 16);
    BOOST_TEST(cv::countNonZero(h) == 84);
    BOOST_TEST(cv::countNonZero(h != pixels(16, 16, ring)) == 0);
  }
  cv::Mat i = fill_contours_even_odd(
      {square(1.5, 1.5, 11.5, 11.5), square(4.5, 4.5, 8.5, 8.5), square(5.5, 5.5, 7.5, 7.5)}, 16, 16);
  BOOST_TEST(cv::countNonZero(i) == 88);
  // Triangle (2.5,2.5) (10.5,2.5) (2.5,10.5): centres with c, r >= 3 and c + r <= 13 (the
  // hypotenuse x + y = 13 runs through centres, which count): 8 + 7 + ... + 1 = 36.
  cv::Mat t = fill_contours_even_odd({{{2.5, 2.5}, {10.5, 2.5}, {2.5, 10.5}}}, 16, 16);
  BOOST_TEST(cv::countNonZero(t) == 36);
  BOOST_TEST(cv::countNonZero(t != pixels(16, 16, [](int c, int r) { return c >= 3 && r >= 3 && c + r <= 13; })) == 0);
  // Clipped at the image border: (-5,-5)-(3.5,3.5) on a 10 x 10 slice holds columns and rows 0..3.
  cv::Mat clip = fill_contours_even_odd({square(-5, -5, 3.5, 3.5)}, 10, 10);
  BOOST_TEST(cv::countNonZero(clip) == 16);
  // Far outside, and with huge coordinates: nothing, no overflow.
  BOOST_TEST(cv::countNonZero(fill_contours_even_odd({square(20, 20, 30, 30)}, 10, 10)) == 0);
  BOOST_TEST(cv::countNonZero(fill_contours_even_odd({square(-1e300, -1e300, 1e300, 1e300)}, 10, 10)) == 100);
}

BOOST_AUTO_TEST_CASE(real_rtstruct_matches_an_independent_rasterisation) {
  const auto v = load_volume(files_in(sts_dir() / "image"));
  BOOST_REQUIRE_EQUAL(v.depth(), 8);
  std::string desc;
  const Mask m = roi_mask_for_volume(v, sts_dir() / "mask/RS.dcm", std::nullopt, &desc);
  BOOST_TEST_MESSAGE(desc);
  BOOST_REQUIRE_EQUAL(m.size(), 8u);
  // The structure set spans 32 slices; the 8 of this crop each hold one contour.
  BOOST_TEST(contains(desc, "ROI 1 'GTV_Mass_CT', 8 of 32 contours on this volume's slices (24 beyond"));
  for (int z = 0; z < 8; ++z) BOOST_TEST(slice_count(m, z) > 1000u, "slice " << z << ": " << slice_count(m, z));
  for (const auto& s : m) BOOST_TEST(s.type() == CV_8U);
  double lo = 0, hi = 0;
  for (const auto& s : m) {
    cv::minMaxLoc(s, &lo, &hi);
    BOOST_TEST(hi == 1.0);
  }

  testsupport::TempDir tmp("roi");
  const fs::path script = tmp.path / "reference.py", out = tmp.path / "mask.raw";
  std::ofstream(script) << kReferenceScript;
  const auto r = testsupport::run({testsupport::python(), script.string(), (sts_dir() / "image").string(),
                                   (sts_dir() / "mask/RS.dcm").string(), out.string()});
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  BOOST_TEST_MESSAGE("python reference: " << r.output);
  int depth = 0, rows = 0, cols = 0, used = 0;
  long total = 0;
  BOOST_REQUIRE(std::sscanf(r.output.c_str(), "%d %d %d %d %ld", &depth, &rows, &cols, &used, &total) == 5);
  BOOST_REQUIRE(depth == v.depth() && rows == v.rows() && cols == v.cols());
  BOOST_TEST(used == 8);
  std::ifstream in(out, std::ios::binary);
  Mask ref;
  for (int z = 0; z < depth; ++z) {
    cv::Mat s(rows, cols, CV_8U);
    in.read(reinterpret_cast<char*>(s.data), static_cast<std::streamsize>(s.total()));
    ref.push_back(s);
  }
  BOOST_REQUIRE(in.good());
  BOOST_TEST(count(m) == static_cast<std::size_t>(total));
  BOOST_TEST(differ(m, ref) == 0u);

  // The same with --label 1; other numbers name the ROI there is.
  BOOST_TEST(differ(roi_mask_for_volume(v, sts_dir() / "mask/RS.dcm", 1), m) == 0u);
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, sts_dir() / "mask/RS.dcm", 2); },
                                      {"RS.dcm", "no ROI number 2", "1 'GTV_Mass_CT'"});
}

BOOST_AUTO_TEST_CASE(real_rtstruct_is_found_next_to_its_series) {
  const auto v = load_volume(files_in(sts_dir() / "image"));
  const auto found = analysis::find_masks_next_to(sts_dir(), v.info);
  BOOST_REQUIRE_EQUAL(found.size(), 1u);
  BOOST_TEST(found.front() == sts_dir() / "mask/RS.dcm");
  dicom::SeriesInfo other = v.info;
  other.series_uid = "1.2.3.4";
  BOOST_TEST(analysis::find_masks_next_to(sts_dir(), other).empty());
}

BOOST_AUTO_TEST_CASE(synthetic_rtstruct_holes_islands_labels_and_skipped_contours) {
  testsupport::TempDir tmp("roi");
  // Coronal slices: rows run down (-z), the normal is +y; 16 rows x 20 columns, 6 slices.
  const auto s = make_series(tmp.path / "ct", 16, 20, 6, {1, 0, 0}, {0, 0, -1}, {10, -20, 30}, 0.8, 0.7, 2.5);
  const auto& v = s.volume;
  BOOST_REQUIRE_EQUAL(v.depth(), 6);
  const auto ring = [](int c, int r) { return c >= 2 && c <= 11 && r >= 2 && r <= 11 && !(c >= 5 && c <= 8 && r >= 5 && r <= 8); };
  const auto island = [](int c, int r) { return c >= 6 && c <= 7 && r >= 6 && r <= 7; };
  TestRoi lesion{3, "lesion", {}};
  lesion.contours.push_back({2, square(1.5, 1.5, 11.5, 11.5)});
  lesion.contours.push_back({2, square(4.5, 4.5, 8.5, 8.5, true)});  // hole, drawn the other way
  lesion.contours.push_back({3.2, square(1.5, 1.5, 11.5, 11.5)});    // 0.2 slices off: still slice 3
  lesion.contours.push_back({3.2, square(4.5, 4.5, 8.5, 8.5)});
  lesion.contours.push_back({3.2, square(5.5, 5.5, 7.5, 7.5)});  // island in the hole
  lesion.contours.push_back({8, square(1.5, 1.5, 11.5, 11.5)});  // beyond the last slice: skipped
  lesion.contours.push_back({4, {{3, 3}}, "POINT"});             // not a closed contour: skipped
  // The triangle of the fill test with its hypotenuse moved off the pixel centres (x + y = 13.3, so
  // that no centre is a tie after the round trip through patient coordinates): again 36.
  TestRoi other{7, "other", {{4, {{2.5, 2.5}, {10.8, 2.5}, {2.5, 10.8}}}}};
  const fs::path rt = write_rtstruct(tmp.path / "rt.dcm", v, {lesion, other});

  std::string desc;
  const Mask m = roi_mask_for_volume(v, rt, 3, &desc);
  BOOST_TEST_MESSAGE(desc);
  BOOST_TEST(desc == "RTSTRUCT rt.dcm: ROI 3 'lesion', 5 of 7 contours on this volume's slices (1 beyond its first or "
                     "last slice, 1 not CLOSED_PLANAR skipped), 172 voxels");
  BOOST_TEST(count(m) == 84u + 88u);
  BOOST_TEST(cv::countNonZero(m[2] != pixels(16, 20, ring)) == 0);
  BOOST_TEST(cv::countNonZero(m[3] != pixels(16, 20, [&](int c, int r) { return ring(c, r) || island(c, r); })) == 0);
  for (int z : {0, 1, 4, 5}) BOOST_TEST(slice_count(m, z) == 0u);

  const Mask t = roi_mask_for_volume(v, rt, 7);
  BOOST_TEST(count(t) == 36u);  // the hand-worked triangle, see the fill test
  BOOST_TEST(cv::countNonZero(t[4] != pixels(16, 20, [](int c, int r) { return c >= 3 && r >= 3 && c + r <= 13; })) == 0);

  // Several ROIs and no label: the error lists them; a number that is not there.
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, rt, std::nullopt); },
                                      {"rt.dcm", "2 ROIs", "--label", "3 'lesion'", "7 'other'"});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, rt, 4); }, {"rt.dcm", "no ROI number 4"});
  // A single ROI is taken without a label.
  const fs::path one = write_rtstruct(tmp.path / "one.dcm", v, {other});
  BOOST_TEST(count(roi_mask_for_volume(v, one, std::nullopt)) == 36u);
}

BOOST_AUTO_TEST_CASE(rtstruct_errors) {
  testsupport::TempDir tmp("roi");
  const auto s = make_series(tmp.path / "ct", 16, 20, 6, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 2.0);
  const auto& v = s.volume;
  const auto sq = square(1.5, 1.5, 11.5, 11.5);

  const fs::path other_for = write_rtstruct(tmp.path / "for.dcm", v, {{1, "a", {{2, sq}}}}, "1.2.3.999");
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, other_for, std::nullopt); },
                                      {"for.dcm", "Frame of Reference UID 1.2.3.999", v.info.frame_of_reference_uid});

  TestContour tilted{2, sq};
  tilted.tilt = 0.3;  // 0.3 mm along the normal per column: +-1.5 mm about the mean over 10 columns
  const fs::path oblique = write_rtstruct(tmp.path / "oblique.dcm", v, {{1, "a", {tilted}}});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, oblique, std::nullopt); },
                                      {"oblique.dcm", "ROI 1 contour 1 is off the slice grid", "not parallel"});

  // Contours 0.8 mm apart (more than a quarter of the slice spacing) on one slice: a finer grid.
  const fs::path fine = write_rtstruct(tmp.path / "fine.dcm", v, {{1, "a", {{2, sq}, {2.4, sq}}}});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, fine, std::nullopt); },
                                      {"fine.dcm", "both fall on slice 2", "finer slice grid", "off the slice grid"});

  const fs::path outside = write_rtstruct(tmp.path / "outside.dcm", v, {{1, "a", {{-3, sq}, {9, sq}}}});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, outside, std::nullopt); },
                                      {"outside.dcm", "empty", "none of the 2 contours of ROI 1 'a' lies on the volume's slices"});

  const fs::path points = write_rtstruct(tmp.path / "points.dcm", v, {{1, "a", {{2, {{3, 3}}, "POINT"}}}});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, points, std::nullopt); },
                                      {"points.dcm", "empty", "no CLOSED_PLANAR contour"});

  // Between pixel centres: a contour that encloses none.
  const fs::path thin = write_rtstruct(tmp.path / "thin.dcm", v, {{1, "a", {{2, square(3.2, 3.2, 3.8, 3.8)}}}});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, thin, std::nullopt); },
                                      {"thin.dcm", "enclose no pixel centre"});
}

BOOST_AUTO_TEST_CASE(seg_round_trip_and_errors) {
  testsupport::TempDir tmp("roi");
  const auto s = make_series(tmp.path / "ct", 24, 32, 7, {1, 0, 0}, {0, 1, 0}, {-50, -60, 100}, 0.9, 0.9, 3.0);
  const auto& v = s.volume;
  // Two overlapping segments: a disc on slices 1..4, a box on slices 3..5.
  std::vector<cv::Mat> disc(7), box(7);
  Mask want1 = analysis::kernels::make_mask(7, 24, 32), want2 = analysis::kernels::make_mask(7, 24, 32);
  for (int z = 1; z <= 4; ++z) {
    disc[z] = cv::Mat::zeros(24, 32, CV_8U);
    cv::circle(disc[z], {12, 10}, 4 + z % 2, cv::Scalar(1), cv::FILLED);
    disc[z].copyTo(want1[z]);
  }
  for (int z = 3; z <= 5; ++z) {
    box[z] = cv::Mat::zeros(24, 32, CV_8U);
    cv::rectangle(box[z], cv::Rect(10, 8, 15, 9), cv::Scalar(1), cv::FILLED);
    box[z].copyTo(want2[z]);
  }
  dicom::SegSpec spec;
  spec.source_file = s.files.front();
  spec.geom = v.geom;
  spec.sources = v.sources;
  dicom::SegmentSpec a, b;
  a.label = "disc", b.label = "box";
  a.category = b.category = dicom::codes::category_tissue();
  a.type = b.type = dicom::codes::tissue();
  a.mask = disc, b.mask = box;
  spec.segments = {a, b};
  const fs::path seg = tmp.path / "mask.seg.dcm";
  dicom::write_seg(spec, seg);

  std::string desc;
  const Mask m1 = roi_mask_for_volume(v, seg, 1, &desc);
  BOOST_TEST_MESSAGE(desc);
  BOOST_TEST(contains(desc, "SEG mask.seg.dcm: segment 1 'disc', 4 of 4 frames on this volume's slices"));
  BOOST_TEST(count(m1) == count(want1));
  BOOST_TEST(differ(m1, want1) == 0u);
  BOOST_TEST(differ(roi_mask_for_volume(v, seg, 2), want2) == 0u);
  Mask both = analysis::kernels::make_mask(7, 24, 32);
  for (int z = 0; z < 7; ++z) cv::bitwise_or(want1[z], want2[z], both[z]);
  BOOST_TEST(differ(roi_mask_for_volume(v, seg, std::nullopt), both) == 0u);

  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, seg, 3); },
                                      {"mask.seg.dcm", "no segment 3", "1 'disc', 2 'box'"});

  // Another series (its own frame of reference) of the same geometry.
  const auto other = make_series(tmp.path / "other", 24, 32, 7, {1, 0, 0}, {0, 1, 0}, {-50, -60, 100}, 0.9, 0.9, 3.0);
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(other.volume, seg, 1); },
                                      {"mask.seg.dcm", "Frame of Reference UID", other.volume.info.frame_of_reference_uid});

  // The same volume moved: 0.3 slices along the normal, one column in plane, 20 slices away.
  const auto moved = [&](dicom::Vec3 d) {
    dicom::Volume w;
    w.info = v.info;
    w.geom = v.geom;
    w.slices = v.slices;
    w.sources = v.sources;
    for (int i = 0; i < 3; ++i) w.geom.origin[i] += d[i];
    for (auto& src : w.sources)
      for (int i = 0; i < 3; ++i) src.position[i] += d[i];
    return w;
  };
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(moved({0, 0, 0.9}), seg, 1); },
                                      {"mask.seg.dcm", "SEG frame 1", "off the image volume's slice grid"});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(moved({0.9, 0, 0}), seg, 1); },
                                      {"mask.seg.dcm", "shifted in plane by -1 columns"});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(moved({0, 0, 60}), seg, 1); },
                                      {"mask.seg.dcm", "empty", "all 4 frames of segment 1 'disc' lie beyond"});

  // Other slice dimensions.
  dicom::Volume narrow = moved({0, 0, 0});
  for (auto& sl : narrow.slices) sl = sl.colRange(0, 30);
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(narrow, seg, 1); },
                                      {"mask.seg.dcm", "24x32", "24x30"});

  // Without a frame of reference (2D projection images, one slice) frames go by their source image.
  dicom::SegSpec flat = spec;
  flat.geom.has_frame_of_reference = false;
  flat.sources = {v.sources[3]};
  flat.segments[0].mask = {disc[3]};
  flat.segments[1].mask = {box[3]};
  const fs::path seg2d = tmp.path / "flat.seg.dcm";
  dicom::write_seg(flat, seg2d);
  dicom::Volume v2d = moved({0, 0, 0});
  v2d.geom.has_frame_of_reference = false;
  v2d.slices = {v.slices[3]};
  v2d.sources = {v.sources[3]};
  BOOST_TEST(differ(roi_mask_for_volume(v2d, seg2d, 2), Mask{want2[3]}) == 0u);
  BOOST_TEST(differ(roi_mask_for_volume(v2d, seg2d, std::nullopt), Mask{both[3]}) == 0u);
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, seg2d, 1); },
                                      {"flat.seg.dcm", "the SEG has no frame of reference"});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v2d, seg, 1); },
                                      {"mask.seg.dcm", "the image volume (2D projection images) has none"});

  // A SEG found next to its series; the RTSTRUCT of another series is not; nor junk.
  const fs::path dir = tmp.path / "folder";
  fs::create_directories(dir / "img");
  fs::create_directories(dir / "masks/deeper");
  for (const auto& f : s.files) fs::copy_file(f, dir / "img" / f.filename());
  fs::copy_file(seg, dir / "masks/a.seg.dcm");
  write_rtstruct(dir / "masks/deeper/rt.dcm", v, {{1, "a", {{2, square(1.5, 1.5, 11.5, 11.5)}}}});
  write_rtstruct(dir / "masks/other_rt.dcm", other.volume, {{1, "a", {{2, square(1.5, 1.5, 11.5, 11.5)}}}});
  std::ofstream(dir / "notes.txt") << "not DICOM\n";
  analysis::kernels::write_nifti(dir / "m.nii", want1, analysis::spacing_of(v.geom));
  {  // a truncated SEG: fails the structural scan, skipped
    std::ifstream in(seg, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(dir / "masks/truncated.dcm", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  const auto found = analysis::find_masks_next_to(dir, v.info);
  BOOST_TEST(found == (std::vector<fs::path>{dir / "masks/a.seg.dcm", dir / "masks/deeper/rt.dcm"}),
             boost::test_tools::per_element());
  expect_error<std::invalid_argument>([&] { analysis::find_masks_next_to(dir / "notes.txt", v.info); }, {"not a folder"});
}

BOOST_AUTO_TEST_CASE(nifti_round_trip_labels_and_errors) {
  testsupport::TempDir tmp("roi");
  const auto s = make_series(tmp.path / "ct", 12, 18, 5, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 0.8, 0.8, 2.0);
  const auto& v = s.volume;
  // A label map: 1 in a box on slices 1..2, 2 in another box on slices 2..3.
  std::vector<cv::Mat> labels;
  for (int z = 0; z < 5; ++z) {
    cv::Mat l = cv::Mat::zeros(12, 18, CV_8U);
    if (z == 1 || z == 2) l(cv::Rect(2, 3, 5, 4)).setTo(1);
    if (z == 2 || z == 3) l(cv::Rect(9, 1, 6, 8)).setTo(2);
    labels.push_back(l);
  }
  const auto spacing = analysis::spacing_of(v.geom);
  for (const char* name : {"labels.nii", "labels.nii.gz"}) {
    const fs::path f = tmp.path / name;
    analysis::kernels::write_nifti(f, labels, spacing);
    std::string desc;
    const Mask m1 = roi_mask_for_volume(v, f, 1, &desc);
    BOOST_TEST(desc == fmt::format("NIfTI {}: label 1, 40 voxels", name));  // 5 x 4 on two slices
    Mask want1, want2, any;
    for (const auto& l : labels) want1.push_back(l == 1), want2.push_back(l == 2), any.push_back(l != 0);
    BOOST_TEST(differ(m1, want1) == 0u);
    BOOST_TEST(count(roi_mask_for_volume(v, f, 2)) == 96u);  // 6 x 8 on two slices
    BOOST_TEST(differ(roi_mask_for_volume(v, f, 2), want2) == 0u);
    BOOST_TEST(differ(roi_mask_for_volume(v, f, std::nullopt), any) == 0u);
    expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, f, 9); },
                                        {name, "empty", "no voxel has the value 9", "values present: 1, 2"});
  }
  // Rows and columns swapped: the error says how the axes are read.
  std::vector<cv::Mat> swapped;
  for (const auto& l : labels) swapped.push_back(l.t());
  analysis::kernels::write_nifti(tmp.path / "swapped.nii", swapped, spacing);
  expect_error<std::invalid_argument>(
      [&] { roi_mask_for_volume(v, tmp.path / "swapped.nii", 1); },
      {"swapped.nii", "12x18x5 (i x j x k)", "18x12x5 (columns x rows x slices)", "i is read as the column",
       "look swapped"});
  // Fewer slices.
  analysis::kernels::write_nifti(tmp.path / "short.nii", std::vector<cv::Mat>(labels.begin(), labels.begin() + 4), spacing);
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, tmp.path / "short.nii", 1); },
                                      {"short.nii", "18x12x4 (i x j x k)"});
  // Spacing 5% off along the slices.
  auto off = spacing;
  off.slice *= 1.05;
  analysis::kernels::write_nifti(tmp.path / "spacing.nii", labels, off);
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, tmp.path / "spacing.nii", 1); },
                                      {"spacing.nii", "2.1 mm", "within 1%"});
  // 0.5% off is the same grid.
  off = spacing;
  off.col *= 1.005;
  analysis::kernels::write_nifti(tmp.path / "close.nii", labels, off);
  BOOST_TEST(count(roi_mask_for_volume(v, tmp.path / "close.nii", 1)) == 40u);
  // Nothing non-zero.
  std::vector<cv::Mat> zeros;
  for (int z = 0; z < 5; ++z) zeros.push_back(cv::Mat::zeros(12, 18, CV_8U));
  analysis::kernels::write_nifti(tmp.path / "zeros.nii", zeros, spacing);
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(v, tmp.path / "zeros.nii", std::nullopt); },
                                      {"zeros.nii", "empty", "no voxel is non-zero"});
}

// The saved crash reproducers (20,000 nested sequences, huge Number of Frames, broken codestreams,
// NIfTI headers): the folder search skips them all, without DCMTK ever parsing the deep nesting.
BOOST_AUTO_TEST_CASE(folder_search_survives_the_fuzz_reproducers) {
  dicom::SeriesInfo any;
  any.series_uid = "1.2.3";
  BOOST_TEST(analysis::find_masks_next_to(testsupport::source_dir() / "fuzz/regressions", any).empty());
}

BOOST_AUTO_TEST_CASE(files_that_are_no_mask) {
  testsupport::TempDir tmp("roi");
  const auto s = make_series(tmp.path / "ct", 8, 8, 3, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1, 1, 1);
  std::ofstream(tmp.path / "notes.txt") << "hello\n";
  expect_error<std::runtime_error>([&] { roi_mask_for_volume(s.volume, tmp.path / "notes.txt", 1); },
                                   {"notes.txt", "neither a NIfTI-1 file"});
  expect_error<std::runtime_error>([&] { roi_mask_for_volume(s.volume, s.files.front(), 1); },
                                   {s.files.front().filename().string(), UID_CTImageStorage, "neither a Segmentation"});
  expect_error<std::runtime_error>([&] { roi_mask_for_volume(s.volume, tmp.path / "missing.nii", 1); },
                                   {"missing.nii", "no such file"});
  expect_error<std::invalid_argument>([&] { roi_mask_for_volume(dicom::Volume{}, tmp.path / "notes.txt", 1); },
                                      {"image volume is empty"});
}
