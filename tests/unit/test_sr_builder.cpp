#define BOOST_TEST_MODULE sr_builder
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "dicom/check.h"
#include "dicom/codes.h"
#include "dicom/seg_builder.h"
#include "dicom/sr_builder.h"
#include "support/paths.h"
#include "support/seg_sources.h"

namespace fs = std::filesystem;
using namespace dicom;
using testsupport::SourceSeries;

namespace {

using TempDir = testsupport::TempDir;

struct SrDump {
  std::map<std::string, std::vector<std::string>> facts;  // first word -> rest of line, in order
  std::vector<std::vector<std::string>> groups;            // lines of each GROUP (GROUP line first)
  std::string raw;
  const std::vector<std::string>& all(const std::string& k) const {
    static const std::vector<std::string> none;
    auto it = facts.find(k);
    return it == facts.end() ? none : it->second;
  }
  std::string one(const std::string& k) const { return all(k).empty() ? std::string("<absent>") : all(k).front(); }
};

SrDump run_sr_dump(const fs::path& sr, const fs::path& seg, const fs::path& source) {
  const auto script = testsupport::source_dir() / "tests/scripts/sr_dump.py";
  const auto r = testsupport::run_command(std::string(testsupport::python()) + " " + testsupport::shell_quote(script.string()) + " " +
                                          testsupport::shell_quote(sr.string()) + " " + testsupport::shell_quote(seg.string()) +
                                          " " + testsupport::shell_quote(source.string()));
  BOOST_TEST_REQUIRE(r.exit_code == 0, "sr_dump.py failed: " << r.output.substr(0, 3000));
  SrDump d;
  d.raw = r.output;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    const bool nested = line.rfind("  ", 0) == 0;
    const auto text = line.substr(line.find_first_not_of(' '));
    const auto sp = text.find(' ');
    const auto key = text.substr(0, sp);
    const auto rest = sp == std::string::npos ? std::string() : text.substr(sp + 1);
    if (key == "GROUP") d.groups.push_back({rest});
    else if (nested && !d.groups.empty()) d.groups.back().push_back(text);
    else d.facts[key].push_back(rest);
  }
  return d;
}

void expect_validators_clean(const fs::path& f) {
  testsupport::expect_dciodvfy_clean(f);

  const auto p = testsupport::pixelmed_sr_validator(f);
  const auto perrors = testsupport::lines_with(p.output, "Error");
  for (const auto& w : testsupport::lines_with(p.output, "Warning")) BOOST_TEST_MESSAGE("pixelmed " << f.filename() << ": " << w);
  for (const auto& e : perrors) BOOST_TEST_MESSAGE("pixelmed " << f.filename() << ": " << e);
  BOOST_TEST(perrors.empty(), "DicomSRValidator reports " << perrors.size() << " error(s) for " << f);
  BOOST_TEST(p.output.find("Exception") == std::string::npos, "DicomSRValidator failed: " << p.output.substr(0, 1000));
}

// A two-segment SEG (left and right lung) over a small synthetic CT, the way the pipeline has it.
struct Fixture : TempDir {
  SourceSeries src;
  SegSpec seg_spec;
  WrittenObject seg;
  Fixture() {
    const auto files = testsupport::write_synthetic_ct(path / "ct", 20, 28, 4, {1, 0, 0}, {0, 1, 0}, {-10, -10, 50}, 0.8, 0.8, 2.0);
    src = testsupport::load_series(files);
    seg_spec = testsupport::seg_spec_over(src);
    seg_spec.label_map.resize(src.frames.size());
    for (auto& lm : seg_spec.label_map) {
      lm = cv::Mat(20, 28, CV_8U, cv::Scalar(0));
      cv::rectangle(lm, cv::Rect(2, 2, 10, 14), cv::Scalar(1), cv::FILLED);
      cv::rectangle(lm, cv::Rect(16, 2, 10, 14), cv::Scalar(2), cv::FILLED);
    }
    for (const char* n : {"right_lung", "left_lung"}) {
      const auto c = codes::segment_codes(n);
      SegmentSpec s;
      s.label = n == std::string("right_lung") ? "Right lung" : "Left lung";
      s.category = c->category;
      s.type = c->type;
      s.anatomic_region = c->anatomic_region;
      seg_spec.segments.push_back(s);
    }
    seg = write_seg(seg_spec, path / "lungs.seg.dcm");
  }

