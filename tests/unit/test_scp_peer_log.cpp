#define BOOST_TEST_MODULE scp_peer_log
// Rate-limited per-peer log lines: at most one line per peer and reason per window, and every
// suppressed line accounted for in a "(N more suppressed)" count.
#include <boost/test/unit_test.hpp>

#include <regex>

#include <spdlog/sinks/ostream_sink.h>

#include "scp/peer_log.h"

using namespace std::chrono_literals;
using scp::RateLimiter;

namespace {

// A PeerLog on a manual clock, writing into a string.
struct Harness {
  RateLimiter::Clock::time_point t{};
  std::ostringstream out;
  std::shared_ptr<spdlog::logger> logger;
  scp::PeerLog log;
  Harness()
      : logger(std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::ostream_sink_st>(out))),
        log(logger, 10s, [this] { return t; }) {
    logger->set_pattern("%v");
    logger->set_level(spdlog::level::info);
  }
  std::vector<std::string> lines() const {
    std::vector<std::string> v;
    std::istringstream in(out.str());
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  }
};

// Every event accounted for: lines written plus the counts in them.
std::uint64_t accounted(const std::vector<std::string>& lines) {
  static const std::regex more(R"(\((\d+) more suppressed\))");
  std::uint64_t n = 0;
  for (const auto& l : lines) {
    std::smatch m;
    n += 1 + (std::regex_search(l, m, more) ? std::stoull(m[1]) : 0);
  }
  return n;
}

}  // namespace

BOOST_AUTO_TEST_CASE(first_line_of_a_key_is_written_repeats_within_the_window_are_counted) {
  RateLimiter r(10s);
  const RateLimiter::Clock::time_point t0{};
  BOOST_TEST(r.admit("10.0.0.1", "timeout", t0).emit);
  BOOST_TEST(!r.admit("10.0.0.1", "timeout", t0 + 1s).emit);
  BOOST_TEST(!r.admit("10.0.0.1", "timeout", t0 + 9s).emit);
  // Another reason or another peer is another key.
  BOOST_TEST(r.admit("10.0.0.1", "too_large", t0 + 2s).emit);
  BOOST_TEST(r.admit("10.0.0.2", "timeout", t0 + 2s).emit);
  // After the window the next line is written, with the count of those in between.
  const auto v = r.admit("10.0.0.1", "timeout", t0 + 10s);
  BOOST_TEST(v.emit);
  BOOST_TEST(v.suppressed == 2u);
  BOOST_TEST(!r.admit("10.0.0.1", "timeout", t0 + 11s).emit);
}

BOOST_AUTO_TEST_CASE(expired_keys_are_summarised_once_and_quiet_ones_forgotten) {
  RateLimiter r(10s);
  const RateLimiter::Clock::time_point t0{};
  r.admit("a", "x", t0);
  r.admit("a", "x", t0 + 1s);
  r.remember("a", "x", "line 2", 3);
  r.admit("b", "x", t0);
  BOOST_TEST(r.expire(t0 + 9s).empty());
  const auto due = r.expire(t0 + 10s);
  BOOST_TEST_REQUIRE(due.size() == 1u);
  BOOST_TEST(due[0].peer == "a");
  BOOST_TEST(due[0].last_line == "line 2");
  BOOST_TEST(due[0].suppressed == 1u);
  BOOST_TEST(r.keys() == 1u);  // "b" had nothing to tell and is gone; "a" starts a new window
  BOOST_TEST(!r.admit("a", "x", t0 + 15s).emit);  // the summary counts as a line of its window
  BOOST_TEST(r.expire(t0 + 20s).size() == 1u);
}

BOOST_AUTO_TEST_CASE(the_table_is_bounded_new_peers_share_one_key_beyond_it) {
  RateLimiter r(10s, 4);
  const RateLimiter::Clock::time_point t0{};
  for (int i = 0; i < 4; ++i) BOOST_TEST(r.admit("10.0.0." + std::to_string(i), "x", t0).emit);
  const auto v = r.admit("10.0.1.1", "x", t0);
  BOOST_TEST(v.emit);
  BOOST_TEST(v.peer == "*");
  BOOST_TEST(!r.admit("10.0.1.2", "x", t0).emit);  // shares "*"
  for (int i = 0; i < 1000; ++i) r.admit("10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250), "x", t0);
  BOOST_TEST(r.keys() == 5u);
  BOOST_TEST(r.drain().size() == 1u);
  BOOST_TEST(r.keys() == 0u);
}

BOOST_AUTO_TEST_CASE(a_flood_from_one_peer_gives_one_line_a_window_and_every_line_is_accounted_for) {
  Harness h;
  // 1000 events over 35 s from one peer, flushed every second as the acceptor does.
  for (int i = 0; i < 1000; ++i) {
    h.t = RateLimiter::Clock::time_point{} + std::chrono::milliseconds(35 * i);
    h.log.log(spdlog::level::warn, "10.0.0.9", "preassociation_timeout", "connection from 10.0.0.9 closed: nothing received");
    if (i % 28 == 0) h.log.flush();
  }
  h.log.flush_all();
  const auto lines = h.lines();
  BOOST_TEST(lines.size() <= 5u, h.out.str());  // windows at 0, 10, 20, 30 s, and the final count
  BOOST_TEST(lines.size() >= 4u, h.out.str());
  BOOST_TEST(accounted(lines) == 1000u, h.out.str());
  for (const auto& l : lines) BOOST_TEST(l.rfind("connection from 10.0.0.9 closed: nothing received", 0) == 0u);
}

BOOST_AUTO_TEST_CASE(lines_below_the_level_are_neither_written_nor_counted) {
  Harness h;
  h.log.log(spdlog::level::debug, "p", "closed_before_associate_rq", "debug line");
  h.log.flush_all();
  BOOST_TEST(h.out.str().empty());
  h.log.log(spdlog::level::warn, "p", "r", "one");
  h.log.log(spdlog::level::warn, "p", "r", "two");
  h.log.flush_all();
  BOOST_TEST(h.lines() == (std::vector<std::string>{"one", "two"}));  // a single suppressed line is written as is
}
