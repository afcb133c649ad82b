#include "analysis/worker_client.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "dicom/log.h"

extern char** environ;

namespace analysis {
namespace {

using Clock = std::chrono::steady_clock;

// AddressSanitizer reserves terabytes of shadow address space at start, so an instrumented worker
// cannot run under RLIMIT_AS at all. The sanitizer build (PACSNODE_SANITIZE, tests only) leaves the
// address space unlimited; CPU, core and the other limits stay. The binary that ships has it.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

std::string signal_name(int sig) {
  const char* text = ::strsignal(sig);
  return fmt::format("{} ({})", signal_abbrev(sig), text ? text : "unknown signal");
}

// The child's environment: ours, with `overrides` set.
std::vector<std::string> child_environment(const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view kv(*e);
    const auto name = kv.substr(0, kv.find('='));
    bool replaced = false;
    for (const auto& [k, v] : overrides) replaced = replaced || name == k;
    if (!replaced) env.emplace_back(kv);
  }
  for (const auto& [k, v] : overrides) env.push_back(k + "=" + v);
  return env;
}

// In the child between fork and exec: async-signal-safe calls only.
[[noreturn]] void exec_child(const char* exe, char* const argv[], char* const envp[], pid_t parent, int job_fd,
                             int event_fd, const rlimit& as, const rlimit& cpu) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(126);  // the parent died before PDEATHSIG was armed
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_AS, &as) != 0 || ::setrlimit(RLIMIT_CPU, &cpu) != 0 || ::setrlimit(RLIMIT_CORE, &no_core) != 0)
    ::_exit(126);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGXCPU, SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGTERM, SIGINT, SIGHUP})
    ::sigaction(sig, &dfl, nullptr);
  if (::dup2(job_fd, 0) < 0) ::_exit(126);
  if (event_fd == 3) {
    ::fcntl(3, F_SETFD, 0);
  } else if (::dup2(event_fd, 3) < 0) {
    ::_exit(126);
  }
  ::syscall(SYS_close_range, 4u, ~0u, 0u);
  ::execve(exe, argv, envp);
  ::_exit(127);
}

}  // namespace

std::string signal_abbrev(int sig) {
  if (sig <= 0) return {};
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : std::to_string(sig);
}

std::string_view to_string(WorkerExit::Kind k) {
  switch (k) {
    case WorkerExit::Kind::finished: return "finished";
    case WorkerExit::Kind::failed: return "failed";
    case WorkerExit::Kind::crashed: return "crashed";
    case WorkerExit::Kind::memory_limit: return "memory limit";
    case WorkerExit::Kind::cpu_limit: return "CPU limit";
    case WorkerExit::Kind::timed_out: return "timed out";
    case WorkerExit::Kind::cancelled: return "cancelled";
    case WorkerExit::Kind::spawn_failed: return "not started";
  }
  return "?";
}

std::filesystem::path self_executable() {
  if (const char* exe = std::getenv("PACSNODE_WORKER_BINARY"); exe && *exe) return exe;
  // Not resolved: exec of /proc/self/exe starts the very binary this process runs, also after a
  // package upgrade replaced the file (the worker must speak the daemon's protocol version).
  return "/proc/self/exe";
}

