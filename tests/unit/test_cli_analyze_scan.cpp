#define BOOST_TEST_MODULE cli_analyze_scan
// `pacsnode analyze` on a folder that holds a data set DCMTK's recursive reader cannot survive
// (items nested 10,000 deep) beside a good series: the series is analysed, the file is listed as
// rejected with the scan's reason. analysis::analyze_main in process, its workers the real binary;
// inputs written here.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "analysis/cli.h"
#include "support/capture.h"
#include "support/dicom_bytes.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/seg_sources.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using namespace testsupport;

namespace {

// analyze runs each series in `pacsnode worker`: in this test program that is the real binary.
struct WorkerBinary {
  WorkerBinary() { ::setenv("PACSNODE_WORKER_BINARY", daemon_binary().c_str(), 1); }
};
BOOST_TEST_GLOBAL_FIXTURE(WorkerBinary);

}  // namespace

BOOST_AUTO_TEST_CASE(a_file_failing_the_scan_is_listed_and_the_good_series_analysed) {
  TempDir tmp;
  const fs::path in = tmp.path / "in", out = tmp.path / "out";
  write_synthetic_ct(in / "series", 32, 32, 8, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 2.0);
  write_bytes(in / "nested.dcm", part10(nested_sq(10000), kExplicitLE));

  const auto [rc, err] = capture_stderr([&] { return analysis::analyze_main({in.string(), "--out", out.string(), "--no-dicom"}); });
  BOOST_TEST_MESSAGE(err);
  BOOST_TEST(rc == 0);
  BOOST_TEST(err.find("nested.dcm: sequence nesting deeper than 64 at byte") != std::string::npos, err);

  const auto check = run({python(), "-c",
                          "import json,sys; d=json.load(open(sys.argv[1])); "
                          "print(len(d['series']), [r['reason'][:31] for r in d['rejected'] if r['path'].endswith('nested.dcm')])",
                          (out / "features.json").string()});
  BOOST_TEST(check.exit_code == 0, check.output);
  BOOST_TEST(check.output.find("1 ['sequence nesting deeper than 64']") != std::string::npos, check.output);
}

BOOST_AUTO_TEST_CASE(analyze_takes_its_limits_from_the_config) {
  TempDir tmp;
  const fs::path in = tmp.path / "in", out = tmp.path / "out";
  write_synthetic_ct(in / "series", 32, 32, 4, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 1.0, 1.0, 2.0);
  // Each slice is 32 x 32 x 16 bits = 2 KiB of pixels; a limit of 1 MiB file size still passes,
  // a nesting depth of 1 refuses the file with one sequence level (0008,1115) in it.
  write_bytes(in / "one_level.dcm", part10(nested_sq(2), kExplicitLE));
  const fs::path cfg = tmp.path / "limits.toml";
  std::ofstream(cfg) << "[storage]\nmax_instance_mb = 1\n[limits]\nmax_depth = 1\n";
  const auto [rc, err] = capture_stderr(
      [&] { return analysis::analyze_main({in.string(), "--out", out.string(), "--no-dicom", "--config", cfg.string()}); });
  BOOST_TEST(rc == 0, err);
  BOOST_TEST(err.find("one_level.dcm: sequence nesting deeper than 1 at byte") != std::string::npos, err);

  std::ofstream(tmp.path / "bad.toml") << "[limits]\nmax_depth = 0\n";
  const auto [bad_rc, bad_err] = capture_stderr([&] {
    return analysis::analyze_main({in.string(), "--out", out.string(), "--config", (tmp.path / "bad.toml").string()});
  });
  BOOST_TEST(bad_rc == 2);
  BOOST_TEST(bad_err.find("limits.max_depth") != std::string::npos, bad_err);
}
