#define BOOST_TEST_MODULE scp_index_cluster
// Cluster decisions of the index (issue 14) with several scp::Index objects of different node
// names on one database: the same SQLite file over several connections in the plain
// registration, one PostgreSQL database in the _pg one. Races run on real threads; each check is
// what the cluster must guarantee whichever thread wins.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <exception>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "scp/index.h"
#include "scp/study_assembler.h"
#include "support/daemon_fixture.h"
#include "support/test_index.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const std::string kCt = "1.2.840.10008.5.1.4.1.1.2";
const std::string kSeg = "1.2.840.10008.5.1.4.1.1.66.4";

// Nodes on one database: open() connects another node to the same directory's index.
struct Cluster {
  fs::path dir = testsupport::make_temp_dir("index-cluster");
  std::vector<std::unique_ptr<scp::Index>> nodes;
  ~Cluster() {
    nodes.clear();
    fs::remove_all(dir);
  }
  scp::Index& open(const std::string& node) {
    nodes.push_back(testsupport::open_test_index(dir, node));
    return *nodes.back();
  }
};

scp::StoredInstance instance(const fs::path& dir, const std::string& study, const std::string& sop,
                             const std::string& series = {}) {
  scp::StoredInstance in;
  in.header.study_uid = study;
  in.header.series_uid = series.empty() ? study + ".1" : series;
  in.header.sop_instance_uid = sop;
  in.header.sop_class_uid = kCt;
  in.path = dir / (sop + ".dcm");
  return in;
}

// A complete study of one instance and its pending job; the job's id.
std::int64_t queue_job(scp::Index& index, const fs::path& dir, const std::string& study, std::int64_t at_ms = 1000) {
  index.add_instance(instance(dir, study, study + ".1.1"), at_ms);
  index.mark_complete(study, 1, at_ms + 1);
  for (const auto& j : index.jobs())
    if (j.study_uid == study && j.generation == 1) return j.id;
  throw std::runtime_error("no job for " + study);
}

scp::ResultRow result(std::int64_t job, const std::string& study, const std::string& sop, const std::string& source_series,
                      const fs::path& dir) {
  return scp::ResultRow{0, job, study, 1, "SEG", kSeg, sop, sop + ".s", source_series, (dir / (sop + ".dcm")).string()};
}

// Runs body(i) for i in [0, n) on n threads released together; the messages of what they threw.
std::vector<std::string> race(int n, const std::function<void(int)>& body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::string> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      ++ready;
      while (!go.load()) std::this_thread::yield();
      try {
        body(i);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
    });
  while (ready.load() < n) std::this_thread::yield();
  go = true;
  for (auto& t : threads) t.join();
  std::vector<std::string> thrown;
  for (auto& e : errors)
    if (!e.empty()) thrown.push_back(e);
  return thrown;
}

std::size_t jobs_of(scp::Index& index, const std::string& study) {
  std::size_t n = 0;
  for (const auto& j : index.jobs()) n += j.study_uid == study;
  return n;
}

}  // namespace

// ---- try_complete ---------------------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(racing_nodes_complete_a_study_once, Cluster) {
  constexpr int kNodes = 4, kRounds = 15;
  for (int i = 0; i < kNodes; ++i) open("node-" + std::to_string(i));
  for (int round = 0; round < kRounds; ++round) {
    const std::string study = "1." + std::to_string(round);
    nodes[static_cast<std::size_t>(round % kNodes)]->add_instance(instance(dir, study, study + ".1.1"), 1000);
    std::vector<scp::Completion> got(kNodes);
    const auto thrown = race(kNodes, [&](int i) {
      got[static_cast<std::size_t>(i)] = nodes[static_cast<std::size_t>(i)]->try_complete(study, 5000, 1000);
    });
    BOOST_TEST_REQUIRE(thrown.empty(), "round " << round << ": " << (thrown.empty() ? std::string() : thrown.front()));  // front() of an empty vector is UB
    int winners = 0;
    for (const auto& c : got) {
      if (c.generation) {
        ++winners;
        BOOST_TEST(*c.generation == 1);
        BOOST_TEST(c.last_instance_ms == 1000);
      } else {
        BOOST_TEST(c.already_complete, "round " << round);
      }
      BOOST_TEST(!c.unknown);
    }
    BOOST_TEST(winners == 1, "round " << round);
    BOOST_TEST(jobs_of(*nodes[0], study) == 1u, "round " << round);
    BOOST_TEST(nodes[1]->study(study)->generation == 1);
  }
}

