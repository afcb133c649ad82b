#define BOOST_TEST_MODULE config
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <fstream>

#include "analysis/scan_limits.h"
#include "config/config.h"
#include "support/paths.h"

namespace {

std::vector<std::string> problems_of(const std::string& toml) {
  try {
    config::parse(toml, "t.toml");
  } catch (const config::ConfigError& e) {
    return e.problems();
  }
  return {};
}

bool mentions(const std::vector<std::string>& problems, const std::string& text) {
  return std::any_of(problems.begin(), problems.end(), [&](const std::string& p) { return p.find(text) != std::string::npos; });
}

}  // namespace

BOOST_AUTO_TEST_CASE(embedded_default_is_the_documented_example_and_matches_the_built_in_defaults) {
  const config::Config c = config::load_default();
  const config::Config d;
  BOOST_TEST(c.node.ae_title == d.node.ae_title);
  BOOST_TEST(c.node.bind == d.node.bind);
  BOOST_TEST(c.node.port == d.node.port);
  BOOST_TEST(c.node.max_associations == d.node.max_associations);
  BOOST_TEST(c.node.allowed_calling_ae.empty());
  BOOST_TEST(c.node.drain_seconds == d.node.drain_seconds);
  BOOST_TEST(c.node.preassociation_timeout_seconds == 5);
  BOOST_TEST(c.node.max_pending_connections == 64);
  BOOST_TEST(c.node.max_pending_per_source == 8);
  BOOST_TEST(d.node.preassociation_timeout_seconds == 5);
  BOOST_TEST(d.node.max_pending_connections == 64);
  BOOST_TEST(d.node.max_pending_per_source == 8);
  BOOST_TEST(c.storage.root == d.storage.root);
  BOOST_TEST(c.storage.min_free_mb == d.storage.min_free_mb);
  BOOST_TEST(c.storage.max_instance_mb == 2048u);
  BOOST_TEST(c.storage.rejected_max_mb == 512u);
  BOOST_TEST(c.storage.rejected_max_files == 1000u);
  BOOST_TEST(c.limits.max_depth == 64);
  BOOST_TEST(c.limits.max_elements == 1000000u);
  BOOST_TEST(c.limits.max_pixel_mb == 4096u);
  BOOST_TEST(c.limits.max_inflated_mb == 1024u);
  BOOST_TEST(c.study.quiet_seconds == 20);
  BOOST_TEST(c.log.level == "info");
  BOOST_TEST(c.tls.enabled == d.tls.enabled);
  BOOST_TEST(!c.tls.enabled);
  BOOST_TEST(c.tls.port == 2762);
  BOOST_TEST(c.tls.plain == d.tls.plain);
  BOOST_TEST(c.tls.require_client_certificate == d.tls.require_client_certificate);
  BOOST_TEST(c.tls.profile == d.tls.profile);
  BOOST_TEST(c.calling_aes.empty());
  // The shipped example is the same text.
  std::ifstream in(testsupport::source_dir() / "config/pacsnode.toml");
  std::stringstream ss;
  ss << in.rdbuf();
  BOOST_TEST(ss.str() == std::string(config::default_toml()));
}

BOOST_AUTO_TEST_CASE(full_config_parses) {
  const auto c = config::parse(R"(
[node]
ae_title = "NODE1"
bind = "0.0.0.0"
port = 104
max_associations = 4
allowed_calling_ae = ["CT1", "MR1"]
[storage]
root = "/srv/pacsnode"
[study]
quiet_seconds = 5
[[destination]]
name = "pacs"
ae_title = "ORTHANC"
host = "10.0.0.5"
port = 4242
[[destination]]
name = "archive"
ae_title = "ARCH"
host = "archive.local"
port = 11112
[log]
level = "debug"
)", "t.toml");
  BOOST_TEST(c.node.port == 104);
  BOOST_TEST(c.node.allowed_calling_ae.size() == 2u);
  BOOST_TEST(c.destinations.size() == 2u);
  BOOST_TEST(c.destinations[1].host == "archive.local");
  BOOST_TEST(c.study.quiet_seconds == 5);
}

