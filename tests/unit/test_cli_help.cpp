#define BOOST_TEST_MODULE cli_help
// The command line of the real binary (a child process, no sockets): every command has --help,
// which touches neither the config, the index nor the network; usage errors exit 2 with the
// command's usage; check-config and outbox say which config and storage root they used; --version
// names the commit and the DCMTK, GDCM and OpenCV versions.
#include <boost/test/unit_test.hpp>

#include <dcmtk/config/osconfig.h>  // before any other DCMTK header
#include <dcmtk/dcmdata/dcuid.h>    // OFFIS_DCMTK_VERSION_STRING
#include <gdcmConfigure.h>          // GDCM_VERSION
#include <opencv2/core/version.hpp> // CV_VERSION

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/files.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;

namespace {

struct Output {
  int rc = -1;
  std::string out, err;
  std::string all() const { return out + err; }
};

// The binary with `args`, its stdout and stderr apart.
Output pacsnode(const std::vector<std::string>& args) {
  static testsupport::TempDir streams("cli-streams");
  std::string cmd = testsupport::shell_quote(testsupport::daemon_binary().string());
  for (const auto& a : args) cmd += " " + testsupport::shell_quote(a);
  const auto out = streams.path / "out", err = streams.path / "err";
  const auto r = testsupport::run(
      {"/bin/sh", "-c", cmd + " >" + testsupport::shell_quote(out.string()) + " 2>" + testsupport::shell_quote(err.string())});
  return {r.exit_code, testsupport::read_text(out), testsupport::read_text(err)};
}

bool has(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

const std::vector<std::string> kCommands{"run",   "check-config", "print-default-config", "analyze", "evaluate",
                                         "train", "outbox",       "echo",                 "worker"};

}  // namespace

BOOST_AUTO_TEST_CASE(top_level_help_lists_every_command_on_stdout) {
  const auto r = pacsnode({"--help"});
  BOOST_TEST(r.rc == 0, r.all());
  BOOST_TEST(r.err.empty(), r.err);
  BOOST_TEST(has(r.out, "Usage: pacsnode"), r.out);
  for (const auto& c : kCommands) BOOST_TEST(has(r.out, "\n  " + c + " "), c << " in\n" << r.out);
  BOOST_TEST(has(r.out, "Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid config"), r.out);
  // `pacsnode help` and -h say the same.
  BOOST_TEST(pacsnode({"help"}).out == r.out);
  BOOST_TEST(pacsnode({"-h"}).out == r.out);
}

BOOST_AUTO_TEST_CASE(every_command_and_outbox_action_has_help) {
  std::vector<std::vector<std::string>> commands;
  for (const auto& c : kCommands) commands.push_back({c});
  for (const std::string verb : {"list", "retry", "purge"}) commands.push_back({"outbox", verb});
  for (auto args : commands) {
    std::string name = "pacsnode";
    for (const auto& a : args) name += " " + a;
    args.push_back("--help");
    const auto r = pacsnode(args);
    BOOST_TEST(r.rc == 0, name << ": " << r.all());
    BOOST_TEST(has(r.out, "Usage: " + name), name << ": " << r.out);
    BOOST_TEST(r.err.empty(), name << ": " << r.err);
  }
  // `pacsnode help outbox` is `pacsnode outbox --help`.
  BOOST_TEST(pacsnode({"help", "outbox"}).out == pacsnode({"outbox", "--help"}).out);
}

BOOST_AUTO_TEST_CASE(help_documents_the_options) {
  const auto retry = pacsnode({"outbox", "retry", "--help"}).out;
  for (const std::string o : {"--all", "--destination NAME", "--state", "--id N", "--config FILE", "--root DIR",
                              "$STATE_DIRECTORY", "/var/lib/pacsnode", "/etc/pacsnode/pacsnode.toml"})
    BOOST_TEST(has(retry, o), o << " in\n" << retry);
  const auto purge = pacsnode({"outbox", "purge", "--help"}).out;
  for (const std::string o : {"--orphaned", "--destination NAME", "--state"}) BOOST_TEST(has(purge, o), o << " in\n" << purge);
  const auto list = pacsnode({"outbox", "list", "--help"}).out;
  BOOST_TEST(has(list, "(not configured)"), list);
  const auto echo = pacsnode({"echo", "--help"}).out;
  for (const std::string o : {"DESTINATION", "--config FILE", "--host HOST", "--port PORT", "--ae AE", "--calling-ae AE"})
    BOOST_TEST(has(echo, o), o << " in\n" << echo);
  const auto analyze = pacsnode({"analyze", "--help"}).out;
  for (const std::string o : {"INPUT", "--out DIR", "--profile NAME", "--no-dicom", "--keep-empty-frames"})
    BOOST_TEST(has(analyze, o), o << " in\n" << analyze);
}

BOOST_AUTO_TEST_CASE(help_touches_no_config_no_index_no_network) {
  testsupport::TempDir tmp("cli-help");
  // A config that does not exist and a root without an index: --help still answers, says nothing
  // about either, and creates nothing.
  for (const std::string verb : {"list", "retry", "purge"}) {
    const auto r = pacsnode({"outbox", verb, "--config", (tmp.path / "missing.toml").string(), "--root",
                             (tmp.path / "root").string(), "--help"});
    BOOST_TEST(r.rc == 0, r.all());
    BOOST_TEST(r.err.empty(), r.err);  // no "config", "storage root" or "no index" line
    BOOST_TEST(has(r.out, "Usage: pacsnode outbox " + verb), r.out);
  }
  const auto e = pacsnode({"echo", "nowhere", "--host", "192.0.2.1", "--port", "104", "--ae", "X", "--help"});
  BOOST_TEST(e.rc == 0, e.all());
  BOOST_TEST(e.err.empty(), e.err);
  BOOST_TEST(!has(e.out, "round trip"), e.out);
  BOOST_TEST(fs::is_empty(tmp.path));
}

// The version on the first line, then the commit and the library versions the binary was built
// with: the macros of the headers this test is compiled against, which are the binary's.
BOOST_AUTO_TEST_CASE(version_names_the_commit_and_the_libraries) {
  const auto r = pacsnode({"--version"});
  BOOST_TEST(r.rc == 0, r.all());
  BOOST_TEST(r.err.empty(), r.err);
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  BOOST_TEST_REQUIRE(lines.size() == 5u, r.out);
  BOOST_TEST(lines[0] == std::string("pacsnode ") + PACSNODE_VERSION);
  BOOST_TEST(lines[2] == "DCMTK " OFFIS_DCMTK_VERSION_STRING);
  BOOST_TEST(lines[3] == "GDCM " GDCM_VERSION);
  BOOST_TEST(lines[4] == "OpenCV " CV_VERSION);
  // HEAD of the source tree (built from it just before), "-dirty" with uncommitted changes;
  // "unknown" when the source is not a git checkout.
  const auto head = testsupport::run({"git", "-C", PACSNODE_SOURCE_DIR, "rev-parse", "--short", "HEAD"});
  if (head.exit_code == 0) {
    const auto sha = head.output.substr(0, head.output.find('\n'));
    BOOST_TEST((lines[1] == "commit " + sha || lines[1] == "commit " + sha + "-dirty"), lines[1] << ", HEAD " << sha);
  } else {
    BOOST_TEST(lines[1] == "commit unknown", head.output);
  }
}

BOOST_AUTO_TEST_CASE(usage_errors_exit_2_with_the_usage_of_the_command) {
  struct Case {
    std::vector<std::string> args;
    std::string message, usage;
  };
  const std::vector<Case> cases{
      {{}, "pacsnode: no command given", "Usage: pacsnode"},
      {{"frobnicate"}, "pacsnode: unknown command 'frobnicate'", "Usage: pacsnode"},
      {{"--frobnicate"}, "pacsnode: ", "Usage: pacsnode"},
      {{"run", "--bogus"}, "pacsnode run: ", "Usage: pacsnode run"},
      {{"run", "--config"}, "pacsnode run: ", "Usage: pacsnode run"},
      {{"check-config", "a.toml", "b.toml"}, "pacsnode check-config: ", "Usage: pacsnode check-config"},
      {{"outbox"}, "pacsnode outbox: A subcommand is required", "Usage: pacsnode outbox"},
      {{"outbox", "resend"}, "pacsnode outbox: ", "Usage: pacsnode outbox"},
      {{"outbox", "list", "--state", "lost"}, "pacsnode outbox list: --state", "Usage: pacsnode outbox list"},
      {{"outbox", "retry", "--all", "--state", "dead"}, "pacsnode outbox retry: --all excludes --state",
       "Usage: pacsnode outbox retry"},
      {{"outbox", "retry", "--state", "sent"}, "pacsnode outbox retry: --state", "Usage: pacsnode outbox retry"},
      {{"outbox", "retry", "--id", "x"}, "pacsnode outbox retry: Could not convert: --id = x", "Usage: pacsnode outbox retry"},
      {{"outbox", "purge", "--orphaned", "--destination", "a"}, "pacsnode outbox purge: --orphaned excludes",
       "Usage: pacsnode outbox purge"},
      {{"echo", "--port", "70000"}, "pacsnode echo: --port", "Usage: pacsnode echo"},
      {{"analyze", "in"}, "pacsnode analyze: --out is required", "Usage: pacsnode analyze"},
      {{"train", "--features", "x.csv", "--labels", "y", "--out", "m.yml", "--folds", "1"}, "pacsnode train: --folds",
       "Usage: pacsnode train"},
      {{"worker", "extra"}, "pacsnode worker: ", "Usage: pacsnode worker"},
  };
  for (const auto& c : cases) {
    const auto r = pacsnode(c.args);
    std::string name;
    for (const auto& a : c.args) name += " " + a;
    BOOST_TEST(r.rc == 2, name << ": " << r.all());
    BOOST_TEST(has(r.err, c.message), name << ": " << r.err);
    BOOST_TEST(has(r.err, c.usage), name << ": " << r.err);
    BOOST_TEST(r.out.empty(), name << ": " << r.out);  // usage errors go to stderr
  }
}

BOOST_AUTO_TEST_CASE(check_config_validates_warns_and_keeps_errors_errors) {
  testsupport::TempDir tmp("cli-check");
  const auto cfg = tmp.path / "site.toml";
  std::ofstream(cfg) << "[node]\nport = 11112\n[storage]\nroot = \"" << (tmp.path / "storage").string() << "\"\n";
  const auto r = pacsnode({"check-config", cfg.string()});
  BOOST_TEST(r.rc == 0, r.all());
  BOOST_TEST(has(r.out, cfg.string() + ": valid (0 destination(s)"), r.out);
  BOOST_TEST(has(r.out, "storage root " + (tmp.path / "storage").string() + " (storage.root, absolute)"), r.out);
  BOOST_TEST(has(r.err, "warning: no [[destination]] configured"), r.err);
  BOOST_TEST(!fs::exists(tmp.path / "storage"), "check-config must not create the storage root");

  const auto bad = tmp.path / "bad.toml";
  std::ofstream(bad) << "[node]\nport = 70000\nae_tilte = \"X\"\n";
  const auto b = pacsnode({"check-config", bad.string()});
  BOOST_TEST(b.rc == 2, b.all());
  BOOST_TEST(has(b.err, "invalid configuration"), b.err);
  BOOST_TEST(has(b.err, "node.port"), b.err);
  BOOST_TEST(has(b.err, "node.ae_tilte: unknown key"), b.err);
  BOOST_TEST(!has(b.all(), "warning:"), b.all());
}

BOOST_AUTO_TEST_CASE(outbox_names_its_root_and_says_when_there_is_no_index) {
  testsupport::TempDir tmp("cli-noindex");
  const auto cfg = tmp.path / "site.toml";
  std::ofstream(cfg) << "[storage]\nroot = \"" << (tmp.path / "storage").string() << "\"\n";
  const auto r = pacsnode({"outbox", "list", "--config", cfg.string()});
  BOOST_TEST(r.rc == 1, r.all());
  BOOST_TEST(has(r.err, "pacsnode: config " + cfg.string()), r.err);
  BOOST_TEST(has(r.err, "pacsnode: storage root " + (tmp.path / "storage").string()), r.err);
  BOOST_TEST(has(r.err, "no index at " + (tmp.path / "storage/index.sqlite").string()), r.err);
  BOOST_TEST(!fs::exists(tmp.path / "storage"), "outbox must not create a root or an index");
  // --root wins over the config.
  const auto o = pacsnode({"outbox", "list", "--config", cfg.string(), "--root", (tmp.path / "other").string()});
  BOOST_TEST(o.rc == 1, o.all());
  BOOST_TEST(has(o.err, "storage root " + (tmp.path / "other").string() + " (--root)"), o.err);
}
