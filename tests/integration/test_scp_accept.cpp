#define BOOST_TEST_MODULE scp_accept
// The accept path against the real daemon (issue #16): connections that have not sent a complete
// A-ASSOCIATE-RQ never delay another association, are closed after the pre-association timeout,
// and are bounded in all and per source address; 200 associations at once are answered at once.
// The peers are tests/scripts/raw_pdu.py; sources 127.0.0.x are distinct loopback addresses.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdlib>

#include "support/raw_pdu.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  // Nagle off in DCMTK's clients too (this process's DcmSCU, echoscu, storescu), as in the node:
  // the latency measured is the node's, not a 40 ms delayed-ACK stall of the client.
  Fixture() { ::setenv("TCP_NODELAY", "1", 1); }
  fs::path dir = make_temp_dir("accept");
  ~Fixture() { fs::remove_all(dir); }
};

// Good traffic still works: a C-ECHO, and a small series stored unchanged.
void serves_good_traffic(const Daemon& d, const fs::path& series) {
  BOOST_TEST(echo_ms(d) >= 0);
  const auto r = d.store({series.string()});
  BOOST_TEST(r.exit_code == 0, r.output);
  BOOST_TEST(acknowledged_files(r.output).size() == 5u, r.output);
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(silent_and_partial_connections_never_delay_an_association, Fixture) {
  const auto series = ct_phantom(dir, 5, 64);
  for (const int load : {1, 10, 100}) {
    // Room for all of them (the limits have their own test), and 3 s before they are closed.
    const auto sub = dir / ("load" + std::to_string(load));
    fs::create_directories(sub);
    Daemon d(sub, fast_timeouts(128, 128, 3));
    d.start();
    std::vector<double> idle;
    for (int i = 0; i < 3; ++i) idle.push_back(scu_echo_ms(d));
    std::sort(idle.begin(), idle.end());
    const auto held_since = std::chrono::steady_clock::now();
    RawPeer held(d, {"hold", "--count", std::to_string(load), "--partial", std::to_string(load / 2), "--wait", "15"},
                 d.dir() / "hold.log");
    // While they are all open: a C-ECHO association from loopback within 1 s, every time.
    std::vector<double> ms;
    for (int i = 0; i < 5; ++i) ms.push_back(scu_echo_ms(d));
    const double open_for = std::chrono::duration<double>(std::chrono::steady_clock::now() - held_since).count();
    const double echoscu = echo_ms(d);  // and echoscu, as an operator would try it
    std::sort(ms.begin(), ms.end());
    BOOST_TEST(ms.front() >= 0.0, "a C-ECHO failed");
    BOOST_TEST(ms.back() < 1000.0);
    BOOST_TEST(echoscu >= 0.0, "echoscu failed");
    BOOST_TEST(open_for < 2.8, "the echoes ended after the held connections may have been closed");
    BOOST_TEST_MESSAGE("C-ECHO with " << load << " silent/partial connection(s) open: association median " << ms[2]
                                      << " ms, max " << ms.back() << " ms (without them: median " << idle[1]
                                      << " ms); an echoscu run " << echoscu << " ms");
    // A series, nothing acknowledged lost.
    const auto r = d.store({series.string()});
    BOOST_TEST(r.exit_code == 0, r.output);
    const auto acked = acknowledged_files(r.output);
    BOOST_TEST(acked.size() == 5u);
    const auto cmp = compare_stored(d.incoming(), acked);
    BOOST_TEST(cmp.exit_code == 0, cmp.output);
    // Each held connection was closed by the node after the pre-association timeout, not before.
    const auto res = held.result();
    BOOST_TEST(res["opened"] == load);
    BOOST_TEST(res["closed_at_once"] == 0);
    BOOST_TEST(res["closed_later"] == load, res.dump());
    BOOST_TEST(res["later_min"].get<double>() >= 2.9, res.dump());
    BOOST_TEST(res["later_max"].get<double>() <= 4.5, res.dump());
    BOOST_TEST(d.stop() == 0);
    BOOST_TEST(rejections(status_of(d), "preassociation_timeout") == static_cast<std::uint64_t>(load));
    BOOST_TEST(stored_files(d.incoming()).size() == 5u);
    // One line per peer and reason (plus the count of those suppressed), not one per connection.
    const auto log = d.log();
    BOOST_TEST(accounted(log, "connection from 127.0.0.1 closed:") == static_cast<std::uint64_t>(load), log);
    BOOST_TEST(count_lines(log, "connection from 127.0.0.1 closed:") <= 2u, log);
  }
}

BOOST_FIXTURE_TEST_CASE(pending_connections_are_bounded_per_source_and_in_all, Fixture) {
  const auto series = ct_phantom(dir, 5, 64);
  Daemon d(dir, fast_timeouts(12, 4));
  d.start();
  // 10 silent connections from one address: 4 wait, 6 are closed at once.
  RawPeer one(d, {"hold", "--count", "10", "--sources", "127.0.0.2", "--at-once", "1.0"}, dir / "one.log");
  // 12 from three more addresses: the total reaches 12 after 8 of them, the last 4 are closed at once.
  RawPeer three(d, {"hold", "--count", "12", "--sources", "127.0.0.3,127.0.0.4,127.0.0.5", "--at-once", "1.0"},
                dir / "three.log");
  // Full: a new connection, even a good one, is turned away at once rather than left waiting.
  const auto t0 = std::chrono::steady_clock::now();
  const auto refused = d.echo("ECHOSCU");
  BOOST_TEST(refused.exit_code != 0, refused.output);
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1s));
  const auto r1 = one.result(), r3 = three.result();
  BOOST_TEST(r1["closed_at_once"] == 6, r1.dump());
  BOOST_TEST(r1["closed_later"] == 4, r1.dump());
  BOOST_TEST(r3["closed_at_once"] == 4, r3.dump());
  BOOST_TEST(r3["closed_later"] == 8, r3.dump());
  // Once the waiting ones have timed out, the node is reachable again.
  serves_good_traffic(d, series);
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(rejections(st, "pending_per_source_limit") == 6u);
  BOOST_TEST(rejections(st, "pending_limit") == 5u);  // 4 + the echo
  BOOST_TEST(rejections(st, "preassociation_timeout") == 12u);
  const auto log = d.log();
  BOOST_TEST(accounted(log, "connection from 127.0.0.2 closed at once: 4 connections from it") == 6u, log);
  BOOST_TEST(count_lines(log, "connection from 127.0.0.2 closed at once") <= 2u, log);
  BOOST_TEST(accounted(log, "(node.max_pending_connections)") == 5u, log);
}

