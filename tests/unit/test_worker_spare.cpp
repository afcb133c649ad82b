// A worker started ahead (analysis::WorkerSpare): the next job runs in it, its deadline counts from
// the job, and a spare for other settings, or one that died, is never used.
#define BOOST_TEST_MODULE worker_spare
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <cerrno>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "analysis/worker.h"
#include "analysis/worker_client.h"
#include "support/files.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using namespace analysis;

namespace {

const WorkerLimits kLimits{4096, 60, 60};

// A job without files: the worker starts, finds no volume and is done.
nlohmann::json empty_job(const fs::path& out) {
  worker::Job job;
  job.out_dir = out;
  return worker::to_json(job);
}

struct Run {
  WorkerExit exit;
  int started_pid = -1;
};

Run run(StartedWorker w, const fs::path& out, const WorkerLimits& limits = kLimits) {
  Run r;
  r.exit = run_worker(std::move(w), empty_job(out), limits, [&](const nlohmann::json& e) {
    if (e.value("event", "") == "started") r.started_pid = e.value("pid", -1);
  });
  return r;
}

bool process_exists(int pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH); }

// The process has exec'd pacsnode and loaded its libraries (OpenCV is among the last).
bool libraries_loaded(int pid) {
  const std::string maps = testsupport::read_text(fs::path("/proc") / std::to_string(pid) / "maps");
  return maps.find("libopencv_core") != std::string::npos;
}

template <class F>
bool eventually(F f, std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return f();
}

// prepare() and take() with pacsnode itself as the worker; prepare() returns the spare's pid.
int prepare(WorkerSpare& spare, const WorkerLimits& limits = kLimits, const WorkerEnvironment& env = {}) {
  spare.prepare(testsupport::daemon_binary(), limits, env);
  BOOST_REQUIRE(spare.spare_pid() > 0);
  return spare.spare_pid();
}

StartedWorker take(WorkerSpare& spare, const WorkerLimits& limits = kLimits, const WorkerEnvironment& env = {}) {
  return spare.take(testsupport::daemon_binary(), limits, env);
}

const WorkerEnvironment kWarn{{"PACSNODE_LOG_LEVEL", "warn"}}, kDebug{{"PACSNODE_LOG_LEVEL", "debug"}};

struct Dir {
  fs::path path = fs::temp_directory_path() / ("pacsnode-spare-" + std::to_string(::getpid()));
  Dir() { fs::create_directories(path); }
  ~Dir() { fs::remove_all(path); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(the_next_job_runs_in_the_worker_started_ahead_and_a_new_spare_takes_its_place) {
  Dir d;
  WorkerSpare spare;
  const int first = prepare(spare, kLimits, kWarn);
  BOOST_REQUIRE(eventually([&] { return libraries_loaded(first); }));
  BOOST_TEST(prepare(spare, kLimits, kWarn) == first);  // again with the same settings: the waiting one

  const Run r = run(take(spare, kLimits, kWarn), d.path);
  BOOST_TEST(r.exit.ok(), r.exit.reason);
  BOOST_TEST(r.started_pid == first);   // the job ran in the process started ahead
  BOOST_TEST(!process_exists(first));   // and it was reaped
  BOOST_TEST(spare.holding());          // the next one is already starting
  BOOST_TEST(spare.spare_pid() != first);

  const int second = spare.spare_pid();
  spare.clear();
  BOOST_TEST(!spare.holding());
  BOOST_TEST(!process_exists(second));  // clear() kills and reaps it
}

BOOST_AUTO_TEST_CASE(a_spare_for_other_limits_or_environment_is_not_used_and_is_stopped) {
  Dir d;
  WorkerSpare spare;
  const int for_warn = prepare(spare, kLimits, kWarn);

  Run r = run(take(spare, kLimits, kDebug), d.path);
  BOOST_TEST(r.exit.ok(), r.exit.reason);
  BOOST_TEST(r.started_pid != for_warn);
  BOOST_TEST(!process_exists(for_warn));

  WorkerLimits other = kLimits;
  other.memory_mb = 2048;
  const int for_debug = spare.spare_pid();
  r = run(take(spare, other, kDebug), d.path, other);
  BOOST_TEST(r.exit.ok(), r.exit.reason);
  BOOST_TEST(r.started_pid != for_debug);
  BOOST_TEST(!process_exists(for_debug));
}

BOOST_AUTO_TEST_CASE(a_spare_that_died_while_waiting_is_replaced) {
  Dir d;
  WorkerSpare spare;
  const int dead = prepare(spare);
  ::kill(dead, SIGKILL);
  BOOST_REQUIRE(eventually([&] {
    const std::string stat = testsupport::read_text(fs::path("/proc") / std::to_string(dead) / "stat");
    return stat.find(") Z") != std::string::npos;  // a zombie: dead, not yet reaped by us
  }));
  const Run r = run(take(spare), d.path);
  BOOST_TEST(r.exit.ok(), r.exit.reason);
  BOOST_TEST(r.started_pid != dead);
  BOOST_TEST(!process_exists(dead));
}

BOOST_AUTO_TEST_CASE(the_wall_clock_limit_counts_from_the_job_not_from_the_start) {
  Dir d;
  const WorkerLimits limits{4096, 60, 1};  // one second of wall clock
  WorkerSpare spare;
  const int waited = prepare(spare, limits);
  BOOST_REQUIRE(eventually([&] { return libraries_loaded(waited); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // idle, longer than the limit
  const Run r = run(take(spare, limits), d.path, limits);
  BOOST_TEST(r.exit.ok(), std::string(to_string(r.exit.kind)) + ": " + r.exit.reason);
  BOOST_TEST(r.started_pid == waited);
}

BOOST_AUTO_TEST_CASE(disabled_it_keeps_no_spare) {
  Dir d;
  WorkerSpare spare;
  const int pid = prepare(spare);
  spare.set_enabled(false);
  BOOST_TEST(!spare.holding());
  BOOST_TEST(!process_exists(pid));
  const Run r = run(take(spare), d.path);
  BOOST_TEST(r.exit.ok(), r.exit.reason);
  BOOST_TEST(!spare.holding());  // nothing started ahead for the next job
}

BOOST_AUTO_TEST_CASE(a_worker_that_cannot_be_started_says_why) {
  Dir d;
  WorkerSpare spare;
  const Run r = run(spare.take(d.path / "no-such-pacsnode", kLimits, {}), d.path);
  BOOST_TEST(!r.exit.ok());
  BOOST_TEST((r.exit.kind == WorkerExit::Kind::spawn_failed));
  BOOST_TEST(r.exit.reason.find("cannot start") != std::string::npos, r.exit.reason);
}
