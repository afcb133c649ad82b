#define BOOST_TEST_MODULE study_assembler
#include <boost/test/unit_test.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "scp/index.h"
#include "scp/study_assembler.h"
#include "support/daemon_fixture.h"
#include "support/test_index.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct Completion {
  std::string study;
  int generation;
};

struct Fixture {
  fs::path dir = testsupport::make_temp_dir("assembler");
  std::unique_ptr<scp::Index> index = testsupport::open_test_index(dir);
  boost::asio::io_context io;
  // Keeps run_for from stopping the context when no timer is pending, as the daemon's guard does.
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard = boost::asio::make_work_guard(io);
  std::vector<Completion> done;
  ~Fixture() { fs::remove_all(dir); }

  std::unique_ptr<scp::StudyAssembler> assembler(std::chrono::milliseconds quiet, std::chrono::milliseconds grace = 0ms) {
    return std::make_unique<scp::StudyAssembler>(io, *index, scp::StudyAssembler::Options{quiet, grace},
                                                 [this](const std::string& s, int g) { done.push_back({s, g}); });
  }
  // Indexes an instance as the SCP does and tells the assembler.
  void receive(scp::StudyAssembler& a, const std::string& study, const std::string& sop, std::optional<long> images = {},
               std::optional<long> study_total = {}, std::int64_t at_ms = scp::wall_ms()) {
    scp::StoredInstance in;
    in.header.study_uid = study;
    in.header.series_uid = study + ".1";
    in.header.sop_instance_uid = sop;
    in.header.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2";
    in.header.images_in_acquisition = images;
    in.header.number_of_study_related_instances = study_total;
    in.path = dir / sop;
    const bool is_new = index->add_instance(in, at_ms);
    a.on_instance(in.header, is_new);
  }
  // Runs the event loop until `n` completions or the limit.
  void run_until(std::size_t n, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (done.size() < n && std::chrono::steady_clock::now() < end) io.run_for(10ms);
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(completes_after_the_quiet_time, Fixture) {
  auto a = assembler(300ms);
  const auto t0 = std::chrono::steady_clock::now();
  receive(*a, "1.1", "1.1.1");
  receive(*a, "1.1", "1.1.2");
  run_until(1, 5s);
  BOOST_TEST_REQUIRE(done.size() == 1u);
  BOOST_TEST(done[0].study == "1.1");
  BOOST_TEST(done[0].generation == 1);
  BOOST_TEST((std::chrono::steady_clock::now() - t0 >= 300ms));
  const auto row = index->study("1.1");
  BOOST_TEST((row->state == scp::StudyState::complete));
  BOOST_TEST(row->instance_count == 2);
  const auto jobs = index->jobs();
  BOOST_TEST_REQUIRE(jobs.size() == 1u);
  BOOST_TEST(jobs[0].state == "pending");
}

BOOST_FIXTURE_TEST_CASE(a_new_instance_restarts_the_quiet_time, Fixture) {
  auto a = assembler(400ms);
  receive(*a, "2.1", "2.1.1");
  io.run_for(250ms);
  receive(*a, "2.1", "2.1.2");  // before the first quiet time ran out
  io.run_for(250ms);
  BOOST_TEST(done.empty());  // 500 ms after the first, 250 after the second: still open
  run_until(1, 5s);
  BOOST_TEST(done.size() == 1u);
  BOOST_TEST(index->study("2.1")->instance_count == 2);
}

BOOST_FIXTURE_TEST_CASE(announced_study_count_completes_without_waiting, Fixture) {
  auto a = assembler(60s);
  receive(*a, "3.1", "3.1.1", {}, 3);
  receive(*a, "3.1", "3.1.2", {}, 3);
  io.run_for(100ms);
  BOOST_TEST(done.empty());
  receive(*a, "3.1", "3.1.3", {}, 3);
  run_until(1, 2s);
  BOOST_TEST(done.size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(announced_series_counts_complete_after_the_grace_time, Fixture) {
  auto a = assembler(60s, 100ms);
  receive(*a, "4.1", "4.1.1", 2);
  receive(*a, "4.1", "4.1.2", 2);
  run_until(1, 3s);
  BOOST_TEST(done.size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(a_resent_instance_is_not_counted_twice, Fixture) {
  auto a = assembler(60s);
  receive(*a, "5.1", "5.1.1", {}, 2);
  receive(*a, "5.1", "5.1.1", {}, 2);  // the same SOP Instance UID again
  io.run_for(200ms);
  BOOST_TEST(done.empty());
  receive(*a, "5.1", "5.1.2", {}, 2);
  run_until(1, 2s);
  BOOST_TEST(done.size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(a_late_instance_reopens_a_completed_study, Fixture) {
  auto a = assembler(200ms);
  receive(*a, "6.1", "6.1.1");
  run_until(1, 3s);
  BOOST_TEST_REQUIRE(done.size() == 1u);
  receive(*a, "6.1", "6.1.2");
  io.run_for(50ms);
  BOOST_TEST((index->study("6.1")->state == scp::StudyState::open));
  run_until(2, 3s);
  BOOST_TEST_REQUIRE(done.size() == 2u);
  BOOST_TEST(done[1].generation == 2);
  BOOST_TEST(index->study("6.1")->instance_count == 2);
  BOOST_TEST(index->jobs().size() == 2u);  // one analysis job per completion
}

BOOST_FIXTURE_TEST_CASE(restore_completes_what_went_quiet_while_down, Fixture) {
  {
    auto a = assembler(60s);
    receive(*a, "7.1", "7.1.1", {}, {}, scp::wall_ms() - 120000);  // last instance two minutes ago
    receive(*a, "7.2", "7.2.1");                                   // just now
    io.run_for(50ms);
  }  // "crash": the assembler and its timers are gone, the index stays
  done.clear();
  io.restart();
  auto b = assembler(60s);
  b->restore();
  run_until(1, 3s);
  BOOST_TEST_REQUIRE(done.size() == 1u);
  BOOST_TEST(done[0].study == "7.1");
  io.run_for(100ms);
  BOOST_TEST(done.size() == 1u);  // 7.2 still waits for its quiet time
  BOOST_TEST(b->open_studies() == 1u);
}
