#define BOOST_TEST_MODULE scp_admin
// What an administrator does with the commands, against the real daemon and a real Orthanc:
// `pacsnode echo` a destination (accepted, rejected, nobody listening), `outbox retry --all` after
// a PACS outage (results arrive without waiting for the backoff), a destination removed from the
// config (flagged, left alone by retry, purged), and check-config's warnings on a read-only root
// and a host that does not resolve.
#include <sys/mount.h>

#include <boost/test/unit_test.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>

#include "scp/check_config.h"
#include "scp/index.h"
#include "scp/study_assembler.h"
#include "support/files.h"
#include "support/orthanc.h"
#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

bool has(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

std::string destination(const std::string& name, const std::string& ae, std::uint16_t port) {
  return "[[destination]]\nname = \"" + name + "\"\nae_title = \"" + ae + "\"\nhost = \"127.0.0.1\"\nport = " +
         std::to_string(port) + "\n";
}

RunResult pacsnode(std::vector<std::string> args, const Daemon& d) {
  args.insert(args.begin(), daemon_binary().string());
  args.push_back("--config");
  args.push_back((d.dir() / "pacsnode.toml").string());
  return run(args);
}

}  // namespace

BOOST_AUTO_TEST_CASE(echo_reports_acceptance_rejection_and_a_closed_port) {
  const auto dir = make_temp_dir("admin-echo");
  Orthanc pacs;  // answers to ORTHANC only (DicomCheckCalledAet)
  const std::uint16_t closed = free_port();
  DaemonOptions opt;
  opt.extra = destination("pacs", "ORTHANC", pacs.dicom_port()) + destination("wrongae", "NOTME", pacs.dicom_port()) +
              destination("down", "DOWN", closed) + "[outbound]\nconnect_timeout_seconds = 5\n";
  Daemon d(dir, opt);  // its config only: the echo needs no daemon

  const auto ok = pacsnode({"echo", "pacs"}, d);
  BOOST_TEST(ok.exit_code == 0, ok.output);
  BOOST_TEST(has(ok.output, "C-ECHO PACSNODE -> ORTHANC@127.0.0.1:" + std::to_string(pacs.dicom_port()) +
                                " (destination 'pacs')"),
             ok.output);
  BOOST_TEST(has(ok.output, "association accepted in "), ok.output);
  BOOST_TEST(has(ok.output, "C-ECHO-RSP status 0x0000 (Success) in "), ok.output);
  BOOST_TEST(std::regex_search(ok.output, std::regex("ok: round trip [0-9]+\\.[0-9] ms")), ok.output);

  const auto rejected = pacsnode({"echo", "wrongae"}, d);
  BOOST_TEST(rejected.exit_code == 1, rejected.output);
  BOOST_TEST(has(rejected.output, "association rejected (permanent)"), rejected.output);
  BOOST_TEST(has(rejected.output, "Called AE Title Not Recognized"), rejected.output);
  BOOST_TEST(has(rejected.output, "failed: round trip"), rejected.output);
  BOOST_TEST(!has(rejected.output, "C-ECHO-RSP"), rejected.output);

  const auto down = pacsnode({"echo", "down"}, d);
  BOOST_TEST(down.exit_code == 1, down.output);
  BOOST_TEST(has(down.output, "no association after"), down.output);
  BOOST_TEST(has(down.output, "cannot associate with DOWN@127.0.0.1:" + std::to_string(closed)), down.output);
  BOOST_TEST(has(down.output, "failed: round trip"), down.output);

  // Ad hoc, without a destination: --host/--port/--ae; --calling-ae is what the peer sees.
  const auto adhoc = pacsnode({"echo", "--host", "127.0.0.1", "--port", std::to_string(pacs.dicom_port()), "--ae",
                               "ORTHANC", "--calling-ae", "ADMIN"},
                              d);
  BOOST_TEST(adhoc.exit_code == 0, adhoc.output);
  BOOST_TEST(has(adhoc.output, "C-ECHO ADMIN -> ORTHANC@127.0.0.1"), adhoc.output);

  const auto unknown = pacsnode({"echo", "nosuch"}, d);
  BOOST_TEST(unknown.exit_code == 2, unknown.output);
  BOOST_TEST(has(unknown.output, "no destination 'nosuch'"), unknown.output);
  BOOST_TEST(has(unknown.output, "(configured: pacs, wrongae, down)"), unknown.output);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(retry_all_after_an_outage_sends_without_waiting_for_the_backoff) {
  const auto dir = make_temp_dir("admin-retry");
  Orthanc pacs;
  pacs.stop();  // the PACS is down when the results are made
  DaemonOptions opt;
  opt.extra = destination("pacs", "ORTHANC", pacs.dicom_port()) +
              "[outbound]\ninitial_backoff_seconds = 600\nmax_backoff_seconds = 900\nconnect_timeout_seconds = 5\n";
  const auto ct = ct_phantom(dir, 30, 96, 7);
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("to retry") != std::string::npos; }, 120s), d.log());
  {  // Both objects wait for the backoff: at least 0.8 * 600 s.
    scp::Index index(testsupport::index_settings_for(d.root()));
    const auto rows = index.outbox("pending");
    BOOST_TEST_REQUIRE(rows.size() == 2u);
    for (const auto& r : rows) {
      BOOST_TEST(r.attempts == 1);
      BOOST_TEST(r.next_attempt_ms > scp::wall_ms() + 400 * 1000);
    }
  }
  pacs.start();
  const auto echo = pacsnode({"echo", "pacs"}, d);  // the administrator checks the PACS is back
  BOOST_TEST(echo.exit_code == 0, echo.output);
  const auto retry = pacsnode({"outbox", "retry", "--all"}, d);
  BOOST_TEST(retry.exit_code == 0, retry.output);
  BOOST_TEST(has(retry.output, "pacsnode: storage root " + d.root().string()), retry.output);
  BOOST_TEST(has(retry.output, "2 object(s) queued again"), retry.output);
  // The running daemon picks them up at once: far sooner than the 8 minutes of backoff.
  const auto retried = std::chrono::steady_clock::now();
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == 2; }, 60s), d.log());
  BOOST_TEST_MESSAGE("delivered " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - retried).count()
                                  << " ms after `outbox retry --all`");
  // The daemon itself answers `pacsnode echo` too.
  const auto self = run({daemon_binary().string(), "echo", "--host", "127.0.0.1", "--port", std::to_string(d.port()),
                         "--ae", "PACSNODE"});
  BOOST_TEST(self.exit_code == 0, self.output);
  BOOST_TEST(d.stop() == 0);
  const auto list = pacsnode({"outbox", "list", "--state", "sent"}, d);
  BOOST_TEST(has(list.output, "2 object(s)"), list.output);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_destination_removed_from_the_config_is_flagged_and_purged) {
  const auto dir = make_temp_dir("admin-orphan");
  Orthanc pacs;
  DaemonOptions opt;
  const std::string old = destination("old", "OLD", free_port());  // nobody listens there any more
  opt.extra = old + destination("pacs", "ORTHANC", pacs.dicom_port()) +
              "[outbound]\ninitial_backoff_seconds = 600\nmax_backoff_seconds = 900\nconnect_timeout_seconds = 5\n";
  const auto ct = ct_phantom(dir, 30, 96, 8);
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == 2; }, 120s), d.log());
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("destination 'old'") != std::string::npos; }, 30s), d.log());
  BOOST_TEST(d.stop() == 0);

  // The administrator removes the destination from the config.
  const auto cfg = d.dir() / "pacsnode.toml";
  const std::string text = testsupport::read_text(cfg);
  BOOST_TEST_REQUIRE(has(text, old));
  std::ofstream(cfg) << std::string(text).replace(text.find(old), old.size(), "");

  const auto list = pacsnode({"outbox", "list"}, d);
  BOOST_TEST(list.exit_code == 0, list.output);
  BOOST_TEST(count_lines(list.output, "old (not configured)") == 2u, list.output);
  BOOST_TEST(has(list.output, "2 unsent object(s) for 'old'"), list.output);
  BOOST_TEST(has(list.output, "4 object(s)"), list.output);

  const auto retry = pacsnode({"outbox", "retry", "--all"}, d);
  BOOST_TEST(has(retry.output, "0 object(s) queued again"), retry.output);
  BOOST_TEST(has(retry.output, "2 object(s) of destinations no longer configured ('old') left as they are"), retry.output);

  const auto purge = pacsnode({"outbox", "purge", "--orphaned"}, d);
  BOOST_TEST(purge.exit_code == 0, purge.output);
  BOOST_TEST(has(purge.output, "2 object(s) of 'old' (not configured) removed from the outbox"), purge.output);
  const auto after = pacsnode({"outbox", "list"}, d);
  BOOST_TEST(has(after.output, "2 object(s)"), after.output);
  BOOST_TEST(!has(after.output, "not configured"), after.output);
  BOOST_TEST(count_lines(after.output, " sent ") == 2u, after.output);
  // The node starts on the new config with the cleaned outbox.
  d.start();
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(check_config_warns_about_a_read_only_root_and_an_unknown_host) {
  BOOST_TEST_REQUIRE(::geteuid() == 0, "this test mounts a read-only tmpfs: run it as root (CI does)");
  const auto dir = make_temp_dir("admin-check");
  const auto ro = dir / "ro";
  fs::create_directories(ro);
  BOOST_TEST_REQUIRE(::mount("tmpfs", ro.c_str(), "tmpfs", MS_RDONLY, "size=1m") == 0, std::strerror(errno));
  const auto cfg = dir / "site.toml";
  std::ofstream(cfg) << "[node]\nport = 104\n[storage]\nroot = \"" << (ro / "storage").string() << "\"\n"
                     << "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"no-such-host.invalid\"\nport = 104\n";
  const auto r = run({daemon_binary().string(), "check-config", cfg.string()});
  ::umount2(ro.c_str(), MNT_DETACH);
  BOOST_TEST(r.exit_code == 0, r.output);
  BOOST_TEST(has(r.output, ": valid (1 destination(s)"), r.output);
  BOOST_TEST(has(r.output, "warning: storage root " + (ro / "storage").string() + " cannot be created: " + ro.string() +
                               " is on a read-only file system"),
             r.output);
  BOOST_TEST(has(r.output, "warning: destination 'pacs': host 'no-such-host.invalid' does not resolve"), r.output);
  // The build tree has no installed unit next to it: the rule is stated (unless this system lets
  // anyone bind port 104).
  if (scp::unprivileged_port_start() > 104) {
    BOOST_TEST(has(r.output, "warning: node.port 104 is below"), r.output);
    BOOST_TEST(has(r.output, "no installed unit to check"), r.output);
  }
  BOOST_TEST(!has(r.output, "no [[destination]]"), r.output);
  fs::remove_all(dir);
}