BOOST_FIXTURE_TEST_CASE(try_complete_waits_for_the_clusters_last_instance_and_counts_generations, Cluster) {
  auto& a = open("a");
  auto& b = open("b");
  a.add_instance(instance(dir, "2.1", "2.1.1"), 10000);
  b.add_instance(instance(dir, "2.1", "2.1.2"), 10400);  // newer, at another node

  auto c = a.try_complete("2.1", 10600, 500);  // quiet since a's instance, not since b's
  BOOST_TEST(!c.generation);
  BOOST_TEST(!c.already_complete);
  BOOST_TEST(!c.unknown);
  BOOST_TEST(c.last_instance_ms == 10400);
  BOOST_TEST((a.study("2.1")->state == scp::StudyState::open));
  BOOST_TEST(jobs_of(a, "2.1") == 0u);

  c = b.try_complete("2.1", 10900, 500);
  BOOST_TEST_REQUIRE(c.generation.has_value());
  BOOST_TEST(*c.generation == 1);
  c = a.try_complete("2.1", 11000, 500);
  BOOST_TEST(!c.generation);
  BOOST_TEST(c.already_complete);
  BOOST_TEST(a.try_complete("9.9", 11000, 500).unknown);

  // A late instance reopens it; the next completion is generation 2 with its own job.
  a.add_instance(instance(dir, "2.1", "2.1.3"), 20000);
  BOOST_TEST((b.study("2.1")->state == scp::StudyState::open));
  BOOST_TEST(!b.try_complete("2.1", 20499, 500).generation);
  c = b.try_complete("2.1", 20500, 500);
  BOOST_TEST_REQUIRE(c.generation.has_value());
  BOOST_TEST(*c.generation == 2);
  std::set<int> generations;
  for (const auto& j : a.jobs())
    if (j.study_uid == "2.1") generations.insert(j.generation);
  BOOST_TEST((generations == std::set<int>{1, 2}));
}

// ---- jobs -----------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(concurrent_claims_take_every_job_exactly_once, Cluster) {
  constexpr int kJobs = 60, kNodes = 3, kThreadsPerNode = 2;
  for (int i = 0; i < kNodes; ++i) open("node-" + std::to_string(i));
  std::set<std::int64_t> all;
  for (int i = 0; i < kJobs; ++i) all.insert(queue_job(*nodes[0], dir, "3." + std::to_string(i)));

  std::vector<std::vector<std::int64_t>> claimed(kNodes * kThreadsPerNode);
  const auto thrown = race(kNodes * kThreadsPerNode, [&](int t) {
    auto& node = *nodes[static_cast<std::size_t>(t % kNodes)];
    while (auto job = node.claim_job(5000, 60000)) {
      if (job->state != "running" || !job->taken_from.empty()) throw std::runtime_error("unexpected claim " + job->state);
      claimed[static_cast<std::size_t>(t)].push_back(job->id);
    }
  });
  BOOST_TEST_REQUIRE(thrown.empty(), (thrown.empty() ? std::string() : thrown.front()));  // front() of an empty vector is UB

  std::multiset<std::int64_t> ids;
  std::map<std::int64_t, int> owner;  // job -> node index
  for (std::size_t t = 0; t < claimed.size(); ++t)
    for (auto id : claimed[t]) {
      ids.insert(id);
      owner[id] = static_cast<int>(t % kNodes);
    }
  BOOST_TEST(ids.size() == static_cast<std::size_t>(kJobs));
  BOOST_TEST((std::set<std::int64_t>(ids.begin(), ids.end()) == all));
  BOOST_TEST(nodes[1]->count_jobs("running") == kJobs);
  BOOST_TEST(nodes[2]->count_jobs("pending") == 0);
  BOOST_TEST(!nodes[0]->claim_job(5000, 60000).has_value());
  // Each job's lease is its claimer's: only that node renews it.
  for (const auto& [id, n] : owner) {
    BOOST_TEST(!nodes[static_cast<std::size_t>((n + 1) % kNodes)]->renew_job_lease(id, 6000, 60000), id);
    BOOST_TEST(nodes[static_cast<std::size_t>(n)]->renew_job_lease(id, 6000, 60000), id);
  }
  std::string spread;
  for (std::size_t t = 0; t < claimed.size(); ++t) spread += " " + std::to_string(claimed[t].size());
  BOOST_TEST_MESSAGE("jobs claimed per thread:" << spread);
}

