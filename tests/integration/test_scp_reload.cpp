#define BOOST_TEST_MODULE scp_reload
// SIGHUP re-reads the config file: the calling-AE allow-list, destinations and the log level apply
// to what comes next while an association in flight carries on; an invalid file keeps the running
// config; keys that need a restart say so and keep their running values; on the embedded default
// there is nothing to re-read and the daemon says so instead of dying.
#include <csignal>

#include <boost/test/unit_test.hpp>

#include "support/daemon_fixture.h"
#include "support/files.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + what.size())) ++n;
  return n;
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto p = text.find(from);
  BOOST_TEST_REQUIRE(p != std::string::npos, "config has no '" << from << "'");
  return text.replace(p, from.size(), to);
}

// Sends SIGHUP and waits until the daemon has logged one more line containing `marker`.
void hup_and_wait(Daemon& d, const std::string& marker) {
  const auto before = count(d.log(), marker);
  BOOST_TEST_REQUIRE(::kill(d.pid(), SIGHUP) == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return count(d.log(), marker) > before; }, 30s), d.log());
}

}  // namespace

BOOST_AUTO_TEST_CASE(allow_list_destinations_and_log_level_change_without_a_restart) {
  const auto dir = make_temp_dir("reload");
  Daemon d(dir);
  d.start();
  const fs::path config = dir / "pacsnode.toml";
  const std::string original = read_text(config);
  BOOST_TEST_REQUIRE(d.echo("ANYAE").exit_code == 0);

  // An association opened before the reload...
  const auto go = dir / "go";
  Child holder({python(), (source_dir() / "tests/scripts/hold_echo.py").string(), "127.0.0.1", std::to_string(d.port()),
                "PACSNODE", go.string()},
               dir / "holder.log");
  BOOST_TEST_REQUIRE(eventually([&] { return read_text(dir / "holder.log").find("associated") != std::string::npos; }, 30s),
                     read_text(dir / "holder.log"));

  std::string next = replaced(original, "allowed_calling_ae = []", "allowed_calling_ae = [\"GOODAE\"]");
  next = replaced(next, "level = \"info\"", "level = \"debug\"");
  next += "\n[[destination]]\nname = \"pacs\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = " +
          std::to_string(free_port()) + "\n";
  std::ofstream(config) << next;
  hup_and_wait(d, "SIGHUP: reloaded");
  const std::string log = d.log();
  BOOST_TEST(log.find("1 destination(s)") != std::string::npos, log);
  BOOST_TEST(log.find("1 allowed calling AE title(s)") != std::string::npos, log);
  BOOST_TEST(log.find("log level debug") != std::string::npos, log);

  // ...carries on under the old rules: its C-ECHO after the reload succeeds.
  std::ofstream(go) << "go";
  BOOST_TEST(holder.wait(30s) == 0, read_text(dir / "holder.log"));
  BOOST_TEST(read_text(dir / "holder.log").find("echo status 0x0000") != std::string::npos, read_text(dir / "holder.log"));

  // New associations are under the new allow-list.
  BOOST_TEST(d.echo("GOODAE").exit_code == 0);
  const auto refused = d.echo("ANYAE");
  BOOST_TEST(refused.exit_code != 0, refused.output);
  // The new level is in force: a stored instance is logged at debug level.
  BOOST_TEST(d.log().find(" debug [") == std::string::npos);
  const auto ct = ct_phantom(dir, 1, 32);
  BOOST_TEST_REQUIRE(d.store({ct.string()}, "GOODAE").exit_code == 0);
  BOOST_TEST(eventually([&] { return d.log().find(" debug [") != std::string::npos; }, 10s), d.log());

  // Back to the original file: any calling AE again.
  std::ofstream(config) << original;
  hup_and_wait(d, "SIGHUP: reloaded");
  BOOST_TEST(d.echo("ANYAE").exit_code == 0);
  BOOST_TEST(d.running());
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(an_invalid_file_keeps_the_running_config_and_restart_only_keys_say_so) {
  const auto dir = make_temp_dir("reload-bad");
  DaemonOptions opt;
  opt.allowed_calling_ae = "[\"GOODAE\", \"ECHOSCU\"]";
  Daemon d(dir, opt);
  d.start();
  const fs::path config = dir / "pacsnode.toml";
  const std::string original = read_text(config);

  // Invalid: a value of the wrong type and an unknown key. Both are named, nothing changes.
  std::ofstream(config) << replaced(original, "allowed_calling_ae = [\"GOODAE\", \"ECHOSCU\"]", "allowed_calling_ae = 7\nno_such_key = 1");
  hup_and_wait(d, "is invalid; the running config stays");
  BOOST_TEST(d.log().find("allowed_calling_ae") != std::string::npos, d.log());
  BOOST_TEST(d.running());
  BOOST_TEST(d.echo("GOODAE").exit_code == 0);
  BOOST_TEST(d.echo("OTHERAE").exit_code != 0);

  // A new port needs a restart: logged, and the node keeps listening where it was.
  const auto other_port = free_port();
  std::ofstream(config) << replaced(original, "port = " + std::to_string(d.port()), "port = " + std::to_string(other_port));
  hup_and_wait(d, "SIGHUP: reloaded");
  const std::string log = d.log();
  BOOST_TEST(log.find("node.port " + std::to_string(d.port()) + " -> " + std::to_string(other_port) + " needs a restart") !=
                 std::string::npos,
             log);
  BOOST_TEST(d.echo("GOODAE").exit_code == 0);
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(sighup_on_the_embedded_default_is_logged_not_fatal) {
  // The embedded default listens on 11112; without it free this case cannot run here.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(11112);
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool port_free = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  BOOST_TEST_REQUIRE(port_free, "port 11112 (the embedded default's) is in use on this machine");

  const auto dir = make_temp_dir("reload-default");
  ::setenv("STATE_DIRECTORY", (dir / "state").c_str(), 1);
  fs::create_directories(dir / "state");
  Child child({daemon_binary().string(), "run"}, dir / "daemon.log");
  ::unsetenv("STATE_DIRECTORY");
  const auto up = eventually(
      [&] {
        return !child.running() || run({"echoscu", "-aec", "PACSNODE", "127.0.0.1", "11112"}).exit_code == 0;
      },
      30s, 100ms);
  BOOST_TEST_REQUIRE(child.running(), read_text(dir / "daemon.log"));
  BOOST_TEST_REQUIRE(up, read_text(dir / "daemon.log"));
  BOOST_TEST_REQUIRE(::kill(child.pid(), SIGHUP) == 0);
  BOOST_TEST(eventually([&] { return read_text(dir / "daemon.log").find("nothing to re-read") != std::string::npos; }, 30s),
             read_text(dir / "daemon.log"));
  BOOST_TEST(child.running());
  BOOST_TEST(run({"echoscu", "-aec", "PACSNODE", "127.0.0.1", "11112"}).exit_code == 0);
  child.kill(SIGTERM);
  BOOST_TEST(child.wait(60s) == 0);
  fs::remove_all(dir);
}
