#pragma once
// Runs a function that prints (a command's main) with its stdout and stderr captured.
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace testsupport {

struct Captured {
  int rc;
  std::string out, err;
};

template <typename F>
Captured capture(F f) {
  std::fflush(stdout);
  std::fflush(stderr);
  char t1[] = "/tmp/pacsnode-out-XXXXXX", t2[] = "/tmp/pacsnode-err-XXXXXX";
  const int f1 = ::mkstemp(t1), f2 = ::mkstemp(t2);
  const int s1 = ::dup(1), s2 = ::dup(2);
  ::dup2(f1, 1);
  ::dup2(f2, 2);
  const int rc = f();
  std::fflush(stdout);
  std::fflush(stderr);
  ::dup2(s1, 1);
  ::dup2(s2, 2);
  for (int fd : {s1, s2, f1, f2}) ::close(fd);
  auto slurp = [](const char* p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    ::unlink(p);
    return ss.str();
  };
  return {rc, slurp(t1), slurp(t2)};
}

// Only stderr, with the return code (progress and errors of analyze).
template <typename F>
std::pair<int, std::string> capture_stderr(F f) {
  auto c = capture(f);
  std::fputs(c.out.c_str(), stdout);  // stdout is not under test here: pass it on
  return {c.rc, c.err};
}

}  // namespace testsupport