BOOST_FIXTURE_TEST_CASE(an_expired_lease_moves_the_job_and_fences_the_old_owner, Cluster) {
  auto& a = open("a");
  auto& b = open("b");
  const auto id = queue_job(a, dir, "4.1");

  const auto first = a.claim_job(1000, 10000);
  BOOST_TEST_REQUIRE(first.has_value());
  BOOST_TEST(first->id == id);
  BOOST_TEST(first->taken_from.empty());
  BOOST_TEST(!b.claim_job(5000, 10000).has_value());  // a's lease holds until 11000
  // a finishes one series with results and dies in the middle of the next.
  const auto done_run = a.start_series_run(id, "4.1", "4.1.1", 2000);
  scp::SeriesRunRow ended;
  ended.state = "done";
  ended.volumes = 1;
  a.finish_series_run(done_run, ended, 3000);
  std::vector<scp::ResultRow> early{result(id, "4.1", "9.1.1", "4.1.1", dir)};
  BOOST_TEST_REQUIRE(a.record_results(id, early, "vol-a", {"pacs"}, 3500, 10000));
  const auto cut_run = a.start_series_run(id, "4.1", "4.1.2", 4000);

  // Far later: the lease has expired, b takes the job over.
  const auto taken = b.claim_job(100000, 10000);
  BOOST_TEST_REQUIRE(taken.has_value());
  BOOST_TEST(taken->id == id);
  BOOST_TEST(taken->taken_from == "a");
  BOOST_TEST(taken->state == "running");
  BOOST_TEST(taken->study_uid == "4.1");
  BOOST_TEST(taken->generation == 1);
  BOOST_TEST(!a.claim_job(100001, 10000).has_value());  // b holds it now

  std::map<std::int64_t, scp::SeriesRunRow> runs;
  for (const auto& r : b.series_runs("4.1")) runs[r.id] = r;
  BOOST_TEST_REQUIRE(runs.size() == 2u);
  BOOST_TEST(runs.at(done_run).state == "done");
  BOOST_TEST(runs.at(cut_run).state == "interrupted");
  BOOST_TEST(runs.at(cut_run).ended_ms == 100000);
  BOOST_TEST(runs.at(cut_run).error.find("'a'") != std::string::npos, runs.at(cut_run).error);
  const auto finished = b.finished_series_runs(id);
  BOOST_TEST_REQUIRE(finished.size() == 1u);
  BOOST_TEST(finished[0].id == done_run);
  BOOST_TEST(finished[0].series_uid == "4.1.1");

  // The old owner is fenced: no renewal, no results, no state change.
  BOOST_TEST(!a.renew_job_lease(id, 100002, 10000));
  std::vector<scp::ResultRow> late{result(id, "4.1", "9.1.2", "4.1.2", dir), result(id, "4.1", "9.1.3", "4.1.2", dir)};
  late[1].kind = "SR";
  BOOST_TEST(!a.record_results(id, late, "vol-b", {"pacs", "archive"}, 100003, 10000));
  BOOST_TEST(late[0].id == 0);
  BOOST_TEST(late[1].id == 0);
  BOOST_TEST(b.results("4.1").size() == 1u);
  BOOST_TEST(b.outbox().size() == 1u);
  a.set_job_state(id, "failed", "a thinks it failed");
  BOOST_TEST(b.job(id)->state == "running");
  BOOST_TEST(b.job(id)->error.empty());

  // The new owner renews and records (the same SOP Instance UIDs: a's attempt left nothing).
  BOOST_TEST(b.renew_job_lease(id, 100004, 10000));
  BOOST_TEST_REQUIRE(b.record_results(id, late, "vol-b", {"pacs", "archive"}, 100005, 10000));
  BOOST_TEST(late[0].id > 0);
  BOOST_TEST(late[1].id > 0);
  BOOST_TEST(late[0].id != late[1].id);
  std::set<std::pair<std::int64_t, std::string>> queued;
  for (const auto& o : a.outbox("pending")) queued.insert({o.result_id, o.destination});
  const std::set<std::pair<std::int64_t, std::string>> expected{{early[0].id, "pacs"},
                                                                {late[0].id, "pacs"},
                                                                {late[0].id, "archive"},
                                                                {late[1].id, "pacs"},
                                                                {late[1].id, "archive"}};
  BOOST_TEST((queued == expected));
  BOOST_TEST((a.delivered_volumes(id, "4.1.2") == std::vector<std::string>{"vol-b"}));
  BOOST_TEST((a.delivered_volumes(id, "4.1.1") == std::vector<std::string>{"vol-a"}));
  BOOST_TEST(a.delivered_volumes(id, "4.1.9").empty());

  b.set_job_state(id, "done");
  BOOST_TEST(a.job(id)->state == "done");
  BOOST_TEST(!b.renew_job_lease(id, 100006, 10000));  // ended: nobody's lease
}

