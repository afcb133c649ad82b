#include "config/config.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

namespace config {
namespace {

// Reads one TOML table, records which keys it consumed and every problem, so that all problems
// of a file are reported at once and unknown keys are errors.
class Section {
 public:
  Section(const toml::table& t, std::string path, std::vector<std::string>& problems)
      : table_(t), path_(std::move(path)), problems_(problems) {}
  ~Section() {
    for (auto&& [k, v] : table_)
      if (!seen_.count(std::string(k.str())))
        problems_.push_back(fmt::format("{}: unknown key", key(k.str())));
  }

  void string(std::string_view k, std::string& out) {
    if (auto* n = get(k)) {
      if (auto v = n->value<std::string>()) out = *v;
      else wrong_type(k, "a string");
    }
  }
  template <typename Int>
  void integer(std::string_view k, Int& out, std::int64_t lo, std::int64_t hi) {
    if (auto* n = get(k)) {
      if (!n->is_integer()) return wrong_type(k, "an integer");
      const auto v = n->as_integer()->get();
      if (v < lo || v > hi) problems_.push_back(fmt::format("{}: {} is out of range {}..{}", key(k), v, lo, hi));
      else out = static_cast<Int>(v);
    }
  }
  void boolean(std::string_view k, bool& out) {
    if (auto* n = get(k)) {
      if (auto v = n->value<bool>()) out = *v;
      else wrong_type(k, "true or false");
    }
  }
  void strings(std::string_view k, std::vector<std::string>& out) {
    if (auto* n = get(k)) {
      auto* arr = n->as_array();
      if (!arr) return wrong_type(k, "an array of strings");
      out.clear();
      for (auto&& e : *arr) {
        if (auto s = e.value<std::string>()) out.push_back(*s);
        else return wrong_type(k, "an array of strings");
      }
    }
  }
  template <typename T>
  void optional_integer(std::string_view k, std::optional<T>& out, std::int64_t lo, std::int64_t hi) {
    if (!table_.contains(k)) { seen_.insert(std::string(k)); return; }
    T v{};
    integer(k, v, lo, hi);
    out = v;
  }
  void optional_number(std::string_view k, std::optional<double>& out, double lo, double hi) {
    if (auto* n = get(k)) {
      auto v = n->value<double>();
      if (!v) return wrong_type(k, "a number");
      if (*v < lo || *v > hi) return problem(k, fmt::format("{} is out of range {}..{}", *v, lo, hi));
      out = *v;
    }
  }
  void optional_pair(std::string_view k, std::optional<std::array<double, 2>>& out) {
    if (auto* n = get(k)) {
      auto* arr = n->as_array();
      if (!arr || arr->size() != 2 || !arr->get(0)->value<double>() || !arr->get(1)->value<double>())
        return wrong_type(k, "an array of two numbers");
      out = std::array<double, 2>{*arr->get(0)->value<double>(), *arr->get(1)->value<double>()};
    }
  }
  void optional_string(std::string_view k, std::optional<std::string>& out) {
    if (table_.contains(k)) { std::string v; string(k, v); out = v; }
  }
  void optional_strings(std::string_view k, std::optional<std::vector<std::string>>& out) {
    if (table_.contains(k)) { std::vector<std::string> v; strings(k, v); out = v; }
  }
  void optional_boolean(std::string_view k, std::optional<bool>& out) {
    if (table_.contains(k)) { bool v = false; boolean(k, v); out = v; }
  }
  bool has(std::string_view k) const { return table_.contains(k); }
  std::string key(std::string_view k) const { return path_.empty() ? std::string(k) : path_ + "." + std::string(k); }
  void problem(std::string_view k, const std::string& what) { problems_.push_back(fmt::format("{}: {}", key(k), what)); }

 private:
  const toml::node* get(std::string_view k) {
    seen_.insert(std::string(k));
    return table_.get(k);
  }
  void wrong_type(std::string_view k, std::string_view want) { problem(k, fmt::format("must be {}", want)); }

