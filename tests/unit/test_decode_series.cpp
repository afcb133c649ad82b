#define BOOST_TEST_MODULE decode_series
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "dicom/check.h"
#include "dicom/decode_header.h"
#include "dicom/series_loader.h"
#include "support/paths.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;

// The real series in tests/data are the parts of the public series kept there (tests/data/README.md):
// CRLM-CT-1004 slices 1-01..1-18 of 41 (the top of the series, the whole lung part), the ADC map
// slices 1-15..1-22 of 36, the DCE series at 4 of its 60 positions in all 3 phases (12 of 180 files).
// Each subset is contiguous along the normal, so each is one stack, as the whole series is.
constexpr int kCtSlices = 18;
constexpr int kAdcSlices = 8;
constexpr int kDcePositions = 4;
constexpr std::size_t kDceFiles = 3 * kDcePositions;

namespace {

fs::path data(const std::string& rel) { return testsupport::test_data(rel); }

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// Lines printed by tests/scripts/decode_reference.py (pydicom).
std::vector<std::string> python_lines(const std::string& args) {
  const fs::path script = testsupport::source_dir() / "tests/scripts/decode_reference.py";
  const std::string cmd = fmt::format("{} '{}' {}", testsupport::python(), script.string(), args);
  FILE* p = ::popen(cmd.c_str(), "r");
  BOOST_REQUIRE(p != nullptr);
  std::vector<std::string> lines;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) {
    std::string line(buf);
    if (!line.empty() && line.back() == '\n') line.pop_back();
    lines.push_back(line);
  }
  BOOST_REQUIRE_EQUAL(::pclose(p), 0);
  return lines;
}

struct Stack {
  double spacing = 0;
  dicom::Vec3 origin{};
  std::vector<std::string> order;
};

Stack python_stack(const std::vector<fs::path>& files) {
  std::string args = "stack";
  for (const auto& f : files) args += " '" + f.string() + "'";
  Stack s;
  for (const auto& line : python_lines(args)) {
    if (line.rfind("spacing ", 0) == 0) s.spacing = std::stod(line.substr(8));
    if (line.rfind("origin ", 0) == 0)
      std::sscanf(line.c_str(), "origin %lf %lf %lf", &s.origin[0], &s.origin[1], &s.origin[2]);
    if (line.rfind("file ", 0) == 0) s.order.push_back(line.substr(5));
  }
  return s;
}