BOOST_FIXTURE_TEST_CASE(requeue_running_jobs_takes_back_only_this_nodes_jobs_when_shared, Cluster) {
  auto& a = open("a");
  auto& b = open("b");
  BOOST_TEST(a.shared() == testsupport::testing_postgresql());
  queue_job(a, dir, "5.1");
  queue_job(a, dir, "5.2");
  queue_job(a, dir, "5.3");
  const auto mine = a.claim_job(1000, 60000);
  const auto theirs = b.claim_job(1000, 60000);
  BOOST_TEST_REQUIRE((mine && theirs));
  const int n = a.requeue_running_jobs();
  if (a.shared()) {  // PostgreSQL: b is alive and keeps its job
    BOOST_TEST(n == 1);
    BOOST_TEST(a.job(mine->id)->state == "pending");
    BOOST_TEST(a.job(theirs->id)->state == "running");
    BOOST_TEST(b.renew_job_lease(theirs->id, 2000, 60000));
  } else {  // SQLite: one node, so every running job was left by a crash of it
    BOOST_TEST(n == 2);
    BOOST_TEST(a.job(mine->id)->state == "pending");
    BOOST_TEST(a.job(theirs->id)->state == "pending");
    BOOST_TEST(!b.renew_job_lease(theirs->id, 2000, 60000));
  }
  BOOST_TEST(a.count_jobs("pending") == (a.shared() ? 2 : 3));
}

