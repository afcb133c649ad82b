#define BOOST_TEST_MODULE cli_analyze_tty
// `pacsnode analyze` for a person at a terminal (issue 11): a progress line while it works and a
// table of the series at the end; neither with --quiet nor when stderr is not a terminal. The
// binary runs under script(1), which gives it a pseudo-terminal.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <string>

#include "analysis/analyze_report.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using testsupport::run;
using testsupport::shell_quote;

namespace {

struct Phantom {
  testsupport::TempDir tmp;
  fs::path in = tmp.path / "in";
  Phantom() {
    const auto r = run({testsupport::python(), testsupport::phantom_script().string(), (in / "ct").string(), "--slices",
                        "16", "--size", "64"});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  }
  // analyze on the phantom folder, under a pseudo-terminal when `tty`.
  testsupport::RunResult analyze(const std::string& name, bool tty, const std::string& extra = {}) const {
    const std::string cmd = shell_quote(testsupport::daemon_binary().string()) + " analyze " + shell_quote(in.string()) +
                            " --out " + shell_quote((tmp.path / name).string()) + " " + extra;
    if (!tty) return run({"/bin/sh", "-c", cmd + " </dev/null"});
    return run({"script", "-qec", cmd, "/dev/null"});
  }
};

const std::string kProgress = "\r\033[K[";

}  // namespace

BOOST_AUTO_TEST_CASE(on_a_terminal_a_progress_line_and_a_table) {
  const Phantom p;
  const auto r = p.analyze("tty", true);
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  BOOST_TEST(r.output.find(kProgress) != std::string::npos, r.output);
  BOOST_TEST(r.output.find("1/1 series, 16/16 files") != std::string::npos, r.output);
  // The table: header, the CT series with its profile and segments, where the outputs went.
  BOOST_TEST(r.output.find("series") != std::string::npos);
  BOOST_TEST(r.output.find("profile") != std::string::npos);
  BOOST_TEST(r.output.find("CT 64x64x16") != std::string::npos, r.output);
  BOOST_TEST(r.output.find("ct-chest") != std::string::npos, r.output);
  BOOST_TEST(r.output.find("1 of 1 series analysed; in " + (p.tmp.path / "tty").string() +
                           ": features.json, features.csv, 1 SEG, 1 SR, 1 preview(s)") != std::string::npos,
             r.output);
  BOOST_TEST(fs::exists(p.tmp.path / "tty" / "features.json"));
}

BOOST_AUTO_TEST_CASE(quiet_and_not_on_a_terminal_show_neither) {
  const Phantom p;
  for (const auto& [name, tty, extra] : {std::tuple{"quiet", true, "--quiet"}, std::tuple{"short", true, "-q"},
                                         std::tuple{"pipe", false, ""}}) {
    const auto r = p.analyze(name, tty, extra);
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
    BOOST_TEST(r.output.find(kProgress) == std::string::npos, name << ": " << r.output);
    BOOST_TEST(r.output.find("series analysed; in") == std::string::npos, name << ": " << r.output);
    BOOST_TEST(fs::exists(p.tmp.path / name / "features.csv"), name);  // the work is done all the same
  }
}

BOOST_AUTO_TEST_CASE(progress_line_counts_series_and_files_and_fits_the_width) {
  char* buf = nullptr;
  std::size_t len = 0;
  std::FILE* out = ::open_memstream(&buf, &len);
  {
    analysis::AnalyzeProgress p(true, 4, 100, out, 50);
    BOOST_TEST(p.render() == "[....................] 0/4 series, 0/100 files");
    p.begin_series("a-very-long-series-folder-name-that-does-not-fit", 25);
    BOOST_TEST(p.render().size() == 49u);
    p.end_series();
    BOOST_TEST(p.render() == "[#####...............] 1/4 series, 25/100 files");
    p.line("skipped x: why");
    p.finish();
  }
  std::fclose(out);
  const std::string text(buf, len);
  std::free(buf);
  // The line above the progress line clears it first and redraws it after.
  BOOST_TEST(text.find("\r\033[Kskipped x: why\n\r\033[K[#####") != std::string::npos, text);
  BOOST_TEST(text.size() >= 4u);
  BOOST_TEST(text.substr(text.size() - 4) == "\r\033[K");  // finish() leaves a clean line
}

BOOST_AUTO_TEST_CASE(hidden_progress_writes_only_the_lines) {
  char* buf = nullptr;
  std::size_t len = 0;
  std::FILE* out = ::open_memstream(&buf, &len);
  {
    analysis::AnalyzeProgress p(false, 2, 10, out, 80);
    p.begin_series("s", 5);
    p.line("series 1 failed: decode: bad");
    p.end_series();
  }
  std::fclose(out);
  BOOST_TEST(std::string(buf, len) == "series 1 failed: decode: bad\n");
  std::free(buf);
}

BOOST_AUTO_TEST_CASE(summary_table_lists_findings_failures_and_outputs) {
  analysis::SeriesSummary ok;
  ok.key = "1.2.3_1";
  ok.profile = "ct-chest";
  ok.info.modality = "CT";
  ok.depth = 40;
  ok.rows = ok.cols = 512;
  analysis::SegmentResult lung;
  lung.name = "left_lung";
  lung.display_name = "Left lung";
  analysis::kernels::RuleOutcome emphysema;
  emphysema.finding = analysis::kernels::Finding{{"87433001", "SCT", "Pulmonary emphysema"}, {"373068000", "SCT", "Undetermined"}};
  lung.findings.push_back(emphysema);
  lung.findings.push_back({});  // a rule set that did not fire
  ok.segments = {lung, analysis::SegmentResult{}};
  ok.seg_file = "a_seg.dcm";
  ok.sr_file = "a_sr.dcm";
  ok.preview = "a_preview.png";
  analysis::SeriesSummary bad;
  bad.key = "1.2.4_1";
  bad.profile = "generic";
  bad.info.modality = "MR";
  bad.error = "decode: truncated";
  const std::string t = analysis::summary_table({ok, bad}, "/out", 2, true);
  BOOST_TEST(t.find("CT 512x512x40") != std::string::npos, t);
  BOOST_TEST(t.find("Left lung: Undetermined") != std::string::npos, t);
  BOOST_TEST(t.find("FAILED: decode: truncated") != std::string::npos, t);
  BOOST_TEST(t.find("1 of 2 series analysed, 2 input(s) skipped (listed above); in /out: features.json, features.csv, "
                    "1 SEG, 1 SR, 1 preview(s)") != std::string::npos,
             t);
  // Aligned: the profile column starts at the same place on every row.
  const auto header_at = t.find("profile");
  const auto line2 = t.find('\n', t.find('\n') + 1) + 1;
  BOOST_TEST(t.find("ct-chest", line2) - line2 == header_at, t);
}
