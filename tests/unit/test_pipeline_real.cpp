#define BOOST_TEST_MODULE pipeline_real
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

// The profiles on real public series (tests/data, provenance in tests/data/README.md).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "analysis/pipeline.h"
#include "analysis/results.h"
#include "analysis/stages/recipes.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using namespace analysis;

namespace {

using TempDir = testsupport::TempDir;

SeriesContext run_single(const StudyContext& study_in, const Pipeline& pipeline, const fs::path& out,
                         const std::string& expected_profile) {
  StudyContext study = study_in;
  BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
  const Profile* p = pipeline.select(study.volumes[0].info);
  BOOST_TEST_REQUIRE(p != nullptr);
  BOOST_TEST(p->name == expected_profile);
  return pipeline.run(std::move(study.volumes[0]), *p, out);
}

}  // namespace

BOOST_AUTO_TEST_CASE(real_chest_abdomen_ct_gives_plausible_lungs) {
  const auto dir = testsupport::test_data("mirp/ct_images_seg/CRLM-CT-1004/image");
  TempDir out;
  const Pipeline pipeline;
  StudyContext study = decode_folder(dir);
  BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
  // tests/data keeps slices 1-01..1-18 of the 41: the series starts at the lungs and runs down
  // through abdomen and pelvis, and these slices give the lungs of the whole series (705 and 588 ml
  // on both; the lung bases in the scan, the apices not).
  BOOST_TEST(study.volumes[0].depth() == 18);
  BOOST_TEST(study.volumes[0].info.series_description == "CT CH/AB/PEL");  // matched by the description
  SeriesContext c = run_single(study, pipeline, out.path, "ct-chest");
  for (const char* name : {"right_lung", "left_lung"}) {
    SegmentResult* s = c.segment(name);
    BOOST_TEST_REQUIRE(s != nullptr, name);
    const double ml = s->features.at("volume_ml"), laa = s->features.at("laa950_percent");
    BOOST_TEST_MESSAGE(name << ": " << ml << " ml, mean " << s->features.at("mean_hu") << " HU, LAA-950 " << laa
                            << " %");
    BOOST_TEST(ml >= 500.0);
    BOOST_TEST(ml <= 4000.0);
    BOOST_TEST(laa >= 0.0);
    BOOST_TEST(laa <= 30.0);
    BOOST_TEST(s->features.at("mean_hu") < -500);
    // An emphysema conclusion only where the lungs are wholly in the scan (ct-chest coverage check):
    // this chest/abdomen/pelvis series (and the part of it kept in tests/data) may leave an apex or base out.
    BOOST_TEST_REQUIRE(c.chest.has_value());
    BOOST_TEST_MESSAGE("coverage " << c.chest->coverage << " (" << c.chest->coverage_note << ")");
    BOOST_TEST(c.chest->coverage != "not assessed");
    if (c.chest->emphysema_conclusion()) {
      BOOST_TEST_REQUIRE(s->findings.size() == 1u);
      BOOST_TEST(s->findings[0].finding.has_value());
    } else {
      BOOST_TEST(s->findings.empty());
      BOOST_TEST(!c.chest->coverage_note.empty());
    }
  }
  // The right lung is on the patient's right: smaller mean patient x (LPS) than the left lung.
  auto mean_x = [&](int label) {
    double sum = 0, n = 0;
    for (int z = 0; z < c.volume.depth(); ++z)
      for (int r = 0; r < c.volume.rows(); ++r)
        for (int col = 0; col < c.volume.cols(); ++col)
          if (c.labels[z].at<std::uint8_t>(r, col) == label) sum += recipes::patient_x(c.volume.geom, col, r, z), ++n;
    return sum / n;
  };
  BOOST_TEST(mean_x(c.segment("right_lung")->label) < mean_x(c.segment("left_lung")->label));
  BOOST_TEST(c.segment("body")->features.at("volume_ml") > 1000);
  BOOST_TEST(fs::exists(c.preview));
  const auto files = write_seg_and_sr(c, out.path);
  BOOST_TEST(fs::file_size(files.seg) > 0u);
  BOOST_TEST(fs::file_size(files.sr) > 0u);
}

BOOST_AUTO_TEST_CASE(generic_on_mr_series) {
  const auto dir = testsupport::test_data("mirp/adc_images_mr/SCAN_001/adc_image");
  TempDir out;
  const Pipeline pipeline;
  SeriesContext c = run_single(decode_folder(dir), pipeline, out.path, "generic");
  BOOST_TEST_REQUIRE(c.segments.size() == 1u);
  const auto& f = c.segments[0].features;
  BOOST_TEST(c.segments[0].name == "tissue");
  BOOST_TEST(f.at("volume_ml") > 0);
  BOOST_TEST(f.count("mean_au") == 1u);  // MR: arbitrary units
  BOOST_TEST(f.count("morph_sphericity") == 1u);
  BOOST_TEST(f.count("cm_joint_entr_3D_comb") == 1u);
  BOOST_TEST(fs::exists(c.preview));
  const auto files = write_seg_and_sr(c, out.path);
  BOOST_TEST(fs::exists(files.seg));
  BOOST_TEST(fs::exists(files.sr));
}

BOOST_AUTO_TEST_CASE(generic_on_2d_image) {
  const auto file = testsupport::test_data("highdicom/data/test_files/dx_image.dcm");
  TempDir out;
  const Pipeline pipeline;
  SeriesContext c = run_single(decode_files({file}), pipeline, out.path, "generic");
  BOOST_TEST(c.volume.depth() == 1);
  BOOST_TEST_REQUIRE(c.segments.size() == 1u);
  const auto& f = c.segments[0].features;
  BOOST_TEST(f.at("voxels") > 0);
  BOOST_TEST(f.count("mean_au") == 1u);
  BOOST_TEST(f.count("ih_entropy") == 1u);
  BOOST_TEST(fs::exists(c.preview));
}

BOOST_AUTO_TEST_CASE(series_batches_group_by_series_and_keep_unreadable_last) {
  TempDir tmp;
  std::ofstream(tmp.path / "junk.dcm") << "not DICOM";
  auto files = files_below(testsupport::test_data("mirp/adc_images_mr/SCAN_001/adc_image"));
  const std::size_t mr_files = files.size();
  files.insert(files.begin() + 3, tmp.path / "junk.dcm");
  files.push_back(testsupport::test_data("highdicom/data/test_files/dx_image.dcm"));
  const auto batches = series_batches(files);
  BOOST_TEST_REQUIRE(batches.size() == 3u);
  BOOST_TEST(batches[0].size() == mr_files);
  BOOST_TEST(batches[1].size() == 1u);
  BOOST_TEST(batches[2].size() == 1u);
  BOOST_TEST(batches[2].front().filename() == "junk.dcm");
  const StudyContext junk = decode_files(batches[2]);
  BOOST_TEST(junk.volumes.empty());
  BOOST_TEST_REQUIRE(junk.rejected.size() == 1u);
  BOOST_TEST(!junk.rejected[0].reason.empty());
}