StartedWorker start_worker(const std::filesystem::path& executable, const WorkerLimits& limits,
                           const std::vector<std::pair<std::string, std::string>>& environment) {
  StartedWorker w;
  w.executable_ = executable;
  w.memory_mb_ = limits.memory_mb;
  w.cpu_seconds_ = limits.cpu_seconds;
  w.environment_ = environment;
  // Sockets rather than pipes: send() with MSG_NOSIGNAL cannot raise SIGPIPE in the daemon when a
  // worker dies before it has read its job.
  int job_sock[2], event_sock[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, job_sock) != 0) {
    w.error_ = fmt::format("socketpair: {}", std::strerror(errno));
    return w;
  }
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, event_sock) != 0) {
    w.error_ = fmt::format("socketpair: {}", std::strerror(errno));
    ::close(job_sock[0]);
    ::close(job_sock[1]);
    return w;
  }
  auto env = child_environment(
      [&] {
        auto e = environment;
        e.emplace_back("MALLOC_ARENA_MAX", "2");
        // Transparent huge pages for malloc (THP is usually "madvise"): first touching the
        // volume-sized buffers of decode and the IBSI features costs a fraction of 4 KiB faults.
        const char* t = std::getenv("GLIBC_TUNABLES");
        e.emplace_back("GLIBC_TUNABLES", std::string(t && *t ? std::string(t) + ":" : "") + "glibc.malloc.hugetlb=1");
        return e;
      }());
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg0 = "pacsnode", arg1 = "worker";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  const rlim_t as = kAddressSanitizer ? RLIM_INFINITY : static_cast<rlim_t>(limits.memory_mb) << 20;
  const rlimit as_limit{as, as};
  const rlimit cpu_limit{static_cast<rlim_t>(limits.cpu_seconds), static_cast<rlim_t>(limits.cpu_seconds) + 5};
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid == 0)
    exec_child(executable.c_str(), argv, envp.data(), parent, job_sock[1], event_sock[1], as_limit, cpu_limit);
  ::close(job_sock[1]);
  ::close(event_sock[1]);
  if (pid < 0) {
    w.error_ = fmt::format("fork: {}", std::strerror(errno));
    ::close(job_sock[0]);
    ::close(event_sock[0]);
    return w;
  }
  ::setpgid(pid, pid);  // also in the child: whichever runs first
  ::fcntl(job_sock[0], F_SETFL, O_NONBLOCK);
  ::fcntl(event_sock[0], F_SETFL, O_NONBLOCK);
  w.pid_ = pid;
  w.job_fd_ = job_sock[0];
  w.event_fd_ = event_sock[0];
  return w;
}

StartedWorker::StartedWorker(StartedWorker&& o) noexcept { *this = std::move(o); }

StartedWorker& StartedWorker::operator=(StartedWorker&& o) noexcept {
  if (this != &o) {
    discard();
    pid_ = std::exchange(o.pid_, -1);
    job_fd_ = std::exchange(o.job_fd_, -1);
    event_fd_ = std::exchange(o.event_fd_, -1);
    executable_ = std::move(o.executable_);
    memory_mb_ = o.memory_mb_;
    cpu_seconds_ = o.cpu_seconds_;
    environment_ = std::move(o.environment_);
    error_ = std::move(o.error_);
  }
  return *this;
}

StartedWorker::~StartedWorker() { discard(); }

