#define BOOST_TEST_MODULE scp_worker
// Analysis runs in a worker process: a worker that crashes, loops, hangs or allocates without
// bound costs its series (recorded with the signal or limit, retried once, then quarantined), and
// the daemon with every association in flight carries on.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

#include "scp/index.h"
#include "support/daemon_fixture.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

// PACSNODE_WORKER_FAULT for the daemons this test starts (they pass it on to their workers).
struct WorkerFault {
  explicit WorkerFault(const char* fault) { ::setenv("PACSNODE_WORKER_FAULT", fault, 1); }
  ~WorkerFault() { ::unsetenv("PACSNODE_WORKER_FAULT"); }
};

std::string read_all(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every <series>_reason.txt below quarantine/, concatenated.
std::string quarantine_reasons(const fs::path& root) {
  std::string all;
  if (!fs::exists(root / "quarantine")) return all;
  for (const auto& e : fs::recursive_directory_iterator(root / "quarantine"))
    if (e.is_regular_file() && e.path().filename().string().ends_with("_reason.txt")) all += read_all(e.path());
  return all;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// Sends a small CT study, waits for its job to end, and returns the index rows of its one series.
std::vector<scp::SeriesRunRow> analyse_one_study(Daemon& d, const fs::path& ct) {
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 1 analysed") != std::string::npos; }, 120s), d.log());
  scp::Index index(testsupport::index_settings_for(d.root()));
  const auto studies = index.studies();
  BOOST_TEST_REQUIRE(studies.size() == 1u);
  return index.series_runs(studies.front().study_uid);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_crashing_worker_costs_its_series_and_the_node_with_its_associations_carries_on) {
  const auto dir = make_temp_dir("worker-crash");
  const auto ct = ct_phantom(dir, 8, 64, 3);
  WorkerFault fault("segv");
  Daemon d(dir);
  d.start();
  // An association opened before the crash, used after it.
  const auto go = dir / "go";
  Child holder({python(), (source_dir() / "tests/scripts/hold_echo.py").string(), "127.0.0.1", std::to_string(d.port()),
                "PACSNODE", go.string()},
               dir / "holder.log");
  BOOST_TEST_REQUIRE(eventually([&] { return read_all(dir / "holder.log").find("associated") != std::string::npos; }, 30s),
                     read_all(dir / "holder.log"));

  const auto runs = analyse_one_study(d, ct);
  const std::string log = d.log();
  BOOST_TEST(count(log, "killed by SIGSEGV") >= 2u, log);  // tried once more, then given up
  BOOST_TEST(log.find("trying once more") != std::string::npos);
  BOOST_TEST(log.find("giving up") != std::string::npos);
  BOOST_TEST_REQUIRE(runs.size() == 1u);
  BOOST_TEST(runs.front().state == "crashed");
  BOOST_TEST(runs.front().attempts == 2);
  BOOST_TEST(runs.front().error.find("SIGSEGV") != std::string::npos, runs.front().error);
  BOOST_TEST(quarantine_reasons(d.root()).find("killed by SIGSEGV") != std::string::npos);

  std::ofstream(go) << "go\n";
  BOOST_TEST(holder.wait(30s) == 0, read_all(dir / "holder.log"));
  BOOST_TEST(read_all(dir / "holder.log").find("echo status 0x0000") != std::string::npos, read_all(dir / "holder.log"));
  BOOST_TEST(d.running());
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);
  // The node still stores: a second study is acknowledged and on disk.
  const auto more = ct_phantom(dir, 4, 32, 4);
  BOOST_TEST(d.store({more.string()}).exit_code == 0);
  BOOST_TEST(stored_files(d.incoming()).size() == 12u);
  {
    scp::Index index(testsupport::index_settings_for(d.root()));
    BOOST_TEST(index.results().empty());  // nothing from a crashed worker is sent
    for (const auto& j : index.jobs())
      if (j.generation == 1 && j.state != "pending" && j.state != "running") BOOST_TEST(j.state == "failed");
  }
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_worker_past_its_limits_is_stopped_and_the_limit_recorded) {
  struct Case {
    const char* fault;
    const char* config;
    const char* reason;  // in the series' error and the quarantine reason
  };
  const Case cases[] = {
      {"loop", "worker_cpu_seconds = 1\n", "CPU time limit of 1 s exceeded"},
      {"sleep", "worker_timeout_seconds = 2\n", "no result after 2 s"},
      {"alloc", "worker_memory_mb = 768\n", "out of memory at the worker's limit of 768 MiB"},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT("fault " << c.fault) {
      const auto dir = make_temp_dir(std::string("worker-") + c.fault);
      const auto ct = ct_phantom(dir, 6, 32, 5);
      WorkerFault fault(c.fault);
      DaemonOptions opt;
      opt.extra = std::string("[analysis]\n") + c.config;
      Daemon d(dir, opt);
      d.start();
      const auto runs = analyse_one_study(d, ct);
      BOOST_TEST_REQUIRE(runs.size() == 1u);
      BOOST_TEST(runs.front().state == "crashed");
      BOOST_TEST(runs.front().attempts == 2);
      BOOST_TEST(runs.front().error.find(c.reason) != std::string::npos, runs.front().error);
      BOOST_TEST(quarantine_reasons(d.root()).find(c.reason) != std::string::npos);
      BOOST_TEST(count(d.log(), c.reason) >= 2u, d.log());
      BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);
      BOOST_TEST(d.stop() == 0);
      fs::remove_all(dir);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_running_worker_is_stopped_at_shutdown_and_its_job_runs_again_at_start) {
  const auto dir = make_temp_dir("worker-shutdown");
  const auto ct = ct_phantom(dir, 6, 32, 6);
  {
    WorkerFault fault("sleep");
    Daemon d(dir);
    d.start();
    BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
    // The worker is started once the study is complete; SIGTERM then ends it at once.
    BOOST_TEST_REQUIRE(eventually(
        [&] {
          scp::Index index(testsupport::index_settings_for(d.root()));
          for (const auto& j : index.jobs())
            if (j.state == "running") return true;
          return false;
        },
        60s));
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_TEST(d.stop() == 0);
    const bool quick = std::chrono::steady_clock::now() - t0 < 20s;
    BOOST_TEST(quick);
    BOOST_TEST(d.log().find("interrupted by shutdown") != std::string::npos, d.log());
    scp::Index index(testsupport::index_settings_for(d.root()));
    const auto jobs = index.jobs();
    BOOST_TEST_REQUIRE(jobs.size() == 1u);
    BOOST_TEST(jobs.front().state == "pending");
  }
  // Without the fault the job runs at the next start and gives SEG and SR.
  Daemon again(dir);
  again.start();
  BOOST_TEST_REQUIRE(eventually([&] { return again.log().find("generation 1 analysed") != std::string::npos; }, 120s),
                     again.log());
  scp::Index index(testsupport::index_settings_for(again.root()));
  BOOST_TEST(index.results().size() == 2u);
  BOOST_TEST(again.stop() == 0);
  fs::remove_all(dir);
}