// ---- outbox claims --------------------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(outbox_claims_never_give_a_row_to_two_nodes, Cluster) {
  constexpr int kRows = 40;
  auto& a = open("a");
  auto& b = open("b");
  const auto job = queue_job(a, dir, "6.1");
  for (int i = 0; i < kRows; ++i) {
    auto r = result(job, "6.1", "9.6." + std::to_string(i), "6.1.1", dir);
    r.id = a.add_result(r);
    a.enqueue(r, {"pacs", "archive"}, 1000);
  }
  std::set<std::int64_t> pacs_rows;
  for (const auto& o : a.outbox())
    if (o.destination == "pacs") pacs_rows.insert(o.id);
  BOOST_TEST_REQUIRE(pacs_rows.size() == static_cast<std::size_t>(kRows));

  // Two threads per node, three rows a claim, until nothing is left.
  std::vector<std::vector<std::int64_t>> got(4);
  const auto thrown = race(4, [&](int t) {
    auto& node = t % 2 ? b : a;
    for (;;) {
      const auto rows = node.claim_due("pacs", 2000, 3, 60000);
      if (rows.empty()) return;
      for (const auto& o : rows) {
        if (o.destination != "pacs" || o.state != "pending") throw std::runtime_error("claimed " + o.destination + " " + o.state);
        got[static_cast<std::size_t>(t)].push_back(o.id);
      }
    }
  });
  BOOST_TEST_REQUIRE(thrown.empty(), (thrown.empty() ? std::string() : thrown.front()));  // front() of an empty vector is UB
  std::multiset<std::int64_t> ids;
  for (const auto& g : got) ids.insert(g.begin(), g.end());
  BOOST_TEST(ids.size() == static_cast<std::size_t>(kRows));
  BOOST_TEST((std::set<std::int64_t>(ids.begin(), ids.end()) == pacs_rows));

  // Claimed rows stay with their node until the claim runs out (62000) or the node releases them.
  BOOST_TEST(a.claim_due("pacs", 3000, 100, 60000).empty());
  BOOST_TEST(b.claim_due("pacs", 62000, 100, 60000).empty());
  const auto first = *pacs_rows.begin(), second = *std::next(pacs_rows.begin());
  a.mark_retry(first, 5000, "connection refused", 3000);  // released, due again at 5000
  BOOST_TEST(b.claim_due("pacs", 4999, 100, 60000).empty());
  const auto again = b.claim_due("pacs", 5000, 100, 60000);
  BOOST_TEST_REQUIRE(again.size() == 1u);
  BOOST_TEST(again[0].id == first);
  BOOST_TEST(again[0].attempts == 1);
  a.mark_sent(second, 5000);  // released, and never due again
  const auto expired = a.claim_due("pacs", 62001, 100, 60000);
  std::set<std::int64_t> rest;
  for (const auto& o : expired) rest.insert(o.id);
  auto expected = pacs_rows;
  expected.erase(first);   // b's new claim runs until 65000
  expected.erase(second);  // sent
  BOOST_TEST((rest == expected));
  // Another destination's rows are claimed on their own.
  const auto archive = b.claim_due("archive", 2000, 100, 60000);
  BOOST_TEST(archive.size() == static_cast<std::size_t>(kRows));
  for (const auto& o : archive) BOOST_TEST(!pacs_rows.count(o.id));
}

// ---- named leases, heartbeats, counts -------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(a_named_lease_has_one_holder_who_renews_it_until_it_expires, Cluster) {
  for (const char* n : {"a", "b", "c"}) open(n);
  std::vector<int> held(3, 0);
  auto thrown = race(3, [&](int i) { held[static_cast<std::size_t>(i)] = nodes[static_cast<std::size_t>(i)]->hold_lease("retention", 1000, 5000); });
  BOOST_TEST_REQUIRE(thrown.empty(), (thrown.empty() ? std::string() : thrown.front()));  // front() of an empty vector is UB
  BOOST_TEST(held[0] + held[1] + held[2] == 1);
  const auto holder = static_cast<std::size_t>(std::find(held.begin(), held.end(), 1) - held.begin());
  const auto other1 = (holder + 1) % 3, other2 = (holder + 2) % 3;
  BOOST_TEST(!nodes[other1]->hold_lease("retention", 3000, 5000));
  BOOST_TEST(nodes[holder]->hold_lease("retention", 4000, 5000));  // renewed until 9000
  BOOST_TEST(!nodes[other2]->hold_lease("retention", 8000, 5000));
  BOOST_TEST(!nodes[other1]->hold_lease("retention", 9000, 5000));
  BOOST_TEST(nodes[other1]->hold_lease("other", 8000, 5000));  // names are independent

  // Expired: the two others race for it, one wins; the old holder is out.
  std::fill(held.begin(), held.end(), 0);
  thrown = race(2, [&](int i) {
    const auto n = i == 0 ? other1 : other2;
    held[n] = nodes[n]->hold_lease("retention", 9001, 5000);
  });
  BOOST_TEST_REQUIRE(thrown.empty(), (thrown.empty() ? std::string() : thrown.front()));  // front() of an empty vector is UB
  BOOST_TEST(held[other1] + held[other2] == 1);
  BOOST_TEST(!nodes[holder]->hold_lease("retention", 9002, 5000));
  const auto next = held[other1] ? other1 : other2;
  BOOST_TEST(nodes[next]->hold_lease("retention", 9003, 5000));
}