void StartedWorker::discard() {
  if (job_fd_ >= 0) ::close(std::exchange(job_fd_, -1));
  if (event_fd_ >= 0) ::close(std::exchange(event_fd_, -1));
  if (pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
}

bool StartedWorker::waiting() const {
  if (pid_ <= 0) return false;
  // Still running (it has not read a job, so it waits for one), not exited or killed meanwhile.
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

bool StartedWorker::started_with(const std::filesystem::path& executable, const WorkerLimits& limits,
                                 const std::vector<std::pair<std::string, std::string>>& environment) const {
  return executable_ == executable && memory_mb_ == limits.memory_mb && cpu_seconds_ == limits.cpu_seconds &&
         environment_ == environment;
}

bool WorkerSpare::spare_fits(const std::filesystem::path& executable, const WorkerLimits& limits,
                             const WorkerEnvironment& environment) const {
  return spare_.valid() && spare_.started_with(executable, limits, environment) && spare_.waiting();
}

StartedWorker WorkerSpare::take(const std::filesystem::path& executable, const WorkerLimits& limits,
                                const WorkerEnvironment& environment, bool start_next) {
  std::lock_guard lock(mutex_);
  StartedWorker w;
  if (spare_fits(executable, limits, environment)) w = std::move(spare_);
  spare_ = StartedWorker{};  // a spare for other settings, or one that died meanwhile, is gone
  if (!w.valid()) w = start_worker(executable, limits, environment);
  // The next one loads its libraries while this one works (fork + exec here: a few ms).
  if (enabled_ && start_next) spare_ = start_worker(executable, limits, environment);
  return w;
}

void WorkerSpare::prepare(const std::filesystem::path& executable, const WorkerLimits& limits,
                          const WorkerEnvironment& environment) {
  std::lock_guard lock(mutex_);
  if (!enabled_ || spare_fits(executable, limits, environment)) return;
  spare_ = start_worker(executable, limits, environment);
}

void WorkerSpare::clear() {
  std::lock_guard lock(mutex_);
  spare_ = StartedWorker{};
}

void WorkerSpare::set_enabled(bool enabled) {
  std::lock_guard lock(mutex_);
  enabled_ = enabled;
  if (!enabled_) spare_ = StartedWorker{};
}

bool WorkerSpare::holding() const {
  std::lock_guard lock(mutex_);
  return spare_.valid();
}

int WorkerSpare::spare_pid() const {
  std::lock_guard lock(mutex_);
  return spare_.pid();
}

WorkerExit run_worker(const std::filesystem::path& executable, const nlohmann::json& job, const WorkerLimits& limits,
                      const std::function<void(const nlohmann::json&)>& on_event, const std::atomic<bool>* cancel,
                      const std::vector<std::pair<std::string, std::string>>& environment) {
  return run_worker(start_worker(executable, limits, environment), job, limits, on_event, cancel);
}

WorkerExit run_worker(StartedWorker worker, const nlohmann::json& job, const WorkerLimits& limits,
                      const std::function<void(const nlohmann::json&)>& on_event, const std::atomic<bool>* cancel) {
  auto log = pacsnode::component_logger("worker");
  WorkerExit out;
  if (!worker.valid()) {
    out.reason = worker.error_.empty() ? std::string("no worker") : worker.error_;
    return out;
  }
  const std::filesystem::path executable = worker.executable_;
  // The job's clock starts now: a worker started ahead waited for it without using its time.
  const auto t0 = Clock::now();
  const pid_t pid = std::exchange(worker.pid_, -1);
  const std::string job_text = job.dump();
  std::size_t job_sent = 0;
  int job_fd = std::exchange(worker.job_fd_, -1);
  const int event_fd = std::exchange(worker.event_fd_, -1);
  std::string pending, fatal_reason;
  bool done_seen = false, killed_for_timeout = false, killed_for_cancel = false, started = false;
  const auto deadline = t0 + std::chrono::seconds(limits.timeout_seconds);
  auto kill_group = [&] {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
  };
  auto handle_line = [&](std::string_view line) {
    if (line.empty()) return;
    nlohmann::json e;
    try {
      e = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      log->warn("worker {}: ignored a line that is not an event ({} bytes)", pid, line.size());
      return;
    }
    const std::string kind = e.value("event", "");
    if (kind == "started" && !started) {
      started = true;
      out.spawn_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
    if (kind == "done") done_seen = true;
    if (kind == "fatal") fatal_reason = e.value("reason", "");
    if (on_event) on_event(e);
  };

  for (bool open = true; open;) {
    const auto now = Clock::now();
    if (!killed_for_timeout && !killed_for_cancel) {
      if (now >= deadline) {
        killed_for_timeout = true;
        kill_group();
      } else if (cancel && cancel->load()) {
        killed_for_cancel = true;
        kill_group();
      }
    }
    pollfd fds[2] = {{event_fd, POLLIN, 0}, {job_fd, POLLOUT, 0}};
    const int nfds = job_fd >= 0 ? 2 : 1;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    const int wait_ms = static_cast<int>(std::clamp<long long>(left, 0, 200));
    if (::poll(fds, nfds, wait_ms) < 0 && errno != EINTR) break;
    if (job_fd >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t n = ::send(job_fd, job_text.data() + job_sent, job_text.size() - job_sent, MSG_NOSIGNAL);
      if (n > 0) job_sent += static_cast<std::size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || job_sent == job_text.size()) {
        ::close(job_fd);  // EOF on the child's stdin: the job is complete
        job_fd = -1;
      }
    }
    if (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) {
      char buf[65536];
      const ssize_t n = ::read(event_fd, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        open = false;
      } else if (n > 0) {
        pending.append(buf, static_cast<std::size_t>(n));
        for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
          handle_line(std::string_view(pending).substr(0, nl));
          pending.erase(0, nl + 1);
        }
        if (pending.size() > (64u << 20)) {  // a line of 64 MiB is not an event: stop listening
          log->warn("worker {}: event line over 64 MiB; killing it", pid);
          kill_group();
          pending.clear();
        }
      }
    }
  }
  if (job_fd >= 0) ::close(job_fd);
  ::close(event_fd);

  // The events are over; the process may still be finishing (or hung after closing fd 3).
  int status = 0;
  rusage usage{};
  for (;;) {
    const pid_t r = ::wait4(pid, &status, WNOHANG, &usage);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      status = 0;
      break;
    }
    if (!killed_for_timeout && !killed_for_cancel) {
      if (Clock::now() >= deadline) {
        killed_for_timeout = true;
        kill_group();
      } else if (cancel && cancel->load()) {
        killed_for_cancel = true;
        kill_group();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;

  if (WIFSIGNALED(status)) {
    out.signal = WTERMSIG(status);
    if (killed_for_cancel) {
      out.kind = WorkerExit::Kind::cancelled;
      out.reason = "stopped: the node is shutting down";
    } else if (killed_for_timeout) {
      out.kind = WorkerExit::Kind::timed_out;
      out.reason = fmt::format("no result after {} s (analysis.worker_timeout_seconds): killed", limits.timeout_seconds);
    } else if (out.signal == SIGXCPU || (out.signal == SIGKILL && cpu >= limits.cpu_seconds)) {
      out.kind = WorkerExit::Kind::cpu_limit;
      out.reason = fmt::format("CPU time limit of {} s exceeded (analysis.worker_cpu_seconds): {}", limits.cpu_seconds,
                               signal_name(out.signal));
    } else {
      out.kind = WorkerExit::Kind::crashed;
      out.reason = fmt::format("worker killed by {}", signal_name(out.signal));
    }
  } else if (WIFEXITED(status)) {
    out.exit_code = WEXITSTATUS(status);
    if (out.exit_code == 0 && done_seen) {
      out.kind = WorkerExit::Kind::finished;
    } else if (out.exit_code == 3) {
      out.kind = WorkerExit::Kind::memory_limit;
      out.reason = fmt::format("out of memory at the worker's limit of {} MiB (analysis.worker_memory_mb)", limits.memory_mb);
    } else if (out.exit_code == 127 || out.exit_code == 126) {
      out.kind = WorkerExit::Kind::spawn_failed;
      out.reason = fmt::format("cannot start {} worker (exit code {})", executable.string(), out.exit_code);
    } else {
      out.kind = WorkerExit::Kind::failed;
      out.reason = !fatal_reason.empty() ? fatal_reason
                   : out.exit_code == 0 ? std::string("worker ended without finishing")
                                        : fmt::format("worker exited with code {}", out.exit_code);
    }
  } else {
    out.kind = WorkerExit::Kind::failed;
    out.reason = "worker status unknown";
  }
  log->debug("worker {}: {} in {:.2f} s ({:.2f} s CPU, {} KiB peak RSS, started in {:.1f} ms){}", pid, to_string(out.kind),
             out.seconds, cpu, usage.ru_maxrss, out.spawn_ms, out.reason.empty() ? "" : ": " + out.reason);
  return out;
}

}  // namespace analysis