std::map<std::string, std::string> python_tags(const fs::path& file) {
  std::map<std::string, std::string> tags;
  for (const auto& line : python_lines("tags '" + file.string() + "'")) {
    const auto tab = line.find('\t');
    if (tab != std::string::npos) tags[line.substr(0, tab)] = line.substr(tab + 1);
  }
  return tags;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<std::string> source_paths(const dicom::Volume& v) {
  std::vector<std::string> out;
  for (const auto& s : v.sources) out.push_back(s.path);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(ct_series_geometry_matches_reference_and_shares_one_allocation) {
  const auto files = files_in(data("mirp/ct_images_seg/CRLM-CT-1004/image"));
  const auto r = dicom::load_files(files);
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 1u);
  BOOST_TEST(r.rejected.empty());
  const auto& v = r.volumes.front();
  BOOST_TEST(v.depth() == kCtSlices);
  BOOST_TEST(v.rows() == 512);
  BOOST_TEST(v.cols() == 512);
  const auto ref = python_stack(files);
  BOOST_TEST(source_paths(v) == ref.order, boost::test_tools::per_element());
  BOOST_TEST(v.geom.spacing_slice == ref.spacing, boost::test_tools::tolerance(1e-6));
  for (int i = 0; i < 3; ++i) BOOST_TEST(v.geom.origin[i] == ref.origin[i], boost::test_tools::tolerance(1e-9));
  BOOST_TEST(v.geom.has_frame_of_reference);
  // int16 HU in one allocation: peak memory is the int16 volume, no float copy.
  for (const auto& s : v.slices) {
    BOOST_TEST(s.type() == CV_16S);
    BOOST_TEST(s.u == v.slices.front().u);
  }
  BOOST_TEST(v.sources[1].position[2] - v.sources[0].position[2] == v.geom.spacing_slice,
             boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(series_info_and_sources_are_filled) {
  const auto files = files_in(data("mirp/ct_images_seg/CRLM-CT-1004/image"));
  const auto v = std::move(dicom::load_files(files).volumes.at(0));
  const auto tags = python_tags(v.sources.front().path);
  BOOST_TEST(v.info.modality == tags.at("Modality"));
  BOOST_TEST(v.info.series_description == tags.at("SeriesDescription"));
  BOOST_TEST(v.info.protocol_name == tags.at("ProtocolName"));
  BOOST_TEST(v.info.body_part == tags.at("BodyPartExamined"));
  BOOST_TEST(v.info.study_uid == tags.at("StudyInstanceUID"));
  BOOST_TEST(v.info.series_uid == tags.at("SeriesInstanceUID"));
  BOOST_TEST(v.info.frame_of_reference_uid == tags.at("FrameOfReferenceUID"));
  BOOST_TEST(v.info.units == "HU");
  BOOST_TEST(v.info.photometric == "MONOCHROME2");
  BOOST_TEST(v.sources.front().sop_class_uid == tags.at("SOPClassUID"));
  BOOST_TEST(v.sources.front().sop_instance_uid == tags.at("SOPInstanceUID"));
  BOOST_TEST(v.sources.front().frame_number == 0);
  // MR without Rescale Type: unspecified units.
  const auto mr = dicom::load_files(files_in(data("mirp/adc_images_mr/SCAN_001/adc_image")));
  BOOST_REQUIRE_EQUAL(mr.volumes.size(), 1u);
  BOOST_TEST(mr.volumes[0].info.units == "US");
  BOOST_TEST(mr.volumes[0].depth() == kAdcSlices);
}

BOOST_AUTO_TEST_CASE(dce_phases_become_three_volumes) {
  const auto files = files_in(data("mirp/dce_images_mr/UCSF-BR-06/image_dce_3dfgre_orig"));
  BOOST_REQUIRE_EQUAL(files.size(), kDceFiles);
  const auto r = dicom::load_files(files);
  BOOST_TEST(r.rejected.empty());
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 3u);
  std::set<std::string> all;
  double last_instance = 0;
  for (const auto& v : r.volumes) {
    BOOST_TEST(v.depth() == kDcePositions);
    // Each phase is a proper stack: the reference sorts its files the same way, same spacing.
    std::vector<fs::path> phase_files(v.sources.size());
    std::transform(v.sources.begin(), v.sources.end(), phase_files.begin(), [](const auto& s) { return s.path; });
    const auto ref = python_stack(phase_files);
    BOOST_TEST(source_paths(v) == ref.order, boost::test_tools::per_element());
    BOOST_TEST(v.geom.spacing_slice == ref.spacing, boost::test_tools::tolerance(1e-6));
    // Phases in acquisition order: every instance number of phase k+1 is above those of phase k.
    double lo = 1e9, hi = 0;
    for (const auto& s : v.sources) {
      const double instance = dicom::read_image_header(s.path).frames.at(0).temporal_key[4];
      lo = std::min(lo, instance);
      hi = std::max(hi, instance);
      all.insert(s.path);
    }
    BOOST_TEST(lo > last_instance);
    last_instance = hi;
  }
  BOOST_TEST(all.size() == kDceFiles);
  BOOST_TEST(contains(r.notes.at(0), "3 temporal phases"));
}

BOOST_AUTO_TEST_CASE(missing_slice_splits_the_series) {
  auto files = python_stack(files_in(data("mirp/ct_images_seg/CRLM-CT-1004/image"))).order;
  BOOST_REQUIRE_EQUAL(files.size(), static_cast<std::size_t>(kCtSlices));
  const int gap = kCtSlices / 2;  // an inner slice along the normal
  files.erase(files.begin() + gap);
  const auto r = dicom::load_files(std::vector<fs::path>(files.begin(), files.end()));
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 2u);
  BOOST_TEST(r.volumes[0].depth() == gap);
  BOOST_TEST(r.volumes[1].depth() == kCtSlices - 1 - gap);
  BOOST_TEST(r.volumes[0].geom.spacing_slice == 5.0, boost::test_tools::tolerance(1e-6));
  BOOST_REQUIRE_EQUAL(r.notes.size(), 1u);
  BOOST_TEST(contains(r.notes[0], "gap of 1 missing slice"));
}

BOOST_AUTO_TEST_CASE(dicom2nifti_failing_cases_are_split_or_rejected_with_reasons) {
  const auto tilt = dicom::load_folder(data("dicom2nifti/tests/data/failing/gantrytilting/001"));
  BOOST_TEST(tilt.volumes.empty());
  BOOST_REQUIRE_EQUAL(tilt.rejected.size(), 1u);
  BOOST_TEST(tilt.rejected[0].files.size() == 4u);
  BOOST_TEST(contains(tilt.rejected[0].reason, "gantry tilt"));

  // Tilted too, and a slice missing: the tilt is what stops it.
  const auto increment = dicom::load_folder(data("dicom2nifti/tests/data/failing/sliceincrement/002"));
  BOOST_TEST(increment.volumes.empty());
  BOOST_TEST(contains(increment.rejected.at(0).reason, "gantry tilt"));

  const auto notvol = dicom::load_folder(data("dicom2nifti/tests/data/failing/notavolume/001"));
  BOOST_TEST(notvol.volumes.empty());
  BOOST_REQUIRE_EQUAL(notvol.rejected.size(), 1u);
  BOOST_TEST(contains(notvol.rejected[0].reason, "one position"));

  const auto orient = dicom::load_folder(data("dicom2nifti/tests/data/failing/sliceorientation/001"));
  BOOST_REQUIRE_EQUAL(orient.volumes.size(), 2u);
  BOOST_TEST(orient.volumes[0].depth() == 2);
  BOOST_TEST(orient.volumes[1].depth() == 2);
  BOOST_TEST(orient.volumes[0].geom.row_dir != orient.volumes[1].geom.row_dir);
  BOOST_TEST(contains(orient.notes.at(0), "orientation"));

  const auto two = dicom::load_folder(data("dicom2nifti/tests/data/failing/slicecount"));
  BOOST_REQUIRE_EQUAL(two.volumes.size(), 1u);
  BOOST_TEST(two.volumes[0].depth() == 2);
  BOOST_TEST(two.volumes[0].geom.spacing_slice == 1.0, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(two.rejected.size() == 2u);  // the two .nii.gz ground truths: not DICOM
  for (const auto& j : two.rejected) BOOST_TEST(contains(j.reason, "DICOM"));
}

BOOST_AUTO_TEST_CASE(enhanced_multiframe_equals_its_single_frame_series) {
  for (const char* size : {"23x38x3", "24x38x3"}) {
    BOOST_TEST_CONTEXT(size) {
      const auto mf = dicom::load_files({data(fmt::format("dcmqi/data/segmentations/{}/multiframe/mf.dcm", size))});
      const auto sf = dicom::load_folder(data(fmt::format("dcmqi/data/segmentations/{}/image", size)));
      BOOST_REQUIRE_EQUAL(mf.volumes.size(), 1u);
      BOOST_REQUIRE_EQUAL(sf.volumes.size(), 1u);
      const auto& a = mf.volumes[0];
      const auto& b = sf.volumes[0];
      BOOST_REQUIRE_EQUAL(a.depth(), 3);
      BOOST_REQUIRE_EQUAL(b.depth(), 3);
      BOOST_TEST(a.geom.spacing_slice == b.geom.spacing_slice, boost::test_tools::tolerance(1e-6));
      for (int i = 0; i < 3; ++i) BOOST_TEST(a.geom.origin[i] == b.geom.origin[i], boost::test_tools::tolerance(1e-6));
      for (int z = 0; z < 3; ++z) {
        BOOST_TEST(cv::norm(a.slices[z], b.slices[z], cv::NORM_INF) == 0.0);
        BOOST_TEST(a.sources[z].frame_number >= 1);
        BOOST_TEST(a.sources[z].path == a.sources[0].path);
      }
      BOOST_TEST(a.sources[0].sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.2");  // Legacy Converted Enhanced CT
      BOOST_TEST(a.info.units == b.info.units);
    }
  }
}

BOOST_AUTO_TEST_CASE(projection_images_are_single_slices_without_frame_of_reference) {
  const auto dx = dicom::load_files({data("highdicom/data/test_files/dx_image.dcm")});
  BOOST_REQUIRE_EQUAL(dx.volumes.size(), 1u);
  BOOST_TEST(dx.volumes[0].depth() == 1);
  BOOST_TEST(!dx.volumes[0].geom.has_frame_of_reference);
  BOOST_TEST(dx.volumes[0].geom.spacing_row > 0);
  // Three CRs of one study folder: three single-slice volumes.
  const auto cr = dicom::load_folder(data("pydicom/test_files/dicomdirtests/77654033"));
  int projections = 0;
  for (const auto& v : cr.volumes) projections += v.info.modality == "CR" && !v.geom.has_frame_of_reference;
  BOOST_TEST(projections == 3);
}

BOOST_AUTO_TEST_CASE(colour_and_non_images_are_skipped_with_reasons) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"fo-dicom/TestData/TestPattern_RGB.dcm", "colour image (RGB"},
      {"pydicom/test_files/examples_palette.dcm", "colour image (PALETTE COLOR"},
      {"pydicom/test_files/SC_rgb_jpeg_dcmtk.dcm", "colour image (YBR_FULL"},
      {"pydicom/test_files/examples_ybr_color.dcm", "colour image (YBR_FULL_422"},
      {"dcmqi/data/segmentations/liver.dcm", "segmentation"},
      {"pydicom/test_files/rtstruct.dcm", "no pixel data (RTSTRUCT)"},
      {"highdicom/data/test_files/sr_document.dcm", "no pixel data (SR)"},
      {"fo-dicom/TestData/HasFragmentSequence.dcm", "without a position for every frame"},
      {"pydicom/test_files/MR_truncated.dcm", "truncated"},
      {"pydicom/test_files/badVR.dcm", "Number of Frames"},
      {"fo-dicom/TestData/GH1146.dcm", "truncated"},
      {"pydicom/test_files/zipMR.gz", "DICOM"},
  };
  for (const auto& [rel, why] : cases) {
    BOOST_TEST_CONTEXT(rel) {
      const auto r = dicom::load_files({data(rel)});
      BOOST_TEST(r.volumes.empty());
      BOOST_REQUIRE_EQUAL(r.rejected.size(), 1u);
      BOOST_TEST(r.rejected[0].path == data(rel).string());
      BOOST_TEST(contains(r.rejected[0].reason, why), r.rejected[0].reason);
    }
  }
}

