#include "scp/http_api.h"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "scp/http_page.h"
#include "scp/study_assembler.h"

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace scp {
namespace {

HttpResponse json_response(int status, const Json& j) {
  HttpResponse r;
  r.status = status;
  r.body = j.dump(2) + "\n";
  return r;
}

HttpResponse error(int status, const std::string& message) { return json_response(status, Json{{"error", message}}); }

// Compares without an early exit, so that the time taken says nothing about the token.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0 && !b.empty();
}

std::string cookie_value(const std::string& header, const std::string& name) {
  std::istringstream in(header);
  std::string part;
  while (std::getline(in, part, ';')) {
    const auto b = part.find_first_not_of(' ');
    if (b == std::string::npos) continue;
    part = part.substr(b);
    if (part.compare(0, name.size() + 1, name + "=") == 0) return part.substr(name.size() + 1);
  }
  return {};
}

std::optional<std::int64_t> to_int(const std::string& s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  std::int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

const std::set<std::string> kOutboxStates{"pending", "sent", "dead"};
const std::set<std::string> kJobStates{"pending", "running", "done", "failed"};

Json job_json(const JobRow& j) {
  return Json{{"id", j.id}, {"generation", j.generation}, {"state", j.state}, {"error", j.error}, {"forced", j.force}};
}

Json series_run_json(const SeriesRunRow& r) {
  return Json{{"series_uid", r.series_uid}, {"generation", r.generation}, {"state", r.state}, {"rule", r.rule},
              {"profile", r.profile},       {"attempts", r.attempts},     {"volumes", r.volumes},
              {"started_ms", r.started_ms}, {"ended_ms", r.ended_ms},     {"error", r.error}};
}

Json result_json(const ResultRow& r) {
  return Json{{"id", r.id},
              {"generation", r.generation},
              {"kind", r.kind},
              {"sop_class_uid", r.sop_class_uid},
              {"sop_instance_uid", r.sop_instance_uid},
              {"series_uid", r.series_uid},
              {"source_series_uid", r.source_series_uid},
              {"file", fs::path(r.path).filename().string()}};
}

void add_facts(Json& j, const StudyFacts& f) {
  j["accession_number"] = f.accession_number;
  j["study_date"] = f.study_date;
  j["study_description"] = f.study_description;
  j["modalities"] = f.modalities;
  j["series_count"] = f.series;
}

std::vector<std::string> configured_destinations(const config::LiveConfig* live) {
  std::vector<std::string> out;
  if (live)
    for (const auto& d : live->get()->destinations) out.push_back(d.name);
  return out;
}

}  // namespace

std::optional<std::string> url_decode(const std::string& s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      auto hex = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;
      };
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<std::map<std::string, std::string>> parse_query(const std::string& q) {
  std::map<std::string, std::string> out;
  std::istringstream in(q);
  std::string part;
  while (std::getline(in, part, '&')) {
    if (part.empty()) continue;
    const auto eq = part.find('=');
    auto k = url_decode(part.substr(0, eq), true);
    auto v = url_decode(eq == std::string::npos ? "" : part.substr(eq + 1), true);
    if (!k || !v) return std::nullopt;
    out[*k] = *v;
  }
  return out;
}

std::string prometheus_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

HttpApi::HttpApi(std::string token, HttpSources sources) : token_(std::move(token)), src_(std::move(sources)) {}

bool HttpApi::authenticated(const HttpRequest& rq, bool& by_cookie) const {
  by_cookie = false;
  static const std::string bearer = "Bearer ";
  if (rq.authorization.compare(0, bearer.size(), bearer) == 0)
    return same_secret(rq.authorization.substr(bearer.size()), token_);
  if (const auto c = cookie_value(rq.cookie, "pacsnode_token"); !c.empty() && same_secret(c, token_)) {
    by_cookie = true;
    return true;
  }
  return false;
}

std::optional<StudyRow> HttpApi::study_by_id(const std::string& id) const {
  if (!std::regex_match(id, std::regex("s-[0-9a-f]{12}"))) return std::nullopt;
  for (auto& s : src_.index->studies())
    if (study_hash(src_.index->log_key(), s.study_uid) == id) return s;
  return std::nullopt;
}

HttpResponse HttpApi::handle(const HttpRequest& rq) const {
  const auto q = rq.target.find('?');
  const std::string raw_path = rq.target.substr(0, q);
  const auto path_decoded = url_decode(raw_path, false);
  const auto query = parse_query(q == std::string::npos ? "" : rq.target.substr(q + 1));
  if (!path_decoded || !query || raw_path.empty() || raw_path[0] != '/') return error(400, "malformed request target");
  const std::string& path = *path_decoded;
  const bool get = rq.method == "GET" || rq.method == "HEAD";

  if (path == "/healthz") {
    if (!get) return error(405, "use GET");
    const Health h = src_.health();
    HttpResponse r;
    r.status = h.state == HealthState::failing ? 503 : 200;
    r.content_type = "text/plain; charset=utf-8";
    r.body = std::string(to_string(h.state)) + "\n";
    return r;
  }
  if (path == "/login") {
    if (rq.method == "POST") {
      const auto form = parse_query(rq.body);
      const std::string given = form && form->count("token") ? form->at("token") : std::string();
      if (!same_secret(given, token_)) {
        HttpResponse r = http_page::login(true);
        r.status = 401;
        return r;
      }
      HttpResponse r;
      r.status = 303;
      r.content_type = "text/plain; charset=utf-8";
      r.headers.emplace_back("Location", "/");
      r.headers.emplace_back("Set-Cookie", "pacsnode_token=" + token_ + "; Path=/; HttpOnly; SameSite=Strict");
      return r;
    }
    if (!get) return error(405, "use GET or POST");
    return http_page::login(false);
  }

  if (path == "/logout") {
    if (rq.method != "POST") return error(405, "use POST");
    HttpResponse r;
    r.status = 303;
    r.content_type = "text/plain; charset=utf-8";
    r.headers.emplace_back("Location", "/login");
    r.headers.emplace_back("Set-Cookie", "pacsnode_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    return r;
  }
  bool by_cookie = false;
  if (!authenticated(rq, by_cookie)) {
    if (path == "/" || path.rfind("/studies/", 0) == 0 || path.rfind("/files/", 0) == 0) {
      HttpResponse r;
      r.status = 303;
      r.content_type = "text/plain; charset=utf-8";
      r.headers.emplace_back("Location", "/login");
      return r;
    }
    HttpResponse r = error(401, "a bearer token is required (Authorization: Bearer <http.token>)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"pacsnode\"");
    return r;
  }
  // A cookie travels with any request the browser makes, also one another site makes it send:
  // state changes with the cookie need a header that a cross-site form cannot set.
  if (rq.method == "POST" && by_cookie && rq.action_header != "1")
    return error(403, "a POST authenticated by the cookie needs the header X-Pacsnode-Action: 1");

  if (path == "/readyz") {
    if (!get) return error(405, "use GET");
    const Health h = src_.health();
    return json_response(h.state == HealthState::failing ? 503 : 200,
                         Json{{"status", std::string(to_string(h.state))}, {"reasons", h.reasons}});
  }
  if (path == "/metrics") {
    if (!get) return error(405, "use GET");
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics();
    return r;
  }
  if (path.rfind("/api/", 0) == 0) return api(rq, path, *query);
  if (path.rfind("/files/", 0) == 0) {
    if (!get) return error(405, "use GET");
    return file(path);
  }
  if (path == "/" || path.rfind("/studies/", 0) == 0) {
    if (!get) return error(405, "use GET");
    return page(path, *query);
  }
  return error(404, "no such resource: " + path.substr(0, 200));
}

HttpResponse HttpApi::api(const HttpRequest& rq, const std::string& path,
                          const std::map<std::string, std::string>& query) const {
  Index& index = *src_.index;
  const bool get = rq.method == "GET" || rq.method == "HEAD";
  const std::string& key = index.log_key();
  if (path == "/api/status" || path == "/api/v1/status") {
    if (!get) return error(405, "use GET");
    HttpResponse r;
    r.body = src_.status_json();
    return r;
  }
  if (path == "/api/v1/studies") {
    if (!get) return error(405, "use GET");
    for (const auto& [k, v] : query)
      if (k != "state" && k != "since" && k != "limit" && k != "accession")
        return error(400, "unknown query parameter: " + k.substr(0, 100));
    std::optional<StudyState> only;
    if (auto it = query.find("state"); it != query.end()) {
      if (it->second == "open") only = StudyState::open;
      else if (it->second == "complete") only = StudyState::complete;
      else return error(400, "state: open or complete");
    }
    std::int64_t since = 0, limit = 1000;
    if (auto it = query.find("since"); it != query.end()) {
      const auto v = to_int(it->second);
      if (!v) return error(400, "since: milliseconds since the epoch");
      since = *v;
    }
    if (auto it = query.find("limit"); it != query.end()) {
      const auto v = to_int(it->second);
      if (!v || *v < 1) return error(400, "limit: a positive integer");
      limit = *v;
    }
    const auto facts = index.study_facts();
    const auto accession = query.count("accession") ? std::optional<std::string>(query.at("accession")) : std::nullopt;
    auto studies = index.studies(only);
    std::sort(studies.begin(), studies.end(),
              [](const StudyRow& a, const StudyRow& b) { return a.last_instance_ms > b.last_instance_ms; });
    std::map<std::string, JobRow> latest_job;
    for (const auto& j : index.jobs())
      if (auto& l = latest_job[j.study_uid]; l.id == 0 || j.generation > l.generation || (j.generation == l.generation && j.id > l.id)) l = j;
    Json out = Json::array();
    for (const auto& s : studies) {
      if (s.last_instance_ms < since) continue;
      const auto f = facts.find(s.study_uid);
      if (accession && (f == facts.end() || f->second.accession_number != *accession)) continue;
      if (static_cast<std::int64_t>(out.size()) >= limit) break;
      Json j{{"id", study_hash(key, s.study_uid)},
             {"study_uid", s.study_uid},
             {"state", s.state == StudyState::open ? "open" : "complete"},
             {"generation", s.generation},
             {"instances", s.instance_count},
             {"last_instance_ms", s.last_instance_ms}};
      add_facts(j, f == facts.end() ? StudyFacts{} : f->second);
      if (auto it = latest_job.find(s.study_uid); it != latest_job.end()) j["job"] = job_json(it->second);
      else j["job"] = nullptr;
      out.push_back(std::move(j));
    }
    return json_response(200, Json{{"studies", out}});
  }
  if (path.rfind("/api/v1/studies/", 0) == 0 && path.size() > 10 && path.compare(path.size() - 10, 10, "/reanalyse") == 0) {
    if (rq.method != "POST") return error(405, "use POST");
    const std::string id = path.substr(16, path.size() - 16 - 10);
    const auto s = study_by_id(id);
    if (!s) return error(404, "no study " + id.substr(0, 40));
    const auto generation = index.queue_reanalysis(s->study_uid, wall_ms());
    if (!generation) return error(409, "the study is still open: it is analysed when it completes");
    if (src_.analyse) src_.analyse(s->study_uid, *generation);
    return json_response(202, Json{{"study", id}, {"generation", *generation}});
  }
  if (path.rfind("/api/v1/studies/", 0) == 0) {
    if (!get) return error(405, "use GET");
    const std::string id = path.substr(std::string("/api/v1/studies/").size());
    const auto s = study_by_id(id);
    if (!s) return error(404, "no study " + id.substr(0, 40));
    Json j{{"id", id},
           {"study_uid", s->study_uid},
           {"state", s->state == StudyState::open ? "open" : "complete"},
           {"generation", s->generation},
           {"instances", s->instance_count},
           {"last_instance_ms", s->last_instance_ms}};
    const auto facts = index.study_facts();
    add_facts(j, facts.count(s->study_uid) ? facts.at(s->study_uid) : StudyFacts{});
    j["jobs"] = Json::array();
    for (const auto& job : index.jobs())
      if (job.study_uid == s->study_uid) j["jobs"].push_back(job_json(job));
    j["series"] = Json::array();
    for (const auto& r : index.series_runs(s->study_uid)) j["series"].push_back(series_run_json(r));
    j["results"] = Json::array();
    for (const auto& r : index.results(s->study_uid)) j["results"].push_back(result_json(r));
    j["outbox"] = Json::array();
    for (const auto& o : index.outbox())
      if (o.study_uid == s->study_uid)
        j["outbox"].push_back(Json{{"id", o.id},
                                   {"destination", o.destination},
                                   {"kind", o.kind},
                                   {"state", o.state},
                                   {"attempts", o.attempts},
                                   {"updated_ms", o.updated_ms},
                                   {"last_error", o.last_error}});
    return json_response(200, j);
  }
  if (path == "/api/v1/jobs") {
    if (!get) return error(405, "use GET");
    std::optional<std::string> state;
    for (const auto& [k, v] : query)
      if (k != "state") return error(400, "unknown query parameter: " + k.substr(0, 100));
    if (auto it = query.find("state"); it != query.end()) {
      if (!kJobStates.count(it->second)) return error(400, "state: pending, running, done or failed");
      state = it->second;
    }
    Json out = Json::array();
    for (const auto& job : index.jobs(state)) {
      Json j = job_json(job);
      j["study"] = study_hash(key, job.study_uid);
      out.push_back(std::move(j));
    }
    return json_response(200, Json{{"jobs", out}});
  }
  if (path == "/api/v1/outbox") {
    if (!get) return error(405, "use GET");
    OutboxSelection sel;
    for (const auto& [k, v] : query) {
      if (k == "state") {
        if (!kOutboxStates.count(v)) return error(400, "state: pending, sent or dead");
        sel.states = std::vector<std::string>{v};
      } else if (k == "destination") {
        sel.destinations = std::vector<std::string>{v};
      } else {
        return error(400, "unknown query parameter: " + k.substr(0, 100));
      }
    }
    const auto configured = configured_destinations(src_.config);
    Json out = Json::array();
    for (const auto& o : index.outbox_select(sel))
      out.push_back(Json{{"id", o.id},
                         {"study", study_hash(key, o.study_uid)},
                         {"destination", o.destination},
                         {"configured", std::find(configured.begin(), configured.end(), o.destination) != configured.end()},
                         {"kind", o.kind},
                         {"sop_instance_uid", o.sop_instance_uid},
                         {"state", o.state},
                         {"attempts", o.attempts},
                         {"next_attempt_ms", o.next_attempt_ms},
                         {"created_ms", o.created_ms},
                         {"updated_ms", o.updated_ms},
                         {"last_error", o.last_error}});
    return json_response(200, Json{{"outbox", out}});
  }
  if (path == "/api/v1/outbox/retry" || path == "/api/v1/outbox/purge") {
    if (rq.method != "POST") return error(405, "use POST");
    const Json body = rq.body.empty() ? Json::object() : Json::parse(rq.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return error(400, "the body must be a JSON object");
    const bool retry = path == "/api/v1/outbox/retry";
    const std::set<std::string> allowed = retry ? std::set<std::string>{"ids", "destination", "state", "all"}
                                                : std::set<std::string>{"state", "destination", "orphaned"};
    for (const auto& [k, v] : body.items())
      if (!allowed.count(k)) return error(400, "unknown key: " + k.substr(0, 100));
    const auto configured = configured_destinations(src_.config);
    OutboxSelection sel;
    if (!retry) {  // as `pacsnode outbox purge`
      if (body.contains("state") && (!body["state"].is_string() || (body["state"] != "sent" && body["state"] != "dead" &&
                                                                    body["state"] != "pending")))
        return error(400, "state: sent, dead or pending");
      if (body.contains("destination") && (!body["destination"].is_string() || body["destination"].get<std::string>().empty()))
        return error(400, "destination: a destination name");
      if (body.contains("orphaned") && !body["orphaned"].is_boolean()) return error(400, "orphaned: true or false");
      const bool orphaned = body.value("orphaned", false);
      if (orphaned && body.contains("destination")) return error(400, "orphaned and destination exclude each other");
      const std::string state = body.value("state", std::string());
      const std::string destination = body.value("destination", std::string());
      const auto is_configured = [&](const std::string& d) {
        return std::find(configured.begin(), configured.end(), d) != configured.end();
      };
      const bool unconfigured = !destination.empty() && !is_configured(destination);
      if (orphaned || unconfigured) {
        // Destinations the config no longer has: their rows are never sent, any state may go.
        std::set<std::string> names;
        if (unconfigured) names.insert(destination);
        else
          for (const auto& c : index.outbox_counts())
            if (!is_configured(c.destination)) names.insert(c.destination);
        if (names.empty()) return json_response(200, Json{{"purged", 0}, {"destinations", Json::array()}});
        sel.destinations = std::vector<std::string>(names.begin(), names.end());
        if (!state.empty()) sel.states = std::vector<std::string>{state};
        const int n = index.outbox_purge(sel);
        return json_response(200, Json{{"purged", n}, {"destinations", names}});
      }
      if (state == "pending")
        return error(400, "pending objects are purged only for destinations no longer configured (orphaned, or "
                          "destination with such a name); for a configured destination they are still to be sent");
      sel.states = std::vector<std::string>{state.empty() ? "sent" : state};
      if (!destination.empty()) sel.destinations = std::vector<std::string>{destination};
      const int n = index.outbox_purge(sel);
      return json_response(200, Json{{"purged", n}});
    }
    // As `pacsnode outbox retry`: rows of destinations no longer configured are left alone.
    sel.destinations = configured;
    sel.states = std::vector<std::string>{"dead"};
    if (body.contains("all")) {
      if (!body["all"].is_boolean()) return error(400, "all: true or false");
      if (body["all"].get<bool>()) sel.states = std::vector<std::string>{"pending", "dead"};
    }
    if (body.contains("state")) {
      if (!body["state"].is_string() || (body["state"] != "dead" && body["state"] != "pending"))
        return error(400, "state: dead or pending");
      sel.states = std::vector<std::string>{body["state"].get<std::string>()};
    }
    if (body.contains("destination")) {
      if (!body["destination"].is_string()) return error(400, "destination: a name");
      const auto d = body["destination"].get<std::string>();
      if (std::find(configured.begin(), configured.end(), d) == configured.end())
        return error(409, "destination \"" + d.substr(0, 100) + "\" is not configured: its rows are never sent");
      sel.destinations = std::vector<std::string>{d};
      if (!body.contains("state")) sel.states = std::vector<std::string>{"pending", "dead"};
    }
    if (body.contains("ids")) {
      if (!body["ids"].is_array()) return error(400, "ids: an array of outbox row ids");
      std::vector<std::int64_t> ids;
      for (const auto& v : body["ids"]) {
        if (!v.is_number_integer()) return error(400, "ids: an array of outbox row ids");
        ids.push_back(v.get<std::int64_t>());
      }
      sel.ids = ids;
      if (!body.contains("state")) sel.states = std::vector<std::string>{"pending", "dead"};
    }
    const int n = index.outbox_retry(sel, wall_ms());
    if (n > 0 && src_.outbox_changed) src_.outbox_changed();
    return json_response(200, Json{{"retried", n}});
  }
  return error(404, "no such resource: " + path.substr(0, 200));
}

std::string HttpApi::metrics() const {
  std::string out;
  auto family = [&](const std::string& name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  auto sample = [&](const std::string& name, const std::string& labels, auto value) {
    out += labels.empty() ? fmt::format("{} {}\n", name, value) : fmt::format("{}{{{}}} {}\n", name, labels, value);
  };
  auto label = [](const char* k, const std::string& v) { return fmt::format("{}=\"{}\"", k, prometheus_label(v)); };

  const Status s = src_.status();
  const Health h = src_.health();
  family("pacsnode_health", "gauge", "1 for the node's current health state (ok, degraded, failing)");
  for (const auto st : {HealthState::ok, HealthState::degraded, HealthState::failing})
    sample("pacsnode_health", label("state", std::string(to_string(st))), h.state == st ? 1 : 0);
  family("pacsnode_health_reasons", "gauge", "Reasons the node is not ok");
  sample("pacsnode_health_reasons", "", h.reasons.size());
  if (!h.cluster.empty()) {  // a cluster: every node's heartbeat age as this node reads the shared index
    family("pacsnode_cluster_node_heartbeat_age_seconds", "gauge", "Seconds since each cluster node's last heartbeat");
    for (const auto& n : h.cluster)
      sample("pacsnode_cluster_node_heartbeat_age_seconds", label("node", n.name),
             static_cast<double>(std::max<std::int64_t>(0, h.checked_ms - n.last_seen_ms)) / 1000.0);
  }

  family("pacsnode_associations_total", "counter", "DICOM associations accepted");
  sample("pacsnode_associations_total", "", s.associations);
  family("pacsnode_associations_open", "gauge", "DICOM associations open now");
  sample("pacsnode_associations_open", "", s.open_associations);
  family("pacsnode_connections_pending", "gauge", "Connections that have not sent a complete A-ASSOCIATE-RQ yet");
  sample("pacsnode_connections_pending", "", s.pending_connections);
  family("pacsnode_rejections_total", "counter", "Connections and associations turned away, by reason");
  for (const auto& [reason, n] : s.rejections) sample("pacsnode_rejections_total", label("reason", reason), n);
  family("pacsnode_aborted_associations_total", "counter", "Associations ended without a release, by reason");
  for (const auto& [reason, n] : s.aborted_associations)
    sample("pacsnode_aborted_associations_total", label("reason", reason), n);
  family("pacsnode_instances_stored_total", "counter", "Instances stored (C-STORE success)");
  sample("pacsnode_instances_stored_total", "", s.instances_stored);
  family("pacsnode_instances_refused_total", "counter", "Instances refused (C-STORE failure status), by reason");
  for (const auto& [reason, n] : s.refusals) sample("pacsnode_instances_refused_total", label("reason", reason), n);
  family("pacsnode_received_bytes_total", "counter", "Bytes of instances received");
  sample("pacsnode_received_bytes_total", "", s.bytes_received);

  Index& index = *src_.index;
  std::map<std::string, std::int64_t> studies{{"open", 0}, {"complete", 0}};
  for (const auto& st : index.studies()) ++studies[st.state == StudyState::open ? "open" : "complete"];
  family("pacsnode_studies", "gauge", "Studies in the index, by state");
  for (const auto& [state, n] : studies) sample("pacsnode_studies", label("state", state), n);
  family("pacsnode_studies_assembling", "gauge", "Studies waiting for their quiet time");
  sample("pacsnode_studies_assembling", "", s.open_studies);

  std::map<std::string, std::int64_t> jobs{{"pending", 0}, {"running", 0}, {"done", 0}, {"failed", 0}};
  for (const auto& j : index.jobs()) ++jobs[j.state];
  family("pacsnode_jobs", "gauge", "Analysis jobs in the index, by state");
  for (const auto& [state, n] : jobs) sample("pacsnode_jobs", label("state", state), n);
  family("pacsnode_jobs_queued", "gauge", "Analysis jobs queued in the runner");
  sample("pacsnode_jobs_queued", "", s.jobs_queued);
  family("pacsnode_worker_crashes_total", "counter", "Analysis worker processes that crashed or hit a limit");
  sample("pacsnode_worker_crashes_total", "", src_.worker_crashes ? src_.worker_crashes() : 0);
  auto histogram = [&](const std::string& name, const std::string& labels, const Histogram::Snapshot& h) {
    const std::string sep = labels.empty() ? "" : labels + ",";
    for (const auto& [bound, n] : h.buckets) sample(name + "_bucket", sep + label("le", fmt::format("{}", bound)), n);
    sample(name + "_bucket", sep + label("le", "+Inf"), h.count);
    sample(name + "_sum", labels, h.sum);
    sample(name + "_count", labels, h.count);
  };
  if (src_.metrics) {
    const NodeMetrics& m = *src_.metrics;
    family("pacsnode_worker_failures_total", "counter",
           "Analysis worker processes that did not finish, by outcome and signal (each attempt)");
    for (const auto& [key, n] : m.worker_failures.snapshot())
      sample("pacsnode_worker_failures_total", label("outcome", key.at(0)) + "," + label("signal", key.at(1)), n);
    family("pacsnode_job_duration_seconds", "histogram", "Analysis jobs (a study, every series) from start to results queued");
    histogram("pacsnode_job_duration_seconds", "", m.job_seconds.snapshot());
    family("pacsnode_stage_duration_seconds", "histogram", "Pipeline stages of each analysed volume, by stage");
    for (const auto& [stage, h] : m.stage_seconds.snapshot())
      histogram("pacsnode_stage_duration_seconds", label("stage", stage), h);
    family("pacsnode_deliveries_total", "counter",
           "Attempts to send a result object, by destination and outcome (sent, retry, dead)");
    for (const auto& [key, n] : m.deliveries.snapshot())
      sample("pacsnode_deliveries_total", label("destination", key.at(0)) + "," + label("outcome", key.at(1)), n);
  }
  if (src_.retention) {
    const RetentionStats r = src_.retention();
    family("pacsnode_retention_deleted_total", "counter",
           "What retention deleted since the start, by area (items: studies in incoming, folders elsewhere)");
    for (std::size_t a = 0; a < kAreaNames.size(); ++a)
      sample("pacsnode_retention_deleted_total", label("area", kAreaNames[a]), r.deleted[a].items);
    family("pacsnode_retention_deleted_bytes_total", "counter", "Bytes retention deleted since the start, by area");
    for (std::size_t a = 0; a < kAreaNames.size(); ++a)
      sample("pacsnode_retention_deleted_bytes_total", label("area", kAreaNames[a]), r.deleted[a].bytes);
    family("pacsnode_retention_runs_total", "counter", "Retention runs since the start");
    sample("pacsnode_retention_runs_total", "", r.runs);
  }
  family("pacsnode_analysis_cache_bytes", "gauge", "Freed volume and mask memory kept for the next job");
  sample("pacsnode_analysis_cache_bytes", "", s.analysis_cache_bytes);

  std::map<std::string, std::map<std::string, std::int64_t>> outbox;
  for (const auto& d : configured_destinations(src_.config))
    for (const auto& st : kOutboxStates) outbox[d][st] = 0;
  for (const auto& c : index.outbox_counts()) outbox[c.destination][c.state] = c.rows;
  family("pacsnode_outbox_objects", "gauge", "Result objects in the outbox, by destination and state");
  for (const auto& [dest, states] : outbox)
    for (const auto& [state, n] : states)
      sample("pacsnode_outbox_objects", label("destination", dest) + "," + label("state", state), n);
  std::map<std::string, std::int64_t> oldest;
  for (const auto& o : index.outbox("pending"))
    if (auto it = oldest.find(o.destination); it == oldest.end() || o.created_ms < it->second) oldest[o.destination] = o.created_ms;
  family("pacsnode_outbox_oldest_pending_seconds", "gauge", "Age of the oldest pending object, by destination");
  const auto now = wall_ms();
  for (const auto& [dest, states] : outbox) {
    const auto it = oldest.find(dest);
    sample("pacsnode_outbox_oldest_pending_seconds", label("destination", dest),
           it == oldest.end() ? 0.0 : std::max<double>(0.0, (now - it->second) / 1000.0));
  }

  std::error_code ec;
  const auto space = fs::space(src_.root, ec);
  if (!ec) {
    family("pacsnode_storage_free_bytes", "gauge", "Bytes available to the node on the storage file system");
    sample("pacsnode_storage_free_bytes", "", space.available);
    family("pacsnode_storage_size_bytes", "gauge", "Size of the storage file system");
    sample("pacsnode_storage_size_bytes", "", space.capacity);
  }
  return out;
}

HttpResponse HttpApi::file(const std::string& path) const {
  static const std::regex re("/files/results/(s-[0-9a-f]{12}-g[0-9]{1,9})/([A-Za-z0-9_][A-Za-z0-9._-]{0,200}\\.png)");
  std::smatch m;
  if (!std::regex_match(path, m, re)) return error(404, "no such file");
  const fs::path f = src_.root / "results" / m[1].str() / m[2].str();
  std::error_code ec;
  if (!fs::is_regular_file(f, ec) || fs::file_size(f, ec) > (64u << 20)) return error(404, "no such file");
  std::ifstream in(f, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  HttpResponse r;
  r.content_type = "image/png";
  r.body = ss.str();
  r.headers.emplace_back("Cache-Control", "private, max-age=3600");
  return r;
}

HttpResponse HttpApi::page(const std::string& path, const std::map<std::string, std::string>&) const {
  Index& index = *src_.index;
  if (path.rfind("/studies/", 0) == 0) return study_page(path.substr(std::string("/studies/").size()));

  http_page::Overview o;
  o.health = src_.health();
  o.status = src_.status();
  auto studies = index.studies();
  std::sort(studies.begin(), studies.end(),
            [](const StudyRow& a, const StudyRow& b) { return a.last_instance_ms > b.last_instance_ms; });
  if (studies.size() > 100) studies.resize(100);
  std::map<std::string, JobRow> latest_job;
  for (const auto& j : index.jobs())
    if (auto& l = latest_job[j.study_uid]; l.id == 0 || j.generation > l.generation || (j.generation == l.generation && j.id > l.id)) l = j;
  const auto facts = index.study_facts();
  for (const auto& s : studies) {
    http_page::StudyLine line{study_hash(index.log_key(), s.study_uid), s, std::nullopt,
                              facts.count(s.study_uid) ? facts.at(s.study_uid) : StudyFacts{}};
    if (auto it = latest_job.find(s.study_uid); it != latest_job.end()) line.job = it->second;
    for (const auto& r : index.series_runs(s.study_uid))
      if (r.state == "failed" || r.state == "crashed") o.quarantine.push_back({line.id, r});
    o.studies.push_back(std::move(line));
  }
  for (const auto& row : index.outbox())
    if (row.state != "sent") o.outbox.push_back({study_hash(index.log_key(), row.study_uid), row});
  o.outbox_counts = index.outbox_counts();
  return http_page::overview(o);
}

HttpResponse HttpApi::study_page(const std::string& id) const {
  Index& index = *src_.index;
  const auto s = study_by_id(id);
  if (!s) {
    HttpResponse r = http_page::not_found(id);
    r.status = 404;
    return r;
  }
  http_page::StudyDetail d;
  d.id = id;
  d.study = *s;
  if (const auto facts = index.study_facts(); facts.count(s->study_uid)) d.facts = facts.at(s->study_uid);
  for (const auto& job : index.jobs())
    if (job.study_uid == s->study_uid) d.jobs.push_back(job);
  d.series = index.series_runs(s->study_uid);
  d.results = index.results(s->study_uid);
  for (const auto& o : index.outbox())
    if (o.study_uid == s->study_uid) d.outbox.push_back(o);
  // Measurements and previews of the latest analysis that wrote any.
  for (int g = s->generation; g >= 1; --g) {
    const std::string tag = fmt::format("{}-g{}", id, g);
    const fs::path dir = src_.root / "results" / tag;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    d.results_tag = tag;
    std::ifstream in(dir / "features.json");
    if (in) d.features = nlohmann::json::parse(in, nullptr, false);
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".png") d.previews.push_back(e.path().filename().string());
    std::sort(d.previews.begin(), d.previews.end());
    break;
  }
  return http_page::study(d);
}

}  // namespace scp