  const toml::table& table_;
  std::string path_;
  std::vector<std::string>& problems_;
  std::set<std::string> seen_;
};

// DICOM AE title: 1-16 characters of the default repertoire, no backslash or control characters,
// not only spaces.
bool valid_ae_title(const std::string& ae) {
  if (ae.empty() || ae.size() > 16) return false;
  bool any = false;
  for (unsigned char c : ae) {
    if (c < 0x20 || c > 0x7e || c == '\\') return false;
    any = any || c != ' ';
  }
  return any;
}

bool valid_ipv4(const std::string& text) {
  std::istringstream is(text);
  int a, b, c, d; char d1, d2, d3; std::string rest;
  return (is >> a >> d1 >> b >> d2 >> c >> d3 >> d) && d1 == '.' && d2 == '.' && d3 == '.' && !(is >> rest) && a >= 0 &&
         a < 256 && b >= 0 && b < 256 && c >= 0 && c < 256 && d >= 0 && d < 256;
}

void check_tls_profile(Section& s, std::string_view key, const std::string& profile) {
  if (profile != "bcp195-nd" && profile != "bcp195-extended")
    s.problem(key, fmt::format("\"{}\" is not bcp195-nd or bcp195-extended", profile));
}

const toml::table* sub_table(const toml::table& root, std::string_view name, std::vector<std::string>& problems) {
  const toml::node* n = root.get(name);
  if (!n) return nullptr;
  if (auto* t = n->as_table()) return t;
  problems.push_back(fmt::format("{}: must be a table ([{}])", name, name));
  return nullptr;
}

void read_node(const toml::table& t, Config::Node& n, std::vector<std::string>& p) {
  Section s(t, "node", p);
  s.string("ae_title", n.ae_title);
  if (!valid_ae_title(n.ae_title)) s.problem("ae_title", fmt::format("\"{}\" is not an AE title (1-16 printable characters, no backslash)", n.ae_title));
  s.string("bind", n.bind);
  if (!valid_ipv4(n.bind)) s.problem("bind", fmt::format("\"{}\" is not an IPv4 address", n.bind));
  s.integer("port", n.port, 1, 65535);
  s.integer("max_associations", n.max_associations, 1, 1000);
  s.strings("allowed_calling_ae", n.allowed_calling_ae);
  for (const auto& ae : n.allowed_calling_ae)
    if (!valid_ae_title(ae)) s.problem("allowed_calling_ae", fmt::format("\"{}\" is not an AE title", ae));
  s.integer("acse_timeout_seconds", n.acse_timeout_seconds, 1, 3600);
  s.integer("dimse_timeout_seconds", n.dimse_timeout_seconds, 1, 3600);
  s.integer("drain_seconds", n.drain_seconds, 0, 3600);
  s.integer("preassociation_timeout_seconds", n.preassociation_timeout_seconds, 1, 300);
  s.integer("max_pending_connections", n.max_pending_connections, 1, 10000);
  s.integer("max_pending_per_source", n.max_pending_per_source, 1, 10000);
  if (n.max_pending_per_source > n.max_pending_connections)
    s.problem("max_pending_per_source", fmt::format("{} is more than node.max_pending_connections ({})", n.max_pending_per_source,
                                                    n.max_pending_connections));
  s.string("name", n.name);
  if (!n.name.empty() && (n.name.size() > 64 || n.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                                                     std::string::npos || n.name[0] == '.'))
    s.problem("name", fmt::format("\"{}\" is not a node name (1-64 of A-Z a-z 0-9 . _ -, not starting with a dot)", n.name));
  s.boolean("receive", n.receive);
}

void read_index(const toml::table& t, Config::IndexConfig& ix, std::vector<std::string>& p) {
  Section s(t, "index", p);
  s.string("backend", ix.backend);
  if (ix.backend != "sqlite" && ix.backend != "postgresql")
    s.problem("backend", fmt::format("\"{}\" is not sqlite or postgresql", ix.backend));
  s.string("dsn", ix.dsn);
  if (ix.backend == "postgresql" && ix.dsn.empty())
    s.problem("dsn", "is needed for backend = \"postgresql\" (e.g. \"host=db1 port=5432 dbname=pacsnode user=pacsnode\")");
  if (ix.backend == "sqlite" && !ix.dsn.empty()) s.problem("dsn", "is for backend = \"postgresql\" only");
  s.integer("lease_seconds", ix.lease_seconds, 3, 3600);
  s.integer("poll_seconds", ix.poll_seconds, 1, 60);
  if (ix.poll_seconds * 2 > ix.lease_seconds)
    s.problem("poll_seconds", fmt::format("{} is more than half of index.lease_seconds ({})", ix.poll_seconds, ix.lease_seconds));
}

void read_storage(const toml::table& t, Config::Storage& st, std::vector<std::string>& p) {
  Section s(t, "storage", p);
  std::string root = st.root.string();
  s.string("root", root);
  if (root.empty()) s.problem("root", "must not be empty");
  st.root = root;
  s.integer("min_free_mb", st.min_free_mb, 0, 1 << 30);
  s.integer("max_instance_mb", st.max_instance_mb, 1, 1 << 20);
  s.integer("rejected_max_mb", st.rejected_max_mb, 0, 1 << 30);
  s.integer("rejected_max_files", st.rejected_max_files, 0, 10'000'000);
  s.integer("journal_mb", st.journal_mb, 0, 1 << 20);
  if (st.journal_mb > 0 && st.journal_mb < 32) s.problem("journal_mb", "must be 0 (off) or at least 32 (one segment)");
}

void read_limits(const toml::table& t, Config::Limits& l, std::vector<std::string>& p) {
  Section s(t, "limits", p);
  s.integer("max_depth", l.max_depth, 1, 256);
  s.integer("max_elements", l.max_elements, 100, 100'000'000);
  s.integer("max_pixel_mb", l.max_pixel_mb, 1, 1 << 20);
  s.integer("max_inflated_mb", l.max_inflated_mb, 1, 1 << 20);
}

void read_study(const toml::table& t, Config::Study& st, std::vector<std::string>& p) {
  Section s(t, "study", p);
  s.integer("quiet_seconds", st.quiet_seconds, 1, 7 * 24 * 3600);
  s.integer("expected_grace_seconds", st.expected_grace_seconds, 0, 3600);
}

void read_analysis(const toml::table& t, Config::Analysis& a, std::vector<std::string>& p) {
  Section s(t, "analysis", p);
  s.boolean("enabled", a.enabled);
  s.integer("workers", a.workers, 1, 64);
  s.boolean("key_images", a.key_images);
  s.boolean("keep_empty_frames", a.keep_empty_frames);
  s.string("research_label", a.research_label);
  if (a.research_label.size() > 40) s.problem("research_label", "at most 40 characters");
  for (char ch : a.research_label)
    if (static_cast<unsigned char>(ch) < 32 || static_cast<unsigned char>(ch) > 126) {
      s.problem("research_label", "printable ASCII only (it goes into DICOM LO values and the preview)");
      break;
    }
  s.strings("builtin_profiles", a.builtin_profiles);
  for (const auto& b : a.builtin_profiles)
    if (b != "ct-chest" && b != "generic") s.problem("builtin_profiles", fmt::format("\"{}\" is not ct-chest or generic", b));
  s.string("unmatched", a.unmatched);
  if (a.unmatched.empty()) s.problem("unmatched", "must be \"ignore\", \"auto\" or a profile name");
  s.integer("worker_memory_mb", a.worker_memory_mb, 256, 1 << 20);
  s.integer("worker_cpu_seconds", a.worker_cpu_seconds, 1, 7 * 86400);
  s.integer("worker_timeout_seconds", a.worker_timeout_seconds, 1, 7 * 86400);
  s.boolean("prestart_worker", a.prestart_worker);
}

void read_outbound(const toml::table& t, Config::Outbound& o, std::vector<std::string>& p) {
  Section s(t, "outbound", p);
  s.integer("max_attempts", o.max_attempts, 1, 1000);
  s.integer("max_age_hours", o.max_age_hours, 1, 24 * 365);
  s.integer("initial_backoff_seconds", o.initial_backoff_seconds, 1, 86400);
  s.integer("max_backoff_seconds", o.max_backoff_seconds, 1, 86400);
  s.integer("connect_timeout_seconds", o.connect_timeout_seconds, 1, 600);
  s.integer("dimse_timeout_seconds", o.dimse_timeout_seconds, 1, 3600);
  s.integer("batch", o.batch, 1, 1000);
  if (o.max_backoff_seconds < o.initial_backoff_seconds)
    s.problem("max_backoff_seconds", "must not be less than outbound.initial_backoff_seconds");
}

void read_retention(const toml::table& t, Config::Retention& r, std::vector<std::string>& p) {
  Section s(t, "retention", p);
  for (auto [key, out] : {std::pair{"incoming_days", &r.incoming_days}, std::pair{"outbound_days", &r.outbound_days},
                          std::pair{"results_days", &r.results_days}, std::pair{"quarantine_days", &r.quarantine_days}}) {
    std::optional<double> v;
    s.optional_number(key, v, 0, 36500);
    if (v) *out = *v;
  }
  s.integer("high_water_percent", r.high_water_percent, 0, 99);
  s.integer("interval_seconds", r.interval_seconds, 1, 86400);
}

// Reads every table of a [[key]] array whose `name` is required and unique, calling
// read(table, section, name) for each.
template <typename Read>
void read_named_tables(const toml::node& n, std::string_view key, std::vector<std::string>& p, Read read) {
  const auto* arr = n.as_array();
  if (!arr || !arr->is_array_of_tables()) {
    p.push_back(fmt::format("{}: must be an array of tables ([[{}]])", key, key));
    return;
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const auto& t = *arr->get(i)->as_table();
    Section s(t, fmt::format("{}[{}]", key, i), p);
    std::string name;
    s.string("name", name);
    if (name.empty()) s.problem("name", "is required");
    else if (!names.insert(name).second) s.problem("name", fmt::format("\"{}\" is used by another {}", name, key));
    read(t, s, std::move(name));
  }
}

void read_ibsi_keys(Section& s, ProfileConfig& pc) {
  s.optional_string("ibsi_preset", pc.ibsi_preset);
  if (pc.ibsi_preset && (pc.ibsi_preset->size() != 1 || std::string("ABCDEabcde").find((*pc.ibsi_preset)[0]) == std::string::npos))
    s.problem("ibsi_preset", "must be one of the IBSI CT phantom configurations \"A\" to \"E\"");
    s.optional_strings("ibsi_families", pc.ibsi_families);
    s.optional_string("ibsi_texture", pc.ibsi_texture);
    if (pc.ibsi_texture && *pc.ibsi_texture != "3d" && *pc.ibsi_texture != "2d" && *pc.ibsi_texture != "all")
      s.problem("ibsi_texture", "must be \"3d\", \"2d\" or \"all\"");
    s.optional_number("ibsi_spacing_mm", pc.ibsi_spacing_mm, 0.1, 20);
    s.optional_string("ibsi_interpolation", pc.ibsi_interpolation);
    if (pc.ibsi_interpolation && *pc.ibsi_interpolation != "nearest" && *pc.ibsi_interpolation != "linear" &&
        *pc.ibsi_interpolation != "cubic")
      s.problem("ibsi_interpolation", "must be \"nearest\", \"linear\" or \"cubic\"");
    s.optional_pair("ibsi_reseg_range", pc.ibsi_reseg_range);
    if (pc.ibsi_reseg_range && (*pc.ibsi_reseg_range)[0] >= (*pc.ibsi_reseg_range)[1])
      s.problem("ibsi_reseg_range", "needs [min, max] with min < max");
    s.optional_boolean("ibsi_reseg_outliers", pc.ibsi_reseg_outliers);
    s.optional_string("ibsi_discretisation", pc.ibsi_discretisation);
    if (pc.ibsi_discretisation && *pc.ibsi_discretisation != "fbs" && *pc.ibsi_discretisation != "fbn")
      s.problem("ibsi_discretisation", "must be \"fbs\" or \"fbn\"");
    s.optional_number("ibsi_bin_width", pc.ibsi_bin_width, 1e-6, 1e6);
    s.optional_integer("ibsi_bins", pc.ibsi_bins, 2, 4096);
}

void read_profiles(const toml::node& n, std::vector<ProfileConfig>& out, std::vector<std::string>& p) {
  read_named_tables(n, "profile", p, [&](const toml::table&, Section& s, std::string name) {
    ProfileConfig pc;
    pc.name = std::move(name);
    s.string("base", pc.base);
    if (pc.base != "ct-chest" && pc.base != "generic") s.problem("base", fmt::format("\"{}\" is not ct-chest or generic", pc.base));
    s.optional_strings("modalities", pc.modalities);
    s.optional_strings("keywords", pc.keywords);
    s.optional_strings("tokens", pc.tokens);
    s.optional_integer("median", pc.median, 0, 5);
    if (pc.median && *pc.median != 0 && *pc.median != 3 && *pc.median != 5) s.problem("median", "must be 0, 3 or 5");
    s.optional_number("gaussian_sigma_mm", pc.gaussian_sigma_mm, 0, 50);
    s.optional_pair("threshold", pc.threshold);
    if (pc.threshold && (*pc.threshold)[0] > (*pc.threshold)[1]) s.problem("threshold", "needs [low, high] with low <= high");
    s.optional_integer("keep_largest", pc.keep_largest, 0, 1000);
    s.optional_boolean("fill_holes", pc.fill_holes);
    s.optional_string("segment_name", pc.segment_name);
    s.optional_number("laa_threshold_hu", pc.laa_threshold_hu, -1024, 0);
    s.optional_number("emphysema_threshold_percent", pc.emphysema_threshold_percent, 0, 100);
    s.optional_pair("window", pc.window);
    if (pc.window && (*pc.window)[0] <= 0) s.problem("window", "width must be positive");
    s.optional_string("model", pc.model);
    s.optional_strings("destinations", pc.destinations);
    read_ibsi_keys(s, pc);
    if (pc.base == "generic" && (pc.laa_threshold_hu || pc.emphysema_threshold_percent))
      s.problem("laa_threshold_hu", "applies to base = \"ct-chest\" only");
    out.push_back(std::move(pc));
  });
}

void read_rules(const toml::node& n, std::vector<RuleConfig>& out, std::vector<std::string>& p) {
  read_named_tables(n, "rule", p, [&](const toml::table&, Section& s, std::string name) {
    RuleConfig r;
    r.name = std::move(name);
    s.string("action", r.action);
    if (r.action != "analyse" && r.action != "ignore") s.problem("action", fmt::format("\"{}\" is not analyse or ignore", r.action));
    s.string("profile", r.profile);
    if (r.profile.empty()) s.problem("profile", "must be a profile name or \"auto\"");
    s.strings("modalities", r.modalities);
    s.strings("keywords", r.keywords);
    s.strings("tokens", r.tokens);
    s.strings("body_parts", r.body_parts);
    s.strings("series_descriptions", r.series_descriptions);
    s.strings("study_descriptions", r.study_descriptions);
    s.strings("calling_ae", r.calling_ae);
    s.strings("sop_classes", r.sop_classes);
    s.integer("min_slices", r.min_slices, 0, 1000000);
    out.push_back(std::move(r));
  });
}

void read_destinations(const toml::node& n, std::vector<Destination>& out, std::vector<std::string>& p) {
  read_named_tables(n, "destination", p, [&](const toml::table& t, Section& s, std::string name) {
    Destination d;
    d.name = std::move(name);
    s.string("ae_title", d.ae_title);
    s.string("host", d.host);
    if (!t.contains("port")) s.problem("port", "is required");
    s.integer("port", d.port, 1, 65535);
    if (!valid_ae_title(d.ae_title)) s.problem("ae_title", d.ae_title.empty() ? "is required" : fmt::format("\"{}\" is not an AE title", d.ae_title));
    if (d.host.empty()) s.problem("host", "is required");
    s.boolean("tls", d.tls);
    s.string("tls_ca_certificates", d.tls_ca_certificates);
    s.string("tls_certificate", d.tls_certificate);
    s.string("tls_private_key", d.tls_private_key);
    s.string("tls_profile", d.tls_profile);
    s.string("tls_server_name", d.tls_server_name);
    if (d.tls_server_name.find_first_of(" \t/\\") != std::string::npos)
      s.problem("tls_server_name", fmt::format("\"{}\" is not a host name or an IP address", d.tls_server_name));
    check_tls_profile(s, "tls_profile", d.tls_profile);
    if (d.tls && d.tls_ca_certificates.empty())
      s.problem("tls_ca_certificates", "is required with tls = true (the CA certificates the destination's certificate must chain to)");
    if (d.tls_certificate.empty() != d.tls_private_key.empty())
      s.problem(d.tls_certificate.empty() ? "tls_certificate" : "tls_private_key", "is required with the other (a client certificate and its key)");
    out.push_back(std::move(d));
  });
}

void read_tls(const toml::table& t, Config::Tls& tls, std::vector<std::string>& p) {
  Section s(t, "tls", p);
  s.boolean("enabled", tls.enabled);
  s.integer("port", tls.port, 1, 65535);
  s.boolean("plain", tls.plain);
  s.string("certificate", tls.certificate);
  s.string("private_key", tls.private_key);
  s.string("ca_certificates", tls.ca_certificates);
  s.boolean("require_client_certificate", tls.require_client_certificate);
  s.string("profile", tls.profile);
  check_tls_profile(s, "profile", tls.profile);
  if (!tls.enabled) {
    if (!tls.plain) s.problem("plain", "false needs tls.enabled = true (the node would not listen at all)");
    return;
  }
  if (tls.certificate.empty()) s.problem("certificate", "is required when tls.enabled (PEM file of the node's certificate)");
  if (tls.private_key.empty()) s.problem("private_key", "is required when tls.enabled (PEM file of its private key)");
  if (tls.require_client_certificate && tls.ca_certificates.empty())
    s.problem("ca_certificates", "is required with require_client_certificate (the CA certificates clients' certificates must chain to)");
}

// [[calling_ae]]: keyed by ae_title (unique), no name.
void read_calling_aes(const toml::node& n, std::vector<CallingAe>& out, std::vector<std::string>& p) {
  const auto* arr = n.as_array();
  if (!arr || !arr->is_array_of_tables()) {
    p.push_back("calling_ae: must be an array of tables ([[calling_ae]])");
    return;
  }
  std::set<std::string> titles;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    Section s(*arr->get(i)->as_table(), fmt::format("calling_ae[{}]", i), p);
    CallingAe c;
    s.string("ae_title", c.ae_title);
    if (!valid_ae_title(c.ae_title)) s.problem("ae_title", c.ae_title.empty() ? "is required" : fmt::format("\"{}\" is not an AE title", c.ae_title));
    else if (!titles.insert(c.ae_title).second) s.problem("ae_title", fmt::format("\"{}\" has another [[calling_ae]] table", c.ae_title));
    s.strings("hosts", c.hosts);
    for (const auto& h : c.hosts)
      if (!valid_ipv4(h)) s.problem("hosts", fmt::format("\"{}\" is not an IPv4 address", h));
    s.strings("tls_subjects", c.tls_subjects);
    for (const auto& subject : c.tls_subjects)
      if (subject.find('=') == std::string::npos)
        s.problem("tls_subjects", fmt::format("\"{}\" is not a subject in RFC 2253 form (e.g. \"CN=ct1,O=Hospital\")", subject));
    out.push_back(std::move(c));
  }
}

void read_http(const toml::table& t, Config::Http& h, std::vector<std::string>& p) {
  Section s(t, "http", p);
  s.boolean("enabled", h.enabled);
  s.string("bind", h.bind);
  if (!valid_ipv4(h.bind)) s.problem("bind", fmt::format("\"{}\" is not an IPv4 address", h.bind));
  s.integer("port", h.port, 1, 65535);
  s.string("token", h.token);
  if (h.enabled && h.token.size() < 16)
    s.problem("token", h.token.empty() ? "required when http.enabled (a secret of at least 16 characters)"
                                       : "must have at least 16 characters");
  // It also travels in the status page's cookie: letters, digits and - . _ ~ + / = only.
  if (h.token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=") != std::string::npos)
    s.problem("token", "only letters, digits and - . _ ~ + / = (e.g. `openssl rand -hex 24`)");
  s.integer("max_connections", h.max_connections, 1, 10000);
  s.integer("request_timeout_seconds", h.request_timeout_seconds, 1, 3600);
}

void read_log(const toml::table& t, Config::Log& l, std::vector<std::string>& p) {
  Section s(t, "log", p);
  s.string("level", l.level);
  static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "critical"};
  if (!levels.count(l.level)) s.problem("level", fmt::format("\"{}\" is not one of trace, debug, info, warn, error, critical", l.level));
}

std::string join(const std::vector<std::string>& lines) {
  std::string all;
  for (const auto& l : lines) all += (all.empty() ? "" : "\n") + l;
  return all;
}

}  // namespace

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(join(problems)), problems_(std::move(problems)) {}