BOOST_AUTO_TEST_CASE(unknown_keys_are_errors_naming_the_key) {
  BOOST_TEST(mentions(problems_of("[node]\nae_tilte = \"X\"\n"), "node.ae_tilte: unknown key"));
  BOOST_TEST(mentions(problems_of("[nodes]\n"), "nodes: unknown key"));
  BOOST_TEST(mentions(problems_of("[[destination]]\nname=\"a\"\nae_title=\"A\"\nhost=\"h\"\nport=1\nfoo=1\n"),
                      "destination[0].foo: unknown key"));
}

BOOST_AUTO_TEST_CASE(wrong_types_and_ranges_name_the_key) {
  BOOST_TEST(mentions(problems_of("[node]\nport = \"11112\"\n"), "node.port: must be an integer"));
  BOOST_TEST(mentions(problems_of("[node]\nport = 70000\n"), "node.port: 70000 is out of range 1..65535"));
  BOOST_TEST(mentions(problems_of("[node]\nmax_associations = 0\n"), "node.max_associations"));
  BOOST_TEST(mentions(problems_of("[node]\nallowed_calling_ae = \"CT1\"\n"), "node.allowed_calling_ae: must be an array of strings"));
  BOOST_TEST(mentions(problems_of("[study]\nquiet_seconds = 0\n"), "study.quiet_seconds"));
  BOOST_TEST(mentions(problems_of("[log]\nlevel = \"loud\"\n"), "log.level"));
  BOOST_TEST(mentions(problems_of("node = 3\n"), "node: must be a table"));
}

BOOST_AUTO_TEST_CASE(bad_values_name_the_key) {
  BOOST_TEST(mentions(problems_of("[node]\nae_title = \"THIS_TITLE_IS_TOO_LONG\"\n"), "node.ae_title"));
  BOOST_TEST(mentions(problems_of("[node]\nae_title = \"   \"\n"), "node.ae_title"));
  BOOST_TEST(mentions(problems_of("[node]\nbind = \"localhost:1\"\n"), "node.bind"));
  BOOST_TEST(mentions(problems_of("[node]\nallowed_calling_ae = [\"A\\\\B\"]\n"), "node.allowed_calling_ae"));
  BOOST_TEST(mentions(problems_of("[storage]\nroot = \"\"\n"), "storage.root: must not be empty"));
}

BOOST_AUTO_TEST_CASE(preassociation_limits_are_parsed_and_checked) {
  const auto c = config::parse("[node]\npreassociation_timeout_seconds = 2\nmax_pending_connections = 200\n"
                               "max_pending_per_source = 200\n", "t.toml");
  BOOST_TEST(c.node.preassociation_timeout_seconds == 2);
  BOOST_TEST(c.node.max_pending_connections == 200);
  BOOST_TEST(c.node.max_pending_per_source == 200);
  BOOST_TEST(mentions(problems_of("[node]\npreassociation_timeout_seconds = 0\n"),
                      "node.preassociation_timeout_seconds: 0 is out of range 1..300"));
  BOOST_TEST(mentions(problems_of("[node]\npreassociation_timeout_seconds = \"5s\"\n"),
                      "node.preassociation_timeout_seconds: must be an integer"));
  BOOST_TEST(mentions(problems_of("[node]\nmax_pending_connections = 0\n"), "node.max_pending_connections: 0 is out of range"));
  BOOST_TEST(mentions(problems_of("[node]\nmax_pending_per_source = 0\n"), "node.max_pending_per_source: 0 is out of range"));
  // The default per-source limit (8) above a lowered total is a problem too, named by the key.
  BOOST_TEST(mentions(problems_of("[node]\nmax_pending_connections = 4\n"),
                      "node.max_pending_per_source: 8 is more than node.max_pending_connections (4)"));
  BOOST_TEST(problems_of("[node]\nmax_pending_connections = 4\nmax_pending_per_source = 4\n").empty());
}

BOOST_AUTO_TEST_CASE(destinations_need_every_field_and_unique_names) {
  const auto p = problems_of("[[destination]]\nname = \"a\"\n[[destination]]\nname = \"a\"\nae_title=\"X\"\nhost=\"h\"\nport=5\n");
  BOOST_TEST(mentions(p, "destination[0].port: is required"));
  BOOST_TEST(mentions(p, "destination[0].ae_title: is required"));
  BOOST_TEST(mentions(p, "destination[0].host: is required"));
  BOOST_TEST(mentions(p, "destination[1].name: \"a\" is used by another destination"));
  BOOST_TEST(mentions(problems_of("destination = 5\n"), "destination: must be an array of tables"));
}

