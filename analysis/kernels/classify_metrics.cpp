#include "analysis/kernels/classify_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace analysis::kernels {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_binary(std::span<const int> labels, const char* what) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != 0 && labels[i] != 1) {
      throw std::invalid_argument(
          fmt::format("{}[{}] = {}: binary labels must be 0 or 1", what, i, labels[i]));
    }
  }
}

double ratio(std::size_t num, std::size_t den) {
  return den == 0 ? kNaN : static_cast<double>(num) / static_cast<double>(den);
}

}  // namespace

ConfusionCounts confusion_counts(std::span<const int> truth, std::span<const int> predicted) {
  if (truth.size() != predicted.size()) {
    throw std::invalid_argument(fmt::format("confusion_counts: {} truth labels but {} predictions",
                                            truth.size(), predicted.size()));
  }
  check_binary(truth, "truth");
  check_binary(predicted, "predicted");
  ConfusionCounts c;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] == 1) {
      (predicted[i] == 1 ? c.true_positive : c.false_negative)++;
    } else {
      (predicted[i] == 1 ? c.false_positive : c.true_negative)++;
    }
  }
  return c;
}

double accuracy(const ConfusionCounts& c) { return ratio(c.true_positive + c.true_negative, c.total()); }
double sensitivity(const ConfusionCounts& c) { return ratio(c.true_positive, c.positives()); }
double specificity(const ConfusionCounts& c) { return ratio(c.true_negative, c.negatives()); }

double roc_auc(std::span<const double> scores, std::span<const int> truth) {
  if (scores.size() != truth.size()) {
    throw std::invalid_argument(
        fmt::format("roc_auc: {} scores but {} labels", scores.size(), truth.size()));
  }
  check_binary(truth, "truth");
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (!std::isfinite(scores[i])) {
      throw std::invalid_argument(fmt::format("roc_auc: score[{}] is not finite", i));
    }
  }
  const auto n_pos = static_cast<std::size_t>(std::count(truth.begin(), truth.end(), 1));
  const std::size_t n_neg = truth.size() - n_pos;
  if (n_pos == 0 || n_neg == 0) {
    throw std::invalid_argument(fmt::format(
        "roc_auc: undefined with {} positive and {} negative samples (need both classes)", n_pos,
        n_neg));
  }
  // Mid-ranks (1-based) of the scores in ascending order; tied scores share their mean rank.
  std::vector<std::size_t> order(scores.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  double positive_rank_sum = 0.0;
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && scores[order[j + 1]] == scores[order[i]]) ++j;
    const double mid_rank = (static_cast<double>(i + 1) + static_cast<double>(j + 1)) / 2.0;
    for (std::size_t k = i; k <= j; ++k) {
      if (truth[order[k]] == 1) positive_rank_sum += mid_rank;
    }
    i = j + 1;
  }
  const double np = static_cast<double>(n_pos), nn = static_cast<double>(n_neg);
  const double u_positive = positive_rank_sum - np * (np + 1.0) / 2.0;  // Mann-Whitney U of positives
  return u_positive / (np * nn);
}

BinaryMetrics binary_metrics(std::span<const double> scores, std::span<const int> truth,
                             double threshold) {
  std::vector<int> predicted(scores.size());
  std::transform(scores.begin(), scores.end(), predicted.begin(),
                 [threshold](double s) { return s > threshold ? 1 : 0; });
  BinaryMetrics m;
  m.threshold = threshold;
  m.counts = confusion_counts(truth, predicted);
  m.accuracy = accuracy(m.counts);
  m.sensitivity = sensitivity(m.counts);
  m.specificity = specificity(m.counts);
  m.roc_auc = roc_auc(scores, truth);
  return m;
}

std::string to_string(const BinaryMetrics& m) {
  return fmt::format("n={} acc={:.3f} sens={:.3f} spec={:.3f} auc={:.3f} (TP={} FP={} TN={} FN={})",
                     m.counts.total(), m.accuracy, m.sensitivity, m.specificity, m.roc_auc,
                     m.counts.true_positive, m.counts.false_positive, m.counts.true_negative,
                     m.counts.false_negative);
}

}  // namespace analysis::kernels
