#define BOOST_TEST_MODULE pipeline_phantom
#include <boost/test/unit_test.hpp>

// ct-chest on the synthetic chest CT of tests/scripts/make_ct_phantom.py, whose true labels are
// known (0 air, 1 body, 2 right lung, 3 left lung, 4 spine; z in file order). The realistic
// phantom (airways, vessels, nodule, emphysema, couch) is in test_pipeline_chest.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <opencv2/core.hpp>
#include <string>

#include "analysis/kernels/evaluate.h"
#include "analysis/pipeline.h"
#include "analysis/results.h"
#include "analysis/stages/recipes.h"
#include "support/paths.h"
#include "support/process.h"

namespace fs = std::filesystem;
using namespace analysis;

namespace {

fs::path* made_dir = nullptr;  // set once the phantom exists; removed by the global fixture

struct Phantom {
  fs::path dir;
  fs::path series;
  std::vector<cv::Mat> truth;  // file order
};

// Made once per test executable (40 slices of 128x128 take well under a second).
const Phantom& phantom() {
  static const Phantom p = [] {
    Phantom ph;
    char tmpl[] = "/tmp/pacsnode-pipeline-XXXXXX";
    ph.dir = ::mkdtemp(tmpl);
    static fs::path dir = ph.dir;
    made_dir = &dir;
    ph.series = ph.dir / "series";
    const auto r = testsupport::run(
        {testsupport::python(), testsupport::phantom_script().string(),
         ph.series.string(), "--slices", "40", "--size", "128", "--truth", (ph.dir / "truth.npz").string()});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
    const auto c = testsupport::run({testsupport::python(),
                                     (testsupport::source_dir() / "tests/scripts/pipeline_truth.py").string(),
                                     (ph.dir / "truth.npz").string(), (ph.dir / "truth.raw").string()});
    BOOST_TEST_REQUIRE(c.exit_code == 0, c.output);
    std::ifstream in(ph.dir / "truth.raw", std::ios::binary);
    int d = 0, rows = 0, cols = 0;
    in >> d >> rows >> cols;
    in.get();
    for (int z = 0; z < d; ++z) {
      cv::Mat s(rows, cols, CV_8U);
      in.read(reinterpret_cast<char*>(s.data), static_cast<std::streamsize>(rows) * cols);
      ph.truth.push_back(s);
    }
    BOOST_TEST_REQUIRE(static_cast<bool>(in));
    return ph;
  }();
  return p;
}

// Truth slices in the order of the volume (the loader sorts along the normal; files are
// ct_<file index>.dcm).
LabelVolume truth_for(const dicom::Volume& v) {
  LabelVolume out;
  for (const auto& src : v.sources) {
    const std::string stem = fs::path(src.path).stem().string();  // ct_0012
    out.push_back(phantom().truth.at(std::stoi(stem.substr(3))).clone());
  }
  return out;
}

struct RemovePhantom {
  ~RemovePhantom() {
    std::error_code ec;
    if (made_dir) fs::remove_all(*made_dir, ec);
  }
};

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(RemovePhantom);

BOOST_AUTO_TEST_CASE(ct_chest_matches_phantom_truth) {
  StudyContext study = decode_folder(phantom().series);
  BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
  BOOST_TEST(study.rejected.empty());
  const Pipeline pipeline;
  const Profile* p = pipeline.select(study.volumes[0].info);
  BOOST_TEST_REQUIRE(p != nullptr);
  BOOST_TEST(p->name == "ct-chest");  // Body Part Examined CHEST

  Reference ref;
  ref.labels = truth_for(study.volumes[0]);
  ref.label_of_segment = {{"right_lung", 2}, {"left_lung", 3}, {"body", 1}};
  SeriesContext c = pipeline.run(std::move(study.volumes[0]), *p, {}, ref);

  for (const char* stage : {"preprocess", "segment", "features", "classify", "evaluate", "display"}) {
    bool found = false;
    for (const auto& t : c.timings) found |= t.stage == stage && t.ms >= 0;
    BOOST_TEST(found, "timing of " << stage);
  }
  const double voxel_ml = c.volume.voxel_volume_mm3() / 1000.0;
  for (const auto& [name, label] : std::map<std::string, int>{{"right_lung", 2}, {"left_lung", 3}}) {
    SegmentResult* s = c.segment(name);
    BOOST_TEST_REQUIRE(s != nullptr, name);
    BOOST_TEST_REQUIRE(s->overlap.has_value());
    BOOST_TEST_MESSAGE(name << ": dice " << s->overlap->dice << " volume " << s->features.at("volume_ml") << " ml");
    BOOST_TEST(s->overlap->dice >= 0.99, name << " dice " << s->overlap->dice);
    std::int64_t truth_voxels = 0;
    for (const auto& t : ref.labels) truth_voxels += cv::countNonZero(t == label);
    const double truth_ml = truth_voxels * voxel_ml;
    BOOST_TEST(std::abs(s->features.at("volume_ml") - truth_ml) <= 0.01 * truth_ml,
               name << " " << s->features.at("volume_ml") << " ml vs truth " << truth_ml);
    // Lungs at -850 HU with noise SD 15: hardly any voxel <= -950.
    BOOST_TEST(s->features.at("laa950_percent") < 1.0);
    BOOST_TEST(std::abs(s->features.at("mean_hu") + 850) < 10);
    BOOST_TEST_REQUIRE(s->findings.size() == 1u);
    BOOST_TEST(s->findings[0].finding->value.meaning == "Absent");
    BOOST_TEST(s->features.count("morph_sphericity") == 1u);
    BOOST_TEST(s->features.count("cm_contrast_3D_comb") == 1u);
  }
  // Sides are not swapped: most voxels of our left lung are truth's left lung (label 3).
  {
    std::int64_t agree = 0, swapped = 0;
    for (std::size_t z = 0; z < c.labels.size(); ++z) {
      agree += cv::countNonZero((c.labels[z] == recipes::kLeftLung) & (ref.labels[z] == 3));
      swapped += cv::countNonZero((c.labels[z] == recipes::kLeftLung) & (ref.labels[z] == 2));
    }
    BOOST_TEST(agree > 0);
    BOOST_TEST(swapped == 0);
  }
  BOOST_TEST(c.segment("body") != nullptr);
  BOOST_TEST_REQUIRE(c.segment("dense") != nullptr);  // the 700 HU spine: bone, calcium or contrast
  BOOST_TEST(c.segment("dense")->features.at("mean_hu") > 500);
}

BOOST_AUTO_TEST_CASE(sides_follow_geometry_when_columns_are_mirrored) {
  // Mirror every slice left-right and say so in the geometry (row_dir -x, origin at the other
  // edge): patient left is now towards column 0, and the labels must follow the patient.
  StudyContext study = decode_folder(phantom().series);
  BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
  dicom::Volume v = std::move(study.volumes[0]);
  LabelVolume truth = truth_for(v);
  for (auto& s : v.slices) cv::flip(s, s, 1);
  for (auto& t : truth) cv::flip(t, t, 1);
  v.geom.origin[0] += (v.cols() - 1) * v.geom.spacing_col;
  v.geom.row_dir = {-1, 0, 0};
  v.geom.normal = {0, 0, -1};  // row_dir x col_dir
  const Pipeline pipeline;
  Reference ref;
  ref.labels = truth;
  ref.label_of_segment = {{"right_lung", 2}, {"left_lung", 3}};
  SeriesContext c = pipeline.run(std::move(v), *pipeline.select({}, "ct-chest"), {}, ref);
  BOOST_TEST_REQUIRE(c.segment("left_lung") != nullptr);
  BOOST_TEST_REQUIRE(c.segment("right_lung") != nullptr);
  BOOST_TEST(c.segment("left_lung")->overlap->dice >= 0.99);
  BOOST_TEST(c.segment("right_lung")->overlap->dice >= 0.99);
}

BOOST_AUTO_TEST_CASE(seg_and_sr_are_written_for_the_phantom) {
  StudyContext study = decode_folder(phantom().series);
  BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
  const Pipeline pipeline;
  const fs::path out = phantom().dir / "out";
  fs::create_directories(out);
  SeriesContext c = pipeline.run(std::move(study.volumes[0]), *pipeline.select({}, "ct-chest"), out);
  BOOST_TEST(fs::exists(c.preview));
  BOOST_TEST(c.preview.extension() == ".png");
  const auto files = write_seg_and_sr(c, out);
  BOOST_TEST(fs::file_size(files.seg) > 0u);
  BOOST_TEST(fs::file_size(files.sr) > 0u);
  // Labels were renumbered to the SEG's segment numbers 1..N.
  for (std::size_t i = 0; i < c.segments.size(); ++i) BOOST_TEST(c.segments[i].label == static_cast<int>(i + 1));
  const auto dump = testsupport::run({testsupport::python(), "-c",
                                      "import sys,pydicom; d=pydicom.dcmread(sys.argv[1]); "
                                      "print(d.Modality, len(d.SegmentSequence), "
                                      "' '.join(s.SegmentLabel for s in d.SegmentSequence))",
                                      files.seg.string()});
  BOOST_TEST(dump.exit_code == 0, dump.output);
  // Display names; "Lungs (both)" carries the measurements of both lungs together.
  BOOST_TEST(dump.output.find("SEG 5 Body Right lung Left lung Lungs (both) Bone, calcium or contrast (>= 300 HU)") !=
                 std::string::npos,
             dump.output);
}
