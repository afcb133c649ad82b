#define BOOST_TEST_MODULE scp_scan
// The real daemon against data sets that would crash or exhaust a parser: refused with a reason,
// the association and the node go on, the bytes wait in quarantine/rejected/, nothing else is
// written. The data sets are written here byte by byte and sent by tests/scripts/raw_store.py
// (storescu re-encodes what it reads and refuses what it cannot parse).
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sstream>

#include "support/dicom_bytes.h"
#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;

namespace {

struct Fixture {
  fs::path dir = make_temp_dir("scan");
  ~Fixture() { fs::remove_all(dir); }

  // A data set file for raw_store.py --datasets.
  fs::path data_set(const std::string& name, const Bytes& bytes) const {
    write_bytes(dir / name, bytes);
    return dir / name;
  }
  RunResult raw_store(const Daemon& d, const std::vector<fs::path>& data_sets) const {
    std::vector<std::string> argv{python(), (source_dir() / "tests/scripts/raw_store.py").string(), "127.0.0.1",
                                  std::to_string(d.port()), "PACSNODE", "--datasets"};
    for (const auto& f : data_sets) argv.push_back(f.string());
    return run(argv);
  }
};

Bytes good_data_set(const std::string& sop_instance) {
  Writer w;
  identity(w, true, sop_instance);
  w.element(0x7FE0, 0x0010, "OB", std::string(4, '\x10'));
  return w.bytes;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Every regular file below root, relative, except the index and status files the daemon keeps.
std::vector<std::string> files_written(const fs::path& root) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), root).string();
    // The journal's segments are preallocated files of zeros, there whatever arrives
    // (test_scp_journal checks what goes into them).
    if (rel.rfind("index.sqlite", 0) == 0 || rel == "status.json" || rel.rfind("journal/", 0) == 0 ||
        rel.rfind("nodes/", 0) == 0)
      continue;
    out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(a_data_set_nested_ten_thousand_deep_is_refused_and_the_node_goes_on, Fixture) {
  Daemon d(dir);
  d.start();
  const Bytes nested = nested_sq(10000);
  const auto bad = data_set("nested.bin", nested);
  const auto good = data_set("good.bin", good_data_set("1.2.826.0.1.3680043.10.543.7.1"));
  // The hostile data set, then a good one, in the same association.
  const auto r = raw_store(d, {bad, good});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  const auto out = lines(r.output);
  BOOST_TEST_REQUIRE(out.size() == 2u, r.output);
  BOOST_TEST(out[0].rfind("status 0xc000 comment 'sequence nesting deeper than 64 at byte", 0) == 0u, out[0]);
  BOOST_TEST(out[0].find("in (0008,1115)'") != std::string::npos, out[0]);
  BOOST_TEST(out[1] == "status 0x0000", out[1]);
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);

  // The good instance is stored; the bytes of the bad one wait in quarantine/rejected/ with the
  // reason; nothing else was written.
  const auto written = files_written(d.root());
  BOOST_TEST_REQUIRE(written.size() == 3u, [&] { std::string s; for (auto& w : written) s += w + "\n"; return s; }());
  BOOST_TEST(written[0].rfind("incoming/", 0) == 0u, written[0]);
  BOOST_TEST(written[0].ends_with(".dcm"));
  BOOST_TEST(written[1].rfind("quarantine/rejected/", 0) == 0u, written[1]);
  BOOST_TEST(written[1].ends_with(".dcm"));
  BOOST_TEST(written[2] == written[1].substr(0, written[1].size() - 4) + ".reason.txt");
  const std::string kept = slurp(d.root() / written[1]);
  BOOST_TEST(kept.size() > nested.size());  // DCMTK writes a meta header before the data set
  BOOST_TEST(kept.substr(kept.size() - nested.size()) == std::string(nested.begin(), nested.end()));
  const std::string reason = slurp(d.root() / written[2]);
  BOOST_TEST(reason.find("reason: sequence nesting deeper than 64 at byte") != std::string::npos, reason);
  BOOST_TEST(reason.find("from: calling AE 'RAWSTORE' at 127.0.0.1") != std::string::npos, reason);

  // For the record: DCMTK's own tool on the same file (it reads recursively, without a limit).
  const auto dump = run({"dcmdump", (d.root() / written[1]).string()});
  BOOST_WARN_MESSAGE(dump.exit_code >= 128, "dcmdump on the refused file: exit code " << dump.exit_code);
  BOOST_TEST_MESSAGE("dcmdump on the refused file: exit code " << dump.exit_code
                                                                << (dump.exit_code >= 128 ? " (killed by a signal)" : ""));

  BOOST_TEST(d.stop() == 0);
  const std::string log = d.log();
  BOOST_TEST(count_lines(log, "refused with status 0xC000: sequence nesting deeper than 64") == 1u, log);
  BOOST_TEST(log.find("1 instances stored, 1 failed") != std::string::npos, log);
}

BOOST_FIXTURE_TEST_CASE(an_instance_over_max_instance_mb_is_refused_while_it_is_received, Fixture) {
  DaemonOptions opt;
  opt.max_instance_mb = 1;
  Daemon d(dir, opt);
  d.start();
  Writer big;
  identity(big, false, "1.2.826.0.1.3680043.10.543.7.2");
  big.element(0x0009, 0x1010, "OB", std::string(3u << 20, '\x5a'));
  const auto r = raw_store(d, {data_set("big.bin", big.bytes), data_set("good.bin", good_data_set("1.2.826.0.1.3680043.10.543.7.3"))});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  const auto out = lines(r.output);
  BOOST_TEST_REQUIRE(out.size() == 2u, r.output);
  BOOST_TEST(out[0] == "status 0xc000 comment 'instance exceeds storage.max_instance_mb (1 MB)'", out[0]);
  BOOST_TEST(out[1] == "status 0x0000", out[1]);
  const auto written = files_written(d.root());
  BOOST_TEST(written.size() == 1u);  // the good instance; nothing of the big one, not even in .tmp
  BOOST_TEST(d.stop() == 0);
}

BOOST_FIXTURE_TEST_CASE(a_hostile_file_placed_in_the_spool_does_not_stop_the_start, Fixture) {
  const fs::path planted = dir / "storage" / "incoming" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm";
  fs::create_directories(planted.parent_path());
  write_bytes(planted, part10(nested_sq(10000), kExplicitLE));
  Daemon d(dir);
  d.start();
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);
  BOOST_TEST(d.stop() == 0);
  const std::string log = d.log();
  BOOST_TEST(log.find("cannot be indexed: sequence nesting deeper than 64") != std::string::npos, log);
  BOOST_TEST(log.find("1 unreadable") != std::string::npos, log);
  BOOST_TEST(fs::exists(planted));  // an acknowledged file is never moved away
}
