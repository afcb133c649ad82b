#define BOOST_TEST_MODULE scp_http
// The embedded HTTP server of the real daemon (issue 11): health, the token, the JSON API, the
// Prometheus metrics parsed by prometheus_client's strict parser and moving as a study arrives,
// bounds against slow and greedy clients, and the status page in headless Chromium with a study
// analysed and its results retried into a real Orthanc.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "support/orthanc.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace {

const std::string kToken = "test-token-0123456789abcdef";

struct Reply {
  int status = 0;
  std::string body, headers;
};

// curl against the daemon's HTTP port; token empty: none sent.
Reply http(std::uint16_t port, const std::string& method, const std::string& path, const std::string& token = kToken,
           const std::string& body = {}, std::vector<std::string> extra = {}) {
  char tmpl[] = "/tmp/pacsnode-http-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  ::close(fd);
  const std::string body_file = std::string(tmpl) + ".body", head_file = std::string(tmpl) + ".head";
  std::vector<std::string> argv{"curl", "-s", "-o", body_file, "-D", head_file, "-w", "%{http_code}", "-X", method,
                                "--max-time", "30"};
  if (!token.empty()) argv.insert(argv.end(), {"-H", "Authorization: Bearer " + token});
  if (!body.empty()) argv.insert(argv.end(), {"-H", "Content-Type: application/json", "--data-binary", body});
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back("http://127.0.0.1:" + std::to_string(port) + path);
  const auto r = run(argv);
  Reply out;
  try {
    out.status = std::stoi(r.output.substr(r.output.size() >= 3 ? r.output.size() - 3 : 0));
  } catch (...) {
    out.status = 0;
  }
  auto slurp = [](const std::string& f) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  out.body = slurp(body_file);
  out.headers = slurp(head_file);
  ::unlink(tmpl);
  ::unlink(body_file.c_str());
  ::unlink(head_file.c_str());
  return out;
}

// The JSON a tests/scripts/http_*.py printed on its "RESULT " line.
Json result_of(const RunResult& r) {
  const auto at = r.output.rfind("RESULT ");
  BOOST_TEST_REQUIRE(at != std::string::npos, r.output);
  const auto end = r.output.find('\n', at);
  return Json::parse(r.output.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7));
}

Json metrics(std::uint16_t port) {
  const auto r = run({python(), (source_dir() / "tests/scripts/http_probe.py").string(), "metrics",
                      "http://127.0.0.1:" + std::to_string(port), kToken});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  return result_of(r);
}

DaemonOptions with_http(std::uint16_t http_port, const std::string& more = {}) {
  DaemonOptions opt;
  opt.extra = "[http]\nenabled = true\nbind = \"127.0.0.1\"\nport = " + std::to_string(http_port) + "\ntoken = \"" + kToken +
              "\"\nmax_connections = 8\nrequest_timeout_seconds = 2\n" + more;
  return opt;
}

std::uint16_t other_free_port(std::uint16_t not_this) {
  std::uint16_t p;
  do p = free_port();
  while (p == not_this);
  return p;
}

}  // namespace