BOOST_AUTO_TEST_CASE(every_problem_is_reported_at_once_with_the_source) {
  const auto p = problems_of("[node]\nport = 0\nbogus = 1\n[log]\nlevel = \"x\"\n");
  BOOST_TEST(p.size() == 3u);
  for (const auto& line : p) BOOST_TEST(line.rfind("t.toml: ", 0) == 0u);
}

BOOST_AUTO_TEST_CASE(syntax_errors_give_line_and_column) {
  const auto p = problems_of("[node]\nport = = 3\n");
  BOOST_TEST_REQUIRE(p.size() == 1u);
  BOOST_TEST(p[0].find("t.toml:2:") == 0u);
}

BOOST_AUTO_TEST_CASE(missing_file_is_a_clear_error) {
  BOOST_CHECK_EXCEPTION(config::load_file("/nonexistent/pacsnode.toml"), config::ConfigError,
                        [](const config::ConfigError& e) { return std::string(e.what()).find("cannot be read") != std::string::npos; });
}

BOOST_AUTO_TEST_CASE(profile_tables_are_parsed_and_checked) {
  const auto c = config::parse(R"(
[[profile]]
name = "ct-lung-screening"
base = "ct-chest"
keywords = ["LUNG"]
median = 3
emphysema_threshold_percent = 6
window = [1500, -600]
[[profile]]
name = "mr-brain"
modalities = ["MR"]
threshold = [100, 4000]
keep_largest = 2
)", "t.toml");
  BOOST_TEST_REQUIRE(c.profiles.size() == 2u);
  BOOST_TEST(c.profiles[0].base == "ct-chest");
  BOOST_TEST(*c.profiles[0].median == 3);
  BOOST_TEST(*c.profiles[0].emphysema_threshold_percent == 6.0);
  BOOST_TEST(c.profiles[1].base == "generic");
  BOOST_TEST((*c.profiles[1].threshold)[1] == 4000.0);
  BOOST_TEST(!c.profiles[1].median.has_value());

  BOOST_TEST(mentions(problems_of("[[profile]]\nname=\"a\"\nmedian = 4\n"), "profile[0].median: must be 0, 3 or 5"));
  BOOST_TEST(mentions(problems_of("[[profile]]\nname=\"a\"\nbase = \"ct-head\"\n"), "profile[0].base"));
  BOOST_TEST(mentions(problems_of("[[profile]]\nname=\"a\"\nthreshold = [5, 1]\n"), "profile[0].threshold"));
  BOOST_TEST(mentions(problems_of("[[profile]]\nname=\"a\"\nwindow = \"wide\"\n"), "profile[0].window: must be an array of two numbers"));
  BOOST_TEST(mentions(problems_of("[[profile]]\nname=\"a\"\nlaa_threshold_hu = -900\n"), "applies to base = \"ct-chest\" only"));
  BOOST_TEST(mentions(problems_of("[[profile]]\nname=\"a\"\ncolour = 1\n"), "profile[0].colour: unknown key"));
  BOOST_TEST(mentions(problems_of("[[profile]]\nbase = \"generic\"\n"), "profile[0].name: is required"));
  BOOST_TEST(mentions(problems_of("[analysis]\nworkers = 0\n"), "analysis.workers"));
  BOOST_TEST(mentions(problems_of("[analysis]\nenabled = \"yes\"\n"), "analysis.enabled: must be true or false"));
}

