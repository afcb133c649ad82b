#pragma once
// Child processes for tests: run a command to completion, or keep a daemon running.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace testsupport {

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs argv[0] with arguments, waits, returns exit code and output. Throws if it cannot start.
inline RunResult run(const std::vector<std::string>& argv, const std::filesystem::path& log = {}) {
  char tmpl[] = "/tmp/pacsnode-run-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  if (fd < 0) throw std::runtime_error("mkstemp");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::perror("execvp");
    ::_exit(127);
  }
  ::close(fd);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::ifstream in(tmpl);
  std::stringstream ss;
  ss << in.rdbuf();
  ::unlink(tmpl);
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.output = ss.str();
  if (!log.empty()) std::ofstream(log, std::ios::app) << r.output;
  return r;
}

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A background child with its output in a file.
class Child {
 public:
  Child() = default;
  Child(const std::vector<std::string>& argv, const std::filesystem::path& log) { start(argv, log); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (running()) kill(SIGKILL);
  }

  void start(const std::vector<std::string>& argv, const std::filesystem::path& log) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::setpgid(0, 0);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      std::perror("execvp");
      ::_exit(127);
    }
    exit_code_ = -1;
  }
  pid_t pid() const { return pid_; }
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return false;
    }
    return r == 0;
  }
  void kill(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Waits up to `limit` for the child to exit; returns its exit code, or -1 if still running.
  int wait(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (running()) {
      if (std::chrono::steady_clock::now() > end) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a child, not waiting for time
    }
    return exit_code_;
  }
  int exit_code() const { return exit_code_; }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// Polls `ready` until it is true or `limit` passes.
template <typename F>
bool eventually(F ready, std::chrono::milliseconds limit, std::chrono::milliseconds every = std::chrono::milliseconds(50)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (ready()) return true;
    std::this_thread::sleep_for(every);
  }
  return ready();
}

}  // namespace testsupport
