#define BOOST_TEST_MODULE cli_train_evaluate
#include <boost/test/unit_test.hpp>

#include "support/capture.h"

#include "support/temp_dir.h"

// `pacsnode train` on a synthetic CSV and `pacsnode evaluate` on NIfTI masks (in process).
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <random>
#include <sstream>
#include <string>

#include "analysis/cli.h"
#include "analysis/kernels/nifti.h"
#include "support/paths.h"
#include "support/process.h"

namespace fs = std::filesystem;

namespace {

using TempDir = testsupport::TempDir;


using testsupport::Captured;
using testsupport::capture;

// Reads key from a JSON document on stdin-like text via the Debian python.
std::string json_get(const std::string& json, const std::string& expr, const fs::path& tmp) {
  const auto f = tmp / "doc.json";
  std::ofstream(f) << json;
  const auto r = testsupport::run({testsupport::python(), "-c",
                                   "import json,sys; d=json.load(open(sys.argv[1])); print(" + expr + ")", f.string()});
  BOOST_TEST(r.exit_code == 0, r.output);
  return r.output.substr(0, r.output.find_last_not_of('\n') + 1);
}

}  // namespace

BOOST_AUTO_TEST_CASE(train_on_synthetic_csv) {
  TempDir tmp;
  const fs::path csv = tmp.path / "features.csv", model = tmp.path / "models" / "emph.yml.gz";
  {
    std::ofstream out(csv);
    out << "series,segment_label,segment,laa950_percent,mean_hu,noise,diagnosis\n";
    std::mt19937 rng(7);
    std::normal_distribution<double> n01(0, 1);
    for (int i = 0; i < 80; ++i) {
      const bool pos = i % 2 == 0;
      out << fmt::format("s{},{},lung,{},{},{},{}\n", i, 2 + i % 2, (pos ? 9.0 : 1.5) + 1.5 * n01(rng),
                         (pos ? -870.0 : -830.0) + 15 * n01(rng), n01(rng), pos ? "emphysema" : "normal");
    }
  }
  const auto c = capture([&] {
    return analysis::train_main({"--features", csv.string(), "--labels", "diagnosis", "--out", model.string(),
                                 "--folds", "4", "--positive", "emphysema"});
  });
  BOOST_TEST_REQUIRE(c.rc == 0, c.err);
  BOOST_TEST(fs::exists(model));
  BOOST_TEST(json_get(c.out, "d['samples'], d['positives'], d['folds'], d['positive_label']", tmp.path) ==
             "80 40 4 emphysema");
  // segment_label is ignored by default; the three real features remain.
  BOOST_TEST(json_get(c.out, "sorted(d['features'])", tmp.path) == "['laa950_percent', 'mean_hu', 'noise']");
  BOOST_TEST(std::stod(json_get(c.out, "d['cross_validated']['roc_auc']", tmp.path)) > 0.9);
  BOOST_TEST(json_get(c.out, "len(d['per_fold'])", tmp.path) == "4");
  BOOST_TEST(c.err.find("acc=") != std::string::npos, c.err);
}

BOOST_AUTO_TEST_CASE(train_with_labels_in_a_separate_file) {
  TempDir tmp;
  const fs::path csv = tmp.path / "f.csv", labels = tmp.path / "labels.csv", model = tmp.path / "m.yml";
  {
    std::ofstream f(csv), l(labels);
    f << "x,y\n";
    l << "label\n";
    for (int i = 0; i < 30; ++i) {
      f << fmt::format("{},{}\n", i % 2 ? 10 + i * 0.01 : i * 0.01, (i * 7) % 5);
      l << (i % 2) << "\n";
    }
  }
  const auto c = capture([&] {
    return analysis::train_main(
        {"--features", csv.string(), "--labels", labels.string(), "--out", model.string(), "--folds", "3"});
  });
  BOOST_TEST_REQUIRE(c.rc == 0, c.err);
  BOOST_TEST(fs::exists(model));
  BOOST_TEST(json_get(c.out, "d['positive_label'], float(d['cross_validated']['accuracy'])", tmp.path) == "1 1.0");
}

