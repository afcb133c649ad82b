#define BOOST_TEST_MODULE scp_cluster
// Three pacsnode daemons on one PostgreSQL index (a throwaway cluster of the test's own) and one
// shared storage root, as behind a load balancer (issue 14): a study whose instances reach
// different nodes completes once and Orthanc receives exactly one SEG and one SR; a node killed
// with SIGKILL in the middle of a job loses its lease and another node finishes the job, still
// exactly once; PostgreSQL restarting under load makes a node refuse C-STORE (transient) without
// acknowledging anything it has not recorded, and the node carries on once it is back.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "scp/index.h"
#include "support/orthanc.h"
#include "support/pg.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

const char* const kToken = "cluster-test-token-0123456789";

// A PostgreSQL server, a database for the cluster, an Orthanc as the PACS and a shared root.
struct Cluster {
  fs::path dir = make_temp_dir("cluster");
  PgCluster pg;
  std::string dsn;
  Orthanc pacs;
  fs::path shared = dir / "shared";
  std::vector<std::unique_ptr<Daemon>> nodes;

  Cluster() {
    pg_detail::create_database(pg.dsn(), "pacsnode");
    dsn = pg_detail::with_database(pg.dsn(), "pacsnode");
  }
  ~Cluster() {
    for (auto& n : nodes)
      if (n->running()) n->stop();
    fs::remove_all(dir);
  }

  Daemon& add(const std::string& name, bool receive = true, int quiet_seconds = 3, std::uint16_t http_port = 0) {
    DaemonOptions opt;
    opt.quiet_seconds = quiet_seconds;
    opt.storage_root = shared;
    opt.node_extra = fmt::format("name = \"{}\"\nreceive = {}\n", name, receive ? "true" : "false");
    opt.index_toml = fmt::format("\n[index]\nbackend = \"postgresql\"\ndsn = \"{}\"\nlease_seconds = 6\npoll_seconds = 1\n", dsn);
    opt.extra = fmt::format("[[destination]]\nname = \"pacs\"\nae_title = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n"
                            "[outbound]\ninitial_backoff_seconds = 1\nmax_backoff_seconds = 2\nconnect_timeout_seconds = 5\n",
                            pacs.aet(), pacs.dicom_port());
    if (http_port)
      opt.extra += fmt::format("[http]\nenabled = true\nport = {}\ntoken = \"{}\"\n", http_port, kToken);
    fs::create_directories(dir / name);
    nodes.push_back(std::make_unique<Daemon>(dir / name, opt));
    auto& d = *nodes.back();
    if (receive) {
      d.start();
    } else {  // no DICOM port to wait for: wait for its start in the log
      start_without_port(d);
    }
    return d;
  }

  static void start_without_port(Daemon& d) {
    d.start_process();
    BOOST_TEST_REQUIRE(eventually([&] { return !d.running() || d.log().find("analysis-only node") != std::string::npos; }, 30s),
                       d.log());
    BOOST_TEST_REQUIRE(d.running(), d.log());
  }

  scp::Index index() const { return scp::Index(scp::IndexSettings{"postgresql", {}, dsn, "test"}); }

  std::string logs() const {
    std::string all;
    for (const auto& n : nodes) all += "---- " + n->dir().filename().string() + "\n" + n->log();
    return all;
  }
};

// The files of `series` dealt round-robin into `parts` folders (symlinks), as a load balancer
// spreads a study's associations over the nodes.
std::vector<fs::path> deal(const fs::path& series, const fs::path& into, int parts) {
  std::vector<fs::path> files, dirs;
  for (const auto& e : fs::directory_iterator(series))
    if (e.path().extension() == ".dcm") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (int i = 0; i < parts; ++i) {
    dirs.push_back(into / fmt::format("part{}", i));
    fs::create_directories(dirs.back());
  }
  for (std::size_t i = 0; i < files.size(); ++i) fs::create_symlink(files[i], dirs[i % parts] / files[i].filename());
  return dirs;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + what.size())) ++n;
  return n;
}

bool all_jobs_done(const Cluster& c, std::size_t expected) {
  const auto jobs = c.index().jobs();
  return jobs.size() == expected && std::all_of(jobs.begin(), jobs.end(), [](const scp::JobRow& j) { return j.state == "done"; });
}

