#define BOOST_TEST_MODULE scp_durability
// What was acknowledged is never lost: SIGKILL mid-series, a full disk, a restart.
#include <sys/mount.h>

#include <boost/test/unit_test.hpp>

#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  fs::path dir = make_temp_dir("durability");
  ~Fixture() {
    ::umount2((dir / "storage").c_str(), MNT_DETACH);
    fs::remove_all(dir);
  }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(sigkill_mid_series_loses_nothing_acknowledged, Fixture) {
  const auto ct = ct_phantom(dir, 150, 256);
  // A quiet time longer than the restart takes even on a loaded machine: with a shorter one the
  // partial study would (rightly) complete at the restart and reopen with the re-sent instances.
  DaemonOptions opt;
  opt.quiet_seconds = 10;
  Daemon d(dir, opt);
  d.start();
  const auto sender_log = dir / "storescu.log";
  Child sender(d.store_argv({ct.string()}), sender_log);
  // Kill the node while the series is still coming in. On a shared index an instance's file is
  // in place before its response (its row is committed in between), so one more file than the
  // instances counted below may be there unacknowledged.
  BOOST_TEST_REQUIRE(eventually([&] { return stored_files(d.incoming()).size() >= 41; }, 60s));
  d.kill9();
  BOOST_TEST(sender.wait(60s) != 0);  // the modality saw the connection drop
  const auto acked = acknowledged_files(read_file(sender_log));
  BOOST_TEST_MESSAGE(acked.size() << " instance(s) acknowledged before SIGKILL");
  BOOST_TEST(acked.size() >= 40u);
  BOOST_TEST(acked.size() < 150u);

  d.start();  // same config and storage root
  // Every acknowledged instance is there, complete and unchanged; nothing partial is left.
  const auto cmp = compare_stored(d.incoming(), acked);
  BOOST_TEST(cmp.exit_code == 0, cmp.output);
  BOOST_TEST(count_files(d.incoming() / ".tmp") == 0u);
  BOOST_TEST(d.log().find("reconciled index with spool") != std::string::npos);
  // The modality sends the whole series again: re-sent instances are idempotent.
  const auto again = d.store({ct.string()});
  BOOST_TEST(again.exit_code == 0, again.output);
  BOOST_TEST(stored_files(d.incoming()).size() == 150u);
  BOOST_TEST(eventually([&] { return d.log().find("complete (quiet time): 150 instances") != std::string::npos; }, 60s), d.log());
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(completed_jobs(d.root()) == 1u);
}

BOOST_FIXTURE_TEST_CASE(study_quiet_across_a_restart_completes_after_it, Fixture) {
  const auto ct = ct_phantom(dir, 10, 64);
  DaemonOptions opt;
  opt.quiet_seconds = 3;
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  d.kill9();  // before the quiet time ran out: nothing completed yet
  BOOST_TEST(completed_jobs(d.root()) == 0u);
  d.start();
  BOOST_TEST(eventually([&] { return d.log().find("complete (quiet time): 10 instances") != std::string::npos; }, 30s), d.log());
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(completed_jobs(d.root()) == 1u);
}

BOOST_FIXTURE_TEST_CASE(full_disk_gives_out_of_resources_no_partial_files_and_resumes, Fixture) {
  BOOST_TEST_REQUIRE(::geteuid() == 0, "this test mounts a small tmpfs as the storage root: run it as root (CI does)");
  const auto root = dir / "storage";
  fs::create_directories(root);
  BOOST_TEST_REQUIRE(::mount("tmpfs", root.c_str(), "tmpfs", 0, "size=6m") == 0, "mount tmpfs: " << std::strerror(errno));
  const auto ct = ct_phantom(dir, 60, 256);  // ~7.9 MB: does not fit in 6 MB
  Daemon d(dir);
  d.start();
  const auto r = d.store({ct.string()});
  BOOST_TEST(r.output.find("Refused: OutOfResources") != std::string::npos, r.output);
  const auto acked = acknowledged_files(r.output);
  const auto stored = stored_files(d.incoming());
  BOOST_TEST(acked.size() > 0u);
  BOOST_TEST(acked.size() < 60u);
  BOOST_TEST(stored.size() == acked.size());
  BOOST_TEST(count_files(d.incoming() / ".tmp") == 0u);
  // Every stored file is complete (pydicom reads it to the end) and equal to what was sent.
  const auto cmp = compare_stored(d.incoming(), acked);
  BOOST_TEST(cmp.exit_code == 0, cmp.output);
  BOOST_TEST(d.running());
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);
  BOOST_TEST(d.log().find("refused with status 0xA700") != std::string::npos, d.log());

  // Space is freed: storage resumes, the rest of the series arrives.
  BOOST_TEST_REQUIRE(::mount("tmpfs", root.c_str(), "tmpfs", MS_REMOUNT, "size=64m") == 0);
  const auto again = d.store({ct.string()});
  BOOST_TEST(again.exit_code == 0, again.output);
  BOOST_TEST(stored_files(d.incoming()).size() == 60u);
  const auto all = compare_stored(d.incoming(), {ct.string()});
  BOOST_TEST(all.exit_code == 0, all.output);
  BOOST_TEST(d.stop() == 0);
}

BOOST_FIXTURE_TEST_CASE(sigterm_drains_within_its_bound_and_exits_zero, Fixture) {
  const auto ct = ct_phantom(dir, 150, 256);
  DaemonOptions opt;
  opt.drain_seconds = 1;
  Daemon d(dir, opt);
  d.start();
  Child sender(d.store_argv({ct.string()}), dir / "storescu.log");
  BOOST_TEST_REQUIRE(eventually([&] { return stored_files(d.incoming()).size() >= 10; }, 60s));
  const auto t0 = std::chrono::steady_clock::now();
  BOOST_TEST(d.stop(30s) == 0);
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 15s));
  sender.wait(60s);
  // Whatever was acknowledged is on disk.
  const auto acked = acknowledged_files(read_file(dir / "storescu.log"));
  const auto cmp = compare_stored(d.incoming(), acked);
  BOOST_TEST(cmp.exit_code == 0, cmp.output);
  BOOST_TEST(d.log().find("signal 15") != std::string::npos);
}
