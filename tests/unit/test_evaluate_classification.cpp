#define BOOST_TEST_MODULE evaluate_classification
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "analysis/kernels/classify_metrics.h"
#include "support/paths.h"

namespace k = analysis::kernels;
namespace fs = std::filesystem;

namespace {

double pairwise_auc(const std::vector<int>& y, const std::vector<double>& s) {
  double wins = 0, pairs = 0;
  for (std::size_t i = 0; i < y.size(); ++i)
    for (std::size_t j = 0; j < y.size(); ++j)
      if (y[i] == 1 && y[j] == 0) {
        pairs += 1;
        wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
      }
  return wins / pairs;
}

}  // namespace

// The classification metrics of the evaluate step are those of analysis/kernels/classify_metrics.h;
// these tests check them against brute force and an independent SciPy computation.

double auc(const std::vector<int>& y, const std::vector<double>& s) { return k::roc_auc(s, y); }

BOOST_AUTO_TEST_CASE(confusion_based_metrics) {
  const std::vector<int> y{1, 1, 1, 0, 0, 0, 0, 1};
  const std::vector<double> s{0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.4, 0.6};
  const auto m = k::binary_metrics(s, y, 0.5);
  BOOST_TEST(m.counts.true_positive == 3u);
  BOOST_TEST(m.counts.false_negative == 1u);
  BOOST_TEST(m.counts.false_positive == 1u);
  BOOST_TEST(m.counts.true_negative == 3u);
  BOOST_TEST(m.accuracy == 6.0 / 8.0);
  BOOST_TEST(m.sensitivity == 3.0 / 4.0);
  BOOST_TEST(m.specificity == 3.0 / 4.0);
  BOOST_TEST(m.roc_auc == pairwise_auc(y, s), boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(auc_counts_ties_as_half) {
  const std::vector<int> y{1, 0, 1, 0};
  const std::vector<double> all_tied{0.5, 0.5, 0.5, 0.5};
  BOOST_TEST(auc(y, all_tied) == 0.5);
  const std::vector<double> perfect{0.9, 0.1, 0.8, 0.2};
  BOOST_TEST(auc(y, perfect) == 1.0);
  const std::vector<double> inverted{0.1, 0.9, 0.2, 0.8};
  BOOST_TEST(auc(y, inverted) == 0.0);
  const std::vector<double> one_tie{0.7, 0.7, 0.9, 0.1};  // pairs: (0.7,0.7)=.5 (0.7,.1)=1 (.9,.7)=1 (.9,.1)=1
  BOOST_TEST(auc(y, one_tie) == 3.5 / 4.0);
}

BOOST_AUTO_TEST_CASE(auc_undefined_or_invalid) {
  const std::vector<int> only_pos{1, 1};
  const std::vector<double> s{0.1, 0.2};
  BOOST_CHECK_THROW(auc(only_pos, s), std::invalid_argument);
  const std::vector<int> bad_label{1, 2};
  BOOST_CHECK_THROW(auc(bad_label, s), std::invalid_argument);
  const std::vector<int> y{1, 0};
  const std::vector<double> nan{0.1, std::nan("")};
  BOOST_CHECK_THROW(auc(y, nan), std::invalid_argument);
  const std::vector<double> shorter{0.1};
  BOOST_CHECK_THROW(auc(y, shorter), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(auc_matches_scipy_with_many_ties) {
  std::mt19937 rng(3);
  std::bernoulli_distribution coin(0.4);
  std::uniform_int_distribution<int> level(0, 9);  // coarse scores: many ties
  std::vector<int> y;
  std::vector<double> s;
  for (int i = 0; i < 300; ++i) {
    y.push_back(coin(rng) ? 1 : 0);
    s.push_back(level(rng) * 0.1 + (y.back() ? 0.15 : 0.0));
  }
  BOOST_TEST(auc(y, s) == pairwise_auc(y, s), boost::test_tools::tolerance(1e-12));
  const fs::path dir = fs::temp_directory_path() / ("pacsnode_auc_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "cases.txt");
    f.precision(17);
    for (std::size_t i = 0; i < y.size(); ++i) f << y[i] << ' ' << s[i] << '\n';
  }
  const std::string cmd = std::string(testsupport::python()) + " " +
                          (testsupport::source_dir() / "tests/scripts/evaluate_classification.py").string() + " " +
                          (dir / "cases.txt").string() + " > " + (dir / "out.txt").string();
  BOOST_TEST_REQUIRE(std::system(cmd.c_str()) == 0, cmd);
  std::map<std::string, double> py;
  std::ifstream f(dir / "out.txt");
  std::string key;
  double v = 0;
  while (f >> key >> v) py[key] = v;
  fs::remove_all(dir);
  BOOST_TEST_REQUIRE(py.size() == 2u);
  BOOST_TEST(auc(y, s) == py.at("roc_auc"), boost::test_tools::tolerance(1e-12));
  BOOST_TEST(auc(y, s) == py.at("roc_auc_trapezoid"), boost::test_tools::tolerance(1e-12));
}