ProfileConfig parse_feature_overrides(std::string_view text) {
  toml::table root;
  try {
    root = toml::parse(text, std::string_view("feature options"));
  } catch (const toml::parse_error& e) {
    throw ConfigError({fmt::format("feature options: {}", e.description())});
  }
  ProfileConfig pc;
  std::vector<std::string> problems;
  {
    Section s(root, "", problems);
    read_ibsi_keys(s, pc);
  }  // reports unknown keys
  if (!problems.empty()) throw ConfigError(problems);
  return pc;
}

Config parse(std::string_view text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw ConfigError({fmt::format("{}:{}:{}: {}", source, b.line, b.column, e.description())});
  }
  Config c;
  std::vector<std::string> problems;
  for (auto&& [k, v] : root) {
    const std::string name(k.str());
    if (name == "node") { if (auto* t = sub_table(root, name, problems)) read_node(*t, c.node, problems); }
    else if (name == "index") { if (auto* t = sub_table(root, name, problems)) read_index(*t, c.index, problems); }
    else if (name == "storage") { if (auto* t = sub_table(root, name, problems)) read_storage(*t, c.storage, problems); }
    else if (name == "limits") { if (auto* t = sub_table(root, name, problems)) read_limits(*t, c.limits, problems); }
    else if (name == "study") { if (auto* t = sub_table(root, name, problems)) read_study(*t, c.study, problems); }
    else if (name == "outbound") { if (auto* t = sub_table(root, name, problems)) read_outbound(*t, c.outbound, problems); }
    else if (name == "analysis") { if (auto* t = sub_table(root, name, problems)) read_analysis(*t, c.analysis, problems); }
    else if (name == "retention") { if (auto* t = sub_table(root, name, problems)) read_retention(*t, c.retention, problems); }
    else if (name == "tls") { if (auto* t = sub_table(root, name, problems)) read_tls(*t, c.tls, problems); }
    else if (name == "calling_ae") read_calling_aes(v, c.calling_aes, problems);
    else if (name == "http") { if (auto* t = sub_table(root, name, problems)) read_http(*t, c.http, problems); }
    else if (name == "log") { if (auto* t = sub_table(root, name, problems)) read_log(*t, c.log, problems); }
    else if (name == "destination") read_destinations(v, c.destinations, problems);
    else if (name == "profile") read_profiles(v, c.profiles, problems);
    else if (name == "rule") read_rules(v, c.rules, problems);
    else problems.push_back(fmt::format("{}: unknown key", name));
  }
  // A profile may only name destinations that exist.
  for (std::size_t i = 0; i < c.profiles.size(); ++i)
    for (const auto& name : c.profiles[i].destinations.value_or(std::vector<std::string>{}))
      if (std::none_of(c.destinations.begin(), c.destinations.end(), [&](const Destination& d) { return d.name == name; }))
        problems.push_back(fmt::format("profile[{}].destinations: no [[destination]] named \"{}\"", i, name));
  // Rules and [analysis] unmatched name profiles that exist: a [[profile]] or an enabled built-in.
  auto profile_exists = [&](const std::string& name) {
    return name == "auto" ||
           std::any_of(c.profiles.begin(), c.profiles.end(), [&](const ProfileConfig& pc) { return pc.name == name; }) ||
           std::find(c.analysis.builtin_profiles.begin(), c.analysis.builtin_profiles.end(), name) !=
               c.analysis.builtin_profiles.end();
  };
  for (std::size_t i = 0; i < c.rules.size(); ++i)
    if (c.rules[i].action == "analyse" && !profile_exists(c.rules[i].profile))
      problems.push_back(fmt::format("rule[{}].profile: no [[profile]] or enabled built-in profile named \"{}\"", i,
                                     c.rules[i].profile));
  if (c.analysis.unmatched != "ignore" && !profile_exists(c.analysis.unmatched))
    problems.push_back(fmt::format("analysis.unmatched: \"{}\" is not ignore, auto, a [[profile]] or an enabled built-in profile",
                                   c.analysis.unmatched));
  if (c.tls.enabled && c.tls.plain && c.tls.port == c.node.port)
    problems.push_back(fmt::format("tls.port: {} is node.port too (plain DICOM listens there; set plain = false for TLS only)", c.tls.port));
  if (!c.node.receive && c.index.backend != "postgresql")
    problems.push_back("node.receive: false (an analysis-only node) needs index.backend = \"postgresql\", the index other nodes fill");
  if (!c.tls.enabled)
    for (std::size_t i = 0; i < c.calling_aes.size(); ++i)
      if (!c.calling_aes[i].tls_subjects.empty())
        problems.push_back(fmt::format("calling_ae[{}].tls_subjects: needs tls.enabled (only a TLS association has a certificate)", i));
  if (!problems.empty()) {
    for (auto& p : problems) p = fmt::format("{}: {}", source, p);
    throw ConfigError(std::move(problems));
  }
  c.source_text = std::string(text);
  c.source_name = std::string(source);
  return c;
}

Config load_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError({fmt::format("{}: cannot be read", file.string())});
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), file.string());
}

std::string_view default_toml() {
  static constexpr std::string_view text =
#include "default_config.inc"
      ;
  return text;
}

Config load_default() { return parse(default_toml(), "<embedded default>"); }

}  // namespace config
