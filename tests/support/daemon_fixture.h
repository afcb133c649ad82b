#pragma once
// Starts the real pacsnode binary on a free loopback port with its own storage root, waits for
// C-ECHO readiness, and stops it with SIGTERM (asserting a clean exit) at the end.
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include <boost/test/unit_test.hpp>

#include "support/paths.h"
#include "support/process.h"
#include "support/test_index.h"

namespace testsupport {

inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline std::filesystem::path make_temp_dir(const std::string& tag) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / ("pacsnode-" + tag + "-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir;
}

struct DaemonOptions {
  int quiet_seconds = 2;
  int max_associations = 16;
  std::string allowed_calling_ae = "[]";
  std::uint64_t min_free_mb = 0;
  std::uint64_t max_instance_mb = 0;  // 0: the default
  int drain_seconds = 10;
  std::string node_extra;  // more [node] keys
  std::string extra;       // more TOML, appended
  std::uint16_t port = 0;  // 0: a free port
  // How start() checks that the daemon answers: echoscu with these options on this port (0: the
  // plain port), e.g. TLS options and tls.port for a node that listens for TLS only.
  std::vector<std::string> ready_echo_options;
  std::uint16_t ready_echo_port = 0;
  // A cluster node (issue 14): the storage root it shares with other nodes (empty: its own,
  // <dir>/storage) and its [index] table (empty: SQLite, or in a `_pg` registration a PostgreSQL
  // database of its own storage root, see support/test_index.h).
  std::filesystem::path storage_root;
  std::string index_toml;
};

class Daemon {
 public:
  explicit Daemon(const std::filesystem::path& dir, DaemonOptions opt = {}) : dir_(dir), opt_(std::move(opt)) {
    port_ = opt_.port ? opt_.port : free_port();
    root_ = opt_.storage_root.empty() ? dir_ / "storage" : opt_.storage_root;
    const std::string index_toml = opt_.index_toml.empty() ? index_toml_for(root_) : opt_.index_toml;
    config_ = dir_ / "pacsnode.toml";
    std::ofstream(config_) << "[node]\nae_title = \"PACSNODE\"\nbind = \"127.0.0.1\"\nport = " << port_
                           << "\nmax_associations = " << opt_.max_associations
                           << "\nallowed_calling_ae = " << opt_.allowed_calling_ae
                           << "\ndrain_seconds = " << opt_.drain_seconds << "\n" << node_name_line() << opt_.node_extra
                           << "\n[storage]\nroot = \"" << root_.string()
                           << "\"\nmin_free_mb = " << opt_.min_free_mb
                           << (opt_.max_instance_mb ? "\nmax_instance_mb = " + std::to_string(opt_.max_instance_mb) : "")
                           << "\n[study]\nquiet_seconds = "
                           << opt_.quiet_seconds << "\nexpected_grace_seconds = 0\n[log]\nlevel = \"info\"\n"
                           << index_toml << opt_.extra;
    log_ = dir_ / "daemon.log";
  }
  ~Daemon() {
    if (child_.running()) {
      child_.kill(SIGTERM);
      if (child_.wait(std::chrono::seconds(30)) < 0) child_.kill(SIGKILL);
    }
  }

  // Starts the binary without waiting (a node without a DICOM port: wait for its log instead).
  void start_process() { child_.start({daemon_binary().string(), "run", "--config", config_.string()}, log_); }
  // Starts the binary and waits until it answers C-ECHO.
  void start() {
    start_process();
    auto answers = [&] {
      if (opt_.ready_echo_options.empty() && !opt_.ready_echo_port) return echo("ECHOSCU").exit_code == 0;
      std::vector<std::string> argv{"echoscu", "-aet", "ECHOSCU", "-aec", "PACSNODE"};
      argv.insert(argv.end(), opt_.ready_echo_options.begin(), opt_.ready_echo_options.end());
      argv.push_back("127.0.0.1");
      argv.push_back(std::to_string(opt_.ready_echo_port ? opt_.ready_echo_port : port_));
      return run(argv).exit_code == 0;
    };
    const bool up = eventually([&] { return !child_.running() || answers(); }, std::chrono::seconds(30), std::chrono::milliseconds(100));
    BOOST_TEST_REQUIRE(child_.running(), "daemon exited at start:\n" << log());
    BOOST_TEST_REQUIRE(up, "daemon did not answer C-ECHO:\n" << log());
  }
  // SIGTERM and the exit code (-1 if it did not exit in time).
  int stop(std::chrono::seconds limit = std::chrono::seconds(60)) {
    child_.kill(SIGTERM);
    return child_.wait(limit);
  }
  void kill9() {
    child_.kill(SIGKILL);
    child_.wait(std::chrono::seconds(10));
  }
  bool running() { return child_.running(); }
  pid_t pid() const { return child_.pid(); }

