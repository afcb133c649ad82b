#pragma once
// Classification kernels: turn a series' named features (from analysis/kernels/features) into
// coded findings, either with explicit threshold rules or with a trained random forest.
// Pure functions on plain structs; no DICOM, no config parsing (config/ fills these structs from
// the profile's TOML). Errors are exceptions: a missing feature is a stage failure, never a silent
// "absent".
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/ml.hpp>

#include "analysis/kernels/classify_metrics.h"

namespace analysis::kernels {

// Feature name -> value, as produced by the features kernel (e.g. "laa950_percent" -> 7.3).
using FeatureMap = std::map<std::string, double, std::less<>>;

// Thrown when a rule or a model needs a feature the map does not have.
class MissingFeatureError : public std::invalid_argument {
 public:
  MissingFeatureError(std::string feature, std::string needed_by);
  const std::string& feature() const { return feature_; }
  const std::string& needed_by() const { return needed_by_; }

 private:
  std::string feature_, needed_by_;
};

// ---------------------------------------------------------------------------------------------
// Rule sets
// ---------------------------------------------------------------------------------------------

// A DICOM code triplet: Code Value, Coding Scheme Designator, Code Meaning.
struct Code {
  std::string value;    // e.g. "87433001"
  std::string scheme;   // e.g. "SCT"
  std::string meaning;  // e.g. "Pulmonary emphysema"
  friend bool operator==(const Code&, const Code&) = default;
};

// A qualitative finding as TID1500 carries it: a concept name and its coded value, e.g.
// (87433001, SCT, "Pulmonary emphysema") = (52101004, SCT, "Present").
struct Finding {
  Code name;   // concept name, e.g. (87433001, SCT, "Pulmonary emphysema")
  Code value;
  friend bool operator==(const Finding&, const Finding&) = default;
};

enum class Comparison { less, less_equal, greater, greater_equal, equal };

// "<", "<=", ">", ">=", "==" (surrounding blanks allowed). Throws std::invalid_argument otherwise.
Comparison parse_comparison(std::string_view op);
std::string_view to_string(Comparison op);

// feature <op> threshold. "==" is exact floating-point equality: meant for integer-valued
// features (counts, flags), not for measurements.
struct Condition {
  std::string feature;
  Comparison op = Comparison::greater;
  double threshold = 0.0;
};

// Fires when ALL of its conditions hold (an empty list is rejected by validate()).
struct Rule {
  std::string name;  // for logs and the SR's algorithm description, e.g. "laa950 > 5%"
  std::vector<Condition> all_of;
  Finding finding;
};

// An ordered decision list for one question (e.g. "emphysema?"): the first rule whose conditions
// all hold gives the finding; if none holds, `otherwise` (the "else" finding) is given, or no
// finding when `otherwise` is empty. A profile holds one RuleSet per question.
struct RuleSet {
  std::string name;  // e.g. "emphysema"
  std::vector<Rule> rules;
  std::optional<Finding> otherwise;
};

struct RuleOutcome {
  std::string rule_set;
  std::optional<Finding> finding;  // empty: no rule fired and no `otherwise`
  std::string fired_rule;          // name of the rule that fired; empty if none did
  // The features the rule set read, with their values (every condition of every rule), so that
  // the SR / log can show the evidence.
  FeatureMap evidence;
};

// True iff `value op threshold`. Non-finite values are rejected by evaluate(), not here.
bool holds(const Condition& c, double value);

// Structural checks: non-empty names, at least one rule or an `otherwise`, every rule has at
// least one condition on a non-empty feature name with a finite threshold, every code has value,
// scheme and meaning. Throws std::invalid_argument naming the rule set, rule and field.
void validate(const RuleSet& rs);

// Validates `rs`, then checks that EVERY feature any of its rules names is present and finite
// (regardless of which rule would fire, so the outcome never depends on the order of checks):
// a missing feature throws MissingFeatureError, a NaN/inf value std::invalid_argument.
RuleOutcome evaluate(const RuleSet& rs, const FeatureMap& features);
std::vector<RuleOutcome> evaluate(std::span<const RuleSet> rule_sets, const FeatureMap& features);

// Feature name the features kernel gives the percentage of lung voxels <= -950 HU (inspiratory).
inline constexpr std::string_view kLaa950PercentFeature = "laa950_percent";

// The default rule set of the ct-chest profile (inclusive ">=", as the literature's ">= 5%"):
//   laa950_percent >= threshold_percent -> (87433001, SCT, "Pulmonary emphysema") = Present
//   otherwise                           -> (87433001, SCT, "Pulmonary emphysema") = Absent
// Present/Absent are (52101004, SCT, "Present") / (2667000, SCT, "Absent").
// Literature basis (see classify.cpp for the full citations): -950 HU is the threshold whose
// relative area matched macroscopic morphometry of emphysema (Gevenois et al., AJRCCM 1995);
// ">= 5% of lung volume below -950 HU" is the usual quantitative-CT definition of emphysema in
// COPDGene-based work (e.g. Amaza et al., Int J COPD 2021), well above the median of healthy
// never-smokers (about 1%, MESA Lung). Some cohorts use 6%; pass it as threshold_percent.
RuleSet emphysema_rule_set(double threshold_percent = 5.0);

// ---------------------------------------------------------------------------------------------
// Trained models (binary random forest, OpenCV cv::ml::RTrees)
// ---------------------------------------------------------------------------------------------
//
// Features CSV format (RFC 4180 subset):
//   * comma separated, first row is a header of unique, non-empty column names;
//   * fields may be double-quoted ("a,b" and "say ""x""" work); blank lines are skipped; CRLF ok;
//   * every row has as many fields as the header;
//   * a column whose every cell parses completely as a finite number (surrounding blanks allowed)
//     is a feature; a column where no cell does (e.g. series hash, segment name) is ignored;
//     a column mixing both is an error (probably a missing value), unless listed in
//     TrainParams::ignore_columns, which are always ignored (use it for numeric ids, e.g. a
//     segment label number);
//   * the label column (if the labels are in this file) is never a feature.
// Labels are strings (e.g. "emphysema"/"normal" or 0/1); exactly two distinct values are needed.
//
//   series,segment,laa950_percent,mean_hu,label
//   3f9a...,lung,7.2,-842.1,1
//   81bc...,lung,1.1,-801.7,0

// Where the class labels come from.
struct LabelSource {
  std::string column = "label";  // column name holding the labels
  // Empty: `column` of the features CSV. Else a separate CSV with a header row whose `column`
  // gives the label of the features CSV's data row with the same index (same order and count).
  std::filesystem::path file;
};

struct ForestParams {
  int n_trees = 100;          // number of trees (termination by iteration count)
  int max_depth = 12;         // per tree
  int min_sample_count = 2;   // minimum samples in a node to split it
  int active_var_count = 0;   // features tried per split; 0 = sqrt(number of features)
};

struct TrainParams {
  // Label treated as "positive" (sensitivity, AUC, probability). Empty: the labels must be
  // numeric and the larger value is positive (so 0/1 works unconfigured); else an error.
  std::string positive_label;
  std::vector<std::string> ignore_columns;  // never features (see the CSV format above)
  // Fold assignment and the forests' randomness (cv::theRNG() is seeded for each fit and restored
  // after), so the same CSV and parameters give the same metrics and model.
  std::uint64_t seed = 20261126;
  double threshold = 0.5;  // predicted positive iff positive vote fraction > threshold
  ForestParams forest;
};

// The training data after parsing: n samples x d features, CV_32F, row i labelled labels[i].
struct TrainingTable {
  std::vector<std::string> feature_names;
  cv::Mat samples;                         // CV_32F, rows = samples, cols = features
  std::vector<std::string> labels;         // raw label strings, one per row
  std::vector<std::string> ignored_columns;
};

// Reads and checks the CSV(s) as described above. Throws std::runtime_error (I/O, format) or
// std::invalid_argument (bad parameters), naming the file, line and column.
TrainingTable read_training_table(const std::filesystem::path& features_csv,
                                  const LabelSource& labels,
                                  std::span<const std::string> ignore_columns = {});

struct TrainResult {
  std::vector<std::string> feature_names;  // the columns the model expects, in order
  std::string positive_label, negative_label;
  std::size_t n_samples = 0, n_positive = 0;
  int folds = 0;
  BinaryMetrics cross_validated;     // pooled out-of-fold predictions of all k folds
  std::vector<BinaryMetrics> per_fold;
  std::vector<double> out_of_fold_probability;  // P(positive) of each row from the fold without it
  std::vector<int> truth;                       // 1 = positive, per row
  std::filesystem::path model_path;             // where the all-data model was saved
};

// Stratified k-fold cross-validation (each class shuffled with `seed`, dealt round-robin to the
// folds, so every fold has both classes), metrics from the out-of-fold vote fractions; then a fit
// on all rows, saved to `model_out` (see save_model). Logs the metrics at info and returns them.
// Needs folds >= 2 and at least `folds` rows of each class. Throws on bad input.
TrainResult train_random_forest(const std::filesystem::path& features_csv,
                                const LabelSource& labels, int folds, const TrainParams& params,
                                const std::filesystem::path& model_out);

// "emphysema vs normal: 200 rows (100 positive), 3 features, 5-fold CV: n=200 acc=..."
std::string to_string(const TrainResult& r);

struct ForestModel {
  cv::Ptr<cv::ml::RTrees> forest;          // trained, 2 classes: 0 = negative, 1 = positive
  std::vector<std::string> feature_names;  // sample column order
  std::string positive_label, negative_label;
  double threshold = 0.5;
};

// One file, by OpenCV cv::FileStorage (format from the extension: .yml/.yaml, .xml, .json,
// optionally .gz): keys pacsnode_forest_version, feature_names, positive_label, negative_label,
// threshold, and "forest", the node written by RTrees::write() (what RTrees::save() writes).
// Written to a temporary name in the same folder, then renamed.
void save_model(const ForestModel& model, const std::filesystem::path& path);
// Throws std::runtime_error if the file is missing, unreadable or inconsistent.
ForestModel load_model(const std::filesystem::path& path);

struct Prediction {
  std::string label;           // positive_label or negative_label
  double probability = 0;      // vote fraction of `label` (>= 0.5 unless threshold moved)
  double positive_probability = 0;  // vote fraction of the positive class
};

// Fits one forest on all rows of `table` (no cross-validation), labels binarised as in
// train_random_forest. The in-memory counterpart of what train_random_forest saves.
ForestModel fit_forest_model(const TrainingTable& table, const TrainParams& params);

// Looks up every model feature by name (extra entries are ignored; missing ones throw
// MissingFeatureError, non-finite ones std::invalid_argument).
Prediction predict(const ForestModel& model, const FeatureMap& features);

}  // namespace analysis::kernels
