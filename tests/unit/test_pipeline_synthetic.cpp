#define BOOST_TEST_MODULE pipeline_synthetic
#include <boost/test/unit_test.hpp>

// Pipeline behaviour on small in-memory volumes (no files): emphysema index on the original HU,
// stage failures, generic recipe options.
#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>

#include "analysis/pipeline.h"
#include "analysis/stages/recipes.h"

using namespace analysis;

namespace {

// A chest-like CT in HU: body ellipse 40 HU, two lungs at `lung_hu` with Gaussian noise of SD
// `noise`, air -1000. 90 columns (not a multiple of 8) exercise the bit packing tails.
dicom::Volume chest(double lung_hu, double noise, int depth = 12, int rows = 70, int cols = 90) {
  dicom::Volume v;
  v.info.modality = "CT";
  v.info.units = "HU";
  v.info.body_part = "CHEST";
  v.info.series_uid = "1.2.3";
  v.geom.spacing_col = v.geom.spacing_row = 1.5;
  v.geom.spacing_slice = 3;
  cv::RNG rng(42);
  for (int z = 0; z < depth; ++z) {
    cv::Mat s(rows, cols, CV_16S, cv::Scalar(-1000));
    cv::ellipse(s, {cols / 2, rows / 2}, {cols * 2 / 5, rows * 2 / 5}, 0, 0, 360, cv::Scalar(40), cv::FILLED);
    cv::Mat lungs(rows, cols, CV_8U, cv::Scalar(0));
    if (z > 0 && z < depth - 1) {
      cv::ellipse(lungs, {cols / 2 - cols / 5, rows / 2}, {cols / 8, rows / 4}, 0, 0, 360, cv::Scalar(1), cv::FILLED);
      cv::ellipse(lungs, {cols / 2 + cols / 5, rows / 2}, {cols / 8, rows / 4}, 0, 0, 360, cv::Scalar(1), cv::FILLED);
    }
    cv::Mat n(rows, cols, CV_32F);
    rng.fill(n, cv::RNG::NORMAL, lung_hu, noise);
    cv::Mat n16;
    n.convertTo(n16, CV_16S);
    n16.copyTo(s, lungs);
    v.slices.push_back(s);
  }
  return v;
}

// Share (%) of `label` voxels of `labels` whose value in `original` is below -950.
double laa_percent(const std::vector<cv::Mat>& original, const LabelVolume& labels, int label) {
  double n = 0, below = 0;
  for (std::size_t z = 0; z < original.size(); ++z) {
    const cv::Mat in = labels[z] == label;
    n += cv::countNonZero(in);
    below += cv::countNonZero(in & (original[z] < -950));  // LAA: strictly below
  }
  return 100.0 * below / n;
}

}  // namespace