BOOST_AUTO_TEST_CASE(native_pixels_are_located_by_the_header_read_and_truncation_is_reported) {
  const auto ct = data("mirp/ct_images_seg/CRLM-CT-1004/image/1-01.dcm");
  const auto h = dicom::read_image_header(ct);
  BOOST_TEST(h.native_pixels.length == 512u * 512u * 2u);
  BOOST_TEST(h.native_pixels.offset + h.native_pixels.length <= fs::file_size(ct));
  // Compressed pixel data is never read "natively".
  BOOST_TEST(dicom::read_image_header(data("pydicom/test_files/JPEG2000.dcm")).native_pixels.length == 0u);
  // The same file cut inside its pixel data: rejected as truncated, whichever reader notices.
  const testsupport::TempDir dir("native-truncated");
  const fs::path cut = dir.path / "cut.dcm";
  fs::copy_file(ct, cut);
  fs::resize_file(cut, h.native_pixels.offset + 1000);
  const auto r = dicom::load_files({cut});
  BOOST_TEST(r.volumes.empty());
  BOOST_REQUIRE_EQUAL(r.rejected.size(), 1u);
  BOOST_TEST(contains(r.rejected[0].reason, "truncated"), r.rejected[0].reason);
  // A file that shrinks between the header read and the pixel read: the native reader says so.
  dicom::DecodedLayout layout;
  layout.rows = layout.cols = 512;
  layout.frames = 1;
  layout.bits_allocated = 16;
  std::vector<char> buf(layout.bytes());
  try {
    dicom::read_native(cut, h.native_pixels, layout, [&](const dicom::DecodedLayout&) { return buf.data(); });
    BOOST_ERROR("read_native read past the end of the file");
  } catch (const dicom::DicomError& e) {
    BOOST_TEST(contains(e.what(), "truncated"), e.what());
  }
}