BOOST_AUTO_TEST_CASE(profile_destinations_must_name_configured_destinations) {
  const auto c = config::parse(R"(
[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 104
[[profile]]
name = "research"
destinations = ["pacs"]
)", "t.toml");
  BOOST_TEST_REQUIRE(c.profiles.at(0).destinations.has_value());
  BOOST_TEST(c.profiles[0].destinations->at(0) == "pacs");
  BOOST_TEST(mentions(problems_of("[[profile]]\nname = \"x\"\ndestinations = [\"nowhere\"]\n"),
                      "profile[0].destinations: no [[destination]] named \"nowhere\""));
}

BOOST_AUTO_TEST_CASE(retention_table_defaults_fractions_and_ranges) {
  const config::Config d;
  const config::Config c = config::load_default();  // the documented example says the same
  BOOST_TEST(c.retention.incoming_days == d.retention.incoming_days);
  BOOST_TEST(c.retention.outbound_days == d.retention.outbound_days);
  BOOST_TEST(c.retention.results_days == d.retention.results_days);
  BOOST_TEST(c.retention.quarantine_days == d.retention.quarantine_days);
  BOOST_TEST(c.retention.high_water_percent == d.retention.high_water_percent);
  BOOST_TEST(c.retention.interval_seconds == d.retention.interval_seconds);
  BOOST_TEST(d.retention.incoming_days == 0.0);  // kept regardless of age unless the site says otherwise
  BOOST_TEST(d.retention.high_water_percent == 85);
  BOOST_TEST(d.retention.interval_seconds == 600);

  const auto r = config::parse("[retention]\nincoming_days = 30\noutbound_days = 0.5\nresults_days = 90\n"
                               "quarantine_days = 0.00002\nhigh_water_percent = 0\ninterval_seconds = 1\n", "t.toml").retention;
  BOOST_TEST(r.incoming_days == 30.0);  // an integer is accepted as a number of days
  BOOST_TEST(r.outbound_days == 0.5);
  BOOST_TEST(r.results_days == 90.0);
  BOOST_TEST(r.quarantine_days == 0.00002);
  BOOST_TEST(r.high_water_percent == 0);
  BOOST_TEST(r.interval_seconds == 1);

  BOOST_TEST(mentions(problems_of("[retention]\nincoming_days = -1\n"), "retention.incoming_days: -1 is out of range"));
  BOOST_TEST(mentions(problems_of("[retention]\nresults_days = \"30\"\n"), "retention.results_days: must be a number"));
  BOOST_TEST(mentions(problems_of("[retention]\nhigh_water_percent = 100\n"), "retention.high_water_percent: 100 is out of range 0..99"));
  BOOST_TEST(mentions(problems_of("[retention]\ninterval_seconds = 0\n"), "retention.interval_seconds"));
  BOOST_TEST(mentions(problems_of("[retention]\nkeep_days = 3\n"), "retention.keep_days: unknown key"));
  BOOST_TEST(mentions(problems_of("retention = 3\n"), "retention: must be a table"));
}

BOOST_AUTO_TEST_CASE(limits_are_parsed_checked_and_reach_the_scan) {
  const auto c = config::parse(R"(
[storage]
max_instance_mb = 100
rejected_max_mb = 0
rejected_max_files = 10
[limits]
max_depth = 20
max_elements = 5000
max_pixel_mb = 64
max_inflated_mb = 32
)", "t.toml");
  BOOST_TEST(c.storage.max_instance_mb == 100u);
  BOOST_TEST(c.storage.rejected_max_mb == 0u);
  BOOST_TEST(c.storage.rejected_max_files == 10u);
  const dicom::ScanLimits l = analysis::scan_limits(c);
  BOOST_TEST(l.max_depth == 20);
  BOOST_TEST(l.max_elements == 5000u);
  BOOST_TEST(l.max_file_bytes == 100ull << 20);
  BOOST_TEST(l.max_pixel_bytes == 64ull << 20);
  BOOST_TEST(l.max_inflated_bytes == 32ull << 20);

  BOOST_TEST(mentions(problems_of("[limits]\nmax_depth = 0\n"), "limits.max_depth: 0 is out of range 1..256"));
  BOOST_TEST(mentions(problems_of("[limits]\nmax_depth = 10000\n"), "limits.max_depth"));
  BOOST_TEST(mentions(problems_of("[limits]\nmax_elements = 10\n"), "limits.max_elements"));
  BOOST_TEST(mentions(problems_of("[limits]\nmax_pixel_mb = 0\n"), "limits.max_pixel_mb"));
  BOOST_TEST(mentions(problems_of("[limits]\nmax_inflated_mb = \"1G\"\n"), "limits.max_inflated_mb: must be an integer"));
  BOOST_TEST(mentions(problems_of("[limits]\nmax_nesting = 3\n"), "limits.max_nesting: unknown key"));
  BOOST_TEST(mentions(problems_of("[storage]\nmax_instance_mb = 0\n"), "storage.max_instance_mb"));
  BOOST_TEST(mentions(problems_of("[storage]\nrejected_max_files = -1\n"), "storage.rejected_max_files"));
}

BOOST_AUTO_TEST_CASE(default_limits_are_the_scans_built_in_defaults) {
  const dicom::ScanLimits from_config = analysis::scan_limits(config::load_default());
  const dicom::ScanLimits built_in;
  BOOST_TEST(from_config.max_depth == built_in.max_depth);
  BOOST_TEST(from_config.max_elements == built_in.max_elements);
  BOOST_TEST(from_config.max_file_bytes == built_in.max_file_bytes);
  BOOST_TEST(from_config.max_pixel_bytes == built_in.max_pixel_bytes);
  BOOST_TEST(from_config.max_inflated_bytes == built_in.max_inflated_bytes);
}

BOOST_AUTO_TEST_CASE(tls_table_is_parsed_and_checked) {
  const auto c = config::parse("[tls]\nenabled = true\nport = 3000\nplain = false\ncertificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\n"
                               "ca_certificates = \"/ca\"\nrequire_client_certificate = false\nprofile = \"bcp195-extended\"\n",
                               "t.toml");
  BOOST_TEST(c.tls.enabled);
  BOOST_TEST(c.tls.port == 3000);
  BOOST_TEST(!c.tls.plain);
  BOOST_TEST(c.tls.certificate == "/c.pem");
  BOOST_TEST(c.tls.private_key == "/k.pem");
  BOOST_TEST(c.tls.ca_certificates == "/ca");
  BOOST_TEST(!c.tls.require_client_certificate);
  BOOST_TEST(c.tls.profile == "bcp195-extended");
  const auto p = problems_of("[tls]\nenabled = true\nprofile = \"bcp195\"\n");
  BOOST_TEST(mentions(p, "tls.certificate: is required when tls.enabled"));
  BOOST_TEST(mentions(p, "tls.private_key: is required when tls.enabled"));
  BOOST_TEST(mentions(p, "tls.ca_certificates: is required with require_client_certificate"));
  BOOST_TEST(mentions(p, "tls.profile: \"bcp195\" is not bcp195-nd or bcp195-extended"));
  BOOST_TEST(mentions(problems_of("[tls]\nplain = false\n"), "tls.plain: false needs tls.enabled = true"));
  BOOST_TEST(mentions(problems_of("[node]\nport = 4000\n[tls]\nenabled = true\nport = 4000\ncertificate = \"c\"\nprivate_key = \"k\"\n"
                                  "require_client_certificate = false\n"),
                      "tls.port: 4000 is node.port too"));
  BOOST_TEST(mentions(problems_of("[tls]\nport = 0\n"), "tls.port: 0 is out of range"));
  BOOST_TEST(mentions(problems_of("[tls]\nverify = true\n"), "tls.verify: unknown key"));
}

BOOST_AUTO_TEST_CASE(calling_ae_tables_are_parsed_and_checked) {
  const auto c = config::parse("[tls]\nenabled = true\ncertificate = \"c\"\nprivate_key = \"k\"\nca_certificates = \"a\"\n"
                               "[[calling_ae]]\nae_title = \"CT1\"\nhosts = [\"10.0.0.1\", \"10.0.0.2\"]\n"
                               "tls_subjects = [\"CN=ct1,O=Hospital\"]\n[[calling_ae]]\nae_title = \"MR1\"\n",
                               "t.toml");
  BOOST_TEST_REQUIRE(c.calling_aes.size() == 2u);
  BOOST_TEST(c.calling_aes[0].ae_title == "CT1");
  BOOST_TEST(c.calling_aes[0].hosts == (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  BOOST_TEST(c.calling_aes[0].tls_subjects == std::vector<std::string>{"CN=ct1,O=Hospital"});
  BOOST_TEST(c.calling_aes[1].hosts.empty());
  const auto p = problems_of("[[calling_ae]]\nae_title = \"CT1\"\nhosts = [\"ct1.example\"]\ntls_subjects = [\"ct1\"]\n"
                             "[[calling_ae]]\nae_title = \"CT1\"\n[[calling_ae]]\nhosts = []\n");
  BOOST_TEST(mentions(p, "calling_ae[0].hosts: \"ct1.example\" is not an IPv4 address"));
  BOOST_TEST(mentions(p, "calling_ae[0].tls_subjects: \"ct1\" is not a subject in RFC 2253 form"));
  BOOST_TEST(mentions(p, "calling_ae[0].tls_subjects: needs tls.enabled"));
  BOOST_TEST(mentions(p, "calling_ae[1].ae_title: \"CT1\" has another [[calling_ae]] table"));
  BOOST_TEST(mentions(p, "calling_ae[2].ae_title: is required"));
  BOOST_TEST(mentions(problems_of("[calling_ae]\nae_title = \"X\"\n"), "calling_ae: must be an array of tables"));
}

BOOST_AUTO_TEST_CASE(destinations_over_tls_need_their_trusted_cas) {
  const std::string base = "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"h\"\nport = 2762\n";
  const auto c = config::parse(base + "tls = true\ntls_ca_certificates = \"/ca.pem\"\ntls_certificate = \"/c.pem\"\n"
                                      "tls_private_key = \"/k.pem\"\n",
                               "t.toml");
  BOOST_TEST(c.destinations.at(0).tls);
  BOOST_TEST(c.destinations.at(0).tls_ca_certificates == "/ca.pem");
  BOOST_TEST(c.destinations.at(0).tls_certificate == "/c.pem");
  BOOST_TEST(c.destinations.at(0).tls_private_key == "/k.pem");
  BOOST_TEST(c.destinations.at(0).tls_profile == "bcp195-nd");
  BOOST_TEST(c.destinations.at(0).tls_server_name == "");
  BOOST_TEST(config::parse(base + "tls_server_name = \"pacs.example.org\"\n", "t.toml").destinations.at(0).tls_server_name ==
             "pacs.example.org");
  BOOST_TEST(mentions(problems_of(base + "tls_server_name = \"a b\"\n"), "destination[0].tls_server_name: \"a b\" is not"));
  BOOST_TEST(!config::parse(base, "t.toml").destinations.at(0).tls);
  BOOST_TEST(mentions(problems_of(base + "tls = true\n"), "destination[0].tls_ca_certificates: is required with tls = true"));
  BOOST_TEST(mentions(problems_of(base + "tls = true\ntls_ca_certificates = \"a\"\ntls_certificate = \"c\"\n"),
                      "destination[0].tls_private_key: is required with the other"));
  BOOST_TEST(mentions(problems_of(base + "tls_profile = \"tls1.0\"\n"), "destination[0].tls_profile: \"tls1.0\" is not"));
}

BOOST_AUTO_TEST_CASE(index_and_cluster_keys_are_checked_naming_the_key) {
  const auto c = config::parse("[index]\nbackend = \"postgresql\"\ndsn = \"host=db1 dbname=pacsnode\"\nlease_seconds = 12\n"
                               "poll_seconds = 3\n[node]\nname = \"node-2.site_a\"\nreceive = false\n",
                               "t.toml");
  BOOST_TEST(c.index.backend == "postgresql");
  BOOST_TEST(c.index.dsn == "host=db1 dbname=pacsnode");
  BOOST_TEST(c.index.lease_seconds == 12);
  BOOST_TEST(c.index.poll_seconds == 3);
  BOOST_TEST(c.node.name == "node-2.site_a");
  BOOST_TEST(!c.node.receive);
  BOOST_TEST(mentions(problems_of("[index]\nbackend = \"mysql\"\n"), "index.backend: \"mysql\" is not sqlite or postgresql"));
  BOOST_TEST(mentions(problems_of("[index]\nbackend = \"postgresql\"\n"), "index.dsn: is needed"));
  BOOST_TEST(mentions(problems_of("[index]\ndsn = \"host=x\"\n"), "index.dsn: is for backend = \"postgresql\" only"));
  BOOST_TEST(mentions(problems_of("[index]\nlease_seconds = 2\n"), "index.lease_seconds"));
  BOOST_TEST(mentions(problems_of("[index]\nlease_seconds = 10\npoll_seconds = 6\n"), "index.poll_seconds: 6 is more than half"));
  BOOST_TEST(mentions(problems_of("[node]\nname = \"a b\"\n"), "node.name: \"a b\" is not a node name"));
  BOOST_TEST(mentions(problems_of("[node]\nname = \".hidden\"\n"), "node.name"));
  BOOST_TEST(mentions(problems_of("[node]\nreceive = false\n"), "node.receive: false (an analysis-only node) needs index.backend"));
  BOOST_TEST(mentions(problems_of("[index]\nfoo = 1\n"), "index.foo: unknown key"));
}
