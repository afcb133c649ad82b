#define BOOST_TEST_MODULE scp_http_api
// The HTTP API without sockets (scp/http_api.h): decoding, escaping, the token, the routes' status
// codes and the metrics text on an empty index.
#include <boost/test/unit_test.hpp>

#include <nlohmann/json.hpp>

#include "scp/http_api.h"
#include "scp/http_page.h"
#include "support/daemon_fixture.h"
#include "support/index_rows.h"
#include "support/test_index.h"

namespace fs = std::filesystem;
using scp::HttpRequest;

namespace {

const std::string kToken = "unit-token-0123456789";

struct Fixture {
  Fixture()
      : dir(testsupport::make_temp_dir("http-api-unit")),
        index(testsupport::index_settings_for(dir)),
        live(config::load_default()),
        api(kToken, scp::HttpSources{&index, dir, &live, [this] { return status; }, [] { return std::string("{}\n"); },
                                     [this] { return health; }, [] { return std::uint64_t{3}; }, {}}) {}
  ~Fixture() { fs::remove_all(dir); }
  HttpRequest get(const std::string& target, bool token = true) const {
    HttpRequest r;
    r.method = "GET";
    r.target = target;
    if (token) r.authorization = "Bearer " + kToken;
    return r;
  }
  fs::path dir;
  scp::Index index;
  config::LiveConfig live;
  scp::Status status;
  scp::Health health;
  scp::HttpApi api;
};

}  // namespace

BOOST_AUTO_TEST_CASE(url_decoding_and_queries) {
  BOOST_TEST(scp::url_decode("a%20b+c", true).value() == "a b c");
  BOOST_TEST(scp::url_decode("a+b", false).value() == "a+b");
  BOOST_TEST(!scp::url_decode("%zz", false).has_value());
  BOOST_TEST(!scp::url_decode("abc%2", false).has_value());
  BOOST_TEST(!scp::url_decode("%", false).has_value());
  const auto q = scp::parse_query("state=open&since=5&x");
  BOOST_TEST_REQUIRE(q.has_value());
  BOOST_TEST(q->at("state") == "open");
  BOOST_TEST(q->at("since") == "5");
  BOOST_TEST(q->at("x") == "");
  BOOST_TEST(!scp::parse_query("a=%G0").has_value());
}

