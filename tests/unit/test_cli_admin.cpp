#define BOOST_TEST_MODULE cli_admin
// The administrative commands in process (no sockets): where the storage root and the config are
// found, what check-config warns about, and `outbox list|retry|purge` on a real index.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "scp/check_config.h"
#include "scp/index.h"
#include "scp/install_paths.h"
#include "scp/outbox_cli.h"
#include "scp/spool.h"
#include "scp/study_assembler.h"
#include "support/capture.h"
#include "support/files.h"
#include "support/paths.h"
#include "support/temp_dir.h"
#include "support/index_rows.h"
#include "support/test_index.h"

namespace fs = std::filesystem;
using testsupport::TempDir;

namespace {

bool has(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

}  // namespace

// ---- storage root ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(daemon_root_is_relative_to_the_first_state_directory) {
  BOOST_TEST(scp::storage_root("var/pacsnode", "/var/lib/pacsnode") == fs::path("/var/lib/pacsnode/var/pacsnode"));
  // systemd separates several StateDirectory= entries with ':'; the unit's own is the first.
  BOOST_TEST(scp::storage_root("data", "/var/lib/pacsnode:/var/lib/other") == fs::path("/var/lib/pacsnode/data"));
  BOOST_TEST(scp::storage_root("/srv/pacsnode", "/var/lib/pacsnode") == fs::path("/srv/pacsnode"));
  BOOST_TEST(scp::storage_root("data", nullptr) == fs::current_path() / "data");
  BOOST_TEST(scp::storage_root("data", "") == fs::current_path() / "data");
}

BOOST_AUTO_TEST_CASE(admin_root_resolution_follows_the_daemon_then_the_units_state_directory) {
  TempDir tmp("root");
  scp::RootQuery q;
  q.configured = "var/pacsnode";
  q.unit_state_directory = tmp.path / "state";
  q.working_directory = tmp.path / "home";

  // No STATE_DIRECTORY, no index in the unit's state directory: the working directory.
  auto c = scp::resolve_root(q);
  BOOST_TEST(c.root == tmp.path / "home/var/pacsnode");
  BOOST_TEST(!c.has_index);
  BOOST_TEST(has(c.why, "working directory"), c.why);
  BOOST_TEST(has(c.why, (tmp.path / "state/var/pacsnode").string() + " holds no index"), c.why);

  // The service's root holds an index: an admin's shell finds it from anywhere.
  fs::create_directories(tmp.path / "state/var/pacsnode");
  std::ofstream(tmp.path / "state/var/pacsnode/index.sqlite") << "";
  c = scp::resolve_root(q);
  BOOST_TEST(c.root == tmp.path / "state/var/pacsnode");
  BOOST_TEST(c.has_index);
  BOOST_TEST(has(c.why, "unit's state directory " + (tmp.path / "state").string()), c.why);

  // Under systemd: exactly the daemon's rule.
  q.state_directory = (tmp.path / "sd").string();
  c = scp::resolve_root(q);
  BOOST_TEST(c.root == scp::storage_root(q.configured, q.state_directory->c_str()));
  BOOST_TEST(c.root == tmp.path / "sd/var/pacsnode");
  BOOST_TEST(has(c.why, "$STATE_DIRECTORY"), c.why);

  // An absolute storage.root is itself; --root overrides everything (relative to the shell).
  q.configured = tmp.path / "abs";
  c = scp::resolve_root(q);
  BOOST_TEST(c.root == tmp.path / "abs");
  BOOST_TEST(c.why == "storage.root, absolute");
  q.root_option = "state/var/pacsnode";
  q.working_directory = tmp.path;
  c = scp::resolve_root(q);
  BOOST_TEST(c.root == tmp.path / "state/var/pacsnode");
  BOOST_TEST(c.why == "--root");
  BOOST_TEST(c.has_index);
}