BOOST_AUTO_TEST_CASE(endpoints_token_metrics_and_api_follow_a_study) {
  const auto dir = make_temp_dir("http-api");
  const auto ct = ct_phantom(dir, 12, 64, 11);
  const std::uint16_t hp = free_port();
  Daemon d(dir, with_http(hp, "[analysis]\nenabled = false\n"));
  d.start();
  BOOST_TEST_REQUIRE(eventually([&] { return http(hp, "GET", "/healthz", "").status == 200; }, 30s), d.log());

  // Liveness needs no token; everything else does.
  const auto health = http(hp, "GET", "/healthz", "");
  BOOST_TEST(health.body == "ok\n");
  for (const std::string path : {"/metrics", "/readyz", "/api/v1/status", "/api/v1/studies", "/api/v1/outbox"}) {
    const auto no = http(hp, "GET", path, "");
    BOOST_TEST(no.status == 401, path);
    BOOST_TEST(Json::parse(no.body).contains("error"), path);
    BOOST_TEST(no.headers.find("WWW-Authenticate: Bearer") != std::string::npos, path);
    BOOST_TEST(http(hp, "GET", path, "wrong-token-wrong-token").status == 401, path);
  }
  const auto page = http(hp, "GET", "/", "");
  BOOST_TEST(page.status == 303);
  BOOST_TEST(page.headers.find("Location: /login") != std::string::npos);

  const auto ready = http(hp, "GET", "/readyz");
  BOOST_TEST(ready.status == 200);
  BOOST_TEST(Json::parse(ready.body).at("status") == "ok");
  const auto status = http(hp, "GET", "/api/v1/status");
  BOOST_TEST(status.status == 200);
  BOOST_TEST(Json::parse(status.body).at("port") == d.port());

  const Json before = metrics(hp);
  BOOST_TEST(before.at("_content_type_ok") == 1);
  BOOST_TEST(before.at("_families").get<int>() >= 15);
  BOOST_TEST(before.at("pacsnode_instances_stored_total") == 0.0);
  BOOST_TEST(before.at("pacsnode_health{state=ok}") == 1.0);
  BOOST_TEST(before.at("pacsnode_rejections_total{reason=called_ae_title}") == 0.0);
  BOOST_TEST(before.at("pacsnode_studies{state=open}") == 0.0);
  BOOST_TEST(before.at("pacsnode_instances_refused_total{reason=malformed}") == 0.0);
  BOOST_TEST(before.at("pacsnode_retention_runs_total").get<double>() >= 0);
  BOOST_TEST(before.at("pacsnode_storage_free_bytes").get<double>() > 0);

  // A study arrives, and one association is rejected (wrong called AE title).
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST(d.echo("ECHOSCU", "NOTUS").exit_code != 0);
  BOOST_TEST_REQUIRE(eventually([&] { return metrics(hp).at("pacsnode_studies{state=complete}") == 1.0; }, 60s), d.log());
  const Json after = metrics(hp);
  BOOST_TEST(after.at("pacsnode_instances_stored_total") == 12.0);
  BOOST_TEST(after.at("pacsnode_associations_total").get<double>() >= before.at("pacsnode_associations_total").get<double>() + 1);
  BOOST_TEST(after.at("pacsnode_rejections_total{reason=called_ae_title}") == 1.0);
  BOOST_TEST(after.at("pacsnode_received_bytes_total").get<double>() > 12 * 64 * 64 * 2);

  const auto list = http(hp, "GET", "/api/v1/studies");
  BOOST_TEST_REQUIRE(list.status == 200, list.body);
  const Json studies = Json::parse(list.body).at("studies");
  BOOST_TEST_REQUIRE(studies.size() == 1u);
  const std::string id = studies[0].at("id");
  BOOST_TEST(std::regex_match(id, std::regex("s-[0-9a-f]{12}")));
  BOOST_TEST(studies[0].at("instances") == 12);
  BOOST_TEST(studies[0].at("state") == "complete");
  BOOST_TEST(studies[0].at("modalities") == Json::array({"CT"}));
  BOOST_TEST(studies[0].at("series_count") == 1);
  // The id is the hash the logs show.
  BOOST_TEST(d.log().find(id) != std::string::npos, d.log());
  BOOST_TEST(Json::parse(http(hp, "GET", "/api/v1/studies?state=open").body).at("studies").empty());
  const std::string accession = studies[0].at("accession_number");
  BOOST_TEST(Json::parse(http(hp, "GET", "/api/v1/studies?accession=" + accession).body).at("studies").size() == 1u);
  BOOST_TEST(Json::parse(http(hp, "GET", "/api/v1/studies?accession=no-such-thing").body).at("studies").empty());
  BOOST_TEST(Json::parse(http(hp, "GET", "/api/v1/studies?since=99999999999999").body).at("studies").empty());
  const auto one = http(hp, "GET", "/api/v1/studies/" + id);
  BOOST_TEST(one.status == 200);
  BOOST_TEST(Json::parse(one.body).at("instances") == 12);
  BOOST_TEST(http(hp, "GET", "/api/v1/studies/s-000000000000").status == 404);
  BOOST_TEST(Json::parse(http(hp, "GET", "/api/v1/outbox").body).at("outbox").empty());
  const Json jobs = Json::parse(http(hp, "GET", "/api/v1/jobs").body).at("jobs");  // analysis is off: queued only
  BOOST_TEST_REQUIRE(jobs.size() == 1u, jobs.dump());
  BOOST_TEST(jobs[0].at("state") == "pending");
  BOOST_TEST(jobs[0].at("study") == id);

  // Bad requests: 4xx with a JSON error body.
  for (const auto& [method, path, body, code] : std::vector<std::tuple<std::string, std::string, std::string, int>>{
           {"GET", "/api/v1/studies?state=bogus", "", 400},
           {"GET", "/api/v1/studies?patient=123", "", 400},
           {"GET", "/api/v1/studies?limit=-1", "", 400},
           {"GET", "/api/v1/outbox?state=lost", "", 400},
           {"GET", "/api/v1/nothing", "", 404},
           {"GET", "/api/v1/studies/%zz", "", 400},
           {"DELETE", "/api/v1/outbox", "", 405},
           {"POST", "/api/v1/outbox/retry", "{not json", 400},
           {"POST", "/api/v1/outbox/retry", "{\"bogus\": 1}", 400},
           {"POST", "/api/v1/outbox/retry", "{\"destination\": \"nowhere\"}", 409},
           {"POST", "/api/v1/outbox/purge", "{\"state\": \"pending\"}", 400},
           {"GET", "/files/results/../../index.sqlite", "", 404}}) {
    const auto r = http(hp, method, path, kToken, body);
    BOOST_TEST(r.status == code, method << " " << path << " " << body << ": " << r.status << " " << r.body);
    BOOST_TEST(Json::parse(r.body, nullptr, false).contains("error"), path << ": " << r.body);
  }
  BOOST_TEST(Json::parse(http(hp, "POST", "/api/v1/outbox/retry", kToken, "{}").body).at("retried") == 0);
  // The page's cookie: a POST with it alone (what another site could make a browser send) is refused.
  const auto login = http(hp, "POST", "/login", "", {}, {"--data", "token=" + kToken});
  BOOST_TEST(login.status == 303);
  BOOST_TEST(login.headers.find("HttpOnly; SameSite=Strict") != std::string::npos, login.headers);
  const std::string cookie = "pacsnode_token=" + kToken;
  BOOST_TEST(http(hp, "GET", "/", "", {}, {"-H", "Cookie: " + cookie}).status == 200);
  BOOST_TEST(http(hp, "POST", "/api/v1/outbox/retry", "", "{}", {"-H", "Cookie: " + cookie}).status == 403);
  BOOST_TEST(http(hp, "POST", "/api/v1/outbox/retry", "", "{}", {"-H", "Cookie: " + cookie, "-H", "X-Pacsnode-Action: 1"})
                 .status == 200);
  BOOST_TEST(http(hp, "POST", "/login", "", {}, {"--data", "token=nope"}).status == 401);

  // Patient identifiers are not on the API (the phantom's patient name and ID).
  const auto all = http(hp, "GET", "/api/v1/studies/" + id).body + http(hp, "GET", "/").body;
  BOOST_TEST(all.find("PHANTOM") == std::string::npos);
  BOOST_TEST(all.find("PH0001") == std::string::npos);

  // Slow and greedy clients: bounded, and the node answers again afterwards.
  const auto hostile = run({python(), (source_dir() / "tests/scripts/http_probe.py").string(), "hostile", "127.0.0.1",
                            std::to_string(hp), "8"});
  BOOST_TEST_REQUIRE(hostile.exit_code == 0, hostile.output);
  const Json h = result_of(hostile);
  BOOST_TEST(h.at("huge_header_status") == 431, h.dump());
  BOOST_TEST(h.at("huge_header_json") == 1);
  BOOST_TEST(h.at("garbage_status") == 400, h.dump());
  BOOST_TEST(h.at("healthz_after_huge_header") == 200);
  BOOST_TEST(h.at("opened") == 28);
  BOOST_TEST(h.at("closed_by_server").get<int>() >= 19, h.dump());  // 8 (+1 slow) served, the rest closed
  BOOST_TEST(h.at("healthz_after_idle") == 200, h.dump());
  BOOST_TEST(h.at("slow_cut_off") == 1);
  BOOST_TEST(h.at("slow_cut_after_s").get<double>() < 10.0, h.dump());

  BOOST_TEST(d.stop() == 0, d.log());
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_port_in_use_or_a_missing_token_stops_the_start) {
  const auto dir = make_temp_dir("http-conflict");
  // Something else listens on the HTTP port.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(fd, 1);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const std::uint16_t taken = ntohs(a.sin_port);
  fs::create_directories(dir / "a");
  fs::create_directories(dir / "b");
  {
    Daemon d(dir / "a", with_http(taken));
    const auto r = run({"timeout", "60", daemon_binary().string(), "run", "--config", (dir / "a" / "pacsnode.toml").string()});
    BOOST_TEST(r.exit_code == 1, r.output);
    BOOST_TEST(r.output.find("http: cannot bind 127.0.0.1:" + std::to_string(taken)) != std::string::npos, r.output);
  }
  ::close(fd);
  {
    DaemonOptions opt;
    opt.extra = "[http]\nenabled = true\n";
    Daemon d(dir / "b", opt);
    const auto r = run({daemon_binary().string(), "check-config", (dir / "b" / "pacsnode.toml").string()});
    BOOST_TEST(r.exit_code == 2, r.output);
    BOOST_TEST(r.output.find("http.token: required when http.enabled") != std::string::npos, r.output);
  }
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(status_page_in_chromium_shows_the_analysed_study_and_retry_reaches_orthanc) {
  const auto dir = make_temp_dir("http-browser");
  Orthanc pacs;  // answers as ORTHANC only: a call for PACSB is rejected permanently, dead-lettered
  const auto ct = ct_phantom(dir, 30, 96, 12);
  const std::uint16_t hp = other_free_port(pacs.http_port());
  DaemonOptions opt = with_http(hp);
  opt.extra += "[[destination]]\nname = \"pacs\"\nae_title = \"PACSB\"\nhost = \"127.0.0.1\"\nport = " +
               std::to_string(pacs.dicom_port()) +
               "\n[outbound]\ninitial_backoff_seconds = 1\nmax_backoff_seconds = 2\nconnect_timeout_seconds = 5\n";
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] {
    const auto r = http(hp, "GET", "/api/v1/outbox?state=dead");
    return r.status == 200 && Json::parse(r.body).at("outbox").size() == 2;
  }, 180s), d.log());
  // The job ends after its objects are queued (previews and features come last).
  BOOST_TEST_REQUIRE(eventually([&] { return metrics(hp).at("pacsnode_jobs{state=done}") == 1.0; }, 60s), d.log());
  const Json m = metrics(hp);
  BOOST_TEST(m.at("pacsnode_outbox_objects{destination=pacs,state=dead}") == 2.0);
  BOOST_TEST(m.at("pacsnode_deliveries_total{destination=pacs,outcome=dead}") == 2.0);
  BOOST_TEST(m.at("pacsnode_job_duration_seconds_count") == 1.0);
  BOOST_TEST(m.at("pacsnode_job_duration_seconds_sum").get<double>() > 0);
  BOOST_TEST(m.at("pacsnode_job_duration_seconds_bucket{le=+Inf}") == 1.0);
  int stages = 0;
  for (const auto& [name, value] : m.items())
    if (name.rfind("pacsnode_stage_duration_seconds_count{stage=", 0) == 0 && value.get<double>() >= 1) ++stages;
  BOOST_TEST(stages >= 3, m.dump());  // decode, segment, features, ... each timed
  const std::string id = Json::parse(http(hp, "GET", "/api/v1/studies").body).at("studies")[0].at("id");
  const Json detail = Json::parse(http(hp, "GET", "/api/v1/studies/" + id).body);
  BOOST_TEST(detail.at("results").size() == 2u);
  BOOST_TEST(detail.at("series")[0].at("profile") == "ct-chest");

  // The PACS administrator fixes the PACS: it now answers as PACSB.
  pacs.stop();
  {
    const auto cfg = pacs.dir() / "orthanc.json";
    std::ifstream in(cfg);
    std::stringstream ss;
    ss << in.rdbuf();
    std::ofstream(cfg) << std::regex_replace(ss.str(), std::regex("\"DicomAet\": \"ORTHANC\""), "\"DicomAet\": \"PACSB\"");
  }
  pacs.start();

  const fs::path shots = fs::current_path() / "artifacts" / "http";
  const auto b = run({python(), (source_dir() / "tests/scripts/http_browser.py").string(),
                      "http://127.0.0.1:" + std::to_string(hp), kToken, id, shots.string()});
  BOOST_TEST_REQUIRE(b.exit_code == 0, b.output);
  const Json page = result_of(b);
  BOOST_TEST(page.at("redirected_to_login") == 1);
  BOOST_TEST(page.at("wrong_token_refused") == 1);
  BOOST_TEST(page.at("health") != "failing");
  BOOST_TEST(page.at("study_row_state") == "complete");
  BOOST_TEST(page.at("study_row_job") == "done");
  BOOST_TEST(page.at("dead_rows") == 2);
  BOOST_TEST(page.at("study_page_id") == id);
  BOOST_TEST(page.at("series_profiles").dump().find("ct-chest") != std::string::npos, page.dump());
  BOOST_TEST_REQUIRE(page.at("previews").get<int>() >= 1, page.dump());
  for (const auto& w : page.at("preview_widths")) BOOST_TEST(w.get<int>() > 0, page.dump());
  BOOST_TEST(page.at("segment_rows").get<int>() >= 1, page.dump());
  BOOST_TEST(page.at("delivery_rows") == 2);
  BOOST_TEST(page.at("retried") == 2, page.dump());
  BOOST_TEST(fs::file_size(shots / "overview.png") > 1000u);
  BOOST_TEST(fs::file_size(shots / "study.png") > 1000u);

  // The retry went through: SEG and SR are in Orthanc, and the metrics say so.
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == 2; }, 60s), d.log());
  BOOST_TEST(eventually([&] { return metrics(hp).at("pacsnode_outbox_objects{destination=pacs,state=sent}") == 2.0; }, 30s));
  BOOST_TEST(metrics(hp).at("pacsnode_deliveries_total{destination=pacs,outcome=sent}") == 2.0);

  // Analyse again: a new generation, every series again although its instances did not change.
  BOOST_TEST(http(hp, "GET", "/api/v1/studies/" + id + "/reanalyse").status == 405);
  BOOST_TEST(http(hp, "POST", "/api/v1/studies/s-000000000000/reanalyse").status == 404);
  const auto again = http(hp, "POST", "/api/v1/studies/" + id + "/reanalyse");
  BOOST_TEST_REQUIRE(again.status == 202, again.body);
  BOOST_TEST(Json::parse(again.body).at("generation") == 2);
  BOOST_TEST_REQUIRE(eventually([&] { return metrics(hp).at("pacsnode_jobs{state=done}") == 2.0; }, 120s), d.log());
  const Json second = Json::parse(http(hp, "GET", "/api/v1/studies/" + id).body);
  BOOST_TEST(second.at("generation") == 2);
  BOOST_TEST(second.at("jobs").size() == 2u);
  BOOST_TEST(second.at("jobs")[1].at("forced") == true);
  BOOST_TEST(second.at("results").size() == 4u, second.dump());
  int analysed_again = 0;
  for (const auto& r : second.at("series")) analysed_again += r.at("generation") == 2 && r.at("state") == "done";
  BOOST_TEST(analysed_again == 1, second.dump());
  BOOST_TEST(eventually([&] { return metrics(hp).at("pacsnode_outbox_objects{destination=pacs,state=sent}") == 4.0; }, 60s),
             d.log());
  BOOST_TEST(d.stop() == 0, d.log());
  fs::remove_all(dir);
}