BOOST_AUTO_TEST_CASE(escaping) {
  BOOST_TEST(scp::prometheus_label("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
  BOOST_TEST(scp::http_page::escape("<a href='x'>&\"</a>") == "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
}

BOOST_FIXTURE_TEST_CASE(token_and_status_codes, Fixture) {
  BOOST_TEST(api.handle(get("/healthz", false)).status == 200);
  health.state = scp::HealthState::failing;
  BOOST_TEST(api.handle(get("/healthz", false)).status == 503);
  BOOST_TEST(api.handle(get("/readyz")).status == 503);
  health.state = scp::HealthState::degraded;
  BOOST_TEST(api.handle(get("/healthz", false)).body == "degraded\n");
  BOOST_TEST(api.handle(get("/readyz")).status == 200);

  BOOST_TEST(api.handle(get("/metrics", false)).status == 401);
  auto wrong = get("/metrics", false);
  wrong.authorization = "Bearer " + kToken + "x";
  BOOST_TEST(api.handle(wrong).status == 401);
  wrong.authorization = "Bearer " + kToken.substr(0, kToken.size() - 1);
  BOOST_TEST(api.handle(wrong).status == 401);
  BOOST_TEST(api.handle(get("/", false)).status == 303);
  BOOST_TEST(api.handle(get("/")).status == 200);
  BOOST_TEST(api.handle(get("/api/v1/studies")).status == 200);
  BOOST_TEST(api.handle(get("/api/v1/studies/s-0123456789ab")).status == 404);
  BOOST_TEST(api.handle(get("/api/v1/studies/../x")).status == 404);
  BOOST_TEST(api.handle(get("/studies/nothing")).status == 404);
  BOOST_TEST(api.handle(get("/files/results/s-0123456789ab-g1/../../index.sqlite")).status == 404);
  BOOST_TEST(api.handle(get("/nothing")).status == 404);
  BOOST_TEST(api.handle(get("/api/v1/studies/s-0123456789ab/reanalyse")).status == 405);
  HttpRequest again = get("/api/v1/studies/s-0123456789ab/reanalyse");
  again.method = "POST";
  BOOST_TEST(api.handle(again).status == 404);
  BOOST_TEST(api.handle(get("no-slash")).status == 400);

  HttpRequest post = get("/api/v1/outbox/retry");
  post.method = "POST";
  post.body = "{}";
  const auto r = api.handle(post);
  BOOST_TEST(r.status == 200);
  BOOST_TEST(nlohmann::json::parse(r.body).at("retried") == 0);
  post.authorization.clear();
  post.cookie = "other=1; pacsnode_token=" + kToken;
  BOOST_TEST(api.handle(post).status == 403);  // the cookie alone cannot change anything
  post.action_header = "1";
  BOOST_TEST(api.handle(post).status == 200);
}

BOOST_FIXTURE_TEST_CASE(metrics_text_has_help_type_and_every_reason, Fixture) {
  status.instances_stored = 7;
  status.rejections = {{"called_ae_title", 2}, {"pending_limit", 0}};
  const std::string m = api.metrics();
  BOOST_TEST(m.find("# TYPE pacsnode_instances_stored_total counter\npacsnode_instances_stored_total 7\n") != std::string::npos, m);
  BOOST_TEST(m.find("pacsnode_rejections_total{reason=\"called_ae_title\"} 2\n") != std::string::npos, m);
  BOOST_TEST(m.find("pacsnode_worker_crashes_total 3\n") != std::string::npos, m);
  BOOST_TEST(m.find("pacsnode_jobs{state=\"failed\"} 0\n") != std::string::npos, m);
  // Every sample line belongs to a family announced by # TYPE just before.
  std::istringstream in(m);
  std::string line, family;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) family = line.substr(7, line.find(' ', 7) - 7);
    else if (line.rfind("#", 0) != 0) BOOST_TEST(line.rfind(family, 0) == 0u, line);
  }
}

BOOST_FIXTURE_TEST_CASE(metrics_durations_failures_deliveries_refusals_and_retention, Fixture) {
  scp::NodeMetrics nm;
  nm.job_seconds.observe(3.0);
  nm.job_seconds.observe(45.0);
  nm.stage_seconds.observe("segment", 0.2);
  nm.stage_seconds.observe("decode", 0.5);
  nm.worker_failures.add({"crashed", "SIGSEGV"});
  nm.worker_failures.add({"memory limit", ""});
  nm.deliveries.add({"pacs", "sent"}, 2);
  nm.deliveries.add({"pacs", "dead"});
  scp::RetentionStats rs;
  rs.runs = 4;
  rs.deleted[0].items = 3;
  rs.deleted[0].bytes = 1000;
  status.refusals = {{"malformed", 2}, {"too_large", 0}};
  const scp::HttpApi with(kToken, scp::HttpSources{&index, dir, &live, [this] { return status; },
                                                   [] { return std::string("{}\n"); }, [this] { return health; },
                                                   [] { return std::uint64_t{0}; }, {}, {}, &nm, [&rs] { return rs; }});
  const std::string m = with.metrics();
  for (const char* expected : {
           "# TYPE pacsnode_job_duration_seconds histogram\n",
           "pacsnode_job_duration_seconds_bucket{le=\"2\"} 0\n",
           "pacsnode_job_duration_seconds_bucket{le=\"5\"} 1\n",
           "pacsnode_job_duration_seconds_bucket{le=\"60\"} 2\n",
           "pacsnode_job_duration_seconds_bucket{le=\"+Inf\"} 2\n",
           "pacsnode_job_duration_seconds_sum 48\n",
           "pacsnode_job_duration_seconds_count 2\n",
           "pacsnode_stage_duration_seconds_bucket{stage=\"segment\",le=\"0.1\"} 0\n",
           "pacsnode_stage_duration_seconds_bucket{stage=\"segment\",le=\"0.25\"} 1\n",
           "pacsnode_stage_duration_seconds_count{stage=\"decode\"} 1\n",
           "pacsnode_worker_failures_total{outcome=\"crashed\",signal=\"SIGSEGV\"} 1\n",
           "pacsnode_worker_failures_total{outcome=\"memory limit\",signal=\"\"} 1\n",
           "pacsnode_deliveries_total{destination=\"pacs\",outcome=\"sent\"} 2\n",
           "pacsnode_deliveries_total{destination=\"pacs\",outcome=\"dead\"} 1\n",
           "pacsnode_instances_refused_total{reason=\"malformed\"} 2\n",
           "pacsnode_instances_refused_total{reason=\"too_large\"} 0\n",
           "pacsnode_retention_deleted_total{area=\"incoming\"} 3\n",
           "pacsnode_retention_deleted_total{area=\"quarantine\"} 0\n",
           "pacsnode_retention_deleted_bytes_total{area=\"incoming\"} 1000\n",
           "pacsnode_retention_runs_total 4\n"})
    BOOST_TEST(m.find(expected) != std::string::npos, expected);
  std::istringstream in(m);
  std::string line, family;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) family = line.substr(7, line.find(' ', 7) - 7);
    else if (line.rfind("#", 0) != 0) BOOST_TEST(line.rfind(family, 0) == 0u, line);
  }
}