  SrSpec sr_spec() const {
    SrSpec s;
    s.source_file = src.first_file;
    s.sources = src.frames;
    s.seg = seg;
    s.procedure_reported = codes::procedure_for_modality("CT");
    for (int k = 1; k <= 2; ++k) {
      const auto& segment = seg_spec.segments[k - 1];
      MeasurementGroupSpec g;
      g.tracking_id = segment.label;
      g.tracking_uid = seg.tracking_uids[k - 1];
      g.segment_number = k;
      g.finding = segment.type;
      g.finding_site = segment.type;
      g.measurements.push_back({codes::volume(), 12.5 * k, codes::unit_ml(), std::nullopt, codes::sum_of_voxel_volumes()});
      g.measurements.push_back({codes::attenuation_coefficient(), -850.25, codes::unit_hu(), codes::mean(), std::nullopt});
      g.measurements.push_back({codes::attenuation_coefficient(), 35.5, codes::unit_hu(), codes::standard_deviation(), std::nullopt});
      g.measurements.push_back({codes::emphysema_index(), 3.25 * k, codes::unit_percent(), std::nullopt, std::nullopt});
      g.qualitative.push_back({codes::emphysema(), k == 1 ? codes::present() : codes::absent()});
      s.groups.push_back(g);
    }
    s.qualitative.push_back({codes::emphysema(), codes::present()});
    return s;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(sr, Fixture)

BOOST_AUTO_TEST_CASE(measurement_report_references_seg_and_sources) {
  const auto spec = sr_spec();
  const auto w = write_sr(spec, path / "report.sr.dcm");
  BOOST_TEST(w.sop_class_uid == UID_Comprehensive3DSRStorage);
  BOOST_TEST(w.study_uid == seg.study_uid);
  BOOST_TEST(w.series_uid != seg.series_uid);
  BOOST_TEST(w.series_uid != src.series_uid);
  expect_validators_clean(w.path);

  const auto d = run_sr_dump(w.path, seg.path, src.first_file);
  std::istringstream head(d.one("SR"));
  std::string cls, inst, series, study, modality, completion, verification;
  head >> cls >> inst >> series >> study >> modality >> completion >> verification;
  BOOST_TEST(inst == w.sop_instance_uid);
  BOOST_TEST(series == w.series_uid);
  BOOST_TEST(modality == "SR");
  BOOST_TEST(completion == "COMPLETE");
  BOOST_TEST(d.one("SAME") == "1 1");  // patient and study copied from the source
  BOOST_TEST(d.one("TITLE") == "DCM:126000");
  BOOST_TEST(d.one("TEMPLATE") == "1500");
  BOOST_TEST(d.one("LANGUAGE") == "RFC5646:eng");  // language only, no country
  BOOST_TEST(d.one("PROCEDURE") == "LN:25045-6");
  BOOST_TEST(d.one("OBSERVER").rfind("DCM:121007 ", 0) == 0u);  // Observer Type: Device
  // Evidence: the SEG and every source instance, in the source study.
  std::set<std::string> evidence(d.all("EVIDENCE").begin(), d.all("EVIDENCE").end());
  BOOST_TEST(evidence.count(seg.study_uid + " " + seg.series_uid + " " + seg.sop_class_uid + " " + seg.sop_instance_uid) == 1u);
  for (const auto& f : src.frames)
    BOOST_TEST(evidence.count(seg.study_uid + " " + src.series_uid + " " + f.sop_class_uid + " " + f.sop_instance_uid) == 1u);
  BOOST_TEST(evidence.size() == src.frames.size() + 1);
  BOOST_TEST(d.all("PREDECESSOR").empty());
  BOOST_TEST(d.all("SCHEME") == std::vector<std::string>{"99PACSNODE"}, boost::test_tools::per_element());
  // One group per segment; references resolve to the SEG's segments and the source series.
  BOOST_TEST_REQUIRE(d.groups.size() == 2u);
  for (int k = 1; k <= 2; ++k) {
    const auto& g = d.groups[k - 1];
    const auto& segment = seg_spec.segments[k - 1];
    BOOST_TEST(g[0] == std::to_string(k) + " " + seg.tracking_uids[k - 1] + " " + segment.label);
    std::set<std::string> lines(g.begin() + 1, g.end());
    BOOST_TEST(lines.count("REFSEG " + seg.sop_class_uid + " " + seg.sop_instance_uid + " " + std::to_string(k) + " " + segment.label) == 1u,
               d.raw);
    BOOST_TEST(lines.count("SRCSERIES " + src.series_uid + " 1") == 1u);
    BOOST_TEST(lines.count("FINDING SCT:" + segment.type.value) == 1u);
    BOOST_TEST(lines.count("SITE SCT:" + segment.type.value) == 1u);
    BOOST_TEST(lines.count("NUM SCT:118565006 " + std::string(k == 1 ? "12.5" : "25.0") + " UCUM:ml - DCM:126030") == 1u, d.raw);
    BOOST_TEST(lines.count("NUM DCM:112031 -850.25 UCUM:[hnsf'U] SCT:373098007 -") == 1u, d.raw);
    BOOST_TEST(lines.count("NUM DCM:112031 35.5 UCUM:[hnsf'U] SCT:386136009 -") == 1u, d.raw);
    BOOST_TEST(lines.count("NUM 99PACSNODE:EMPH-LAA950 " + std::string(k == 1 ? "3.25" : "6.5") + " UCUM:% - -") == 1u, d.raw);
    BOOST_TEST(lines.count("QUAL SCT:87433001 " + std::string(k == 1 ? "SCT:52101004" : "SCT:2667000")) == 1u, d.raw);
  }
  BOOST_TEST(d.all("DOCQUAL") == std::vector<std::string>{"SCT:87433001 SCT:52101004"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(enhanced_sr_replacing_an_earlier_report) {
  auto spec = sr_spec();
  const auto first = write_sr(spec, path / "first.sr.dcm");
  spec.kind = SrKind::enhanced;
  spec.predecessor = DocumentRef{first.sop_class_uid, first.sop_instance_uid, first.series_uid, first.study_uid};
  spec.qualitative.clear();
  const auto w = write_sr(spec, path / "second.sr.dcm");
  BOOST_TEST(w.sop_class_uid == UID_EnhancedSRStorage);
  BOOST_TEST(w.sop_instance_uid != first.sop_instance_uid);
  expect_validators_clean(w.path);
  const auto d = run_sr_dump(w.path, seg.path, src.first_file);
  BOOST_TEST(d.all("PREDECESSOR") ==
                 std::vector<std::string>{first.study_uid + " " + first.series_uid + " " + first.sop_class_uid + " " + first.sop_instance_uid},
             boost::test_tools::per_element());
  BOOST_TEST(d.groups.size() == 2u);
}

BOOST_AUTO_TEST_CASE(unknown_segment_is_refused) {
  auto spec = sr_spec();
  spec.groups[1].segment_number = 7;  // the SEG has two segments
  BOOST_CHECK_EXCEPTION(write_sr(spec, path / "bad.sr.dcm"), DicomError, [](const DicomError& e) {
    BOOST_TEST_MESSAGE(e.what());
    return std::string(e.what()).find("referenced segment 7") != std::string::npos;
  });
  BOOST_TEST(!fs::exists(path / "bad.sr.dcm"));
}

BOOST_AUTO_TEST_CASE(bad_specs_are_refused_with_a_reason) {
  auto no_measurements = sr_spec();
  no_measurements.groups[0].measurements.clear();
  BOOST_CHECK_EXCEPTION(write_sr(no_measurements, path / "bad.sr.dcm"), std::invalid_argument,
                        [](const auto& e) { return std::string(e.what()).find("at least one measurement") != std::string::npos; });
  auto srt = sr_spec();
  srt.groups[0].finding = Code{"T-28000", "SRT", "Lung"};
  BOOST_CHECK_EXCEPTION(write_sr(srt, path / "bad.sr.dcm"), std::invalid_argument,
                        [](const auto& e) { return std::string(e.what()).find("SRT") != std::string::npos; });
  auto nan = sr_spec();
  nan.groups[1].measurements[0].value = std::numeric_limits<double>::quiet_NaN();
  BOOST_CHECK_EXCEPTION(write_sr(nan, path / "bad.sr.dcm"), std::invalid_argument,
                        [](const auto& e) { return std::string(e.what()).find("not finite") != std::string::npos; });
  auto no_id = sr_spec();
  no_id.groups[0].tracking_id.clear();
  BOOST_CHECK_THROW(write_sr(no_id, path / "bad.sr.dcm"), std::invalid_argument);
  BOOST_TEST(!fs::exists(path / "bad.sr.dcm"));
}

BOOST_AUTO_TEST_CASE(report_over_real_dcmqi_series) {
  // Real source headers (dcmqi's 38 rows x 23 columns CT), one segment.
  auto real = testsupport::load_series(testsupport::dicom_files(testsupport::test_data("dcmqi/data/segmentations/23x38x3/image")));
  SegSpec s;
  s.source_file = real.first_file;
  s.geom = real.geom;
  s.sources = real.frames;
  const auto c = codes::segment_codes("tissue");
  s.segments.push_back({"Tissue", "", c->category, c->type, std::nullopt, {50000, 32896, 32896}, "", "", {}});
  for (size_t z = 0; z < real.frames.size(); ++z) {
    cv::Mat m(real.rows, real.cols, CV_8U, cv::Scalar(0));
    m(cv::Rect(3, 4, 10, 20)).setTo(1);
    s.segments[0].mask.push_back(m);
  }
  const auto seg_real = write_seg(s, path / "real.seg.dcm");
  SrSpec r;
  r.source_file = real.first_file;
  r.sources = real.frames;
  r.seg = seg_real;
  MeasurementGroupSpec g;
  g.tracking_id = "Tissue";
  g.finding = c->type;
  g.measurements.push_back({codes::volume(), 1.234, codes::unit_ml(), std::nullopt, std::nullopt});
  r.groups.push_back(g);
  const auto w = write_sr(r, path / "real.sr.dcm");
  expect_validators_clean(w.path);
  const auto d = run_sr_dump(w.path, seg_real.path, real.first_file);
  BOOST_TEST(d.one("SAME") == "1 1");
  BOOST_TEST_REQUIRE(d.groups.size() == 1u);
  std::set<std::string> lines(d.groups[0].begin() + 1, d.groups[0].end());
  BOOST_TEST(lines.count("REFSEG " + seg_real.sop_class_uid + " " + seg_real.sop_instance_uid + " 1 Tissue") == 1u, d.raw);
  BOOST_TEST(lines.count("SRCSERIES " + real.series_uid + " 1") == 1u, d.raw);
  // No tracking UID given: the group takes the SEG segment's, so both name the same finding.
  BOOST_TEST(d.groups[0][0] == "1 " + seg_real.tracking_uids[0] + " Tissue");
  BOOST_TEST(d.all("SCHEME").empty());
}

BOOST_AUTO_TEST_SUITE_END()