BOOST_AUTO_TEST_CASE(train_reports_bad_input) {
  TempDir tmp;
  const auto c = capture([&] {
    return analysis::train_main({"--features", (tmp.path / "missing.csv").string(), "--labels", "label", "--out",
                                 (tmp.path / "m.yml").string()});
  });
  BOOST_TEST(c.rc == 1);
  BOOST_TEST(c.err.find("pacsnode train:") != std::string::npos, c.err);
  const auto u = capture([&] { return analysis::train_main({"--features", "x.csv"}); });
  BOOST_TEST(u.rc == 2);
}

BOOST_AUTO_TEST_CASE(evaluate_two_nifti_masks) {
  TempDir tmp;
  // Reference: a 10x10x10 cube; prediction: the same cube shifted by one slice.
  const analysis::Spacing sp{0.5, 0.5, 2.0};
  std::vector<cv::Mat> ref, pred;
  for (int z = 0; z < 16; ++z) {
    ref.push_back(cv::Mat::zeros(20, 20, CV_8U));
    pred.push_back(cv::Mat::zeros(20, 20, CV_8U));
    if (z >= 3 && z < 13) ref.back()(cv::Rect(5, 5, 10, 10)).setTo(1);
    if (z >= 4 && z < 14) pred.back()(cv::Rect(5, 5, 10, 10)).setTo(2);
  }
  analysis::kernels::write_nifti(tmp.path / "ref.nii.gz", ref, sp);
  analysis::kernels::write_nifti(tmp.path / "pred.nii", pred, sp);
  const auto c = capture([&] {
    return analysis::evaluate_main(
        {"--pred", (tmp.path / "pred.nii").string(), "--ref", (tmp.path / "ref.nii.gz").string()});
  });
  BOOST_TEST_REQUIRE(c.rc == 0, c.err);
  // Dice = 2 * 900 / 2000 = 0.9; volume 1000 voxels * 0.5 mm3.
  BOOST_TEST(std::stod(json_get(c.out, "d['dice']", tmp.path)) == 0.9, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(json_get(c.out, "d['reference_voxels'], d['test_voxels'], d['intersection_voxels']", tmp.path) ==
             "1000 1000 900");
  BOOST_TEST(std::stod(json_get(c.out, "d['reference_volume_mm3']", tmp.path)) == 500.0,
             boost::test_tools::tolerance(1e-9));
  BOOST_TEST(std::stod(json_get(c.out, "d['hausdorff_mm']", tmp.path)) == 2.0, boost::test_tools::tolerance(1e-6));

  // Label selection: label 2 of the prediction against label 1 of the reference gives the same.
  const auto l = capture([&] {
    return analysis::evaluate_main({"--pred", (tmp.path / "pred.nii").string(), "--ref",
                                    (tmp.path / "ref.nii.gz").string(), "--pred-label", "2", "--ref-label", "1"});
  });
  BOOST_TEST(std::stod(json_get(l.out, "d['dice']", tmp.path)) == 0.9, boost::test_tools::tolerance(1e-12));
  // Wrong label: empty prediction, Dice 0.
  const auto w = capture([&] {
    return analysis::evaluate_main(
        {"--pred", (tmp.path / "pred.nii").string(), "--ref", (tmp.path / "ref.nii.gz").string(), "--label", "1"});
  });
  BOOST_TEST(std::stod(json_get(w.out, "d['dice']", tmp.path)) == 0.0);
}

BOOST_AUTO_TEST_CASE(evaluate_rejects_non_nifti_and_missing_files) {
  TempDir tmp;
  std::ofstream(tmp.path / "x.dcm") << "x";
  const auto c = capture([&] {
    return analysis::evaluate_main({"--pred", (tmp.path / "x.dcm").string(), "--ref", (tmp.path / "x.dcm").string()});
  });
  BOOST_TEST(c.rc == 1);
  BOOST_TEST(c.err.find("SEG reader") != std::string::npos, c.err);
  const auto m = capture([&] { return analysis::evaluate_main({"--pred", "/nonexistent.nii", "--ref", "/x.nii"}); });
  BOOST_TEST(m.rc == 1);
  const auto u = capture([&] { return analysis::evaluate_main({"--pred", "a.nii"}); });
  BOOST_TEST(u.rc == 2);
}
