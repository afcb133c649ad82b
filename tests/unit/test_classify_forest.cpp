#define BOOST_TEST_MODULE classify_forest
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "analysis/kernels/classify.h"

namespace k = analysis::kernels;
namespace fs = std::filesystem;

namespace {

using TempDir = testsupport::TempDir;

struct Row {
  std::vector<double> x;
  std::string label;
};

// Rows with a non-numeric series hash, a non-numeric segment name, the numeric features f0..f{d-1}
// and the label; "separation" moves the positive cluster's mean by that many SDs per feature.
std::vector<Row> gaussian_clusters(int n, int d, double separation, bool random_labels, unsigned seed,
                                   const std::string& pos = "1", const std::string& neg = "0") {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::bernoulli_distribution coin(0.5);
  std::vector<Row> rows;
  for (int i = 0; i < n; ++i) {
    const bool positive = i % 2 == 0;
    Row r;
    for (int j = 0; j < d; ++j) r.x.push_back(noise(rng) + (positive && !random_labels ? separation : 0.0));
    r.label = (random_labels ? coin(rng) : positive) ? pos : neg;
    rows.push_back(r);
  }
  return rows;
}

fs::path write_csv(const fs::path& path, const std::vector<Row>& rows, bool with_label = true) {
  std::ofstream out(path);
  out.precision(9);
  out << "series,\"segment, name\"";
  for (std::size_t j = 0; j < rows.front().x.size(); ++j) out << ",f" << j;
  if (with_label) out << ",label";
  out << "\r\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    out << "s" << (i * 7919 % 1000) << "abc,\"lung, left\"";
    for (double v : rows[i].x) out << ',' << v;
    if (with_label) out << ',' << rows[i].label;
    out << "\r\n";
  }
  return path;
}

k::FeatureMap features_of(const Row& r) {
  k::FeatureMap m;
  for (std::size_t j = 0; j < r.x.size(); ++j) m["f" + std::to_string(j)] = r.x[j];
  m["unrelated"] = 42.0;
  return m;
}

}  // namespace

BOOST_AUTO_TEST_CASE(separable_clusters_give_high_cv_accuracy_and_auc) {
  TempDir tmp;
  const auto rows = gaussian_clusters(200, 3, 3.0, false, 1);
  const auto csv = write_csv(tmp.path / "features.csv", rows);
  const auto r = k::train_random_forest(csv, k::LabelSource{}, 5, k::TrainParams{}, tmp.path / "model.yml");
  BOOST_TEST_MESSAGE(k::to_string(r));
  BOOST_TEST(r.cross_validated.accuracy > 0.9);
  BOOST_TEST(r.cross_validated.roc_auc > 0.95);
  BOOST_TEST(r.cross_validated.sensitivity > 0.85);
  BOOST_TEST(r.cross_validated.specificity > 0.85);
  BOOST_TEST(r.n_samples == 200u);
  BOOST_TEST(r.n_positive == 100u);
  BOOST_TEST(r.positive_label == "1");
  BOOST_TEST(r.per_fold.size() == 5u);
  for (const auto& f : r.per_fold) BOOST_TEST(f.counts.total() == 40u);  // stratified: 20 + 20
  BOOST_TEST((r.feature_names == std::vector<std::string>{"f0", "f1", "f2"}));  // text columns ignored
  BOOST_TEST(fs::is_regular_file(r.model_path));
}

BOOST_AUTO_TEST_CASE(random_labels_give_auc_near_chance) {
  TempDir tmp;
  const auto csv = write_csv(tmp.path / "features.csv", gaussian_clusters(300, 4, 0.0, true, 2));
  const auto r = k::train_random_forest(csv, k::LabelSource{}, 5, k::TrainParams{}, tmp.path / "model.xml");
  BOOST_TEST_MESSAGE(k::to_string(r));
  BOOST_TEST(r.cross_validated.roc_auc > 0.35);
  BOOST_TEST(r.cross_validated.roc_auc < 0.65);
  BOOST_TEST(r.cross_validated.accuracy < 0.65);
}

