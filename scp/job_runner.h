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
//
// Jobs are taken from the index (Index::claim_job) by `workers` loops, under a lease that a keeper
// thread renews every third of index.lease_seconds. In a cluster every node's runner takes from the
// same table, so each job runs on one node; when a node dies its lease expires and another node
// takes the job over, skipping the series and volumes whose results are already recorded (results
// are recorded only under the lease: Index::record_results). A node that finds its lease lost
// stops the job at once and records nothing more.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
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

  // Starts the loops that take jobs from the index.
  void start();
  // A study just completed here (thread-safe): its job is in the index, look now.
  void submit(const std::string& study_uid, int generation);
  // No new jobs; a running worker is killed and its job goes back to pending. Waits for it.
  void stop();

  std::size_t queued() const { return queued_.load(); }  // pending jobs in the index at the last look
  std::size_t running() const { return static_cast<std::size_t>(running_.load()); }
  std::uint64_t worker_crashes() const { return crashes_.load(); }
  // Runs one job now, on the calling thread (used by the loops, and by tests).
  JobOutcome run(const JobRow& job);

 private:
  // A job running on this node: cancelled at shutdown, or when its lease is found lost.
  struct Active {
    std::int64_t id = 0;
    std::atomic<bool> cancel{false};
    std::atomic<bool> lost{false};
  };
  JobOutcome run(const JobRow& job, Active& active);
  void loop();
  void keep_leases();
  void wake();


  Index& index_;
  std::filesystem::path root_;
  const config::LiveConfig& config_;
  Options opt_;
  boost::asio::thread_pool pool_;
  std::thread keeper_;
  std::mutex mutex_;  // active_, wake_
  std::condition_variable cv_;
  std::vector<Active*> active_;
  std::uint64_t wake_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> queued_{0};
  std::atomic<int> running_{0};
  std::atomic<std::uint64_t> crashes_{0};
  analysis::WorkerSpare spare_{false};  // analysis.prestart_worker
};

}  // namespace scp