BOOST_FIXTURE_TEST_CASE(slow_senders_are_ended_by_their_timeouts, Fixture) {
  const auto series = ct_phantom(dir, 5, 64);
  Daemon d(dir, fast_timeouts());
  d.start();
  // One byte per second: before association the pre-association timeout (2 s) ends it; after
  // association the DIMSE timeout (2 s) does. Both at once, and the node serves others meanwhile.
  Child before(raw_pdu_argv(d, {"slow-request", "--wait", "20"}), dir / "before.log");
  Child after(raw_pdu_argv(d, {"after-association", "--kind", "slow", "--wait", "20"}), dir / "after.log");
  serves_good_traffic(d, series);
  BOOST_TEST(before.wait(30s) == 0);
  BOOST_TEST(after.wait(30s) == 0);
  const auto b = last_json(read_text(dir / "before.log")), a = last_json(read_text(dir / "after.log"));
  BOOST_TEST(b["closed_after"].get<double>() >= 1.9, b.dump());
  BOOST_TEST(b["closed_after"].get<double>() <= 3.5, b.dump());
  BOOST_TEST(b["bytes_sent"] < b["of"], b.dump());
  // The DIMSE timer starts when the node has sent the A-ASSOCIATE-AC: no earlier than our request
  // (a lower bound whatever the machine's load delays on our side), no later than its arrival.
  BOOST_TEST(a["answered_after_request"].get<double>() >= 1.9, a.dump());
  BOOST_TEST(a["answered_after"].get<double>() <= 4.0, a.dump());
  BOOST_TEST(a["answer"][0] == "abort", a.dump());
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(rejections(st, "preassociation_timeout") == 1u);
  BOOST_TEST(aborted(st, "timeout") == 1u);
  const auto log = d.log();
  BOOST_TEST(count_lines(log, "A-ASSOCIATE-RQ incomplete after 2 s") == 1u, log);
  BOOST_TEST(count_lines(log, "association from 'RAWPDU' 127.0.0.1: 0 instances stored") == 1u, log);
  BOOST_TEST(count_lines(log, "DUL network read timeout") == 1u, log);
}

BOOST_FIXTURE_TEST_CASE(two_hundred_associations_at_once_beyond_the_limit_rejected_the_rest_time_out, Fixture) {
  const auto series = ct_phantom(dir, 5, 64);
  Daemon d(dir, fast_timeouts(256, 256));  // max_associations 16 (the fixture's)
  d.start();
  BOOST_TEST_REQUIRE(echo_ms(d) >= 0);
  const auto fds = proc_entries(d.pid(), "fd"), threads = proc_entries(d.pid(), "task");
  RawPeer many(d, {"many", "--count", "200", "--wait", "20"}, dir / "many.log");
  const auto answers = many.ready_line();
  BOOST_TEST(answers["associate-ac"] == 16, answers.dump());
  BOOST_TEST(answers["associate-rj/reason 2"] == 184, answers.dump());  // transient, local limit exceeded
  // 16 idle associations fill every slot: a new one is answered at once, with a transient reject.
  const auto t0 = std::chrono::steady_clock::now();
  const auto busy = d.echo("ECHOSCU");
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1s));
  BOOST_TEST(busy.output.find("Local Limit Exceeded") != std::string::npos, busy.output);
  // The idle ones are ended by the DIMSE timeout (2 s, then up to the ACSE timeout for the peer to close).
  const auto res = many.result();
  BOOST_TEST(res["accepted_closed"] == 16, res.dump());
  BOOST_TEST(res["accepted_closed_max"].get<double>() <= 7.0, res.dump());
  BOOST_TEST(res["still_open"] == 0, res.dump());
  serves_good_traffic(d, series);
  // Nothing left behind: descriptors and threads back where they were.
  BOOST_TEST(eventually([&] { return proc_entries(d.pid(), "fd") <= fds; }, 10s), proc_entries(d.pid(), "fd") << " > " << fds);
  BOOST_TEST(eventually([&] { return proc_entries(d.pid(), "task") <= threads; }, 10s));
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(rejections(st, "association_limit") == 185u);  // 184 + the echo
  BOOST_TEST(aborted(st, "timeout") == 16u);
  const auto log = d.log();
  BOOST_TEST(accounted(log, "associations already open (node.max_associations)") == 185u, log);
  BOOST_TEST(count_lines(log, "associations already open (node.max_associations)") <= 4u, log);
  BOOST_TEST(accounted(log, "association from 'MANY' 127.0.0.1: 0 instances stored") == 16u, log);
}