BOOST_AUTO_TEST_CASE(study_page_survives_any_features_json) {
  scp::http_page::StudyDetail d;
  d.id = "s-0123456789ab";
  d.results_tag = "s-0123456789ab-g1";
  d.previews = {"a<b>.png"};
  for (const char* text : {R"({"series": [{"key": 1, "segments": [{"label": 1, "name": "body", "features": {"volume_ml": 2.5}}]}]})",
                           R"({"series": [{"segments": 5, "timings_ms": []}]})", R"({"series": 3})", R"([1, 2])", "null"}) {
    d.features = nlohmann::json::parse(text);
    const auto r = scp::http_page::study(d);
    BOOST_TEST(r.status == 200, text);
    BOOST_TEST(r.body.find("a&lt;b&gt;.png") != std::string::npos);
    BOOST_TEST(r.body.find("<b>") == std::string::npos);
  }
  d.features = nlohmann::json::parse(R"({"series": [{"key": "k", "profile": "ct-chest", "segments": [{"label": 1, "name": "body", "features": {"volume_ml": 2.5}}]}]})");
  const auto r = scp::http_page::study(d);
  BOOST_TEST(r.body.find("volume_ml: 2.5") != std::string::npos, r.body);
  BOOST_TEST(r.body.find("Key images") == std::string::npos);  // none written

  // Key images (analysis.key_images) get their own section, after the previews.
  d.previews = {"k_key_01.png", "k_key_02.png", "k_preview.png"};
  const auto with_keys = scp::http_page::study(d).body;
  const auto section = with_keys.find("<h3>Key images</h3>");
  BOOST_TEST_REQUIRE(section != std::string::npos, with_keys);
  BOOST_TEST(with_keys.find("class=\"preview\" src=\"/files/results/s-0123456789ab-g1/k_preview.png\"") < section);
  BOOST_TEST(with_keys.find("class=\"key-image\" src=\"/files/results/s-0123456789ab-g1/k_key_01.png\"") > section);
  BOOST_TEST(with_keys.find("class=\"key-image\" src=\"/files/results/s-0123456789ab-g1/k_key_02.png\"") > section);
  BOOST_TEST(with_keys.find("class=\"preview\" src=\"/files/results/s-0123456789ab-g1/k_key_01.png\"") == std::string::npos);
}