bool outbox_settled(const Cluster& c) {
  const auto rows = c.index().outbox();
  return !rows.empty() && std::all_of(rows.begin(), rows.end(), [](const scp::OutboxRow& r) { return r.state == "sent"; });
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_study_spread_over_three_nodes_completes_once_and_the_pacs_gets_one_seg_and_one_sr) {
  Cluster c;
  const std::uint16_t http = free_port();
  auto& n1 = c.add("n1", true, 3, http);
  auto& n2 = c.add("n2");
  auto& n3 = c.add("n3");
  const auto ct = ct_phantom(c.dir, 36, 128, 3);
  const auto parts = deal(ct, c.dir / "parts", 3);
  // Three associations at once, one per node.
  std::vector<RunResult> sent(3);
  std::vector<std::thread> senders;
  Daemon* to[3] = {&n1, &n2, &n3};
  for (int i = 0; i < 3; ++i) senders.emplace_back([&, i] { sent[i] = to[i]->store({parts[i].string()}); });
  for (auto& t : senders) t.join();
  for (int i = 0; i < 3; ++i) BOOST_TEST_REQUIRE(sent[i].exit_code == 0, sent[i].output);

  BOOST_TEST_REQUIRE(eventually([&] { return all_jobs_done(c, 1) && outbox_settled(c); }, 180s), c.logs());
  auto index = c.index();
  // Every instance once in the shared index, one study, completed once, one job.
  const auto studies = index.studies();
  BOOST_TEST_REQUIRE(studies.size() == 1u);
  BOOST_TEST(studies[0].instance_count == 36);
  BOOST_TEST(studies[0].generation == 1);
  BOOST_TEST(index.jobs().size() == 1u);
  BOOST_TEST(count(c.logs(), "complete (") == 1u, c.logs());
  // One SEG and one SR, each sent once to the one destination.
  const auto results = index.results();
  BOOST_TEST(results.size() == 2u);
  const auto outbox = index.outbox();
  BOOST_TEST(outbox.size() == 2u);
  for (const auto& o : outbox) BOOST_TEST(o.attempts == 1, "outbox #" << o.id << " attempts " << o.attempts);
  BOOST_TEST_REQUIRE(c.pacs.wait_for([&] { return c.pacs.count_instances() == 2; }, 30s), c.logs());
  std::set<std::string> modalities;
  for (const auto& id : c.pacs.instances()) modalities.insert(c.pacs.instance_tag(id, "Modality").value_or(""));
  BOOST_TEST((modalities == std::set<std::string>{"SEG", "SR"}));

  // Each node's heartbeat is in the cluster view of every node's status.
  BOOST_TEST(eventually([&] { return index.nodes().size() == 3u; }, 20s));
  for (const char* name : {"n1", "n2", "n3"}) {
    const fs::path status = c.shared / "nodes" / name / "status.json";
    BOOST_TEST_REQUIRE(eventually([&] { return fs::exists(status); }, 20s), status.string());
    const auto check = run({python(), "-c",
                            "import json,sys; s=json.load(open(sys.argv[1])); "
                            "print(s['node'], sorted(n['name'] for n in s.get('cluster', [])))",
                            status.string()});
    BOOST_TEST(check.exit_code == 0, check.output);
    BOOST_TEST(eventually([&] {
                 return run({python(), "-c",
                             "import json,sys; s=json.load(open(sys.argv[1])); "
                             "sys.exit(0 if sorted(n['name'] for n in s.get('cluster', [])) == ['n1','n2','n3'] else 1)",
                             status.string()}).exit_code == 0;
               }, 20s), check.output);
  }
  // n1's metrics show every node's heartbeat age.
  const auto metrics = run({"curl", "-s", "-f", "-H", std::string("Authorization: Bearer ") + kToken,
                            fmt::format("http://127.0.0.1:{}/metrics", http)});
  BOOST_TEST_REQUIRE(metrics.exit_code == 0, metrics.output);
  for (const char* name : {"n1", "n2", "n3"})
    BOOST_TEST(metrics.output.find(fmt::format("pacsnode_cluster_node_heartbeat_age_seconds{{node=\"{}\"}}", name)) !=
                   std::string::npos,
               metrics.output);
  for (auto& n : c.nodes) BOOST_TEST(n->stop() == 0, n->log());
  for (const char* phi : {"PHANTOM", "PH0001", "ACC0001", "password"}) BOOST_TEST(c.logs().find(phi) == std::string::npos, phi);
}

BOOST_AUTO_TEST_CASE(a_node_killed_mid_job_loses_its_lease_and_another_node_finishes_the_job_once) {
  Cluster c;
  auto& receiver = c.add("rx");
  c.add("w1", false);
  c.add("w2", false);
  const auto ct = ct_phantom(c.dir, 64, 256, 5);
  BOOST_TEST_REQUIRE(receiver.store({ct.string()}).exit_code == 0);

  // The node that takes the job is killed while the job runs there.
  std::string owner;
  BOOST_TEST_REQUIRE(eventually([&] {
                       for (const auto& j : c.index().jobs("running")) owner = j.owner;
                       return !owner.empty();
                     }, 120s, 20ms),
                     c.logs());
  Daemon* victim = nullptr;
  for (auto& n : c.nodes)
    if (n->dir().filename() == owner) victim = n.get();
  BOOST_TEST_REQUIRE(victim != nullptr, owner);
  victim->kill9();
  BOOST_TEST_MESSAGE("killed node " << owner << " while it ran the job");

  // Another node takes the job over once the lease (6 s) has expired, and finishes it.
  BOOST_TEST_REQUIRE(eventually([&] { return all_jobs_done(c, 1) && outbox_settled(c); }, 180s), c.logs());
  auto index = c.index();
  const auto jobs = index.jobs();
  BOOST_TEST(jobs[0].owner != owner);
  BOOST_TEST(c.logs().find("taken over from node '" + owner + "'") != std::string::npos, c.logs());
  // Exactly one SEG and one SR recorded and in the PACS, whatever the killed node had done.
  BOOST_TEST(index.results().size() == 2u);
  BOOST_TEST_REQUIRE(c.pacs.wait_for([&] { return c.pacs.count_instances() == 2; }, 30s), c.logs());
  const auto runs = index.series_runs(jobs[0].study_uid);
  BOOST_TEST(std::count_if(runs.begin(), runs.end(), [](const scp::SeriesRunRow& r) { return r.state == "done"; }) == 1);
  for (auto& n : c.nodes)
    if (n.get() != victim) BOOST_TEST(n->stop() == 0, n->log());
}

