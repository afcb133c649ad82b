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
#include <string>

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
  double spawn_ms = 0;  // fork to the "started" event
  bool ok() const { return kind == Kind::finished; }
  // Crashes and limits are worth one more try; a clean failure is not.
  bool retryable() const {
    return kind == Kind::crashed || kind == Kind::memory_limit || kind == Kind::cpu_limit || kind == Kind::timed_out;
  }
};

std::string_view to_string(WorkerExit::Kind k);

// The executable that runs `pacsnode worker`: our own (/proc/self/exe, the running binary even after
// an upgrade replaced its file), or PACSNODE_WORKER_BINARY
// when set (for test programs that call the analysis commands in process).
std::filesystem::path self_executable();

// Runs one worker to its end. `on_event` gets every event line as parsed JSON, on the calling
// thread; lines that are not JSON are ignored (and logged). Never throws for anything the child
// does; `spawn_failed` when it cannot be started. `environment` adds or replaces variables of the
// child's environment (e.g. PACSNODE_LOG_LEVEL).
WorkerExit run_worker(const std::filesystem::path& executable, const nlohmann::json& job, const WorkerLimits& limits,
                      const std::function<void(const nlohmann::json&)>& on_event,
                      const std::atomic<bool>* cancel = nullptr,
                      const std::vector<std::pair<std::string, std::string>>& environment = {});

}  // namespace analysis