BOOST_FIXTURE_TEST_CASE(heartbeats_list_every_node_and_counts_come_from_the_shared_index, Cluster) {
  auto& a = open("node-a");
  auto& b = open("node-b");
  BOOST_TEST(a.nodes().empty());
  a.heartbeat(100, 200, true, R"({"jobs":1})");
  b.heartbeat(150, 250, false, "{}");
  auto seen = b.nodes();
  BOOST_TEST_REQUIRE(seen.size() == 2u);
  BOOST_TEST(seen[0].name == "node-a");
  BOOST_TEST(seen[0].started_ms == 100);
  BOOST_TEST(seen[0].last_seen_ms == 200);
  BOOST_TEST(seen[0].receive);
  BOOST_TEST(seen[0].info == R"({"jobs":1})");
  BOOST_TEST(seen[1].name == "node-b");
  BOOST_TEST(!seen[1].receive);
  a.heartbeat(100, 900, true, R"({"jobs":2})");
  seen = b.nodes();
  BOOST_TEST_REQUIRE(seen.size() == 2u);
  BOOST_TEST(seen[0].last_seen_ms == 900);
  BOOST_TEST(seen[0].info == R"({"jobs":2})");
  BOOST_TEST(seen[1].last_seen_ms == 250);

  for (const char* s : {"8.1", "8.2", "8.3", "8.4"}) queue_job(a, dir, s);
  const auto running = b.claim_job(1000, 60000);
  const auto ended = a.claim_job(1000, 60000);
  BOOST_TEST_REQUIRE((running && ended));
  a.set_job_state(ended->id, "failed", "no series");
  BOOST_TEST(a.count_jobs("pending") == 2);
  BOOST_TEST(b.count_jobs("running") == 1);
  BOOST_TEST(b.count_jobs("failed") == 1);
  BOOST_TEST(a.count_jobs("done") == 0);
}

// ---- the assembler on a shared index --------------------------------------------------------

namespace {

// Two or more assemblers (one per node) on one io_context, run on the test's thread.
struct Assemblers : Cluster {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard = boost::asio::make_work_guard(io);
  struct Done {
    std::string node, study;
    int generation;
    std::chrono::steady_clock::time_point at;
  };
  std::vector<Done> done;