BOOST_AUTO_TEST_CASE(postgresql_restarting_under_load_refuses_transiently_and_acknowledges_nothing_unrecorded) {
  Cluster c;
  auto& n1 = c.add("n1", true, 2);
  const auto ct = ct_phantom(c.dir, 120, 128, 9);

  // storescu sends while PostgreSQL restarts.
  RunResult first;
  std::thread sender([&] { first = n1.store({ct.string()}); });
  BOOST_TEST_REQUIRE(eventually([&] { return c.index().studies().size() == 1u; }, 30s, 5ms), n1.log());
  c.pg.restart();
  sender.join();
  const std::size_t acknowledged = count(first.output, "Received Store Response (Success)");
  const std::size_t refused = count(first.output, "Received Store Response (Refused: OutOfResources)");
  BOOST_TEST_MESSAGE("first send: " << acknowledged << " acknowledged, " << refused << " refused while PostgreSQL restarted");
  // Nothing acknowledged without its row: every success is in the index.
  std::size_t rows = 0;
  BOOST_TEST_REQUIRE(eventually([&] {
                       try {
                         rows = c.index().instances_of(c.index().studies().at(0).study_uid).size();
                         return true;
                       } catch (const std::exception&) {
                         return false;
                       }
                     }, 30s),
                     n1.log());
  BOOST_TEST(rows >= acknowledged, rows << " rows for " << acknowledged << " acknowledged instances");
  BOOST_TEST(refused > 0u, "the restart refused nothing:\n" << first.output);
  BOOST_TEST(n1.log().find("the shared index cannot record it") != std::string::npos, n1.log());

  // The node reconnects by itself: the sender sends again and everything is recorded.
  BOOST_TEST_REQUIRE(eventually([&] { return n1.store({ct.string()}).exit_code == 0; }, 60s, 1000ms), n1.log());
  auto index = c.index();
  BOOST_TEST(index.instances_of(index.studies().at(0).study_uid).size() == 120u);
  BOOST_TEST_REQUIRE(eventually([&] { return all_jobs_done(c, 1) && outbox_settled(c); }, 180s), n1.log());
  BOOST_TEST(index.results().size() == 2u);
  BOOST_TEST(n1.stop() == 0, n1.log());
}

BOOST_AUTO_TEST_CASE(deliveries_to_a_pacs_that_is_down_are_retried_by_the_cluster_and_arrive_once) {
  Cluster c;
  auto& n1 = c.add("n1");
  c.add("n2");
  c.pacs.stop();
  const auto ct = ct_phantom(c.dir, 30, 128, 11);
  BOOST_TEST_REQUIRE(n1.store({ct.string()}).exit_code == 0);
  // Both objects fail at least twice while the PACS is down (backoff 1-2 s), whichever node tries.
  BOOST_TEST_REQUIRE(eventually([&] {
                       const auto rows = c.index().outbox();
                       return rows.size() == 2u && std::all_of(rows.begin(), rows.end(), [](const scp::OutboxRow& r) {
                                return r.state == "pending" && r.attempts >= 2;
                              });
                     }, 180s, 200ms),
                     c.logs());
  c.pacs.start();
  BOOST_TEST_REQUIRE(eventually([&] { return outbox_settled(c); }, 60s), c.logs());
  BOOST_TEST_REQUIRE(c.pacs.wait_for([&] { return c.pacs.count_instances() == 2; }, 30s), c.logs());
  // Each object was sent successfully once, by one node: the successes the nodes log add up to 2.
  std::size_t successes = 0;
  const std::regex sent(R"((\d+) object\(s\) sent in|\): (\d+) sent, \d+ to retry)");
  const std::string logs = c.logs();
  for (auto it = std::sregex_iterator(logs.begin(), logs.end(), sent); it != std::sregex_iterator(); ++it)
    successes += std::stoul((*it)[1].matched ? (*it)[1].str() : (*it)[2].str());
  BOOST_TEST(successes == 2u, logs);
  for (const auto& o : c.index().outbox()) BOOST_TEST(o.state == "sent");
  for (auto& n : c.nodes) BOOST_TEST(n->stop() == 0, n->log());
}
