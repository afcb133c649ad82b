#include "scp/peer_log.h"

namespace scp {

std::string RateLimiter::key_peer(const std::string& peer, const std::string& reason) const {
  if (entries_.size() < max_keys_ || entries_.count({peer, reason})) return peer;
  return "*";
}

RateLimiter::Verdict RateLimiter::admit(const std::string& peer, const std::string& reason, Clock::time_point now) {
  Verdict v;
  v.peer = key_peer(peer, reason);
  auto [it, fresh] = entries_.try_emplace({v.peer, reason});
  Entry& e = it->second;
  if (fresh || now - e.window_start >= window_) {
    v.emit = true;
    v.suppressed = fresh ? 0 : e.suppressed;
    e.window_start = now;
    e.suppressed = 0;
    e.last_line.clear();
  } else {
    ++e.suppressed;
  }
  return v;
}

void RateLimiter::remember(const std::string& peer, const std::string& reason, std::string line, int level) {
  auto it = entries_.find({peer, reason});
  if (it == entries_.end()) return;
  it->second.last_line = std::move(line);
  it->second.level = level;
}

std::vector<RateLimiter::Pending> RateLimiter::expire(Clock::time_point now) {
  std::vector<Pending> out;
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    if (now - e.window_start < window_) {
      ++it;
      continue;
    }
    if (e.suppressed == 0) {
      it = entries_.erase(it);
      continue;
    }
    // The summary is itself a line of this key: a new window starts with it.
    out.push_back({it->first.first, it->first.second, std::move(e.last_line), e.level, e.suppressed});
    e.window_start = now;
    e.suppressed = 0;
    e.last_line.clear();
    ++it;
  }
  return out;
}

std::vector<RateLimiter::Pending> RateLimiter::drain() {
  std::vector<Pending> out;
  for (auto& [key, e] : entries_)
    if (e.suppressed) out.push_back({key.first, key.second, std::move(e.last_line), e.level, e.suppressed});
  entries_.clear();
  return out;
}

PeerLog::PeerLog(std::shared_ptr<spdlog::logger> log, RateLimiter::Clock::duration window, Now now)
    : log_(std::move(log)), now_(std::move(now)), limiter_(window) {}

void PeerLog::log(spdlog::level::level_enum level, const std::string& peer, const std::string& reason, const std::string& line) {
  if (!log_->should_log(level)) return;
  std::lock_guard lock(mutex_);
  const auto v = limiter_.admit(peer, reason, now_());
  if (!v.emit) {
    limiter_.remember(v.peer, reason, line, level);
    return;
  }
  if (v.suppressed) log_->log(level, "{} ({} more suppressed)", line, v.suppressed);
  else log_->log(level, "{}", line);
}

void PeerLog::flush() {
  std::lock_guard lock(mutex_);
  write_summaries(limiter_.expire(now_()));
}

void PeerLog::flush_all() {
  std::lock_guard lock(mutex_);
  write_summaries(limiter_.drain());
}

void PeerLog::write_summaries(const std::vector<RateLimiter::Pending>& pending) {
  // A summary is the last suppressed line itself; the count is of the others.
  for (const auto& p : pending) {
    const auto level = static_cast<spdlog::level::level_enum>(p.level);
    if (p.suppressed > 1) log_->log(level, "{} ({} more suppressed)", p.last_line, p.suppressed - 1);
    else log_->log(level, "{}", p.last_line);
  }
}

}  // namespace scp
