#pragma once
// Metrics of a binary classifier, for the cross-validation in classify.cpp. Classifier metrics
// only: segmentation metrics (Dice, Hausdorff, ...) live in analysis/kernels/evaluate*.
//
// Truth labels are 0 (negative) or 1 (positive); anything else is rejected. A score is any real
// number that grows with the belief in "positive" (here: the forest's vote fraction).
#include <cstddef>
#include <span>
#include <string>

namespace analysis::kernels {

struct ConfusionCounts {
  std::size_t true_positive = 0, false_positive = 0, true_negative = 0, false_negative = 0;
  std::size_t total() const { return true_positive + false_positive + true_negative + false_negative; }
  std::size_t positives() const { return true_positive + false_negative; }
  std::size_t negatives() const { return true_negative + false_positive; }
};

// Counts from truth and predicted labels (both 0/1, same length). Throws std::invalid_argument.
ConfusionCounts confusion_counts(std::span<const int> truth, std::span<const int> predicted);

// Fraction of correct predictions. NaN when there are no samples.
double accuracy(const ConfusionCounts& c);
// True-positive rate TP/(TP+FN). NaN when there are no positives.
double sensitivity(const ConfusionCounts& c);
// True-negative rate TN/(TN+FP). NaN when there are no negatives.
double specificity(const ConfusionCounts& c);

// Area under the ROC curve, computed as the Mann-Whitney U statistic of the positives' scores
// against the negatives' scores divided by n_pos*n_neg, i.e. the probability that a random
// positive scores higher than a random negative, ties counting one half (mid-ranks). Equal to the
// trapezoidal area under the empirical ROC curve. Throws std::invalid_argument if the lengths
// differ, a label is not 0/1, a score is not finite, or either class is absent (AUC undefined).
double roc_auc(std::span<const double> scores, std::span<const int> truth);

struct BinaryMetrics {
  ConfusionCounts counts;
  double accuracy = 0, sensitivity = 0, specificity = 0, roc_auc = 0;
  double threshold = 0.5;  // a sample is predicted positive when score > threshold
};

// All of the above at one threshold: predicted positive iff score > threshold (so a 50/50 vote
// is "negative", as argmax with ties to the first class would give).
BinaryMetrics binary_metrics(std::span<const double> scores, std::span<const int> truth,
                             double threshold = 0.5);

// "n=200 acc=0.950 sens=0.940 spec=0.960 auc=0.987 (TP=94 FP=4 TN=96 FN=6)"
std::string to_string(const BinaryMetrics& m);

}  // namespace analysis::kernels
