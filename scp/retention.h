#pragma once
// Retention: what the node deletes by itself, oldest first, and what it never deletes.
//
// A study is *settled* when it is complete, analysed (a job for its latest generation exists and
// has ended, when analysis is enabled; no job queued or running) and none of its results is
// pending delivery (every outbox row sent or dead). Only a settled study loses anything:
//   incoming    the study's instances (files, then rows), aged from its last instance;
//   outbound    outbound/<study hash>-g<generation>/ with its result and outbox rows;
//   results     results/<study hash>-g<generation>/;
//   quarantine  quarantine/<study hash>-g<generation>/ (quarantine/rejected/ has its own budget);
// the three output areas aged from the end of that generation's analysis. Folders that match no
// job of the index (an index rebuilt after a loss) are aged by their modification time. Once
// nothing of a study is left on disk the index forgets it (study, jobs, series runs, results,
// outbox rows). A run deletes what is older than each area's age, then, while the file system is
// above the high-water mark, the oldest settled items of any area until it is below.
//
// The receiver is never blocked for long and never loses an acknowledged instance: a study's
// rows are re-checked and forgotten in one transaction that also moves its folder out of the
// spool (one rename) under the index lock, and any file in it that the forgotten rows do not
// account for (it arrived in between) is put back before the lock is released. Files are
// unlinked afterwards, on the retention thread.
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "config/config.h"
#include "scp/index.h"

namespace scp {

enum class Area : std::size_t { incoming, outbound, results, quarantine };
inline constexpr std::array<const char*, 4> kAreaNames{"incoming", "outbound", "results", "quarantine"};

// Why a study's data must stay; none: the study is settled.
enum class Hold : std::size_t { none, open, analysing, not_analysed, delivering };
Hold hold_of(const RetentionStudy& s, bool analysis_enabled);

struct RetentionPolicy {
  std::array<std::chrono::milliseconds, 4> keep{};  // per Area; zero keeps regardless of age
  int high_water_percent = 0;                       // 0: off
  bool analysis_enabled = true;
  // Percent of the storage file system in use (df's figure, by default); negative: unknown.
  std::function<double(const std::filesystem::path& root)> use_percent;
  static RetentionPolicy from(const config::Config& cfg);
};

// Use of the file system holding `path`, in percent as df computes it; -1 when unknown.
double file_system_use_percent(const std::filesystem::path& path);

struct AreaTally {
  std::uint64_t items = 0;  // incoming: studies; the others: folders
  std::uint64_t files = 0, bytes = 0;
};

struct RetentionReport {
  std::array<AreaTally, 4> deleted{};             // per Area
  std::array<std::uint64_t, 5> held{};            // studies per Hold (none: settled studies)
  std::uint64_t studies_forgotten = 0;
  std::uint64_t files_put_back = 0;               // arrived while their study was being deleted
  double use_before = -1, use_after = -1;         // percent
  bool above_high_water = false;                  // still above the mark when the run ended
  double seconds = 0;
};

// For status.json: totals since the daemon started, and the last run.
struct RetentionStats {
  std::array<AreaTally, 4> deleted{};
  std::uint64_t runs = 0, failed_runs = 0, studies_forgotten = 0;
  std::int64_t last_run_ms = 0;  // wall clock at the end of the last run; 0: none yet
  double last_run_seconds = 0, use_percent = -1;
  bool above_high_water = false;
  std::uint64_t held_not_analysed = 0, held_delivering = 0;  // at the last run
  std::string last_error;                                     // of the last failed run
};
// A JSON object, e.g. for status.json: {"runs": .., "deleted": {"incoming": {"items": ..}, ..}, ..}.
std::string to_json(const RetentionStats& s);

// One retention run over `root` (blocking: call it off the receiver's and the event loop's
// threads). `stop`, when set, ends the run between two deletions.
RetentionReport run_retention(Index& index, const std::filesystem::path& root, const RetentionPolicy& policy,
                              std::int64_t now_ms, const std::atomic<bool>* stop = nullptr);
// The one info line of a run.
std::string summary(const RetentionReport& r, const RetentionPolicy& policy);

// Runs run_retention at start and then every `interval`, on its own thread, scheduled by a timer
// on the daemon's io_context.
class Retention {
 public:
  Retention(boost::asio::io_context& io, Index& index, std::filesystem::path root, RetentionPolicy policy,
            std::chrono::seconds interval);
  ~Retention();
  Retention(const Retention&) = delete;
  Retention& operator=(const Retention&) = delete;

  void start();
  // No new run; a run in progress stops at its next deletion. Waits for it.
  void stop();
  // A reloaded config: the next run uses it.
  void update(RetentionPolicy policy, std::chrono::seconds interval);
  RetentionStats stats() const;

 private:
  void launch();  // on strand_: a run on the pool, then arm()
  void arm();     // on strand_: the next run after the interval
  void run_once();

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer timer_;
  Index& index_;
  std::filesystem::path root_;
  mutable std::mutex mutex_;  // policy_, interval_, stats_
  RetentionPolicy policy_;
  std::chrono::seconds interval_;
  RetentionStats stats_;
  std::atomic<bool> stopping_{false};
  bool waiting_ = false;  // on strand_: the timer is armed (no run in progress)
  boost::asio::thread_pool pool_{1};
};

}  // namespace scp
