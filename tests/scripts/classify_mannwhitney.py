#!/usr/bin/python3
"""Reference ROC AUC for tests/unit/test_classify_metrics.cpp, independent of our C++ code.

Reads a CSV with a header "score,label" (label 0/1) and prints AUC = U / (n_pos * n_neg), where U
is the Mann-Whitney U statistic of the positives' scores against the negatives' scores as
scipy.stats.mannwhitneyu computes it (ties count one half), with 17 significant digits.
Usage: classify_mannwhitney.py scores.csv
"""
import csv
import sys

from scipy.stats import mannwhitneyu


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    pos, neg = [], []
    with open(sys.argv[1], newline="") as f:
        for row in csv.DictReader(f):
            (pos if int(row["label"]) == 1 else neg).append(float(row["score"]))
    if not pos or not neg:
        print("need both classes", file=sys.stderr)
        return 1
    # scipy >= 1.7 returns U of the first sample.
    u = mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic
    print(f"{u / (len(pos) * len(neg)):.17g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
