#define BOOST_TEST_MODULE cli_analyze
#include <boost/test/unit_test.hpp>

#include "support/capture.h"

#include "support/temp_dir.h"

// `pacsnode analyze` end to end on a small mixed folder (in process: analysis::analyze_main).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "analysis/cli.h"
#include "support/paths.h"
#include "support/process.h"

namespace fs = std::filesystem;

namespace {

using TempDir = testsupport::TempDir;

using testsupport::capture_stderr;

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// analyze runs each series in `pacsnode worker`: in this test program that is the real binary.
struct WorkerBinary {
  WorkerBinary() { ::setenv("PACSNODE_WORKER_BINARY", testsupport::daemon_binary().c_str(), 1); }
};
BOOST_TEST_GLOBAL_FIXTURE(WorkerBinary);

}  // namespace

BOOST_AUTO_TEST_CASE(analyze_mixed_folder) {
  TempDir tmp;
  const fs::path in = tmp.path / "in", out = tmp.path / "out";
  fs::create_directories(in / "deep" / "er");
  const auto r = testsupport::run({testsupport::python(),
                                   testsupport::phantom_script().string(),
                                   (in / "deep" / "er").string(), "--slices", "24", "--size", "96"});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  fs::copy_file(testsupport::test_data("highdicom/data/test_files/dx_image.dcm"), in / "dx.dcm");
  std::ofstream(in / "junk.dcm") << "this is not a DICOM file\n";

  const auto [rc, err] = capture_stderr([&] { return analysis::analyze_main({in.string(), "--out", out.string()}); });
  BOOST_TEST_MESSAGE(err);
  BOOST_TEST(rc == 0);
  // The bad file is listed with a reason and skipped.
  BOOST_TEST(err.find("junk.dcm") != std::string::npos, err);

  // features.json parses and holds both series and the rejected file.
  const auto check = testsupport::run({testsupport::python(), "-c",
                                       "import json,sys; d=json.load(open(sys.argv[1])); "
                                       "print(len(d['series']), sorted(s['profile'] for s in d['series']), "
                                       "any(r['path'].endswith('junk.dcm') and r['reason'] for r in d['rejected']))",
                                       (out / "features.json").string()});
  BOOST_TEST(check.exit_code == 0, check.output);
  BOOST_TEST(check.output.find("2 ['ct-chest', 'generic'] True") != std::string::npos, check.output);

  // CSV: units in the header, a row per series and segment (ct-chest: body, both lungs, the lungs
  // together, dense; generic: 1).
  const std::string csv = read(out / "features.csv");
  const std::string header = csv.substr(0, csv.find('\n'));
  for (const char* col :
       {"series,", "segment,", "volume_ml", "mean_hu", "laa950_percent", "mean_au", "emphysema_finding"})
    BOOST_TEST(header.find(col) != std::string::npos, col << " in " << header);
  int rows = 0;
  for (char ch : csv) rows += ch == '\n';
  BOOST_TEST(rows == 1 + 5 + 1);

  int png = 0, seg = 0, sr = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string n = e.path().filename().string();
    png += n.ends_with("_preview.png");
    seg += n.ends_with("_seg.dcm");
    sr += n.ends_with("_sr.dcm");
  }
  BOOST_TEST(png == 2);
  BOOST_TEST(seg == 2);
  BOOST_TEST(sr == 2);
}

BOOST_AUTO_TEST_CASE(analyze_with_nothing_usable_fails_clearly) {
  TempDir tmp;
  const fs::path in = tmp.path / "in", out = tmp.path / "out";
  fs::create_directories(in);
  std::ofstream(in / "a.txt") << "nothing\n";
  const auto [rc, err] = capture_stderr([&] { return analysis::analyze_main({in.string(), "--out", out.string()}); });
  BOOST_TEST(rc != 0);
  BOOST_TEST(err.find("no series analysed") != std::string::npos, err);
  BOOST_TEST(err.find("a.txt") != std::string::npos, err);
}

BOOST_AUTO_TEST_CASE(analyze_usage_errors) {
  TempDir tmp;
  {
    const auto [rc, err] = capture_stderr([&] { return analysis::analyze_main({tmp.path.string()}); });
    BOOST_TEST(rc == 2);
    BOOST_TEST(err.find("--out is required") != std::string::npos, err);
  }
  {
    const auto [rc, err] = capture_stderr([&] {
      return analysis::analyze_main({tmp.path.string(), "--out", (tmp.path / "o").string(), "--profile", "nope"});
    });
    BOOST_TEST(rc == 1);
    BOOST_TEST(err.find("unknown profile 'nope'") != std::string::npos, err);
  }
}

BOOST_AUTO_TEST_CASE(forced_profile_applies_to_every_series) {
  TempDir tmp;
  const fs::path out = tmp.path / "out";
  const auto [rc, err] = capture_stderr([&] {
    return analysis::analyze_main({testsupport::test_data("highdicom/data/test_files/dx_image.dcm").string(), "--out",
                                   out.string(), "--profile", "generic", "--no-dicom"});
  });
  BOOST_TEST(rc == 0, err);
  const std::string csv = read(out / "features.csv");
  BOOST_TEST(csv.find(",DX,generic,1,tissue,") != std::string::npos, csv);
  for (const auto& e : fs::directory_iterator(out)) BOOST_TEST(!e.path().string().ends_with(".dcm"));
}

BOOST_AUTO_TEST_CASE(keep_empty_frames_writes_a_frame_per_segment_and_slice) {
  TempDir tmp;
  const auto ct = tmp.path / "ct";
  auto r = testsupport::run({testsupport::python(), testsupport::phantom_script().string(),
                             ct.string(), "--slices", "20", "--size", "64"});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  auto frames_and_segments = [&](const fs::path& out) {
    fs::path seg;
    for (const auto& e : fs::directory_iterator(out))
      if (e.path().string().size() > 8 && e.path().string().ends_with("_seg.dcm")) seg = e.path();
    BOOST_TEST_REQUIRE(!seg.empty());
    const auto q = testsupport::run({testsupport::python(), "-c",
                                     "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.NumberOfFrames, len(d.SegmentSequence))",
                                     seg.string()});
    std::istringstream in(q.output);
    int frames = 0, segments = 0;
    in >> frames >> segments;
    return std::pair{frames, segments};
  };
  BOOST_TEST_REQUIRE(capture_stderr([&] { return analysis::analyze_main({ct.string(), "--out", (tmp.path / "a").string()}); }).first == 0);
  BOOST_TEST_REQUIRE(capture_stderr([&] {
    return analysis::analyze_main({ct.string(), "--out", (tmp.path / "b").string(), "--keep-empty-frames"});
  }).first == 0);
  const auto [omitted, segments] = frames_and_segments(tmp.path / "a");
  const auto [kept, segments_kept] = frames_and_segments(tmp.path / "b");
  BOOST_TEST(segments == segments_kept);
  BOOST_TEST(kept == segments * 20);  // every segment on every slice
  BOOST_TEST(omitted < kept);         // the lungs are absent from the first and last slices
}
