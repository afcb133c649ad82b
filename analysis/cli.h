#pragma once
// Offline sub-commands of `pacsnode` (registered in scp/main.cpp; parsing with CLI11, see
// cli/command.h). Each runs a command; exit codes 0 success, 1 failure (message on stderr),
// 2 bad usage (the command's help on stderr). `pacsnode CMD --help` lists every option.
//
//   pacsnode analyze INPUT --out DIR [--profile NAME] [--no-dicom] [--keep-empty-frames] [--config FILE]
//       Analyses every series in INPUT (a folder, any layout, or one file): features.json,
//       features.csv, <key>_preview.png per series, <key>_seg.dcm + <key>_sr.dcm (unless
//       --no-dicom). Files that cannot be used are listed on stderr with the reason and skipped.
//       A progress line per series on stderr when it is a terminal. Exit 0 when at least one
//       series was analysed.
//   pacsnode evaluate --pred A --ref B [--label N] [--pred-label N] [--ref-label N]
//       Overlap metrics (Dice, Jaccard, volumes, Hausdorff, HD95, ASSD) of two masks (NIfTI
//       .nii/.nii.gz or DICOM SEG) as JSON on stdout. --label N compares label N of both (default:
//       non-zero).
//   pacsnode train --features CSV --labels COLUMN_OR_FILE --out MODEL [--folds K] [--positive LABEL]
//                  [--label-column NAME] [--ignore COL[,COL...]] [--trees N] [--seed S]
//       Stratified k-fold (default 5) cross-validated random forest; prints the metrics (text on
//       stderr, JSON on stdout) and writes the model trained on all rows.
#include <string>
#include <vector>

#include "cli/command.h"

namespace analysis {

cli::Command analyze_command();
cli::Command evaluate_command();
cli::Command train_command();

// The same commands on their own (args: everything after the command name).
int analyze_main(const std::vector<std::string>& args);
int evaluate_main(const std::vector<std::string>& args);
int train_main(const std::vector<std::string>& args);

}  // namespace analysis