BOOST_AUTO_TEST_CASE(cross_validation_is_deterministic) {
  TempDir tmp;
  const auto csv = write_csv(tmp.path / "features.csv", gaussian_clusters(120, 3, 1.0, false, 3));
  const auto a = k::train_random_forest(csv, k::LabelSource{}, 4, k::TrainParams{}, tmp.path / "a.yml");
  const auto b = k::train_random_forest(csv, k::LabelSource{}, 4, k::TrainParams{}, tmp.path / "b.yml");
  BOOST_TEST(a.out_of_fold_probability == b.out_of_fold_probability, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(save_load_round_trip_gives_identical_predictions) {
  TempDir tmp;
  const auto rows = gaussian_clusters(160, 3, 1.0, false, 4, "emphysema", "normal");
  const auto csv = write_csv(tmp.path / "features.csv", rows);
  k::TrainParams params;
  params.positive_label = "emphysema";
  const auto table = k::read_training_table(csv, k::LabelSource{});
  const auto model = k::fit_forest_model(table, params);
  for (const char* name : {"model.yml", "model.xml", "model.json.gz"}) {
    k::save_model(model, tmp.path / name);
    const auto loaded = k::load_model(tmp.path / name);
    BOOST_TEST(loaded.feature_names == model.feature_names, boost::test_tools::per_element());
    BOOST_TEST(loaded.positive_label == "emphysema");
    BOOST_TEST(loaded.negative_label == "normal");
    int disagreements = 0, positives = 0;
    for (const auto& row : rows) {
      const auto p = k::predict(model, features_of(row)), q = k::predict(loaded, features_of(row));
      disagreements += p.label != q.label || p.positive_probability != q.positive_probability;
      positives += p.label == "emphysema";
      BOOST_TEST(p.probability >= 0.5);
    }
    BOOST_TEST(disagreements == 0, name);
    BOOST_TEST(positives > 0);  // both classes are predicted: the comparison is not trivial
    BOOST_TEST(positives < static_cast<int>(rows.size()));
  }
  // The model that train_random_forest saved loads too and predicts the training rows well.
  const auto r = k::train_random_forest(csv, k::LabelSource{}, 5, params, tmp.path / "trained.yml");
  const auto trained = k::load_model(r.model_path);
  int correct = 0;
  for (const auto& row : rows) correct += k::predict(trained, features_of(row)).label == row.label;
  BOOST_TEST(correct > 140);
}

BOOST_AUTO_TEST_CASE(labels_from_a_separate_file_match_the_label_column) {
  TempDir tmp;
  const auto rows = gaussian_clusters(100, 2, 2.0, false, 5);
  const auto with = write_csv(tmp.path / "with.csv", rows, true);
  const auto without = write_csv(tmp.path / "without.csv", rows, false);
  {
    std::ofstream out(tmp.path / "labels.csv");
    out << "id,truth\n";
    for (std::size_t i = 0; i < rows.size(); ++i) out << i << ',' << rows[i].label << '\n';
  }
  const auto a = k::train_random_forest(with, k::LabelSource{}, 5, {}, tmp.path / "a.yml");
  const auto b = k::train_random_forest(without, k::LabelSource{"truth", tmp.path / "labels.csv"}, 5, {},
                                        tmp.path / "b.yml");
  BOOST_TEST(a.out_of_fold_probability == b.out_of_fold_probability, boost::test_tools::per_element());
  BOOST_TEST(a.feature_names == b.feature_names, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_rejected_with_clear_errors) {
  TempDir tmp;
  const auto rows = gaussian_clusters(40, 2, 2.0, false, 6);
  const auto csv = write_csv(tmp.path / "features.csv", rows);
  const auto model = tmp.path / "m.yml";
  // folds < 2, or more folds than rows per class
  BOOST_CHECK_THROW(k::train_random_forest(csv, {}, 1, {}, model), std::invalid_argument);
  BOOST_CHECK_THROW(k::train_random_forest(csv, {}, 21, {}, model), std::invalid_argument);
  // unknown label column, missing file
  BOOST_CHECK_THROW(k::train_random_forest(csv, k::LabelSource{"nope", {}}, 5, {}, model), std::runtime_error);
  BOOST_CHECK_THROW(k::train_random_forest(tmp.path / "missing.csv", {}, 5, {}, model), std::runtime_error);
  // text labels need positive_label
  const auto text = write_csv(tmp.path / "text.csv", gaussian_clusters(40, 2, 2.0, false, 6, "yes", "no"));
  BOOST_CHECK_THROW(k::train_random_forest(text, {}, 5, {}, model), std::invalid_argument);
  // three classes
  auto three = rows;
  three[0].label = "2";
  BOOST_CHECK_THROW(k::train_random_forest(write_csv(tmp.path / "three.csv", three), {}, 5, {}, model),
                    std::invalid_argument);
  // a numeric column with a hole is an error, unless ignored
  {
    std::ofstream out(tmp.path / "hole.csv");
    out << "a,b,label\n";
    for (int i = 0; i < 20; ++i) out << i << ',' << (i == 7 ? std::string("") : std::to_string(i * 2)) << ',' << i % 2 << '\n';
  }
  try {
    k::read_training_table(tmp.path / "hole.csv", {});
    BOOST_FAIL("expected an error for the mixed column");
  } catch (const std::runtime_error& e) {
    BOOST_TEST(std::string(e.what()).find("'b'") != std::string::npos);
    BOOST_TEST(std::string(e.what()).find("line 9") != std::string::npos);
  }
  const std::vector<std::string> ignore{"b"};
  const auto t = k::read_training_table(tmp.path / "hole.csv", {}, ignore);
  BOOST_TEST((t.feature_names == std::vector<std::string>{"a"}));
  // ragged row
  {
    std::ofstream out(tmp.path / "ragged.csv");
    out << "a,label\n1,0\n2,1,3\n";
  }
  BOOST_CHECK_THROW(k::read_training_table(tmp.path / "ragged.csv", {}), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(predict_needs_every_model_feature) {
  TempDir tmp;
  const auto rows = gaussian_clusters(40, 2, 2.0, false, 8);
  const auto model = k::fit_forest_model(k::read_training_table(write_csv(tmp.path / "f.csv", rows), {}), {});
  try {
    k::predict(model, k::FeatureMap{{"f0", 1.0}});
    BOOST_FAIL("expected MissingFeatureError");
  } catch (const k::MissingFeatureError& e) {
    BOOST_TEST(e.feature() == "f1");
  }
  BOOST_CHECK_THROW(k::predict(model, k::FeatureMap{{"f0", 1.0}, {"f1", NAN}}), std::invalid_argument);
  BOOST_CHECK_THROW(k::load_model(tmp.path / "absent.yml"), std::runtime_error);
  {
    std::ofstream out(tmp.path / "garbage.yml");
    out << "%YAML:1.0\n---\nsomething: 1\n";
  }
  BOOST_CHECK_THROW(k::load_model(tmp.path / "garbage.yml"), std::runtime_error);
}