// ---- config and unit locations ----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(install_prefix_and_default_config_files) {
  BOOST_TEST(scp::install_prefix("/usr/local/bin/pacsnode") == fs::path("/usr/local"));
  BOOST_TEST(scp::install_prefix("/opt/pacsnode/bin/pacsnode") == fs::path("/opt/pacsnode"));
  BOOST_TEST(scp::install_prefix("/work/build/scp/pacsnode").empty());  // a build tree
  BOOST_TEST(scp::install_prefix("").empty());
  const auto files = scp::default_config_files("/usr/local");
  BOOST_TEST_REQUIRE(files.size() == 2u);
  BOOST_TEST(files[0] == fs::path("/etc/pacsnode/pacsnode.toml"));
  BOOST_TEST(files[1] == fs::path("/usr/local/etc/pacsnode/pacsnode.toml"));
  BOOST_TEST(scp::default_config_files("").size() == 1u);
  const auto units = scp::unit_file_candidates("/usr/local");
  BOOST_TEST(units.back() == fs::path("/usr/local/lib/systemd/system/pacsnode.service"));
}

BOOST_AUTO_TEST_CASE(admin_config_is_the_given_file_else_the_first_default_else_embedded) {
  TempDir tmp("cfg");
  const auto a = tmp.path / "a.toml", b = tmp.path / "b.toml";
  std::ofstream(b) << "[node]\nport = 2104\n";
  auto c = scp::load_admin_config(std::nullopt, {a, b});
  BOOST_TEST(c.source == b.string());
  BOOST_TEST(c.config.node.port == 2104);
  std::ofstream(a) << "[node]\nport = 3104\n";
  c = scp::load_admin_config(std::nullopt, {a, b});
  BOOST_TEST(c.source == a.string());
  c = scp::load_admin_config(b, {a});
  BOOST_TEST(c.config.node.port == 2104);
  c = scp::load_admin_config(std::nullopt, {tmp.path / "x.toml"});
  BOOST_TEST(has(c.source, "embedded default"), c.source);
  BOOST_TEST(has(c.source, (tmp.path / "x.toml").string()), c.source);
  BOOST_TEST(c.config.node.port == config::load_default().node.port);
  std::ofstream(a) << "[node]\nport = 0\n";
  BOOST_CHECK_THROW(scp::load_admin_config(std::nullopt, {a, b}), config::ConfigError);
}

// ---- check-config warnings ------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(unit_capabilities_are_read_as_systemd_applies_them) {
  const std::string shipped = testsupport::read_text(testsupport::source_dir() / "systemd/pacsnode.service");
  BOOST_TEST_REQUIRE(has(shipped, "#AmbientCapabilities=CAP_NET_BIND_SERVICE"));
  BOOST_TEST(!scp::unit_grants_bind_service({shipped}));
  const std::string granted = std::regex_replace(shipped, std::regex("\n#(CapabilityBoundingSet|AmbientCapabilities)="), "\n$1=");
  BOOST_TEST(scp::unit_grants_bind_service({granted}));
  // A drop-in can grant it, or take it away again.
  BOOST_TEST(scp::unit_grants_bind_service(
      {shipped, "[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"}));
  BOOST_TEST(!scp::unit_grants_bind_service({granted, "[Service]\nCapabilityBoundingSet=\n"}));
  BOOST_TEST(!scp::unit_grants_bind_service({granted, "[Service]\nCapabilityBoundingSet=~CAP_NET_BIND_SERVICE CAP_SYS_ADMIN\n"}));
  // Ambient alone is not enough when the bounding set is empty.
  BOOST_TEST(!scp::unit_grants_bind_service({shipped, "[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"}));
  // Settings outside [Service] do not count; a root service needs only the bounding set.
  BOOST_TEST(!scp::unit_grants_bind_service({"[Unit]\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n[Service]\nDynamicUser=yes\n"}));
  BOOST_TEST(scp::unit_grants_bind_service({"[Service]\nExecStart=/x\n"}));
  BOOST_TEST(!scp::unit_grants_bind_service({"[Service]\nUser=pacs\n"}));
}

BOOST_AUTO_TEST_CASE(storage_root_problems_are_found_without_creating_anything) {
  TempDir tmp("rootcheck");
  BOOST_TEST(!scp::storage_root_problem(tmp.path));
  BOOST_TEST(!scp::storage_root_problem(tmp.path / "a/b/c"));  // creatable
  BOOST_TEST(!fs::exists(tmp.path / "a"));
  std::ofstream(tmp.path / "file") << "x";
  const auto p = scp::storage_root_problem(tmp.path / "file");
  BOOST_TEST_REQUIRE(p.has_value());
  BOOST_TEST(*p == "is not a directory");
  const auto q = scp::storage_root_problem(tmp.path / "file/sub");
  BOOST_TEST_REQUIRE(q.has_value());
  BOOST_TEST(*q == "cannot be created: " + (tmp.path / "file").string() + " is not a directory");
  BOOST_TEST(fs::is_empty(tmp.path / "file") == false);
}

