#define BOOST_TEST_MODULE scp_outbox
#include <boost/test/unit_test.hpp>

#include "scp/index.h"
#include "scp/outbound_queue.h"
#include "support/daemon_fixture.h"
#include "support/index_rows.h"
#include "support/test_index.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(backoff_doubles_with_jitter_up_to_the_cap) {
  config::Config::Outbound o;
  o.initial_backoff_seconds = 10;
  o.max_backoff_seconds = 900;
  BOOST_TEST(scp::backoff(o, 0, 1.0).count() == 10000);
  BOOST_TEST(scp::backoff(o, 1, 1.0).count() == 20000);
  BOOST_TEST(scp::backoff(o, 3, 1.0).count() == 80000);
  BOOST_TEST(scp::backoff(o, 10, 1.0).count() == 900000);   // capped
  BOOST_TEST(scp::backoff(o, 500, 1.0).count() == 900000);  // no overflow
  BOOST_TEST(scp::backoff(o, 2, 0.8).count() == 32000);
  BOOST_TEST(scp::backoff(o, 2, 1.2).count() == 48000);
}

BOOST_AUTO_TEST_CASE(outbox_rows_move_pending_sent_dead_and_back) {
  const auto dir = testsupport::make_temp_dir("outbox");
  {
    scp::Index index(testsupport::index_settings_for(dir));
    const auto job = testsupport::complete_study(index, dir / "x.dcm");
    scp::ResultRow r{0, job.id, "1.2", 1, "SEG", "1.2.840.10008.5.1.4.1.1.66.4", "9.9.1", "9.9", "1.2.3", (dir / "seg.dcm").string()};
    r.id = index.add_result(r);
    index.enqueue(r, {"pacs", "archive"}, 5000);
    index.enqueue(r, {"pacs"}, 6000);  // queued once per destination
    BOOST_TEST(index.outbox().size() == 2u);
    BOOST_TEST(index.due("pacs", 4999, 10).empty());
    auto due = index.due("pacs", 5000, 10);
    BOOST_TEST_REQUIRE(due.size() == 1u);
    BOOST_TEST(due[0].kind == "SEG");
    BOOST_TEST(due[0].path == (dir / "seg.dcm").string());

    index.mark_retry(due[0].id, 9000, "connection refused", 5000);
    BOOST_TEST(index.due("pacs", 8999, 10).empty());
    BOOST_TEST(index.due("pacs", 9000, 10).at(0).attempts == 1);
    index.mark_sent(due[0].id, 9100);
    BOOST_TEST(index.due("pacs", 99999, 10).empty());
    BOOST_TEST(index.outbox("sent").size() == 1u);

    const auto archive = index.due("archive", 5000, 10).at(0);
    index.mark_dead(archive.id, "0xC000 cannot understand", 5100);
    BOOST_TEST(index.outbox("dead").at(0).last_error == "0xC000 cannot understand");
    BOOST_TEST(index.due("archive", 99999, 10).empty());
    BOOST_TEST(index.retry({}, 7000) == 1);  // every dead one
    const auto again = index.due("archive", 7000, 10);
    BOOST_TEST_REQUIRE(again.size() == 1u);
    BOOST_TEST(again[0].attempts == 0);
    BOOST_TEST(index.retry({due[0].id}, 7000) == 0);  // a sent object is not sent again
    BOOST_TEST(index.purge("sent") == 1);
    BOOST_TEST(index.outbox().size() == 1u);
  }
  {  // the queue survives a restart
    scp::Index index(testsupport::index_settings_for(dir));
    BOOST_TEST(index.outbox("pending").size() == 1u);
  }
  fs::remove_all(dir);
}
