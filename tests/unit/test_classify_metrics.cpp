#define BOOST_TEST_MODULE classify_metrics
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "analysis/kernels/classify_metrics.h"
#include "support/paths.h"

namespace k = analysis::kernels;
namespace fs = std::filesystem;

namespace {

using TempDir = testsupport::TempDir;

// AUC of the scores by tests/scripts/classify_mannwhitney.py (scipy.stats.mannwhitneyu).
double scipy_auc(const std::vector<double>& scores, const std::vector<int>& labels, const fs::path& dir) {
  const fs::path csv = dir / "scores.csv";
  {
    std::ofstream out(csv);
    out.precision(17);
    out << "score,label\n";
    for (std::size_t i = 0; i < scores.size(); ++i) out << scores[i] << ',' << labels[i] << '\n';
  }
  const fs::path script = testsupport::source_dir() / "tests/scripts/classify_mannwhitney.py";
  const std::string cmd = std::string(testsupport::python()) + " '" + script.string() + "' '" + csv.string() + "'";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  BOOST_REQUIRE(pipe != nullptr);
  char buf[128] = {};
  const bool got = std::fgets(buf, sizeof buf, pipe) != nullptr;
  const int status = ::pclose(pipe);
  BOOST_REQUIRE_MESSAGE(got && status == 0, "python reference failed: " << cmd);
  return std::stod(buf);
}

}  // namespace

BOOST_AUTO_TEST_CASE(auc_of_hand_checkable_cases) {
  // 4 positive-negative pairs; (0.35 vs 0.4) is the only misordered one -> 3/4.
  BOOST_TEST(k::roc_auc(std::vector<double>{0.1, 0.4, 0.35, 0.8}, std::vector<int>{0, 0, 1, 1}) == 0.75);
  // Ties count one half: pairs (0.5|0.2)=1, (0.5|0.5)=0.5, (0.9|0.2)=1, (0.9|0.5)=1 -> 3.5/4.
  BOOST_TEST(k::roc_auc(std::vector<double>{0.2, 0.5, 0.5, 0.9}, std::vector<int>{0, 0, 1, 1}) == 0.875);
  // All tied: 0.5.
  BOOST_TEST(k::roc_auc(std::vector<double>{3, 3, 3, 3, 3}, std::vector<int>{0, 1, 0, 1, 1}) == 0.5);
  // Perfect and inverted rankings; order of the input does not matter.
  BOOST_TEST(k::roc_auc(std::vector<double>{0.9, 0.1, 0.8, 0.2}, std::vector<int>{1, 0, 1, 0}) == 1.0);
  BOOST_TEST(k::roc_auc(std::vector<double>{0.9, 0.1, 0.8, 0.2}, std::vector<int>{0, 1, 0, 1}) == 0.0);
}

BOOST_AUTO_TEST_CASE(auc_matches_scipy_mann_whitney_u_with_many_ties) {
  TempDir tmp;
  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::bernoulli_distribution coin(0.4);
  std::vector<double> scores;
  std::vector<int> labels;
  for (int i = 0; i < 301; ++i) {
    const int y = coin(rng) ? 1 : 0;
    labels.push_back(y);
    scores.push_back(std::round((noise(rng) + 0.6 * y) * 4.0) / 4.0);  // coarse grid: many ties
  }
  const double ours = k::roc_auc(scores, labels), reference = scipy_auc(scores, labels, tmp.path);
  BOOST_TEST_MESSAGE("AUC ours=" << ours << " scipy=" << reference);
  BOOST_TEST(std::abs(ours - reference) < 1e-12);
  BOOST_TEST(ours > 0.55);  // the signal is there; guards against a degenerate reference
}

BOOST_AUTO_TEST_CASE(confusion_based_metrics) {
  // truth      1 1 1 0 0 0 0 1
  // predicted  1 0 1 0 1 0 0 1  -> TP=3 FN=1 TN=3 FP=1
  const std::vector<int> truth{1, 1, 1, 0, 0, 0, 0, 1}, pred{1, 0, 1, 0, 1, 0, 0, 1};
  const auto c = k::confusion_counts(truth, pred);
  BOOST_TEST(c.true_positive == 3u);
  BOOST_TEST(c.false_negative == 1u);
  BOOST_TEST(c.true_negative == 3u);
  BOOST_TEST(c.false_positive == 1u);
  BOOST_TEST(k::accuracy(c) == 0.75);
  BOOST_TEST(k::sensitivity(c) == 0.75);
  BOOST_TEST(k::specificity(c) == 0.75);

  const auto only_negatives = k::confusion_counts(std::vector<int>{0, 0}, std::vector<int>{0, 1});
  BOOST_TEST(std::isnan(k::sensitivity(only_negatives)));
  BOOST_TEST(k::specificity(only_negatives) == 0.5);
}

BOOST_AUTO_TEST_CASE(binary_metrics_threshold_is_strict) {
  const std::vector<double> scores{0.5, 0.51, 0.49, 0.9};
  const std::vector<int> truth{1, 1, 0, 0};
  const auto m = k::binary_metrics(scores, truth, 0.5);
  BOOST_TEST(m.counts.true_positive == 1u);   // 0.51
  BOOST_TEST(m.counts.false_negative == 1u);  // 0.5 is not > 0.5
  BOOST_TEST(m.counts.false_positive == 1u);  // 0.9
  BOOST_TEST(m.counts.true_negative == 1u);   // 0.49
  BOOST_TEST(m.accuracy == 0.5);
  BOOST_TEST(m.roc_auc == 0.5);  // (0.5>0.49) + (0.51>0.49) out of 4 pairs
  BOOST_TEST(!k::to_string(m).empty());
}

BOOST_AUTO_TEST_CASE(invalid_inputs_throw) {
  BOOST_CHECK_THROW(k::roc_auc(std::vector<double>{0.1, 0.2}, std::vector<int>{1, 1}), std::invalid_argument);
  BOOST_CHECK_THROW(k::roc_auc(std::vector<double>{0.1}, std::vector<int>{1, 0}), std::invalid_argument);
  BOOST_CHECK_THROW(k::roc_auc(std::vector<double>{0.1, 0.2}, std::vector<int>{2, 0}), std::invalid_argument);
  BOOST_CHECK_THROW(k::roc_auc(std::vector<double>{NAN, 0.2}, std::vector<int>{1, 0}), std::invalid_argument);
  BOOST_CHECK_THROW(k::confusion_counts(std::vector<int>{1}, std::vector<int>{1, 0}), std::invalid_argument);
}