BOOST_AUTO_TEST_CASE(check_config_warnings) {
  TempDir tmp("warn");
  const std::string shipped = testsupport::read_text(testsupport::source_dir() / "systemd/pacsnode.service");
  config::Config cfg = config::parse(
      "[node]\nport = 104\n[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"pacs.example\"\nport = 104\n"
      "[[destination]]\nname = \"archive\"\nae_title = \"ARCH\"\nhost = \"127.0.0.1\"\nport = 105\n",
      "site.toml");
  scp::CheckContext ctx;
  ctx.storage_root = tmp.path / "storage";
  ctx.unit_texts = {shipped};
  ctx.unit_name = "/usr/local/lib/systemd/system/pacsnode.service";
  ctx.unprivileged_port_start = 1024;
  std::vector<std::string> asked;
  ctx.resolve = [&](const std::string& host) -> std::optional<std::string> {
    asked.push_back(host);
    if (host == "127.0.0.1") return std::nullopt;
    return std::string("Name or service not known");
  };
  auto w = scp::config_warnings(cfg, ctx);
  BOOST_TEST(asked == (std::vector<std::string>{"pacs.example", "127.0.0.1"}), boost::test_tools::per_element());
  BOOST_TEST_REQUIRE(w.size() == 2u);
  BOOST_TEST(w[0] == "destination 'pacs': host 'pacs.example' does not resolve (Name or service not known)");
  BOOST_TEST(has(w[1], "node.port 104 is below 1024"), w[1]);
  BOOST_TEST(has(w[1], "CAP_NET_BIND_SERVICE"), w[1]);
  BOOST_TEST(has(w[1], ctx.unit_name + " does not grant"), w[1]);

  // The unit grants it, or the system lets anyone bind the port: no port warning.
  ctx.unit_texts = {shipped, "[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"};
  BOOST_TEST(scp::config_warnings(cfg, ctx).size() == 1u);
  ctx.unit_texts = {shipped};
  ctx.unprivileged_port_start = 80;
  BOOST_TEST(scp::config_warnings(cfg, ctx).size() == 1u);
  // No installed unit: the rule is stated.
  ctx.unprivileged_port_start = 1024;
  ctx.unit_texts.clear();
  ctx.unit_name = "looked for /etc/systemd/system/pacsnode.service";
  w = scp::config_warnings(cfg, ctx);
  BOOST_TEST_REQUIRE(w.size() == 2u);
  BOOST_TEST(has(w[1], "no installed unit to check (looked for /etc/systemd/system/pacsnode.service)"), w[1]);

  // No destination; a storage root that cannot be created.
  std::ofstream(tmp.path / "file") << "x";
  cfg = config::parse("[node]\nport = 11112\n", "site.toml");
  ctx.storage_root = tmp.path / "file/storage";
  w = scp::config_warnings(cfg, ctx);
  BOOST_TEST_REQUIRE(w.size() == 2u);
  BOOST_TEST(has(w[0], "no [[destination]] configured"), w[0]);
  BOOST_TEST(w[1] == "storage root " + (tmp.path / "file/storage").string() + " cannot be created: " +
                         (tmp.path / "file").string() + " is not a directory");
  // A clean config gets no warning.
  cfg = config::parse("[[destination]]\nname = \"a\"\nae_title = \"A\"\nhost = \"127.0.0.1\"\nport = 11113\n", "ok.toml");
  ctx.storage_root = tmp.path / "storage";
  w = scp::config_warnings(cfg, ctx);
  BOOST_TEST(w.empty(), (w.empty() ? std::string() : w.front()));  // front() of an empty vector is UB

  // A PostgreSQL index that cannot be reached is named, never with the DSN's password.
  cfg = config::parse("[[destination]]\nname = \"a\"\nae_title = \"A\"\nhost = \"127.0.0.1\"\nport = 11113\n[index]\n"
                      "backend = \"postgresql\"\ndsn = \"host=127.0.0.1 port=1 dbname=x user=u password=s3cret-pw\"\n",
                      "pg.toml");
  w = scp::config_warnings(cfg, ctx);
  BOOST_TEST_REQUIRE(w.size() == 1u);
  BOOST_TEST(has(w[0], "index.dsn: PostgreSQL cannot be used"), w[0]);
  BOOST_TEST(!has(w[0], "s3cret-pw"), w[0]);
}

