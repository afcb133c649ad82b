// WorkerSpare::take with start_next = false (the last job of `pacsnode analyze`): the job runs in
// the worker started ahead and no new spare is started after it; with start_next = true one is.
#define BOOST_TEST_MODULE worker_spare_last
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "analysis/worker.h"
#include "analysis/worker_client.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using namespace analysis;

namespace {

const WorkerLimits kLimits{4096, 60, 60};
const WorkerEnvironment kWarn{{"PACSNODE_LOG_LEVEL", "warn"}};

struct Dir {
  fs::path path = fs::temp_directory_path() / ("pacsnode-spare-last-" + std::to_string(::getpid()));
  Dir() { fs::create_directories(path); }
  ~Dir() { fs::remove_all(path); }
};

// Runs a job without files (the worker finds no volume and is done); the pid it reports.
int run_empty_job(StartedWorker w, const fs::path& out) {
  worker::Job job;
  job.out_dir = out;
  int pid = -1;
  const WorkerExit exit = run_worker(std::move(w), worker::to_json(job), kLimits, [&](const nlohmann::json& e) {
    if (e.value("event", "") == "started") pid = e.value("pid", -1);
  });
  BOOST_TEST(exit.ok(), exit.reason);
  return pid;
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_last_take_uses_the_prepared_worker_and_starts_none) {
  Dir d;
  WorkerSpare spare;
  spare.prepare(testsupport::daemon_binary(), kLimits, kWarn);
  const int prepared = spare.spare_pid();
  BOOST_REQUIRE(prepared > 0);
  StartedWorker w = spare.take(testsupport::daemon_binary(), kLimits, kWarn, /*start_next=*/false);
  BOOST_TEST(w.pid() == prepared);
  BOOST_TEST(!spare.holding());
  BOOST_TEST(spare.spare_pid() == -1);
  BOOST_TEST(run_empty_job(std::move(w), d.path) == prepared);
}

BOOST_AUTO_TEST_CASE(without_a_prepared_worker_the_last_take_starts_exactly_one) {
  Dir d;
  WorkerSpare spare;
  StartedWorker w = spare.take(testsupport::daemon_binary(), kLimits, kWarn, /*start_next=*/false);
  BOOST_REQUIRE(w.valid());
  BOOST_TEST(!spare.holding());
  const int pid = w.pid();
  BOOST_TEST(run_empty_job(std::move(w), d.path) == pid);
  // The default still starts the next spare.
  StartedWorker again = spare.take(testsupport::daemon_binary(), kLimits, kWarn);
  BOOST_TEST(spare.holding());
  BOOST_TEST(spare.spare_pid() != again.pid());
  run_empty_job(std::move(again), d.path);
}