// POST /api/v1/outbox/purge as `pacsnode outbox purge`: sent/dead rows of a configured destination,
// every row of a destination no longer configured, never the pending rows of a configured one.
BOOST_AUTO_TEST_CASE(outbox_purge_by_state_destination_and_orphaned) {
  const auto dir = testsupport::make_temp_dir("http-api-purge");
  scp::Index index(testsupport::index_settings_for(dir));
  config::LiveConfig live(config::parse(R"(
[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 104
)", "test"));
  const auto job = testsupport::complete_study(index, dir / "x.dcm");
  for (const char* uid : {"9.9.1", "9.9.2", "9.9.3"}) {
    scp::ResultRow r{0, job.id, "1.2", 1, "SEG", "1.2.840.10008.5.1.4.1.1.66.4", uid, "9.9", "1.2.3", (dir / uid).string()};
    r.id = index.add_result(r);
    index.enqueue(r, {"pacs", "old"}, 5000);
  }
  auto rows = index.outbox();
  // pacs: one sent, one dead, one pending; old (not configured): one sent, two pending.
  std::vector<std::int64_t> pacs, old;
  for (const auto& o : rows) (o.destination == "pacs" ? pacs : old).push_back(o.id);
  BOOST_TEST_REQUIRE(pacs.size() == 3u);
  index.mark_sent(pacs[0], 6000);
  index.mark_dead(pacs[1], "refused", 6000);
  index.mark_sent(old[0], 6000);

  const scp::HttpApi api(kToken, scp::HttpSources{&index, dir, &live, [] { return scp::Status{}; },
                                                  [] { return std::string("{}\n"); }, [] { return scp::Health{}; }, {}});
  auto purge = [&](const std::string& body) {
    HttpRequest r;
    r.method = "POST";
    r.target = "/api/v1/outbox/purge";
    r.authorization = "Bearer " + kToken;
    r.body = body;
    return api.handle(r);
  };
  auto count = [&](const std::string& dest, const std::string& state) {
    int n = 0;
    for (const auto& o : index.outbox()) n += o.destination == dest && o.state == state;
    return n;
  };
  BOOST_TEST(purge(R"({"state": "pending"})").status == 400);  // pending of a configured destination: never
  BOOST_TEST(purge(R"({"state": "pending", "destination": "pacs"})").status == 400);
  BOOST_TEST(purge(R"({"orphaned": true, "destination": "old"})").status == 400);
  BOOST_TEST(purge(R"({"orphaned": "yes"})").status == 400);
  BOOST_TEST(purge(R"({"nope": 1})").status == 400);

  auto r = purge(R"({"state": "dead", "destination": "pacs"})");
  BOOST_TEST(r.status == 200, r.body);
  BOOST_TEST(nlohmann::json::parse(r.body).at("purged") == 1);
  BOOST_TEST(count("pacs", "dead") == 0);
  BOOST_TEST(count("pacs", "sent") == 1);

  r = purge(R"({"orphaned": true, "state": "pending"})");
  BOOST_TEST(nlohmann::json::parse(r.body).at("purged") == 2, r.body);
  BOOST_TEST(nlohmann::json::parse(r.body).at("destinations") == nlohmann::json::array({"old"}));
  BOOST_TEST(count("old", "pending") == 0);
  BOOST_TEST(count("old", "sent") == 1);

  r = purge("{}");  // every sent row, configured or not
  BOOST_TEST(nlohmann::json::parse(r.body).at("purged") == 2, r.body);
  BOOST_TEST(count("pacs", "pending") == 1);  // still to be sent
  BOOST_TEST(index.outbox().size() == 1u);
  fs::remove_all(dir);
}