BOOST_AUTO_TEST_CASE(emphysema_index_uses_original_hu) {
  const Pipeline pipeline;
  dicom::Volume v = chest(-900, 60);  // about 20 % of lung voxels below -950 before smoothing
  std::vector<cv::Mat> original;
  for (const auto& s : v.slices) original.push_back(s.clone());
  const Profile& p = *pipeline.select(v.info);
  BOOST_TEST_REQUIRE(p.name == "ct-chest");
  BOOST_TEST_REQUIRE(p.preprocess.median_ksize == 3);
  SeriesContext c = pipeline.run(std::move(v), p);
  for (const char* name : {"right_lung", "left_lung"}) {
    const SegmentResult* s = c.segment(name);
    BOOST_TEST_REQUIRE(s != nullptr, name);
    const double expected = laa_percent(original, c.labels, s->label);
    BOOST_TEST(expected > 10.0);
    BOOST_TEST(s->features.at("laa950_percent") == expected, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(s->findings.at(0).finding->value.meaning == "Present");  // >= 5 %
  }

  // Opting out measures on the smoothed image: the median removes most isolated low voxels.
  Profile smoothed = p;
  smoothed.chest.measure_on_original_hu = false;
  const Pipeline p2({smoothed});
  SeriesContext c2 = p2.run(chest(-900, 60), p2.profiles()[0]);
  BOOST_TEST(c2.segment("left_lung")->features.at("laa950_percent") <
             c.segment("left_lung")->features.at("laa950_percent"));
}

BOOST_AUTO_TEST_CASE(healthy_lungs_give_absent) {
  const Pipeline pipeline;
  SeriesContext c = pipeline.run(chest(-850, 15), *pipeline.select({}, "ct-chest"));
  for (const char* name : {"right_lung", "left_lung"}) {
    const SegmentResult* s = c.segment(name);
    BOOST_TEST_REQUIRE(s != nullptr, name);
    BOOST_TEST(s->features.at("laa950_percent") < 1.0);
    BOOST_TEST(s->findings.at(0).finding->value.meaning == "Absent");
  }
}

BOOST_AUTO_TEST_CASE(joined_lungs_are_split_per_slice) {
  dicom::Volume v = chest(-850, 10);  // 90 columns: mid-plane at column 45; lungs at 16..38, 52..74
  // Slices 2-4: an air bridge joins the lungs (as the carina does), so they form one component.
  for (int z = 2; z <= 4; ++z) v.slices[z](cv::Rect(30, 33, 31, 4)).setTo(-850);
  // Slices 6-8: the right lung (low columns: row_dir +x is patient left) reaches over the
  // mid-plane to column 49 without touching the left lung.
  for (int z = 6; z <= 8; ++z) v.slices[z](cv::Rect(36, 33, 14, 4)).setTo(-850);
  const Pipeline pipeline;
  SeriesContext c = pipeline.run(std::move(v), *pipeline.select({}, "ct-chest"));
  BOOST_TEST_REQUIRE(c.segment("left_lung") != nullptr);
  BOOST_TEST_REQUIRE(c.segment("right_lung") != nullptr);
  bool noted = false;
  for (const auto& n : c.notes) noted |= n.find("joined") != std::string::npos;
  BOOST_TEST(noted);
  // The protrusion stays with the right lung although it crosses the mid-plane (the median
  // filter rounds off its two tip corners).
  for (int z = 6; z <= 8; ++z) {
    const cv::Mat tip = c.labels[z](cv::Rect(46, 33, 4, 4));
    BOOST_TEST(cv::countNonZero(tip == recipes::kRightLung) >= 14);
    BOOST_TEST(cv::countNonZero(tip == recipes::kLeftLung) == 0);
  }
  // The bridge is cut at the plane: its halves go to their sides.
  for (int z = 2; z <= 4; ++z) {
    BOOST_TEST(cv::countNonZero(c.labels[z](cv::Rect(40, 33, 5, 4)) == recipes::kRightLung) == 20);
    BOOST_TEST(cv::countNonZero(c.labels[z](cv::Rect(46, 33, 5, 4)) == recipes::kLeftLung) == 20);
  }
  const double l = c.segment("left_lung")->features.at("volume_ml");
  const double r = c.segment("right_lung")->features.at("volume_ml");
  BOOST_TEST(std::abs(l - r) <= 0.1 * (l + r));
}

BOOST_AUTO_TEST_CASE(generic_recipe_with_window_and_border_drop) {
  // Two bright squares, one touching the border: drop_border keeps only the inner one.
  dicom::Volume v;
  v.info.modality = "MR";
  for (int z = 0; z < 5; ++z) {
    cv::Mat s(40, 40, CV_16S, cv::Scalar(10));
    s(cv::Rect(10, 10, 8, 8)).setTo(500);
    s(cv::Rect(0, 25, 12, 10)).setTo(500);
    v.slices.push_back(s);
  }
  Profile p = builtin_profiles()[1];
  p.preprocess.median_ksize = 0;
  p.generic.window = kernels::Window{100, 1000};
  p.generic.drop_border_components = true;
  p.generic.keep_largest = 0;
  const Pipeline pipeline({p});
  SeriesContext c = pipeline.run(std::move(v), pipeline.profiles()[0]);
  BOOST_TEST_REQUIRE(c.segments.size() == 1u);
  BOOST_TEST(c.segments[0].voxels == 5 * 8 * 8);
  BOOST_TEST(c.segments[0].features.at("mean_au") == 500.0);
}

BOOST_AUTO_TEST_CASE(stage_failure_names_the_stage) {
  Profile p = builtin_profiles()[0];
  p.rule_segments.clear();  // the emphysema rule on every segment: body has no laa950_percent
  const Pipeline pipeline({p});
  try {
    pipeline.run(chest(-850, 15), pipeline.profiles()[0]);
    BOOST_FAIL("expected a StageError");
  } catch (const StageError& e) {
    BOOST_TEST(e.stage() == "classify");
    BOOST_TEST(std::string(e.what()).find("laa950_percent") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(other_laa_threshold_gives_its_own_feature) {
  Profile p = builtin_profiles()[0];
  p.chest.laa_threshold_hu = -910;
  p.rule_sets = {emphysema_rules(5.0, -910)};
  const Pipeline pipeline({p});
  dicom::Volume v = chest(-900, 60);
  std::vector<cv::Mat> original;
  for (const auto& s : v.slices) original.push_back(s.clone());
  SeriesContext c = pipeline.run(std::move(v), pipeline.profiles()[0]);
  const SegmentResult* s = c.segment("left_lung");
  BOOST_TEST_REQUIRE(s != nullptr);
  BOOST_TEST(s->features.count("laa950_percent") == 0u);
  double n = 0, below = 0;
  for (std::size_t z = 0; z < original.size(); ++z) {
    const cv::Mat in = c.labels[z] == s->label;
    n += cv::countNonZero(in);
    below += cv::countNonZero(in & (original[z] < -910));
  }
  BOOST_TEST(s->features.at("laa910_percent") == 100.0 * below / n, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(s->findings.at(0).finding->value.meaning == "Present");
}
