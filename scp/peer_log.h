#pragma once
// Log lines about what peers do wrong, at most one per peer and reason per window: a host that
// opens a thousand silent connections gets one line, not a thousand. A suppressed line is not lost
// from view: the next line for the same peer and reason says how many were suppressed, and
// flush() writes that line once the window is over if no new one came.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

namespace scp {

// The bookkeeping, without a logger or a clock: unit-testable.
class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  // At most `max_keys` peer/reason pairs are tracked; beyond that, new pairs share one key per
  // reason ("*"), so that a flood from many addresses cannot grow the table without bound.
  explicit RateLimiter(Clock::duration window = std::chrono::seconds(10), std::size_t max_keys = 1024)
      : window_(window), max_keys_(max_keys) {}

  struct Verdict {
    bool emit = false;             // write this line now
    std::uint64_t suppressed = 0;  // lines of the same key suppressed since the last one written
    std::string peer;              // the peer to name: the one given, or "*" once the table is full
  };
  Verdict admit(const std::string& peer, const std::string& reason, Clock::time_point now);

  struct Pending {
    std::string peer, reason, last_line;
    int level = 0;
    std::uint64_t suppressed = 0;
  };
  // Remembers the most recent suppressed line of a key, for expire().
  void remember(const std::string& peer, const std::string& reason, std::string line, int level);
  // Keys whose window is over: those that suppressed lines are returned (and start afresh with
  // this as their last line written); the others are forgotten.
  std::vector<Pending> expire(Clock::time_point now);
  // Every key that suppressed lines, window over or not; the table is empty afterwards.
  std::vector<Pending> drain();
  std::size_t keys() const { return entries_.size(); }

 private:
  struct Entry {
    Clock::time_point window_start;
    std::uint64_t suppressed = 0;
    std::string last_line;
    int level = 0;
  };
  std::string key_peer(const std::string& peer, const std::string& reason) const;
  Clock::duration window_;
  std::size_t max_keys_;
  std::map<std::pair<std::string, std::string>, Entry> entries_;
};

// Thread-safe front of RateLimiter that writes through a spdlog logger.
class PeerLog {
 public:
  using Now = std::function<RateLimiter::Clock::time_point()>;
  explicit PeerLog(std::shared_ptr<spdlog::logger> log, RateLimiter::Clock::duration window = std::chrono::seconds(10),
                   Now now = [] { return RateLimiter::Clock::now(); });

  // `line` names the peer itself; " (N more suppressed)" is appended when lines were dropped.
  void log(spdlog::level::level_enum level, const std::string& peer, const std::string& reason, const std::string& line);
  // Writes the pending summaries of windows that are over. Call every few seconds.
  void flush();
  // Writes every pending summary now (at shutdown: no count is left untold).
  void flush_all();

 private:
  std::shared_ptr<spdlog::logger> log_;
  Now now_;
  void write_summaries(const std::vector<RateLimiter::Pending>& pending);
  std::mutex mutex_;
  RateLimiter limiter_;
};

}  // namespace scp