// ---- outbox ---------------------------------------------------------------------------------

namespace {

// An index with two results queued for "pacs" and "old" in every state, and a config naming
// only "pacs".
// `pacsnode outbox` opens the index the config's [index] names: in the _pg registration the
// config names the PostgreSQL database of the root.
struct OutboxFixture {
  TempDir tmp{"outbox-cli"};
  fs::path root = tmp.path / "storage", cfg = tmp.path / "site.toml";
  OutboxFixture() {
    fs::create_directories(root);
    std::ofstream(cfg) << "[storage]\nroot = \"" << root.string()
                       << "\"\n[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = 11113\n"
                       << testsupport::index_toml_for(root);
    scp::Index index(testsupport::index_settings_for(root));  // what the CLI opens
    const auto job = testsupport::complete_study(index, root / "x.dcm");
    const auto now = scp::wall_ms();
    for (int n = 0; n < 4; ++n) {
      scp::ResultRow r{0, job.id, "1.2", 1, n % 2 ? "SR" : "SEG", "1.2.840.10008.5.1.4.1.1.66.4", "9.9." + std::to_string(n),
                       "9.9", "1.2.3", (root / ("r" + std::to_string(n) + ".dcm")).string()};
      r.id = index.add_result(r);
      index.enqueue(r, {"pacs", "old"}, now);
    }
    // Per destination: result 1 sent, 2 dead, 3 and 4 pending (backing off for an hour).
    for (const std::string d : {"pacs", "old"}) {
      const auto rows = index.outbox_select({std::nullopt, std::vector<std::string>{d}, std::nullopt});
      index.mark_sent(rows.at(0).id, now);
      index.mark_dead(rows.at(1).id, "C-STORE-RSP 0xA900", now);
      index.mark_retry(rows.at(2).id, now + 3600 * 1000, "connection refused", now);
      index.mark_retry(rows.at(3).id, now + 3600 * 1000, "connection refused", now);
    }
  }
  testsupport::Captured outbox(std::vector<std::string> args) {
    args.push_back("--config");
    args.push_back(cfg.string());
    return testsupport::capture([&] { return scp::outbox_main(args); });
  }
  std::vector<scp::OutboxRow> rows(const std::string& destination, const std::string& state) {
    scp::Index index(testsupport::index_settings_for(root));
    return index.outbox_select({std::vector<std::string>{state}, std::vector<std::string>{destination}, std::nullopt});
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(outbox_list_flags_destinations_no_longer_configured, OutboxFixture) {
  const auto c = outbox({"list"});
  BOOST_TEST(c.rc == 0, c.err);
  BOOST_TEST(has(c.err, "pacsnode: config " + cfg.string()), c.err);
  BOOST_TEST(has(c.err, "pacsnode: storage root " + root.string() + " (storage.root, absolute)"), c.err);
  BOOST_TEST(has(c.out, "8 object(s)"), c.out);
  BOOST_TEST(count(c.out, "old (not configured)") == 4u, c.out);
  BOOST_TEST(count(c.out, " pacs ") == 4u, c.out);
  BOOST_TEST(has(c.out, "3 unsent object(s) for 'old', which " + cfg.string() + " does not configure"), c.out);
  BOOST_TEST((has(c.out, "in 59m") || has(c.out, "in 60m")), c.out);  // the backoff shows
  const auto p = outbox({"list", "--state", "pending", "--destination", "pacs"});
  BOOST_TEST(has(p.out, "2 object(s)"), p.out);
  BOOST_TEST(!has(p.out, "not configured"), p.out);
}

BOOST_FIXTURE_TEST_CASE(outbox_retry_without_options_retries_the_dead_only, OutboxFixture) {
  const auto c = outbox({"retry"});
  BOOST_TEST(c.rc == 0, c.err);
  BOOST_TEST(has(c.out, "1 object(s) queued again"), c.out);
  BOOST_TEST(has(c.out, "1 object(s) of destinations no longer configured ('old') left as they are"), c.out);
  BOOST_TEST(rows("pacs", "dead").empty());
  BOOST_TEST(rows("old", "dead").size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(outbox_retry_all_makes_pending_and_dead_due_now, OutboxFixture) {
  const auto before = scp::wall_ms();
  const auto c = outbox({"retry", "--all"});
  BOOST_TEST(c.rc == 0, c.err);
  BOOST_TEST(has(c.out, "3 object(s) queued again"), c.out);
  const auto pending = rows("pacs", "pending");
  BOOST_TEST_REQUIRE(pending.size() == 3u);
  for (const auto& r : pending) {
    BOOST_TEST(r.next_attempt_ms >= before);
    BOOST_TEST(r.next_attempt_ms <= scp::wall_ms());
    BOOST_TEST(r.attempts == 0);
  }
  BOOST_TEST(rows("pacs", "sent").size() == 1u);  // a sent object is not sent again
  // The unconfigured destination's rows are untouched.
  for (const auto& r : rows("old", "pending")) BOOST_TEST(r.next_attempt_ms > scp::wall_ms() + 3000 * 1000);
  BOOST_TEST(rows("old", "dead").size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(outbox_retry_by_destination_state_and_id, OutboxFixture) {
  auto c = outbox({"retry", "--state", "pending"});
  BOOST_TEST(has(c.out, "2 object(s) queued again"), c.out);
  BOOST_TEST(rows("pacs", "dead").size() == 1u);
  c = outbox({"retry", "--destination", "pacs"});
  BOOST_TEST(has(c.out, "3 object(s) queued again"), c.out);
  const auto sent = rows("pacs", "sent").at(0).id;
  const auto dead_old = rows("old", "dead").at(0).id;
  c = outbox({"retry", "--id", std::to_string(sent), std::to_string(dead_old)});
  BOOST_TEST(c.rc == 0);
  BOOST_TEST(has(c.out, "0 object(s) queued again"), c.out);  // sent: never again; old: not configured
  BOOST_TEST(has(c.out, "1 object(s) of destinations no longer configured"), c.out);
  c = outbox({"retry", "--destination", "old"});
  BOOST_TEST(c.rc == 2);
  BOOST_TEST(has(c.err, "destination 'old' is not in " + cfg.string()), c.err);
  BOOST_TEST(has(c.err, "Usage: pacsnode outbox retry"), c.err);
}

BOOST_FIXTURE_TEST_CASE(outbox_purge_orphaned_and_by_state, OutboxFixture) {
  // Pending objects of a configured destination are never purged.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"purge", "--state", "pending"},
                                              std::vector<std::string>{"purge", "--destination", "pacs", "--state", "pending"}}) {
    const auto c = outbox(args);
    BOOST_TEST(c.rc == 2, c.err);
    BOOST_TEST(has(c.err, "pending objects are purged only for destinations no longer configured"), c.err);
  }
  BOOST_TEST(rows("pacs", "pending").size() == 2u);
  auto c = outbox({"purge", "--orphaned"});
  BOOST_TEST(c.rc == 0, c.err);
  BOOST_TEST(has(c.out, "4 object(s) of 'old' (not configured) removed from the outbox"), c.out);
  c = outbox({"list"});
  BOOST_TEST(has(c.out, "4 object(s)"), c.out);
  BOOST_TEST(!has(c.out, "not configured"), c.out);
  c = outbox({"purge", "--orphaned"});
  BOOST_TEST(has(c.out, "nothing removed"), c.out);
  c = outbox({"purge"});
  BOOST_TEST(has(c.out, "1 sent object(s) removed"), c.out);
  c = outbox({"purge", "--state", "dead", "--destination", "pacs"});
  BOOST_TEST(has(c.out, "1 dead object(s) removed"), c.out);
  BOOST_TEST(rows("pacs", "pending").size() == 2u);
}

BOOST_FIXTURE_TEST_CASE(outbox_purge_of_a_named_unconfigured_destination, OutboxFixture) {
  const auto c = outbox({"purge", "--destination", "old", "--state", "pending"});
  BOOST_TEST(c.rc == 0, c.err);
  BOOST_TEST(has(c.out, "2 pending object(s) of 'old' (not configured) removed"), c.out);
  BOOST_TEST(rows("old", "dead").size() == 1u);
  BOOST_TEST(rows("old", "sent").size() == 1u);
}