BOOST_AUTO_TEST_CASE(header_only_read_gives_profile_attributes_and_frame_geometry) {
  const auto ct = data("mirp/ct_images_seg/CRLM-CT-1004/image/1-01.dcm");
  const auto h = dicom::read_image_header(ct);
  const auto tags = python_tags(ct);
  BOOST_TEST(h.modality == tags.at("Modality"));
  BOOST_TEST(h.series_description == tags.at("SeriesDescription"));
  BOOST_TEST(h.protocol_name == tags.at("ProtocolName"));
  BOOST_TEST(h.sop_class_uid == tags.at("SOPClassUID"));
  BOOST_TEST(h.series_uid == tags.at("SeriesInstanceUID"));
  BOOST_TEST(h.rows == 512);
  BOOST_TEST(h.is_signed);
  BOOST_TEST(h.has_pixel_data);
  BOOST_REQUIRE_EQUAL(h.frames.size(), 1u);
  BOOST_TEST(h.frames[0].position.has_value());
  BOOST_TEST(h.frames[0].has_rescale);
  BOOST_TEST(!h.is_multiframe());
  // Enhanced: one FrameHeader per frame from the functional groups.
  const auto mf = dicom::read_image_header(data("dcmqi/data/segmentations/23x38x3/multiframe/mf.dcm"));
  BOOST_TEST(mf.enhanced);
  BOOST_REQUIRE_EQUAL(mf.frames.size(), 3u);
  for (const auto& f : mf.frames) {
    BOOST_TEST(f.position.has_value());
    BOOST_TEST(f.orientation.has_value());
    BOOST_TEST(f.pixel_spacing.has_value());
  }
  BOOST_TEST(mf.frames[2].frame_number == 3);
  // Not DICOM: an exception with the reason.
  BOOST_CHECK_THROW(dicom::read_image_header(data("mirp/LICENSE.txt")), dicom::DicomError);
}

BOOST_AUTO_TEST_CASE(concurrent_loads_agree) {
  // The pipeline decodes studies on a thread pool: loads share no state.
  const auto dir = data("ibsi-data_sets/ibsi_validation/dicom/STS_001");
  std::vector<dicom::LoadResult> results(3);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&r, &dir] { r = dicom::load_folder(dir); });
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    BOOST_REQUIRE_EQUAL(r.volumes.size(), results[0].volumes.size());
    BOOST_TEST(r.volumes.size() == 3u);  // CT, MR, PET; the RTSTRUCT (CT/mask/RS.dcm) rejected
    for (std::size_t i = 0; i < r.volumes.size(); ++i) {
      BOOST_REQUIRE_EQUAL(r.volumes[i].depth(), results[0].volumes[i].depth());
      for (int z = 0; z < r.volumes[i].depth(); ++z)
        BOOST_TEST(cv::norm(r.volumes[i].slices[z], results[0].volumes[i].slices[z], cv::NORM_INF) == 0.0);
    }
  }
}
