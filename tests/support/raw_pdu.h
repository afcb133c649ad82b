#pragma once
// Driving tests/scripts/raw_pdu.py (a DICOM peer that misbehaves on purpose) against the daemon,
// and reading what the daemon reports about it: status.json, /proc, rate-limited log lines.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/scu.h>
#include <dcmtk/oflog/oflog.h>
#include <nlohmann/json.hpp>

#include "support/daemon_fixture.h"
#include "support/storage_checks.h"

namespace testsupport {

// `port`: another port of the daemon's than its plain DICOM one (tls.port).
inline std::vector<std::string> raw_pdu_argv(const Daemon& d, const std::vector<std::string>& args, std::uint16_t port = 0) {
  std::vector<std::string> argv{python(), (source_dir() / "tests/scripts/raw_pdu.py").string(), "127.0.0.1",
                                std::to_string(port ? port : d.port())};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// The JSON object a raw_pdu.py scenario prints as its last line.
inline nlohmann::json last_json(const std::string& output) {
  const auto end = output.find_last_not_of('\n');
  if (end == std::string::npos) return {};
  const auto start = output.rfind('\n', end);
  try {
    return nlohmann::json::parse(output.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1));
  } catch (const nlohmann::json::exception&) {
    return {};
  }
}

inline nlohmann::json raw_pdu(const Daemon& d, const std::vector<std::string>& args) {
  const auto r = run(raw_pdu_argv(d, args));
  BOOST_TEST(r.exit_code == 0, r.output);
  return last_json(r.output);
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A raw_pdu.py scenario in the background that holds connections: started, then waited for
// until it printed "ready" (its connections are open), then for its result.
class RawPeer {
 public:
  RawPeer(const Daemon& d, const std::vector<std::string>& args, const std::filesystem::path& log, std::uint16_t port = 0) : log_(log) {
    std::filesystem::remove(log_);
    child_.start(raw_pdu_argv(d, args, port), log_);
    const bool ready = eventually([&] { return output().find("ready") != std::string::npos || !child_.running(); },
                                  std::chrono::seconds(60), std::chrono::milliseconds(10));
    BOOST_TEST_REQUIRE(ready, output());
    BOOST_TEST_REQUIRE(output().find("ready") != std::string::npos, output());
  }
  std::string output() const { return read_text(log_); }
  // The line after "ready" (many: the answers to the requests).
  nlohmann::json ready_line() const {
    const auto out = output();
    const auto p = out.find("ready ");
    return p == std::string::npos ? nlohmann::json{} : nlohmann::json::parse(out.substr(p + 6, out.find('\n', p) - p - 6));
  }
  nlohmann::json result(std::chrono::seconds limit = std::chrono::seconds(60)) {
    BOOST_TEST_REQUIRE(child_.wait(limit) == 0, output());
    return last_json(output());
  }

 private:
  std::filesystem::path log_;
  Child child_;
};

// status.json as the daemon last wrote it (at SIGTERM it writes a final one).
inline nlohmann::json status_of(const Daemon& d) {
  const auto text = read_text(d.status_file());
  BOOST_TEST_REQUIRE(!text.empty());
  return nlohmann::json::parse(text);
}

inline std::uint64_t rejections(const nlohmann::json& status, const std::string& reason) {
  return status.at("rejections").at(reason).get<std::uint64_t>();
}
inline std::uint64_t aborted(const nlohmann::json& status, const std::string& reason) {
  return status.at("aborted_associations").at(reason).get<std::uint64_t>();
}

// Events behind the log lines that contain `needle`: each line is one, plus its
// "(N more suppressed)".
inline std::uint64_t accounted(const std::string& log, const std::string& needle) {
  static const std::regex more(R"(\((\d+) more suppressed\))");
  std::uint64_t n = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find(needle) == std::string::npos) continue;
    std::smatch m;
    n += 1 + (std::regex_search(line, m, more) ? std::stoull(m[1]) : 0);
  }
  return n;
}

// Wall time of one echoscu run from loopback, in ms (process start included); -1 if it failed.
inline double echo_ms(const Daemon& d, const std::string& calling_ae = "ECHOSCU") {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = d.echo(calling_ae);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r.exit_code == 0 ? ms : -1;
}

// One C-ECHO association (connect, negotiate, echo, release) from this process with DCMTK's
// DcmSCU, in ms; -1 if it failed. Unlike an echoscu run it measures the node, not the start of a
// process that loads the data dictionary (slow on a loaded machine).
inline double scu_echo_ms(const Daemon& d) {
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);  // not a line per request on the test's output
  const auto t0 = std::chrono::steady_clock::now();
  DcmSCU scu;
  scu.setAETitle("LATENCY");
  scu.setPeerHostName("127.0.0.1");
  scu.setPeerPort(d.port());
  scu.setPeerAETitle("PACSNODE");
  scu.setACSETimeout(10);
  scu.setDIMSETimeout(10);
  scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  OFList<OFString> ts;
  ts.push_back(UID_LittleEndianImplicitTransferSyntax);
  scu.addPresentationContext(UID_VerificationSOPClass, ts);
  if (scu.initNetwork().bad() || scu.negotiateAssociation().bad()) return -1;
  const bool ok = scu.sendECHORequest(0).good();
  scu.releaseAssociation();
  return ok ? std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() : -1;
}

inline std::size_t proc_entries(pid_t pid, const std::string& what) {  // "fd" or "task"
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/" + what)) ++n;
  return n;
}

// Open descriptors of `pid` other than files below `dir` (the journal's segments: a bounded set, made
// as the journal fills, not one per instance).
inline std::size_t proc_fds_outside(pid_t pid, const std::filesystem::path& dir) {
  std::size_t n = 0;
  const std::string prefix = dir.string() + "/";
  for (auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(e.path(), ec).string();
    if (ec || target.rfind(prefix, 0) != 0) ++n;
  }
  return n;
}

inline long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// Short timeouts for tests that wait for them, and no analysis (these are about the network).
inline DaemonOptions fast_timeouts(int max_pending = 64, int max_pending_per_source = 8, int preassociation_seconds = 2) {
  DaemonOptions opt;
  opt.node_extra = "preassociation_timeout_seconds = " + std::to_string(preassociation_seconds) +
                   "\nacse_timeout_seconds = 3\ndimse_timeout_seconds = 2\n"
                   "max_pending_connections = " + std::to_string(max_pending) +
                   "\nmax_pending_per_source = " + std::to_string(max_pending_per_source) + "\n";
  opt.extra = "[analysis]\nenabled = false\n";
  return opt;
}

}  // namespace testsupport