  RunResult echo(const std::string& calling_ae, const std::string& called_ae = "PACSNODE") const {
    return run({"echoscu", "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", std::to_string(port_)});
  }
  // storescu with the given files or directories (scanned); -v so that responses are logged.
  RunResult store(const std::vector<std::string>& files, const std::string& calling_ae = "STORESCU") const {
    std::vector<std::string> argv{"storescu", "-v", "-aet", calling_ae, "-aec", "PACSNODE", "+sd", "+r", "-nh"};
    argv.push_back("127.0.0.1");
    argv.push_back(std::to_string(port_));
    argv.insert(argv.end(), files.begin(), files.end());
    return run(argv);
  }
  std::vector<std::string> store_argv(const std::vector<std::string>& files, const std::string& calling_ae = "STORESCU") const {
    std::vector<std::string> argv{"storescu", "-v", "-aet", calling_ae, "-aec", "PACSNODE", "+sd", "+r", "-nh",
                                  "127.0.0.1", std::to_string(port_)};
    argv.insert(argv.end(), files.begin(), files.end());
    return argv;
  }

  std::string log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::uint16_t port() const { return port_; }
  // Where the daemon writes its status: <root>/status.json, or nodes/<node>/status.json on a
  // shared (PostgreSQL) index.
  std::filesystem::path status_file() const {
    return shared_index() ? root_ / "nodes" / node_name() / "status.json" : root_ / "status.json";
  }
  const std::filesystem::path& root() const { return root_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path incoming() const { return root_ / "incoming"; }

 private:
  bool shared_index() const { return !opt_.index_toml.empty() || testing_postgresql(); }
  // The node's name: from node_extra when it names one, else "test-node" on a shared index.
  std::string node_name() const {
    const auto p = opt_.node_extra.find("name = \"");
    if (p != std::string::npos) return opt_.node_extra.substr(p + 8, opt_.node_extra.find('"', p + 8) - (p + 8));
    return "test-node";
  }
  std::string node_name_line() const {
    return shared_index() && opt_.node_extra.find("name = \"") == std::string::npos ? "name = \"test-node\"\n" : "";
  }
  std::filesystem::path dir_, root_, config_, log_;
  DaemonOptions opt_;
  std::uint16_t port_ = 0;
  Child child_;
};

// Every committed instance under the spool (excludes .tmp).
inline std::vector<std::filesystem::path> stored_files(const std::filesystem::path& incoming) {
  std::vector<std::filesystem::path> out;
  if (!std::filesystem::exists(incoming)) return out;
  for (auto it = std::filesystem::recursive_directory_iterator(incoming); it != std::filesystem::recursive_directory_iterator(); ++it) {
    if (it->is_directory() && it->path().filename() == ".tmp") {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) out.push_back(it->path());
  }
  return out;
}

inline std::size_t count_files(const std::filesystem::path& dir) {
  std::size_t n = 0;
  if (!std::filesystem::exists(dir)) return 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

// A synthetic CT series from tests/scripts/make_ct_phantom.py (pydicom), cached per test run.
inline std::filesystem::path ct_phantom(const std::filesystem::path& dir, int slices, int size, int seed = 1) {
  auto out = dir / ("ct_" + std::to_string(slices) + "x" + std::to_string(size) + "_" + std::to_string(seed));
  if (!std::filesystem::exists(out)) {
    auto r = run({python(), phantom_script().string(), out.string(), "--slices",
                  std::to_string(slices), "--size", std::to_string(size), "--seed", std::to_string(seed)});
    BOOST_TEST_REQUIRE(r.exit_code == 0, "make_ct_phantom failed: " << r.output);
  }
  return out;
}

}  // namespace testsupport
