#pragma once
// One health model for everything that reports on the node: status.json, the systemd STATUS= line
// and watchdog, and the DICOM port.
//
//   ok        nothing wrong
//   degraded  works, but an administrator should look: free space below the reserve, a
//             destination dead-lettering or unreachable for a while, analysis failing repeatedly,
//             analysis workers crashing
//   failing   cannot do its job: the storage or the index cannot be written. Then the watchdog is
//             no longer fed (systemd restarts the service) and new associations are rejected as
//             transient, so that a C-ECHO monitor sees it too; nothing is acknowledged that
//             cannot be kept.
//
// The probes run every few seconds on the io_context (a write+fsync+unlink of a probe file under
// incoming/.tmp, a write to the index, a few index counts); a probe that hangs (a dead NFS server)
// holds the loop, which starves the watchdog: systemd then sees that as well.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "config/live.h"
#include "scp/index.h"

namespace scp {

enum class HealthState { ok, degraded, failing };
std::string_view to_string(HealthState s);

struct Health {
  HealthState state = HealthState::ok;
  std::vector<std::string> reasons;  // one line each; empty when ok
  std::int64_t checked_ms = 0;
  // A cluster (the index is shared): every node's last heartbeat, this one's included.
  std::vector<NodeRow> cluster;
};

// Why the storage root cannot be used (empty when it can): it cannot be created, is not a
// directory, or a probe file cannot be created, written and synced there. Names the path and the
// cause (read-only file system, permission denied, ...).
std::string storage_problem(const std::filesystem::path& root);

class HealthMonitor {
 public:
  HealthMonitor(boost::asio::io_context& io, std::filesystem::path root, Index& index, const config::LiveConfig& cfg,
                std::chrono::milliseconds every = std::chrono::seconds(5));
  // Told of every change of state or reasons (on the io_context).
  void on_change(std::function<void(const Health&)> f) { on_change_ = std::move(f); }
  void start();
  void stop();
  // Runs every probe now, on the calling thread, and records the result.
  Health check();
  Health current() const;
  bool failing() const { return failing_.load(); }
  // A cluster node writes its heartbeat (Index::heartbeat) at each check: receive says whether it
  // takes DICOM, `info` what else it tells the others (a JSON object, e.g. jobs running).
  void heartbeat(bool receive, std::function<std::string()> info) {
    receive_ = receive;
    info_ = std::move(info);
  }

 private:
  void tick();
  boost::asio::steady_timer timer_;
  std::filesystem::path root_;
  Index& index_;
  const config::LiveConfig& cfg_;
  std::chrono::milliseconds every_;
  std::function<void(const Health&)> on_change_;
  bool receive_ = true;
  std::function<std::string()> info_;
  std::int64_t started_ms_ = 0;
  mutable std::mutex mutex_;
  Health current_;
  std::atomic<bool> failing_{false};
};

}  // namespace scp
