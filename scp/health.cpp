#include "scp/health.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "dicom/log.h"
#include "scp/study_assembler.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

std::string errno_text(int err) {
  std::string t = std::strerror(err);
  if (err == EROFS) t += " (mounted read-only?)";
  if (err == EACCES || err == EPERM) t += " (check the owner and mode; under systemd the service's user)";
  return t;
}

// Creates, writes, syncs and removes `dir`/.health-probe; a reason when any step fails.
std::string probe_write(const fs::path& dir) {
  const fs::path probe = dir / ".health-probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fmt::format("{}: cannot create a file: {}", dir.string(), errno_text(errno));
  const char byte = 'x';
  std::string problem;
  if (::write(fd, &byte, 1) != 1) problem = fmt::format("{}: cannot write: {}", dir.string(), errno_text(errno));
  else if (::fsync(fd) != 0) problem = fmt::format("{}: cannot sync: {}", dir.string(), errno_text(errno));
  ::close(fd);
  if (::unlink(probe.c_str()) != 0 && problem.empty())
    problem = fmt::format("{}: cannot remove a file: {}", dir.string(), errno_text(errno));
  return problem;
}

}  // namespace

std::string_view to_string(HealthState s) {
  switch (s) {
    case HealthState::ok: return "ok";
    case HealthState::degraded: return "degraded";
    case HealthState::failing: return "failing";
  }
  return "?";
}

std::string storage_problem(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) {
    // Name the first existing ancestor, which is where the cause lies.
    fs::path existing = root;
    while (!existing.empty() && !fs::exists(existing)) existing = existing.parent_path();
    return fmt::format("storage root {} cannot be created: {}{}", root.string(), errno_text(ec.value()),
                       existing.empty() ? "" : fmt::format(" ({} exists)", existing.string()));
  }
  if (!fs::is_directory(root)) return fmt::format("storage root {} is not a directory", root.string());
  if (auto p = probe_write(root); !p.empty()) return "storage root not writable: " + p;
  return {};
}

HealthMonitor::HealthMonitor(boost::asio::io_context& io, fs::path root, Index& index, const config::LiveConfig& cfg,
                             std::chrono::milliseconds every)
    : timer_(io), root_(std::move(root)), index_(index), cfg_(cfg), every_(every), started_ms_(wall_ms()) {}

void HealthMonitor::start() { tick(); }
void HealthMonitor::stop() { timer_.cancel(); }

Health HealthMonitor::current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

Health HealthMonitor::check() {
  const auto cfg = cfg_.get();
  const std::int64_t now = wall_ms();
  std::vector<std::string> failing, degraded;
  // Storage: where instances are received.
  const fs::path tmp = root_ / "incoming" / ".tmp";
  if (auto p = probe_write(fs::exists(tmp) ? tmp : root_); !p.empty()) failing.push_back("storage not writable: " + p);
  // Free space against the reserve below which C-STORE is refused.
  if (const std::uint64_t reserve = cfg->storage.min_free_mb << 20; reserve > 0) {
    struct statvfs st {};
    if (::statvfs(root_.c_str(), &st) == 0) {
      const std::uint64_t free = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
      if (free < reserve)
        degraded.push_back(fmt::format("free space {} MB below storage.min_free_mb ({} MB): instances are refused",
                                       free >> 20, cfg->storage.min_free_mb));
    }
  }
  // Index: every acknowledged instance gets its row.
  try {
    index_.health_probe(now);
  } catch (const std::exception& e) {
    failing.push_back(fmt::format("index not writable: {}", e.what()));
  }
  try {
    for (const auto& t : index_.destination_trouble(now - 24 * 3600 * 1000LL)) {
      if (t.dead_recently > 0)
        degraded.push_back(fmt::format("destination '{}': {} object(s) dead-lettered in the last 24 h (pacsnode outbox)",
                                       t.destination, t.dead_recently));
      if (t.pending_retried > 0)
        degraded.push_back(fmt::format("destination '{}': {} object(s) failed 3 times or more, oldest queued {} min ago; last "
                                       "error: {}",
                                       t.destination, t.pending_retried, (now - t.oldest_pending_ms) / 60000, t.last_error));
    }
    const auto jobs = index_.latest_job_states(3);
    if (jobs.size() == 3 && std::all_of(jobs.begin(), jobs.end(), [](const std::string& s) { return s == "failed"; }))
      degraded.push_back("analysis failing: the last 3 jobs failed");
    if (const int crashed = index_.crashed_series_since(now - 3600 * 1000LL); crashed > 0)
      degraded.push_back(fmt::format("analysis workers crashed or hit a limit on {} series in the last hour (quarantine/)", crashed));
  } catch (const std::exception& e) {
    degraded.push_back(fmt::format("index cannot be read: {}", e.what()));
  }
  // A cluster: this node's heartbeat, and the others' as the index has them. A silent node's
  // jobs and deliveries go to the others once its leases expire; an administrator should know.
  std::vector<NodeRow> cluster;
  if (index_.shared()) {
    try {
      index_.heartbeat(started_ms_, now, receive_, info_ ? info_() : "{}");
      cluster = index_.nodes();
      const std::int64_t silent_ms = std::int64_t(cfg->index.lease_seconds) * 1000;
      for (const auto& n : cluster)
        if (n.name != index_.node() && now - n.last_seen_ms > silent_ms && now - n.last_seen_ms < 24 * 3600 * 1000LL)
          degraded.push_back(fmt::format("cluster node '{}' silent for {} s (its jobs and deliveries go to other nodes)", n.name,
                                         (now - n.last_seen_ms) / 1000));
    } catch (const std::exception& e) {
      failing.push_back(fmt::format("index not writable: {}", e.what()));
    }
  }

  Health h;
  h.cluster = std::move(cluster);
  h.checked_ms = now;
  h.state = !failing.empty() ? HealthState::failing : !degraded.empty() ? HealthState::degraded : HealthState::ok;
  h.reasons = std::move(failing);
  h.reasons.insert(h.reasons.end(), degraded.begin(), degraded.end());
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    changed = h.state != current_.state || h.reasons != current_.reasons;
    current_ = h;
  }
  failing_ = h.state == HealthState::failing;
  if (changed) {
    auto log = pacsnode::component_logger("health");
    const auto level = h.state == HealthState::ok ? spdlog::level::info
                       : h.state == HealthState::degraded ? spdlog::level::warn
                                                          : spdlog::level::err;
    std::string why;
    for (const auto& r : h.reasons) why += (why.empty() ? "" : "; ") + r;
    log->log(level, "health: {}{}{}", to_string(h.state), why.empty() ? "" : ": ", why);
    if (on_change_) on_change_(h);
  }
  return h;
}

void HealthMonitor::tick() {
  check();
  timer_.expires_after(every_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) tick();
  });
}

}  // namespace scp
