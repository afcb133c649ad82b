#pragma once
// The status page of the HTTP server (scp/http_api.h): plain server-rendered HTML, one inline style
// sheet and a few lines of JavaScript for the retry buttons, no external assets (the node has no
// internet). Every text from the index or the files is HTML-escaped.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scp/health.h"
#include "scp/http_api.h"
#include "scp/index.h"
#include "scp/status.h"

namespace scp::http_page {

struct StudyLine {
  std::string id;  // study hash
  StudyRow study;
  std::optional<JobRow> job;  // latest
  StudyFacts facts;
};
struct QuarantineLine {
  std::string study;
  SeriesRunRow run;
};
struct OutboxLine {
  std::string study;
  OutboxRow row;
};

struct Overview {
  Health health;
  Status status;
  std::vector<StudyLine> studies;  // newest first
  std::vector<QuarantineLine> quarantine;
  std::vector<OutboxLine> outbox;  // pending and dead rows
  std::vector<OutboxCount> outbox_counts;
};

struct StudyDetail {
  std::string id;
  StudyRow study;
  StudyFacts facts;
  std::vector<JobRow> jobs;
  std::vector<SeriesRunRow> series;
  std::vector<ResultRow> results;
  std::vector<OutboxRow> outbox;
  std::string results_tag;        // "<hash>-g<n>" of the results shown, empty when none
  nlohmann::json features;        // features.json of that analysis (discarded when absent)
  std::vector<std::string> previews;  // PNG file names in results/<tag>/
};

HttpResponse overview(const Overview& o);
HttpResponse study(const StudyDetail& d);
HttpResponse login(bool failed);
HttpResponse not_found(const std::string& id);

std::string escape(const std::string& s);

}  // namespace scp::http_page
