#include "analysis/analyze_report.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace analysis {

AnalyzeProgress::AnalyzeProgress(bool shown, std::size_t series, std::size_t files, std::FILE* out, int width)
    : shown_(shown), series_total_(series), files_total_(files), out_(out), width_(std::max(40, width)) {}

AnalyzeProgress::~AnalyzeProgress() { finish(); }

void AnalyzeProgress::begin_series(const std::string& what, std::size_t files) {
  current_ = what;
  files_current_ = files;
  draw();
}

void AnalyzeProgress::end_series() {
  ++series_done_;
  files_done_ += files_current_;
  files_current_ = 0;
  current_.clear();
  draw();
}

void AnalyzeProgress::line(const std::string& text) {
  if (shown_ && drawn_) std::fputs("\r\033[K", out_);
  std::fprintf(out_, "%s\n", text.c_str());
  if (shown_ && drawn_) draw();
}

void AnalyzeProgress::finish() {
  if (shown_ && drawn_) {
    std::fputs("\r\033[K", out_);
    std::fflush(out_);
  }
  drawn_ = false;
}

std::string AnalyzeProgress::render() const {
  constexpr std::size_t kBar = 20;
  const std::size_t filled = series_total_ ? kBar * series_done_ / series_total_ : kBar;
  std::string s = fmt::format("[{}{}] {}/{} series, {}/{} files", std::string(filled, '#'), std::string(kBar - filled, '.'),
                              series_done_, series_total_, files_done_, files_total_);
  if (!current_.empty()) s += "  " + current_;
  if (s.size() > static_cast<std::size_t>(width_ - 1)) s.resize(static_cast<std::size_t>(width_ - 1));
  return s;
}

void AnalyzeProgress::draw() {
  if (!shown_) return;
  std::fprintf(out_, "\r\033[K%s", render().c_str());
  std::fflush(out_);
  drawn_ = true;
}

namespace {

// "Left lung: Pulmonary emphysema; Nodule 1: Solid" (the findings that fired), "-" for none.
std::string findings_of(const SeriesSummary& s) {
  std::string out;
  for (const auto& seg : s.segments)
    for (const auto& f : seg.findings)
      if (f.finding)
        out += fmt::format("{}{}: {}", out.empty() ? "" : "; ", seg.display_name.empty() ? seg.name : seg.display_name,
                           f.finding->value.meaning);
  return out.empty() ? "-" : out;
}

}  // namespace

std::string summary_table(const std::vector<SeriesSummary>& series, const std::filesystem::path& out, std::size_t rejected,
                          bool write_dicom) {
  struct Row {
    std::string key, size, profile, segments, findings, status;
  };
  std::vector<Row> rows{{"series", "size", "profile", "segments", "findings", "status"}};
  std::size_t segs = 0, srs = 0, previews = 0, ok = 0;
  for (const auto& s : series) {
    Row r;
    r.key = s.key;
    r.size = s.depth ? fmt::format("{} {}x{}x{}", s.info.modality, s.cols, s.rows, s.depth) : s.info.modality;
    r.profile = s.profile;
    r.segments = std::to_string(s.segments.size());
    r.findings = findings_of(s);
    if (r.findings.size() > 60) r.findings = r.findings.substr(0, 57) + "...";
    r.status = s.error.empty() ? "ok" : "FAILED: " + s.error;
    if (r.status.size() > 60) r.status = r.status.substr(0, 57) + "...";
    if (s.error.empty()) ++ok;
    segs += !s.seg_file.empty();
    srs += !s.sr_file.empty();
    previews += !s.preview.empty();
    rows.push_back(std::move(r));
  }
  std::array<std::size_t, 6> w{};
  for (const auto& r : rows) {
    const std::array<const std::string*, 6> cells{&r.key, &r.size, &r.profile, &r.segments, &r.findings, &r.status};
    for (std::size_t i = 0; i < cells.size(); ++i) w[i] = std::max(w[i], cells[i]->size());
  }
  std::string text;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    text += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>{}}  {:<{}}  {}\n", r.key, w[0], r.size, w[1], r.profile, w[2], r.segments,
                        w[3], r.findings, w[4], r.status);
    if (i == 0) text += std::string(w[0] + w[1] + w[2] + w[3] + w[4] + w[5] + 10, '-') + "\n";
  }
  text += fmt::format("{} of {} series analysed{}; in {}: features.json, features.csv", ok, series.size(),
                      rejected ? fmt::format(", {} input(s) skipped (listed above)", rejected) : std::string(),
                      out.string());
  if (write_dicom) text += fmt::format(", {} SEG, {} SR", segs, srs);
  text += fmt::format(", {} preview(s)\n", previews);
  return text;
}

}  // namespace analysis
