#pragma once
// The parent's side of `pacsnode worker` (analysis/worker.h): starts the worker as a child process
// (fork + exec of our own executable) under limits, hands it the job, streams its events to a
// callback, and says how it ended. Used by the daemon's job runner and by `pacsnode analyze`.
//
// The child runs with: RLIMIT_AS = memory_mb, RLIMIT_CPU = cpu_seconds (SIGXCPU, then SIGKILL 5 s
// later), no core dumps (they would hold patient data), PR_SET_NO_NEW_PRIVS, its own process
// group, SIGKILL when the parent dies, no file descriptor of the parent but 0 (the job), 1/2 and
// 3 (events), MALLOC_ARENA_MAX=2 (glibc reserves 64 MiB of address space per arena). After
// timeout_seconds of wall-clock time, or when `cancel` becomes true, its process group is killed.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace analysis {

struct WorkerLimits {
  std::uint64_t memory_mb = 8192;
  int cpu_seconds = 1800;
  int timeout_seconds = 900;
};

struct WorkerExit {
  enum class Kind {
    finished,      // exit code 0 after "done"
    failed,        // a non-zero exit code, or no "done": `reason` says why (the "fatal" event's reason)
    crashed,       // killed by a signal it raised or got (SIGSEGV, SIGABRT, SIGBUS, ...)
    memory_limit,  // ran out of address space (analysis.worker_memory_mb)
    cpu_limit,     // SIGXCPU / SIGKILL at the CPU limit (analysis.worker_cpu_seconds)
    timed_out,     // killed by us after timeout_seconds (analysis.worker_timeout_seconds)
    cancelled,     // killed by us because `cancel` was set (shutdown)
    spawn_failed,  // could not be started
  };
  Kind kind = Kind::spawn_failed;
  int exit_code = -1;
  int signal = 0;
  std::string reason;  // one line for logs, reason files and the index: "killed by SIGSEGV (Segmentation fault)"
  double seconds = 0;
  double spawn_ms = 0;  // from handing over the job to the "started" event (for a worker started
                        // ahead, WorkerSpare, only the job's reading: its start was off the job's path)
  bool ok() const { return kind == Kind::finished; }
  // Crashes and limits are worth one more try; a clean failure is not.
  bool retryable() const {
    return kind == Kind::crashed || kind == Kind::memory_limit || kind == Kind::cpu_limit || kind == Kind::timed_out;
  }
};

std::string_view to_string(WorkerExit::Kind k);
// "SIGSEGV" (a number when the signal has no name); "" for 0.
std::string signal_abbrev(int sig);

// The executable that runs `pacsnode worker`: our own (/proc/self/exe, the running binary even after
// an upgrade replaced its file), or PACSNODE_WORKER_BINARY
// when set (for test programs that call the analysis commands in process).
std::filesystem::path self_executable();

using WorkerEnvironment = std::vector<std::pair<std::string, std::string>>;

// A worker process started ahead of its job: exec'd, its libraries loaded, waiting on its stdin.
// Destroying one that was never run kills it (and reaps it).
class StartedWorker {
 public:
  StartedWorker() = default;
  StartedWorker(StartedWorker&& o) noexcept;
  StartedWorker& operator=(StartedWorker&& o) noexcept;
  StartedWorker(const StartedWorker&) = delete;
  StartedWorker& operator=(const StartedWorker&) = delete;
  ~StartedWorker();

  bool valid() const { return pid_ > 0; }
  int pid() const { return pid_; }
  const std::string& error() const { return error_; }  // why it could not be started
  // Started and still waiting for its job (not exited or killed meanwhile).
  bool waiting() const;
  // Started for this executable, address space and CPU limits and environment.
  bool started_with(const std::filesystem::path& executable, const WorkerLimits& limits,
                    const WorkerEnvironment& environment) const;

 private:
  void discard();
  friend StartedWorker start_worker(const std::filesystem::path&, const WorkerLimits&, const WorkerEnvironment&);
  friend WorkerExit run_worker(StartedWorker, const nlohmann::json&, const WorkerLimits&,
                               const std::function<void(const nlohmann::json&)>&, const std::atomic<bool>*);
  int pid_ = -1, job_fd_ = -1, event_fd_ = -1;
  std::filesystem::path executable_;
  std::uint64_t memory_mb_ = 0;
  int cpu_seconds_ = 0;
  WorkerEnvironment environment_;
  std::string error_;
};

// Starts a worker (fork + exec under the limits) that waits for its job. Never throws; an invalid
// StartedWorker with error() when it cannot be started.
StartedWorker start_worker(const std::filesystem::path& executable, const WorkerLimits& limits,
                           const WorkerEnvironment& environment = {});

// Hands `job` to a started worker and runs it to its end (see run_worker below). The wall-clock
// deadline (limits.timeout_seconds) counts from here, not from the worker's start.
WorkerExit run_worker(StartedWorker worker, const nlohmann::json& job, const WorkerLimits& limits,
                      const std::function<void(const nlohmann::json&)>& on_event,
                      const std::atomic<bool>* cancel = nullptr);

// Keeps one worker started ahead, so that a job does not wait for a worker to load its libraries
// (~0.25 s, analysis.prestart_worker). Thread-safe.
class WorkerSpare {
 public:
  explicit WorkerSpare(bool enabled = true) : enabled_(enabled) {}
  // A worker for these settings: the spare when it was started with the same ones and still waits,
  // else a new one; then, when enabled and `start_next` (false: the caller knows this is the last
  // job), the next spare is started.
  StartedWorker take(const std::filesystem::path& executable, const WorkerLimits& limits,
                     const WorkerEnvironment& environment, bool start_next = true);
  // Starts the spare for these settings unless one waits already (when enabled).
  void prepare(const std::filesystem::path& executable, const WorkerLimits& limits, const WorkerEnvironment& environment);
  // Kills the spare (shutdown, or settings that will not be used again).
  void clear();
  void set_enabled(bool enabled);
  bool holding() const;
  int spare_pid() const;  // -1 when none

 private:
  // The spare was started with these settings and still waits (mutex_ held).
  bool spare_fits(const std::filesystem::path& executable, const WorkerLimits& limits,
                  const WorkerEnvironment& environment) const;
  mutable std::mutex mutex_;
  bool enabled_;
  StartedWorker spare_;
};

// Runs one worker to its end. `on_event` gets every event line as parsed JSON, on the calling
// thread; lines that are not JSON are ignored (and logged). Never throws for anything the child
// does; `spawn_failed` when it cannot be started. `environment` adds or replaces variables of the
// child's environment (e.g. PACSNODE_LOG_LEVEL).
WorkerExit run_worker(const std::filesystem::path& executable, const nlohmann::json& job, const WorkerLimits& limits,
                      const std::function<void(const nlohmann::json&)>& on_event,
                      const std::atomic<bool>* cancel = nullptr,
                      const std::vector<std::pair<std::string, std::string>>& environment = {});

}  // namespace analysis
