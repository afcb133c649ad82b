#pragma once
// What the embedded HTTP server answers (issue 11), apart from the transport (scp/http_server.h):
// a request in, a response out, so that routing, authentication, the JSON API, the Prometheus
// metrics and the status page can be tested without sockets.
//
//   GET  /healthz                 liveness, no token: 200 "ok"/"degraded", 503 "failing"
//   GET  /readyz                  the health model as JSON (state, reasons): 200 ok/degraded, 503 failing
//   GET  /metrics                 Prometheus text exposition format 0.0.4
//   GET  /api/v1/status           status.json as it would be written now
//   GET  /api/v1/studies          ?state=open|complete &since=<ms since the epoch> &accession=A &limit=N
//   GET  /api/v1/studies/{id}     one study ({id}: the study hash "s-..." the logs show), with its
//                                 jobs, series runs, results and outbox rows
//   GET  /api/v1/jobs             ?state=pending|running|done|failed
//   GET  /api/v1/outbox           ?state=pending|sent|dead &destination=NAME
//   POST /api/v1/outbox/retry     JSON {"ids":[..]} | {"destination":..} | {"state":..} | {"all":true};
//                                 {} retries every dead row (as `pacsnode outbox retry`)
//   POST /api/v1/outbox/purge     JSON {"state":"sent"|"dead", "destination":NAME} or {"orphaned":true,
//                                 "state":..}; {} purges the sent rows (as `pacsnode outbox purge`)
//   POST /api/v1/studies/{id}/reanalyse   a complete study analysed again as its next generation,
//                                 every series (also unchanged ones); 409 while the study is open
//   GET  /, /studies/{id}         the status page (HTML); /files/results/<hash>-g<n>/<name>.png previews
//   GET|POST /login, POST /logout the page's token form (an HttpOnly, SameSite=Strict cookie)
//
// Everything but /healthz needs the token: `Authorization: Bearer <token>`, or the page's cookie
// (then a POST must also carry the header `X-Pacsnode-Action: 1`, which another site's form cannot
// send). The API shows Study Instance UIDs and error texts; patient name, ID and birth date are not
// in the index and so never on the API.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "config/live.h"
#include "scp/health.h"
#include "scp/index.h"
#include "scp/metrics.h"
#include "scp/retention.h"
#include "scp/status.h"

namespace scp {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  std::string body;
  std::string authorization, cookie, action_header, content_type;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers (Set-Cookie, Location, ...)
};

// What the daemon lends the API. Every function must be callable from the HTTP thread.
struct HttpSources {
  Index* index = nullptr;
  std::filesystem::path root;                  // storage root (results/ for previews)
  const config::LiveConfig* config = nullptr;  // destinations in force
  std::function<Status()> status;
  std::function<std::string()> status_json;
  std::function<Health()> health;
  std::function<std::uint64_t()> worker_crashes;
  std::function<void()> outbox_changed;  // rows became due: look at the outbox now
  std::function<void(const std::string& study_uid, int generation)> analyse;  // a job was queued: run it
  const NodeMetrics* metrics = nullptr;                     // durations and event counts
  std::function<RetentionStats()> retention;                // deletions since the start
};

class HttpApi {
 public:
  HttpApi(std::string token, HttpSources sources);
  HttpResponse handle(const HttpRequest& rq) const;

  // The Prometheus text (exposed for tests).
  std::string metrics() const;

 private:
  bool authenticated(const HttpRequest& rq, bool& by_cookie) const;
  HttpResponse api(const HttpRequest& rq, const std::string& path, const std::map<std::string, std::string>& query) const;
  HttpResponse page(const std::string& path, const std::map<std::string, std::string>& query) const;
  HttpResponse study_page(const std::string& id) const;
  HttpResponse file(const std::string& path) const;
  std::optional<StudyRow> study_by_id(const std::string& id) const;
  std::string token_;
  HttpSources src_;
};

// Percent-decoding of a URL component ('+' as space when `plus_is_space`); nullopt when malformed.
std::optional<std::string> url_decode(const std::string& s, bool plus_is_space);
// "a=1&b=2" -> map (later keys win); nullopt when a component is malformed.
std::optional<std::map<std::string, std::string>> parse_query(const std::string& q);
// A Prometheus label value with \, " and newline escaped.
std::string prometheus_label(const std::string& v);

}  // namespace scp
