#pragma once
// What `pacsnode analyze` shows a person at a terminal: one progress line while it works (series
// and files done), and a table of the series at the end with where the outputs went. Not shown when
// stderr is not a terminal or with --quiet; errors and skipped inputs are printed either way.
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/results.h"

namespace analysis {

class AnalyzeProgress {
 public:
  // `shown`: stderr is a terminal and not --quiet. `width`: of the terminal.
  AnalyzeProgress(bool shown, std::size_t series, std::size_t files, std::FILE* out = stderr, int width = 80);
  ~AnalyzeProgress();
  // A series (of `files` files) begins.
  void begin_series(const std::string& what, std::size_t files);
  // The series that began is over (analysed, failed or skipped).
  void end_series();
  // A line above the progress line (errors, skipped inputs, notes): always printed.
  void line(const std::string& text);
  // Removes the progress line (before the table).
  void finish();

  // The progress line as it reads now, e.g. "[#######.........] 3/12 series, 420/1600 files  CT 1.2.3".
  std::string render() const;

 private:
  void draw();
  bool shown_;
  std::size_t series_total_, files_total_, series_done_ = 0, files_done_ = 0, files_current_ = 0;
  std::string current_;
  std::FILE* out_;
  int width_;
  bool drawn_ = false;
};

// The table of analysed series (series, size, profile, segments, findings, status) and where the
// outputs are, for the end of `analyze`.
std::string summary_table(const std::vector<SeriesSummary>& series, const std::filesystem::path& out, std::size_t rejected,
                          bool write_dicom);

}  // namespace analysis
