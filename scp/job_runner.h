#pragma once
// Analyses completed studies. A job (study, generation) runs every series of the study in its own
// worker process (`pacsnode worker`, analysis/worker.h) under the configured limits: the daemon
// never decodes pixels. As each series' SEG and SR are on disk the runner records them in the
// index and queues them for the destinations; previews and features go to results/.
//
// With analysis.prestart_worker one worker is kept started ahead, waiting for the next series.
//
// A worker that crashes, runs out of memory or CPU time, or hangs past its deadline is tried once
// more (skipping volumes it had already delivered); if it fails again the series is quarantined
// with the reason (quarantine/<study hash>-g<generation>/<series key>_reason.txt, with any objects
// it had begun), recorded in the index (series_runs), and the job goes on with the next series.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "analysis/worker_client.h"
#include "config/live.h"
#include "scp/index.h"
#include "scp/metrics.h"

namespace scp {

struct JobOutcome {
  int series_analysed = 0, series_skipped = 0, series_failed = 0, series_crashed = 0;
  int series_ignored = 0, series_unchanged = 0;
  std::vector<ResultRow> results;
};

class JobRunner {
 public:
  // `root`: the storage root (outbound/, results/, quarantine/ go below it). Each job reads the
  // config in force when it starts (rules, profiles, destinations, worker limits, analysis options).
  struct Options {
    int workers = 1;                   // jobs at once
    std::function<void()> on_queued;   // told when new objects are queued
    std::filesystem::path executable;  // pacsnode itself (default: /proc/self/exe)
    NodeMetrics* metrics = nullptr;    // job and stage durations, worker failures
  };
  JobRunner(Index& index, std::filesystem::path root, const config::LiveConfig& config, Options opt);
  ~JobRunner();

  // Queues every pending job of the index (at start).
  void start();
  // Queues the job of a study that just completed (thread-safe).
  void submit(const std::string& study_uid, int generation);
  // No new jobs; a running worker is killed and its job goes back to pending. Waits for it.
  void stop();

  std::size_t queued() const { return queued_.load(); }
  std::size_t running() const { return static_cast<std::size_t>(running_.load()); }
  std::uint64_t worker_crashes() const { return crashes_.load(); }
  // Runs one job now, on the calling thread (used by the pool, and by tests).
  JobOutcome run(const JobRow& job);

 private:
  void enqueue(const JobRow& job);

  Index& index_;
  std::filesystem::path root_;
  const config::LiveConfig& config_;
  Options opt_;
  boost::asio::thread_pool pool_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> queued_{0};
  std::atomic<int> running_{0};
  std::atomic<std::uint64_t> crashes_{0};
  analysis::WorkerSpare spare_{false};  // analysis.prestart_worker
};

}  // namespace scp
