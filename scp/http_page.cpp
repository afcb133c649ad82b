#include "scp/http_page.h"

#include <ctime>

#include <algorithm>

#include <fmt/format.h>

namespace scp::http_page {
namespace {

constexpr const char* kStyle = R"(
body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9;font-size:15px}
header{background:#1f3a5a;color:#fff;padding:.6em 1em;display:flex;align-items:center;gap:1em}
header h1{font-size:1.3em;margin:0}header a{color:#fff}header form{margin-left:auto}
main{padding:0 1em 2em}section{background:#fff;border:1px solid #d8dde3;border-radius:4px;margin:1em 0;padding:.3em 1em 1em}
h2{font-size:1.1em}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#eef1f4}.banner{padding:.7em 1em;margin-top:1em;border-radius:4px;font-weight:600}
.ok{background:#d8f0dc}.degraded{background:#fff1c2}.failing{background:#f8c9c9}
.state-failed,.state-crashed,.state-dead{color:#a40000;font-weight:600}.state-done,.state-sent{color:#17672b}
.num{text-align:right}code{font-size:.9em}img.preview{max-width:min(100%,960px);border:1px solid #ccc;background:#000}
button{cursor:pointer}.muted{color:#687482}
)";

constexpr const char* kScript = R"(
document.addEventListener('click', async (e) => {
  const a = e.target.closest('button[data-reanalyse]');
  if (a) {
    a.disabled = true;
    const r = await fetch('/api/v1/studies/' + a.dataset.reanalyse + '/reanalyse', {method: 'POST', credentials: 'same-origin',
      headers: {'X-Pacsnode-Action': '1'}});
    const j = await r.json();
    a.textContent = r.ok ? 'queued as generation ' + j.generation : 'error: ' + j.error;
    a.dataset.done = r.ok ? String(j.generation) : 'error';
    setTimeout(() => location.reload(), 1500);
    return;
  }
  const b = e.target.closest('button[data-retry]');
  if (!b) return;
  b.disabled = true;
  const what = b.dataset.retry;
  const body = what === 'dead' ? {} : {ids: what.split(',').map(Number)};
  try {
    const r = await fetch('/api/v1/outbox/retry', {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-Pacsnode-Action': '1'}, body: JSON.stringify(body)});
    const j = await r.json();
    b.textContent = r.ok ? 'retried ' + j.retried : 'error: ' + j.error;
    b.dataset.done = r.ok ? String(j.retried) : 'error';
  } catch (err) { b.textContent = 'error: ' + err; }
  setTimeout(() => location.reload(), 1500);
});
)";

std::string time_of(std::int64_t ms) {
  if (ms <= 0) return "";
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return std::string(buf) + " UTC";
}

std::string duration_of(std::int64_t from, std::int64_t to) {
  if (from <= 0 || to <= 0 || to < from) return "";
  return fmt::format("{:.1f} s", (to - from) / 1000.0);
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string state_cell(const std::string& state) {
  return fmt::format("<td class=\"state state-{0}\">{0}</td>", escape(state));
}

HttpResponse html(const std::string& title, const std::string& body) {
  HttpResponse r;
  r.content_type = "text/html; charset=utf-8";
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                         "connect-src 'self'; form-action 'self'; frame-ancestors 'none'");
  r.body = fmt::format(
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{}</style></head>\n"
      "<body><header><h1><a href=\"/\">pacsnode</a></h1><span>{}</span>"
      "<form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form></header>\n"
      "<main>\n{}</main>\n<script>{}</script>\n</body></html>\n",
      escape(title), kStyle, escape(title), body, kScript);
  return r;
}

std::string health_banner(const Health& h) {
  std::string reasons;
  for (const auto& r : h.reasons) reasons += "<li>" + escape(r) + "</li>";
  return fmt::format("<div id=\"health\" class=\"banner {0}\" data-state=\"{0}\">Health: {0}{1}</div>\n",
                     std::string(to_string(h.state)), reasons.empty() ? "" : "<ul>" + reasons + "</ul>");
}

std::string outbox_table(const std::vector<OutboxRow>& rows, const std::vector<std::string>& studies, bool with_study) {
  std::string out =
      "<table class=\"outbox\"><tr><th>id</th>" + std::string(with_study ? "<th>study</th>" : "") +
      "<th>destination</th><th>object</th><th>state</th><th>attempts</th><th>updated</th><th>last error</th><th></th></tr>\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& o = rows[i];
    out += fmt::format("<tr data-outbox=\"{}\"><td class=\"num\">{}</td>", o.id, o.id);
    if (with_study) out += fmt::format("<td><a href=\"/studies/{0}\">{0}</a></td>", escape(studies[i]));
    out += fmt::format("<td>{}</td><td>{}</td>{}<td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                       escape(o.destination), escape(o.kind), state_cell(o.state), o.attempts, time_of(o.updated_ms),
                       escape(o.last_error),
                       o.state == "sent" ? "" : fmt::format("<button type=\"button\" data-retry=\"{}\">Retry</button>", o.id));
  }
  return out + "</table>\n";
}

// A string member, or "" when it is absent or not a string (features.json is read, not trusted).
std::string text(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A few values of a JSON object, for the measurements table (numbers and short strings).
std::string json_values(const nlohmann::json& j, int max) {
  std::string out;
  int n = 0;
  for (const auto& [k, v] : j.items()) {
    if (n >= max) break;
    if (v.is_number()) out += fmt::format("{}: {:.6g}; ", escape(k), v.get<double>());
    else if (v.is_string() && v.get<std::string>().size() < 80) out += fmt::format("{}: {}; ", escape(k), escape(v.get<std::string>()));
    else if (v.is_boolean()) out += fmt::format("{}: {}; ", escape(k), v.get<bool>() ? "yes" : "no");
    else continue;
    ++n;
  }
  return out;
}

}  // namespace

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

HttpResponse overview(const Overview& o) {
  std::string b = health_banner(o.health);
  const Status& s = o.status;
  b += fmt::format(
      "<section id=\"summary\"><h2>Node</h2><p>DICOM port {} &middot; {} open association(s) &middot; {} association(s) "
      "&middot; {} rejected &middot; {} instance(s) stored, {} refused &middot; {} study(ies) assembling &middot; jobs "
      "{} queued, {} running</p></section>\n",
      s.port, s.open_associations, s.associations, s.rejected_associations, s.instances_stored, s.instances_refused,
      s.open_studies, s.jobs_queued, s.jobs_running);

  b += "<section><h2>Recent studies</h2>\n";
  if (o.studies.empty()) b += "<p class=\"muted\" id=\"no-studies\">No study received yet.</p>\n";
  else {
    b += "<table id=\"studies\"><tr><th>study</th><th>date</th><th>modality</th><th>description</th><th>state</th>"
         "<th>generation</th><th>instances</th><th>last instance</th><th>analysis</th></tr>\n";
    for (const auto& l : o.studies)
      b += fmt::format(
          "<tr data-study=\"{0}\"><td><a href=\"/studies/{0}\">{0}</a></td><td>{6}</td><td>{7}</td><td>{8}</td>{1}"
          "<td class=\"num\">{2}</td><td class=\"num\">{3}</td><td>{4}</td>{5}</tr>\n",
          escape(l.id), state_cell(l.study.state == StudyState::open ? "open" : "complete"), l.study.generation,
          l.study.instance_count, time_of(l.study.last_instance_ms),
          l.job ? fmt::format("<td class=\"job state-{0}\">{0}</td>", escape(l.job->state)) : "<td class=\"job\"></td>",
          escape(l.facts.study_date), escape(join(l.facts.modalities)), escape(l.facts.study_description));
    b += "</table>\n";
  }
  b += "</section>\n<section id=\"outbox\"><h2>Outbox</h2>\n";
  if (o.outbox_counts.empty()) b += "<p class=\"muted\">Nothing queued for the destinations.</p>\n";
  else {
    b += "<table id=\"outbox-counts\"><tr><th>destination</th><th>state</th><th>objects</th></tr>\n";
    bool dead = false;
    for (const auto& c : o.outbox_counts) {
      b += fmt::format("<tr><td>{}</td>{}<td class=\"num\">{}</td></tr>\n", escape(c.destination), state_cell(c.state), c.rows);
      dead = dead || (c.state == "dead" && c.rows > 0);
    }
    b += "</table>\n";
    if (dead) b += "<p><button type=\"button\" id=\"retry-dead\" data-retry=\"dead\">Retry every dead object</button></p>\n";
  }
  if (!o.outbox.empty()) {
    std::vector<OutboxRow> rows;
    std::vector<std::string> studies;
    for (const auto& l : o.outbox) {
      rows.push_back(l.row);
      studies.push_back(l.study);
    }
    b += "<h3>Pending and dead</h3>\n" + outbox_table(rows, studies, true);
  }
  b += "</section>\n<section id=\"quarantine\"><h2>Quarantine</h2>\n";
  if (o.quarantine.empty()) b += "<p class=\"muted\">No series failed or crashed.</p>\n";
  else {
    b += "<table><tr><th>study</th><th>series</th><th>state</th><th>profile</th><th>attempts</th><th>ended</th><th>reason</th></tr>\n";
    for (const auto& q : o.quarantine)
      b += fmt::format("<tr><td><a href=\"/studies/{0}\">{0}</a></td><td><code>{1}</code></td>{2}<td>{3}</td>"
                       "<td class=\"num\">{4}</td><td>{5}</td><td>{6}</td></tr>\n",
                       escape(q.study), escape(q.run.series_uid), state_cell(q.run.state), escape(q.run.profile),
                       q.run.attempts, time_of(q.run.ended_ms), escape(q.run.error));
    b += "</table>\n";
  }
  b += "</section>\n";
  return html("Overview", b);
}

HttpResponse study(const StudyDetail& d) {
  std::string b = fmt::format(
      "<section id=\"study\" data-study=\"{0}\"><h2>Study {0}</h2><table><tr><th>Study Instance UID</th><td><code>{1}</code></td></tr>"
      "<tr><th>state</th>{2}</tr><tr><th>generation</th><td>{3}</td></tr><tr><th>instances</th><td>{4}</td></tr>"
      "<tr><th>last instance</th><td>{5}</td></tr><tr><th>accession number</th><td>{6}</td></tr>"
      "<tr><th>study date</th><td>{7}</td></tr><tr><th>modalities</th><td>{8}</td></tr>"
      "<tr><th>description</th><td>{9}</td></tr></table></section>\n",
      escape(d.id), escape(d.study.study_uid), state_cell(d.study.state == StudyState::open ? "open" : "complete"),
      d.study.generation, d.study.instance_count, time_of(d.study.last_instance_ms), escape(d.facts.accession_number),
      escape(d.facts.study_date), escape(join(d.facts.modalities)), escape(d.facts.study_description));

  b += "<section id=\"jobs\"><h2>Analysis jobs</h2>\n";
  if (d.study.state == StudyState::complete)
    b += fmt::format("<p><button type=\"button\" id=\"reanalyse\" data-reanalyse=\"{}\">Analyse again</button></p>\n", escape(d.id));
  if (d.jobs.empty()) b += "<p class=\"muted\">None yet.</p>\n";
  else {
    b += "<table><tr><th>job</th><th>generation</th><th>state</th><th>error</th></tr>\n";
    for (const auto& j : d.jobs)
      b += fmt::format("<tr><td class=\"num\">{}</td><td class=\"num\">{}</td>{}<td>{}</td></tr>\n", j.id, j.generation,
                       state_cell(j.state), escape(j.error));
    b += "</table>\n";
  }
  b += "</section>\n<section id=\"series\"><h2>Series</h2>\n";
  if (d.series.empty()) b += "<p class=\"muted\">No series analysed yet.</p>\n";
  else {
    b += "<table><tr><th>series</th><th>generation</th><th>rule</th><th>profile</th><th>state</th><th>attempts</th><th>volumes</th>"
         "<th>started</th><th>took</th><th>note</th></tr>\n";
    for (const auto& r : d.series)
      b += fmt::format("<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td><td>{}</td>{}<td class=\"num\">{}</td>"
                       "<td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                       escape(r.series_uid), r.generation, escape(r.rule), escape(r.profile), state_cell(r.state), r.attempts,
                       r.volumes, time_of(r.started_ms), duration_of(r.started_ms, r.ended_ms), escape(r.error));
    b += "</table>\n";
  }
  b += "</section>\n<section id=\"measurements\"><h2>Measurements</h2>\n";
  if (d.results_tag.empty()) b += "<p class=\"muted\">No results yet.</p>\n";
  else {
    // <series>_key_NN.png are the key images (analysis.key_images), the rest previews.
    const auto is_key = [](const std::string& p) { return p.find("_key_") != std::string::npos; };
    const auto figures = [&](bool key) {
      for (const auto& p : d.previews)
        if (is_key(p) == key)
          b += fmt::format("<figure><img class=\"{2}\" src=\"/files/results/{0}/{1}\" alt=\"{3} {1}\"><figcaption>{1}"
                           "</figcaption></figure>\n",
                           escape(d.results_tag), escape(p), key ? "key-image" : "preview", key ? "key image" : "preview");
    };
    figures(false);
    if (std::any_of(d.previews.begin(), d.previews.end(), is_key)) {
      b += "<h3>Key images</h3>\n<div id=\"key-images\">\n";
      figures(true);
      b += "</div>\n";
    }
    if (d.features.is_object() && d.features.contains("series") && d.features["series"].is_array()) {
      b += "<table id=\"segments\"><tr><th>series</th><th>profile</th><th>segment</th><th>values</th></tr>\n";
      for (const auto& s : d.features["series"]) {
        if (!s.is_object()) continue;
        const std::string key = text(s, "key"), profile = text(s, "profile");
        const auto it = s.find("segments");
        const auto segments = it != s.end() && it->is_array() ? *it : nlohmann::json::array();
        if (segments.empty())
          b += fmt::format("<tr><td>{}</td><td>{}</td><td></td><td>{}</td></tr>\n", escape(key), escape(profile),
                           s.contains("timings_ms") && s["timings_ms"].is_object() ? "timings (ms): " + json_values(s["timings_ms"], 12) : "");
        for (const auto& g : segments) {
          if (!g.is_object()) continue;
          std::string values = json_values(g, 6);
          for (const auto& [k, v] : g.items())
            if (v.is_object()) values += json_values(v, 8);
          b += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n", escape(key), escape(profile),
                           escape(text(g, "name")), values);
        }
      }
      b += "</table>\n";
    }
  }
  b += "</section>\n<section id=\"delivery\"><h2>Delivery</h2>\n";
  if (d.outbox.empty()) b += "<p class=\"muted\">Nothing queued for this study.</p>\n";
  else b += outbox_table(d.outbox, {}, false);
  b += "</section>\n";
  return html("Study " + d.id, b);
}

HttpResponse login(bool failed) {
  HttpResponse r;
  r.content_type = "text/html; charset=utf-8";
  r.headers.emplace_back("Cache-Control", "no-store");
  r.body = fmt::format(
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pacsnode: log in</title><style>{}</style></head>\n"
      "<body><header><h1>pacsnode</h1></header><main><section><h2>Log in</h2>{}"
      "<form method=\"post\" action=\"/login\"><label>Token (<code>http.token</code> of the node's config) "
      "<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" autofocus></label> "
      "<button type=\"submit\" id=\"login\">Log in</button></form></section></main></body></html>\n",
      kStyle, failed ? "<p class=\"state-failed\" id=\"login-failed\">Wrong token.</p>" : "");
  return r;
}

HttpResponse not_found(const std::string& id) {
  HttpResponse r = html("Not found", "<section><h2>No such study</h2><p>" + escape(id.substr(0, 64)) + "</p></section>\n");
  r.status = 404;
  return r;
}

}  // namespace scp::http_page
