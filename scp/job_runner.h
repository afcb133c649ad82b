#pragma once
// Analyses completed studies: each job (study, generation) runs the matching profile on every
// series of the study, writes SEG + SR into outbound/ (and previews and features into results/),
// and records the objects in the index. CPU work runs on its own bounded thread pool.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/thread_pool.hpp>

#include "scp/index.h"

namespace analysis {
class Pipeline;
}

namespace scp {

struct JobOutcome {
  int series_analysed = 0, series_skipped = 0, series_failed = 0;
  std::vector<ResultRow> results;
};

class JobRunner {
 public:
  // `root`: the storage root (outbound/, results/, quarantine/ go below it).
  struct Options {
    int workers = 1;
    bool key_images = false;                // also Secondary Capture key images with the overlay burned in
    bool keep_empty_frames = false;         // SEG frames with an empty mask are written too
    std::vector<std::string> destinations;  // results are queued in the outbox for each
    std::map<std::string, std::vector<std::string>> profile_destinations;  // profile name -> its own list
    std::function<void()> on_queued;        // told when new objects are queued
  };
  JobRunner(Index& index, std::filesystem::path root, std::shared_ptr<const analysis::Pipeline> pipeline, Options opt);
  ~JobRunner();

  // Queues every pending job of the index (at start).
  void start();
  // Queues the job of a study that just completed (thread-safe).
  void submit(const std::string& study_uid, int generation);
  // No new jobs; a running job stops at its next series and goes back to pending. Waits for it.
  void stop();

  std::size_t queued() const { return queued_.load(); }
  std::size_t running() const { return static_cast<std::size_t>(running_.load()); }
  // Runs one job now, on the calling thread (used by the pool, and by tests).
  JobOutcome run(const JobRow& job);

 private:
  void enqueue(const JobRow& job);

  Index& index_;
  std::filesystem::path root_;
  std::shared_ptr<const analysis::Pipeline> pipeline_;
  Options opt_;
  boost::asio::thread_pool pool_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> queued_{0};
  std::atomic<int> running_{0};
};

}  // namespace scp
