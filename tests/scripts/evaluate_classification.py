#!/usr/bin/python3
"""Independent reference for analysis::kernels::roc_auc (classify_metrics.h), used by
test_evaluate_classification.cpp.

Usage: evaluate_classification.py cases.txt   (one "label score" per line, label 0/1)
Prints "roc_auc value": the Mann-Whitney U of the positives (SciPy, mid-ranks for ties)
divided by n_pos * n_neg, and "roc_auc_trapezoid value": the trapezoidal area under the
empirical ROC curve with tied scores taken as one threshold step (computed here with NumPy).
"""
import sys

import numpy as np
from scipy import stats


def main():
    data = np.loadtxt(sys.argv[1], ndmin=2)
    y = data[:, 0].astype(int)
    s = data[:, 1]
    pos, neg = s[y == 1], s[y == 0]
    u = stats.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    print(f"roc_auc {u / (len(pos) * len(neg)):.17g}")
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [float((pos >= t).mean()) for t in thresholds]
    fpr = [0.0] + [float((neg >= t).mean()) for t in thresholds]
    print(f"roc_auc_trapezoid {np.trapz(tpr, fpr):.17g}")


if __name__ == "__main__":
    main()
