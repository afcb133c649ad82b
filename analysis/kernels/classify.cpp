#include "analysis/kernels/classify.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <system_error>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "dicom/log.h"

namespace analysis::kernels {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> logger() { return pacsnode::component_logger("classify"); }

std::string_view trim(std::string_view s) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

// Whole (trimmed) string is a finite number.
std::optional<double> parse_number(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  if (s.front() == '+') s.remove_prefix(1);  // from_chars rejects a leading '+'
  double v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

// ---- rules ----------------------------------------------------------------------------------

void validate_code(const Code& c, const std::string& where) {
  if (c.value.empty() || c.scheme.empty() || c.meaning.empty()) {
    throw std::invalid_argument(fmt::format(
        "{}: code needs value, scheme and meaning (got '{}', '{}', '{}')", where, c.value,
        c.scheme, c.meaning));
  }
}

void validate_finding(const Finding& f, const std::string& where) {
  validate_code(f.name, where + " name");
  validate_code(f.value, where + " value");
}

// ---- CSV ------------------------------------------------------------------------------------

struct CsvRow {
  std::size_t line = 0;  // 1-based line where the row starts
  std::vector<std::string> fields;
};

// RFC 4180 subset: ',' separator, '"' quoting with "" as an escaped quote, quoted fields may hold
// commas and newlines. Blank lines are skipped.
std::vector<CsvRow> read_csv(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot open CSV '{}'", path.string()));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  std::vector<CsvRow> rows;
  CsvRow row;
  std::string field;
  bool in_quotes = false, field_quoted = false, row_has_content = false;
  std::size_t line = 1;
  row.line = 1;
  const auto end_field = [&] {
    row.fields.push_back(field_quoted ? field : std::string(trim(field)));
    field.clear();
    field_quoted = false;
  };
  const auto end_row = [&] {
    end_field();
    if (row_has_content) rows.push_back(std::move(row));
    row = CsvRow{};
    row_has_content = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (c == '"' && trim(field).empty()) {
      in_quotes = field_quoted = row_has_content = true;
      field.clear();
    } else if (c == ',') {
      end_field();
      row_has_content = true;
    } else if (c == '\n') {
      end_row();
      row.line = ++line;
    } else if (c != '\r') {
      field.push_back(c);
      if (c != ' ' && c != '\t') row_has_content = true;
    }
  }
  if (in_quotes) {
    throw std::runtime_error(
        fmt::format("CSV '{}': unterminated quoted field at end of file", path.string()));
  }
  end_row();
  return rows;
}

struct CsvTable {
  std::vector<std::string> header;
  std::vector<CsvRow> rows;
};

CsvTable read_csv_table(const fs::path& path) {
  auto rows = read_csv(path);
  if (rows.empty()) throw std::runtime_error(fmt::format("CSV '{}' is empty", path.string()));
  CsvTable t;
  t.header = std::move(rows.front().fields);
  std::set<std::string, std::less<>> seen;
  for (std::size_t c = 0; c < t.header.size(); ++c) {
    if (t.header[c].empty()) {
      throw std::runtime_error(
          fmt::format("CSV '{}': header column {} has no name", path.string(), c + 1));
    }
    if (!seen.insert(t.header[c]).second) {
      throw std::runtime_error(
          fmt::format("CSV '{}': header names column '{}' twice", path.string(), t.header[c]));
    }
  }
  for (std::size_t r = 1; r < rows.size(); ++r) {
    if (rows[r].fields.size() != t.header.size()) {
      throw std::runtime_error(fmt::format("CSV '{}' line {}: {} fields, header has {}",
                                           path.string(), rows[r].line, rows[r].fields.size(),
                                           t.header.size()));
    }
    t.rows.push_back(std::move(rows[r]));
  }
  if (t.rows.empty()) throw std::runtime_error(fmt::format("CSV '{}' has no data rows", path.string()));
  return t;
}

std::size_t column_index(const CsvTable& t, std::string_view name, const fs::path& path) {
  const auto it = std::find(t.header.begin(), t.header.end(), name);
  if (it == t.header.end()) {
    throw std::runtime_error(fmt::format("CSV '{}' has no column '{}' (columns: {})",
                                         path.string(), name, fmt::join(t.header, ", ")));
  }
  return static_cast<std::size_t>(it - t.header.begin());
}

// ---- training -------------------------------------------------------------------------------

struct BinaryLabels {
  std::vector<int> truth;  // 1 = positive
  std::string positive, negative;
};

BinaryLabels binarize(const std::vector<std::string>& labels, const std::string& positive_label) {
  std::set<std::string> distinct(labels.begin(), labels.end());
  if (distinct.size() != 2) {
    throw std::invalid_argument(fmt::format(
        "binary classification needs exactly 2 distinct labels, found {}: {}", distinct.size(),
        fmt::join(distinct, ", ")));
  }
  BinaryLabels b;
  const std::string& first = *distinct.begin();
  const std::string& second = *std::next(distinct.begin());
  if (!positive_label.empty()) {
    if (!distinct.count(positive_label)) {
      throw std::invalid_argument(fmt::format("positive_label '{}' is not one of the labels {}, {}",
                                              positive_label, first, second));
    }
    b.positive = positive_label;
    b.negative = positive_label == first ? second : first;
  } else {
    const auto a = parse_number(first), c = parse_number(second);
    if (!a || !c) {
      throw std::invalid_argument(fmt::format(
          "labels '{}' and '{}' are not numeric: set positive_label to say which is positive",
          first, second));
    }
    if (*a == *c) {
      throw std::invalid_argument(fmt::format(
          "labels '{}' and '{}' are the same number: write them alike or set positive_label", first, second));
    }
    b.positive = *a > *c ? first : second;
    b.negative = *a > *c ? second : first;
  }
  b.truth.reserve(labels.size());
  for (const auto& l : labels) b.truth.push_back(l == b.positive ? 1 : 0);
  return b;
}

void validate(const ForestParams& p) {
  if (p.n_trees < 1) throw std::invalid_argument(fmt::format("forest.n_trees = {} < 1", p.n_trees));
  if (p.max_depth < 1) throw std::invalid_argument(fmt::format("forest.max_depth = {} < 1", p.max_depth));
  if (p.min_sample_count < 1) {
    throw std::invalid_argument(fmt::format("forest.min_sample_count = {} < 1", p.min_sample_count));
  }
  if (p.active_var_count < 0) {
    throw std::invalid_argument(fmt::format("forest.active_var_count = {} < 0", p.active_var_count));
  }
}

// OpenCV's forest draws its bootstrap samples and split candidates from cv::theRNG(), the
// calling thread's global generator: seed it for the fit and put the caller's state back after.
class ScopedOpenCvSeed {
 public:
  explicit ScopedOpenCvSeed(std::uint64_t seed) : saved_(cv::theRNG().state) {
    cv::theRNG().state = seed != 0 ? seed : 0x9E3779B97F4A7C15ull;  // RNG state 0 is degenerate
  }
  ~ScopedOpenCvSeed() { cv::theRNG().state = saved_; }
  ScopedOpenCvSeed(const ScopedOpenCvSeed&) = delete;
  ScopedOpenCvSeed& operator=(const ScopedOpenCvSeed&) = delete;

 private:
  std::uint64_t saved_;
};

cv::Ptr<cv::ml::RTrees> fit_forest(const cv::Mat& samples, const std::vector<int>& truth,
                                   const ForestParams& p, std::uint64_t seed) {
  const ScopedOpenCvSeed seeded(seed);
  auto forest = cv::ml::RTrees::create();
  forest->setMaxDepth(p.max_depth);
  forest->setMinSampleCount(p.min_sample_count);
  forest->setActiveVarCount(p.active_var_count);
  forest->setCalculateVarImportance(false);
  forest->setUseSurrogates(false);
  forest->setCVFolds(0);  // no pruning by internal CV
  forest->setRegressionAccuracy(0.0f);
  forest->setTermCriteria(cv::TermCriteria(cv::TermCriteria::MAX_ITER, p.n_trees, 0.0));
  cv::Mat responses(static_cast<int>(truth.size()), 1, CV_32S);
  for (std::size_t i = 0; i < truth.size(); ++i) responses.at<int>(static_cast<int>(i)) = truth[i];
  // Categorical response, ordered features: a classification forest.
  cv::Mat var_type(samples.cols + 1, 1, CV_8U, cv::Scalar(cv::ml::VAR_ORDERED));
  var_type.at<uchar>(samples.cols) = cv::ml::VAR_CATEGORICAL;
  auto data = cv::ml::TrainData::create(samples, cv::ml::ROW_SAMPLE, responses, cv::noArray(),
                                        cv::noArray(), cv::noArray(), var_type);
  if (!forest->train(data)) throw std::runtime_error("cv::ml::RTrees::train failed");
  return forest;
}

// Fraction of trees voting for class 1, per row of `samples`.
std::vector<double> positive_vote_fraction(const cv::ml::RTrees& forest, const cv::Mat& samples) {
  cv::Mat votes;
  forest.getVotes(samples, votes, 0);  // 0 = PREDICT_AUTO: per-class vote counts for a classifier
  if (votes.type() != CV_32S || votes.rows != samples.rows + 1 || votes.cols < 1 || votes.cols > 2) {
    throw std::runtime_error(fmt::format("unexpected RTrees::getVotes output {}x{} type {}",
                                         votes.rows, votes.cols, votes.type()));
  }
  std::vector<double> p(static_cast<std::size_t>(samples.rows), 0.0);
  for (int r = 0; r < samples.rows; ++r) {
    int total = 0, positive = 0;
    for (int c = 0; c < votes.cols; ++c) {
      const int n = votes.at<int>(r + 1, c);
      total += n;
      if (votes.at<int>(0, c) == 1) positive += n;  // row 0 holds the class labels
    }
    if (total <= 0) throw std::runtime_error("RTrees::getVotes returned no votes");
    p[static_cast<std::size_t>(r)] = static_cast<double>(positive) / total;
  }
  return p;
}

cv::Mat select_rows(const cv::Mat& m, const std::vector<std::size_t>& rows) {
  cv::Mat out(static_cast<int>(rows.size()), m.cols, m.type());
  for (std::size_t i = 0; i < rows.size(); ++i) m.row(static_cast<int>(rows[i])).copyTo(out.row(static_cast<int>(i)));
  return out;
}

// fold[i] in [0, k): each class's rows are shuffled (Fisher-Yates on mt19937_64, portable) and
// dealt round-robin, so fold sizes per class differ by at most one.
std::vector<int> stratified_folds(const std::vector<int>& truth, int k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> fold(truth.size(), 0);
  for (int cls : {0, 1}) {
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < truth.size(); ++i) {
      if (truth[i] == cls) idx.push_back(i);
    }
    for (std::size_t i = idx.size(); i > 1; --i) {
      std::swap(idx[i - 1], idx[static_cast<std::size_t>(rng() % i)]);
    }
    for (std::size_t j = 0; j < idx.size(); ++j) fold[idx[j]] = static_cast<int>(j % static_cast<std::size_t>(k));
  }
  return fold;
}

// Writes via `write(tmp)` to a temporary sibling with the same extension(s), then renames.
template <typename Write>
void write_atomically(const fs::path& path, Write&& write) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const fs::path tmp = dir / fmt::format(".{}.tmp{}{}", path.stem().string(), ::getpid(), path.extension().string());
  try {
    write(tmp);
    fs::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace

MissingFeatureError::MissingFeatureError(std::string feature, std::string needed_by)
    : std::invalid_argument(fmt::format("feature '{}' needed by {} is missing", feature, needed_by)),
      feature_(std::move(feature)),
      needed_by_(std::move(needed_by)) {}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

Comparison parse_comparison(std::string_view op) {
  op = trim(op);
  if (op == "<") return Comparison::less;
  if (op == "<=") return Comparison::less_equal;
  if (op == ">") return Comparison::greater;
  if (op == ">=") return Comparison::greater_equal;
  if (op == "==") return Comparison::equal;
  throw std::invalid_argument(fmt::format("unknown comparison '{}' (use <, <=, >, >=, ==)", op));
}

std::string_view to_string(Comparison op) {
  switch (op) {
    case Comparison::less: return "<";
    case Comparison::less_equal: return "<=";
    case Comparison::greater: return ">";
    case Comparison::greater_equal: return ">=";
    case Comparison::equal: return "==";
  }
  throw std::invalid_argument("invalid Comparison value");
}

bool holds(const Condition& c, double value) {
  switch (c.op) {
    case Comparison::less: return value < c.threshold;
    case Comparison::less_equal: return value <= c.threshold;
    case Comparison::greater: return value > c.threshold;
    case Comparison::greater_equal: return value >= c.threshold;
    case Comparison::equal: return value == c.threshold;
  }
  throw std::invalid_argument("invalid Comparison value");
}

void validate(const RuleSet& rs) {
  if (rs.name.empty()) throw std::invalid_argument("rule set has no name");
  if (rs.rules.empty() && !rs.otherwise) {
    throw std::invalid_argument(fmt::format("rule set '{}' has neither rules nor an otherwise finding", rs.name));
  }
  for (std::size_t i = 0; i < rs.rules.size(); ++i) {
    const Rule& r = rs.rules[i];
    const std::string where = fmt::format("rule set '{}' rule {} '{}'", rs.name, i + 1, r.name);
    if (r.name.empty()) throw std::invalid_argument(where + ": rule has no name");
    if (r.all_of.empty()) throw std::invalid_argument(where + ": rule has no conditions");
    for (const Condition& c : r.all_of) {
      if (c.feature.empty()) throw std::invalid_argument(where + ": condition without a feature name");
      if (!std::isfinite(c.threshold)) {
        throw std::invalid_argument(fmt::format("{}: threshold of '{}' is not finite", where, c.feature));
      }
      (void)to_string(c.op);  // rejects an out-of-range enum value
    }
    validate_finding(r.finding, where + " finding");
  }
  if (rs.otherwise) validate_finding(*rs.otherwise, fmt::format("rule set '{}' otherwise", rs.name));
}

RuleOutcome evaluate(const RuleSet& rs, const FeatureMap& features) {
  validate(rs);
  RuleOutcome out;
  out.rule_set = rs.name;
  for (const Rule& r : rs.rules) {
    for (const Condition& c : r.all_of) {
      const auto it = features.find(c.feature);
      if (it == features.end()) {
        throw MissingFeatureError(c.feature, fmt::format("rule set '{}' rule '{}'", rs.name, r.name));
      }
      if (!std::isfinite(it->second)) {
        throw std::invalid_argument(fmt::format("feature '{}' = {} is not finite (rule set '{}' rule '{}')",
                                                c.feature, it->second, rs.name, r.name));
      }
      out.evidence.emplace(it->first, it->second);
    }
  }
  for (const Rule& r : rs.rules) {
    const bool all = std::all_of(r.all_of.begin(), r.all_of.end(), [&](const Condition& c) {
      return holds(c, out.evidence.find(c.feature)->second);
    });
    if (all) {
      out.finding = r.finding;
      out.fired_rule = r.name;
      return out;
    }
  }
  out.finding = rs.otherwise;
  return out;
}

std::vector<RuleOutcome> evaluate(std::span<const RuleSet> rule_sets, const FeatureMap& features) {
  std::vector<RuleOutcome> out;
  out.reserve(rule_sets.size());
  for (const RuleSet& rs : rule_sets) out.push_back(evaluate(rs, features));
  return out;
}

// Emphysema by quantitative CT, default of the ct-chest profile.
//  * The -950 HU threshold: Gevenois PA, de Maertelaer V, De Vuyst P, Zanen J, Yernault JC.
//    "Comparison of computed density and macroscopic morphometry in pulmonary emphysema."
//    Am J Respir Crit Care Med 1995;152(2):653-657, doi:10.1164/ajrccm.152.2.7633722: of eight
//    thresholds from -900 to -970 HU, only the relative area below -950 HU did not differ
//    significantly from the morphometric extent of emphysema in resected lungs.
//  * The 5% cut-off: in COPDGene-based work quantitative-CT emphysema is defined as >= 5% of the
//    lung volume occupied by low-attenuation areas <= -950 HU (LAA-950), e.g. Amaza IP, O'Shea AMJ,
//    Fortis S, Comellas AP. "Discordant Quantitative and Visual CT Assessments in the Diagnosis of
//    Emphysema." Int J Chron Obstruct Pulmon Dis 2021;16:1231-1242, doi:10.2147/COPD.S284477;
//    the measure itself is COPDGene's LAA-950I (Schroeder JD et al., AJR 2013;201(3):W460-W470,
//    doi:10.2214/AJR.12.10102).
//  * Why 5% is above normal: among 854 healthy never-smokers of the MESA Lung Study the median
//    percent emphysema (< -950 HU, full inspiration) was 1.1% (IQR 0.5-2.5%), rising with age,
//    height and male sex (Hoffman EA et al., "Variation in the percent of emphysema-like lung in a
//    healthy, nonsmoking multiethnic sample. The MESA Lung Study", Ann Am Thorac Soc 2014).
//    Some cohorts use 6%; the threshold is a parameter. Inspiratory, standard-kernel CT only:
//    sharp kernels, low dose and expiration all shift LAA-950.
RuleSet emphysema_rule_set(double threshold_percent) {
  const Code emphysema{"87433001", "SCT", "Pulmonary emphysema"};
  const Code present{"52101004", "SCT", "Present"};
  const Code absent{"2667000", "SCT", "Absent"};
  RuleSet rs;
  rs.name = "emphysema";
  rs.rules.push_back(Rule{fmt::format("{} >= {}%", kLaa950PercentFeature, threshold_percent),
                          {Condition{std::string(kLaa950PercentFeature), Comparison::greater_equal,
                                     threshold_percent}},
                          Finding{emphysema, present}});
  rs.otherwise = Finding{emphysema, absent};
  validate(rs);
  return rs;
}

// ---------------------------------------------------------------------------------------------
// Trained models
// ---------------------------------------------------------------------------------------------

TrainingTable read_training_table(const fs::path& features_csv, const LabelSource& labels,
                                  std::span<const std::string> ignore_columns) {
  if (labels.column.empty()) throw std::invalid_argument("label column name is empty");
  const CsvTable t = read_csv_table(features_csv);
  const std::size_t n = t.rows.size();

  TrainingTable out;
  std::optional<std::size_t> label_col_in_features;
  if (labels.file.empty()) {
    label_col_in_features = column_index(t, labels.column, features_csv);
    for (const auto& row : t.rows) out.labels.push_back(row.fields[*label_col_in_features]);
  } else {
    const CsvTable lt = read_csv_table(labels.file);
    const std::size_t c = column_index(lt, labels.column, labels.file);
    if (lt.rows.size() != n) {
      throw std::runtime_error(fmt::format("labels CSV '{}' has {} rows, features CSV '{}' has {}",
                                           labels.file.string(), lt.rows.size(),
                                           features_csv.string(), n));
    }
    for (const auto& row : lt.rows) out.labels.push_back(row.fields[c]);
    if (std::find(t.header.begin(), t.header.end(), labels.column) != t.header.end()) {
      label_col_in_features = column_index(t, labels.column, features_csv);
      logger()->warn("features CSV also has a '{}' column; not used as a feature", labels.column);
    }
  }
  for (std::size_t r = 0; r < n; ++r) {
    if (out.labels[r].empty()) {
      throw std::runtime_error(fmt::format("row {} (line {} of '{}') has an empty label", r + 1,
                                           t.rows[r].line, features_csv.string()));
    }
  }

  std::vector<std::size_t> feature_cols;
  for (std::size_t c = 0; c < t.header.size(); ++c) {
    const std::string& name = t.header[c];
    if ((label_col_in_features && c == *label_col_in_features) ||
        std::find(ignore_columns.begin(), ignore_columns.end(), name) != ignore_columns.end()) {
      out.ignored_columns.push_back(name);
      continue;
    }
    std::size_t numeric = 0;
    std::optional<std::size_t> first_bad;
    for (std::size_t r = 0; r < n; ++r) {
      if (parse_number(t.rows[r].fields[c])) {
        ++numeric;
      } else if (!first_bad) {
        first_bad = r;
      }
    }
    if (numeric == n) {
      feature_cols.push_back(c);
    } else if (numeric == 0) {
      out.ignored_columns.push_back(name);
    } else {
      throw std::runtime_error(fmt::format(
          "CSV '{}' column '{}' is numeric in {} of {} rows but line {} has '{}': fix the value "
          "or list the column in ignore_columns",
          features_csv.string(), name, numeric, n, t.rows[*first_bad].line,
          t.rows[*first_bad].fields[c]));
    }
  }
  if (feature_cols.empty()) {
    throw std::runtime_error(fmt::format("CSV '{}' has no numeric feature column", features_csv.string()));
  }
  out.samples.create(static_cast<int>(n), static_cast<int>(feature_cols.size()), CV_32F);
  for (std::size_t j = 0; j < feature_cols.size(); ++j) {
    out.feature_names.push_back(t.header[feature_cols[j]]);
    for (std::size_t r = 0; r < n; ++r) {
      const double v = *parse_number(t.rows[r].fields[feature_cols[j]]);
      out.samples.at<float>(static_cast<int>(r), static_cast<int>(j)) = static_cast<float>(v);
    }
  }
  return out;
}

TrainResult train_random_forest(const fs::path& features_csv, const LabelSource& labels, int folds,
                                const TrainParams& params, const fs::path& model_out) {
  if (folds < 2) throw std::invalid_argument(fmt::format("folds = {}: need at least 2", folds));
  if (!(params.threshold >= 0.0 && params.threshold < 1.0)) {
    throw std::invalid_argument(fmt::format("threshold = {} not in [0, 1)", params.threshold));
  }
  if (model_out.empty()) throw std::invalid_argument("model output path is empty");
  validate(params.forest);

  const TrainingTable table = read_training_table(features_csv, labels, params.ignore_columns);
  const BinaryLabels bin = binarize(table.labels, params.positive_label);
  const auto n_pos = static_cast<std::size_t>(std::count(bin.truth.begin(), bin.truth.end(), 1));
  const std::size_t n = bin.truth.size(), n_neg = n - n_pos;
  if (n_pos < static_cast<std::size_t>(folds) || n_neg < static_cast<std::size_t>(folds)) {
    throw std::invalid_argument(fmt::format(
        "{}-fold stratified CV needs >= {} rows per class; have {} '{}' and {} '{}'", folds, folds,
        n_pos, bin.positive, n_neg, bin.negative));
  }
  logger()->info("training random forest on {} rows ({} '{}', {} '{}'), {} features, ignored columns: [{}]",
              n, n_pos, bin.positive, n_neg, bin.negative, table.feature_names.size(),
              fmt::join(table.ignored_columns, ", "));

  TrainResult result;
  result.feature_names = table.feature_names;
  result.positive_label = bin.positive;
  result.negative_label = bin.negative;
  result.n_samples = n;
  result.n_positive = n_pos;
  result.folds = folds;
  result.truth = bin.truth;
  result.out_of_fold_probability.assign(n, 0.0);

  const std::vector<int> fold = stratified_folds(bin.truth, folds, params.seed);
  for (int f = 0; f < folds; ++f) {
    std::vector<std::size_t> train_rows, test_rows;
    for (std::size_t i = 0; i < n; ++i) (fold[i] == f ? test_rows : train_rows).push_back(i);
    std::vector<int> train_truth, test_truth;
    for (auto i : train_rows) train_truth.push_back(bin.truth[i]);
    for (auto i : test_rows) test_truth.push_back(bin.truth[i]);
    const auto forest = fit_forest(select_rows(table.samples, train_rows), train_truth, params.forest,
                                   params.seed + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(f + 1));
    const auto p = positive_vote_fraction(*forest, select_rows(table.samples, test_rows));
    for (std::size_t j = 0; j < test_rows.size(); ++j) result.out_of_fold_probability[test_rows[j]] = p[j];
    result.per_fold.push_back(binary_metrics(p, test_truth, params.threshold));
    logger()->debug("fold {}/{}: {}", f + 1, folds, to_string(result.per_fold.back()));
  }
  result.cross_validated = binary_metrics(result.out_of_fold_probability, bin.truth, params.threshold);

  save_model(fit_forest_model(table, params), model_out);
  result.model_path = model_out;
  logger()->info("{}", to_string(result));
  return result;
}

ForestModel fit_forest_model(const TrainingTable& table, const TrainParams& params) {
  validate(params.forest);
  if (table.samples.empty() || table.samples.type() != CV_32F ||
      static_cast<std::size_t>(table.samples.rows) != table.labels.size() ||
      static_cast<std::size_t>(table.samples.cols) != table.feature_names.size()) {
    throw std::invalid_argument("fit_forest_model: inconsistent training table");
  }
  const BinaryLabels bin = binarize(table.labels, params.positive_label);
  ForestModel model;
  model.forest = fit_forest(table.samples, bin.truth, params.forest, params.seed);
  model.feature_names = table.feature_names;
  model.positive_label = bin.positive;
  model.negative_label = bin.negative;
  model.threshold = params.threshold;
  return model;
}

std::string to_string(const TrainResult& r) {
  return fmt::format("'{}' vs '{}': {} rows ({} positive), {} features, {}-fold CV: {}; model {}",
                     r.positive_label, r.negative_label, r.n_samples, r.n_positive,
                     r.feature_names.size(), r.folds, to_string(r.cross_validated),
                     r.model_path.string());
}

namespace {
constexpr int kModelFormatVersion = 1;
}

void save_model(const ForestModel& model, const fs::path& path) {
  if (!model.forest || !model.forest->isTrained()) throw std::invalid_argument("save_model: forest is not trained");
  if (model.feature_names.empty() || static_cast<int>(model.feature_names.size()) != model.forest->getVarCount()) {
    throw std::invalid_argument(fmt::format("save_model: {} feature names for a forest of {} variables",
                                            model.feature_names.size(), model.forest->getVarCount()));
  }
  write_atomically(path, [&](const fs::path& tmp) {
    cv::FileStorage fs_out(tmp.string(), cv::FileStorage::WRITE);
    if (!fs_out.isOpened()) throw std::runtime_error(fmt::format("cannot write model '{}'", tmp.string()));
    fs_out << "pacsnode_forest_version" << kModelFormatVersion;
    fs_out << "feature_names" << "[";
    for (const auto& name : model.feature_names) fs_out << name;
    fs_out << "]";
    fs_out << "positive_label" << model.positive_label;
    fs_out << "negative_label" << model.negative_label;
    fs_out << "threshold" << model.threshold;
    fs_out << "forest" << "{";
    model.forest->write(fs_out);
    fs_out << "}";
    fs_out.release();
  });
}

ForestModel load_model(const fs::path& path) {
  if (!fs::is_regular_file(path)) throw std::runtime_error(fmt::format("model '{}' does not exist", path.string()));
  cv::FileStorage in;
  try {
    in.open(path.string(), cv::FileStorage::READ);
  } catch (const cv::Exception& e) {
    throw std::runtime_error(fmt::format("model '{}' is not readable: {}", path.string(), e.what()));
  }
  if (!in.isOpened()) throw std::runtime_error(fmt::format("cannot open model '{}'", path.string()));
  const int version = static_cast<int>(in["pacsnode_forest_version"].real());
  if (version != kModelFormatVersion) {
    throw std::runtime_error(fmt::format("model '{}': pacsnode_forest_version {} (expected {})",
                                         path.string(), version, kModelFormatVersion));
  }
  ForestModel m;
  const cv::FileNode names = in["feature_names"];
  if (!names.isSeq() || names.size() == 0) {
    throw std::runtime_error(fmt::format("model '{}': feature_names missing", path.string()));
  }
  for (const auto& node : names) m.feature_names.push_back(static_cast<std::string>(node));
  in["positive_label"] >> m.positive_label;
  in["negative_label"] >> m.negative_label;
  in["threshold"] >> m.threshold;
  if (m.positive_label.empty() || m.negative_label.empty() || m.positive_label == m.negative_label) {
    throw std::runtime_error(fmt::format("model '{}': bad class labels", path.string()));
  }
  const cv::FileNode forest_node = in["forest"];
  if (forest_node.empty()) throw std::runtime_error(fmt::format("model '{}': no forest node", path.string()));
  m.forest = cv::ml::RTrees::create();
  try {
    m.forest->read(forest_node);
  } catch (const cv::Exception& e) {
    throw std::runtime_error(fmt::format("model '{}': cannot read forest: {}", path.string(), e.what()));
  }
  if (!m.forest->isTrained() || m.forest->getVarCount() != static_cast<int>(m.feature_names.size())) {
    throw std::runtime_error(fmt::format("model '{}': forest has {} variables, {} feature names",
                                         path.string(), m.forest->getVarCount(), m.feature_names.size()));
  }
  return m;
}

Prediction predict(const ForestModel& model, const FeatureMap& features) {
  if (!model.forest || !model.forest->isTrained()) throw std::invalid_argument("predict: model is not trained");
  cv::Mat sample(1, static_cast<int>(model.feature_names.size()), CV_32F);
  for (std::size_t j = 0; j < model.feature_names.size(); ++j) {
    const auto it = features.find(model.feature_names[j]);
    if (it == features.end()) throw MissingFeatureError(model.feature_names[j], "the random forest model");
    if (!std::isfinite(it->second)) {
      throw std::invalid_argument(fmt::format("feature '{}' = {} is not finite", it->first, it->second));
    }
    sample.at<float>(0, static_cast<int>(j)) = static_cast<float>(it->second);
  }
  Prediction p;
  p.positive_probability = positive_vote_fraction(*model.forest, sample).front();
  const bool positive = p.positive_probability > model.threshold;
  p.label = positive ? model.positive_label : model.negative_label;
  p.probability = positive ? p.positive_probability : 1.0 - p.positive_probability;
  return p;
}

}  // namespace analysis::kernels