  std::unique_ptr<scp::StudyAssembler> assembler(scp::Index& index, std::chrono::milliseconds quiet,
                                                 std::chrono::milliseconds grace, std::chrono::milliseconds sweep = 2s) {
    return std::make_unique<scp::StudyAssembler>(
        io, index, scp::StudyAssembler::Options{quiet, grace, true, sweep}, [this, &index](const std::string& s, int g) {
          done.push_back({index.node(), s, g, std::chrono::steady_clock::now()});
        });
  }
  // Indexes an instance at this node, as its SCP does, and tells its assembler.
  void receive(scp::Index& index, scp::StudyAssembler& a, const std::string& study, const std::string& sop,
               std::optional<long> study_total = {}) {
    auto in = instance(dir, study, sop);
    in.header.number_of_study_related_instances = study_total;
    const bool is_new = index.add_instance(in, scp::wall_ms());
    a.on_instance(in.header, is_new);
  }
  // Runs the event loop until `until` holds or the limit; whether it held.
  bool run_until(const std::function<bool()>& until, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!until() && std::chrono::steady_clock::now() < end) io.run_for(10ms);
    return until();
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(an_announced_study_count_split_over_two_nodes_completes_once_without_the_quiet_time, Assemblers) {
  auto& ia = open("a");
  auto& ib = open("b");
  // A quiet time the test never waits for: completing proves the counts decided.
  auto a = assembler(ia, 30s, 100ms);
  auto b = assembler(ib, 30s, 100ms);
  const auto t0 = std::chrono::steady_clock::now();
  receive(ia, *a, "10.1", "10.1.1", 4);
  receive(ib, *b, "10.1", "10.1.2", 4);
  receive(ia, *a, "10.1", "10.1.3", 4);
  receive(ib, *b, "10.1", "10.1.4", 4);  // each node saw 2 of 4
  BOOST_TEST_REQUIRE(run_until([&] { return !done.empty(); }, 10s));
  BOOST_TEST((done[0].at - t0 < 10s));
  // The other node finds it complete and lets go.
  BOOST_TEST_REQUIRE(run_until([&] { return a->open_studies() == 0 && b->open_studies() == 0; }, 10s));
  BOOST_TEST(done.size() == 1u);
  BOOST_TEST(done[0].study == "10.1");
  BOOST_TEST(done[0].generation == 1);
  BOOST_TEST(jobs_of(ia, "10.1") == 1u);
  BOOST_TEST(ib.study("10.1")->instance_count == 4);
}

BOOST_FIXTURE_TEST_CASE(without_counts_a_split_study_completes_once_after_the_quiet_time_of_its_last_instance, Assemblers) {
  auto& ia = open("a");
  auto& ib = open("b");
  constexpr auto kQuiet = 500ms;
  auto a = assembler(ia, kQuiet, 0ms);
  auto b = assembler(ib, kQuiet, 0ms);
  receive(ia, *a, "11.1", "11.1.1");
  const auto first = std::chrono::steady_clock::now();
  // The second instance reaches the other node 300 ms later: a's own quiet time ends first, but
  // the study is not quiet cluster-wide then.
  BOOST_TEST_REQUIRE(run_until([&] { return std::chrono::steady_clock::now() - first >= 300ms; }, 5s));
  BOOST_TEST(done.empty());
  const auto last = std::chrono::steady_clock::now();
  receive(ib, *b, "11.1", "11.1.2");
  BOOST_TEST_REQUIRE(run_until([&] { return !done.empty(); }, 10s));
  BOOST_TEST_REQUIRE(run_until([&] { return a->open_studies() == 0 && b->open_studies() == 0; }, 10s));
  BOOST_TEST(done.size() == 1u);
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(done[0].at - last);
  BOOST_TEST(waited.count() >= (kQuiet - 10ms).count(), "completed " << waited.count() << " ms after the last instance");
  BOOST_TEST(jobs_of(ia, "11.1") == 1u);
  BOOST_TEST(ia.study("11.1")->instance_count == 2);
}

BOOST_FIXTURE_TEST_CASE(a_node_adopts_an_open_study_whose_node_died, Assemblers) {
  auto& ia = open("a");
  auto& ib = open("b");
  constexpr auto kQuiet = 500ms;
  auto b = assembler(ib, kQuiet, 0ms, 150ms);
  b->restore();  // b starts with an empty index and sweeps every 150 ms
  bool restored = false;
  boost::asio::post(io, [&] { restored = true; });
  BOOST_TEST_REQUIRE(run_until([&] { return restored; }, 5s));
  BOOST_TEST(b->open_studies() == 0u);
  {
    auto a = assembler(ia, kQuiet, 0ms, 150ms);
    receive(ia, *a, "12.1", "12.1.1");
    receive(ia, *a, "12.1", "12.1.2");
    BOOST_TEST_REQUIRE(run_until([&] { return a->open_studies() == 1u; }, 5s));
  }  // a dies before the quiet time: nobody waits for 12.1 but the index knows it
  const auto died = std::chrono::steady_clock::now();
  BOOST_TEST_REQUIRE(run_until([&] { return b->open_studies() == 1u || !done.empty(); }, 5s));  // b's sweep found it
  BOOST_TEST_REQUIRE(run_until([&] { return !done.empty(); }, 10s));
  BOOST_TEST(done.size() == 1u);
  BOOST_TEST(done[0].node == "b");
  BOOST_TEST(done[0].study == "12.1");
  BOOST_TEST(done[0].generation == 1);
  BOOST_TEST((done[0].at - died < 10s));
  BOOST_TEST(b->open_studies() == 0u);
  BOOST_TEST(jobs_of(ib, "12.1") == 1u);
  BOOST_TEST(ib.study("12.1")->instance_count == 2);
}
