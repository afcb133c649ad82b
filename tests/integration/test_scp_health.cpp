#define BOOST_TEST_MODULE scp_health
// Health that does not lie: with the storage remounted read-only under the running daemon it says
// "failing" (STATUS=, the watchdog stops, associations are rejected as transient), and "ok" again
// once the storage is writable; start-up on an unusable storage root names the path and the cause.
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/daemon_fixture.h"
#include "support/files.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

// A stand-in for systemd's notify socket: records every datagram the daemon sends.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    BOOST_TEST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    timeval tv{0, 200000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    reader_ = std::thread([this] {
      char buf[4096];
      while (!stop_) {
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) continue;
        std::lock_guard lock(mutex_);
        messages_.emplace_back(std::chrono::steady_clock::now(), std::string(buf, static_cast<std::size_t>(n)));
      }
    });
  }
  ~NotifySocket() {
    stop_ = true;
    reader_.join();
    ::close(fd_);
  }
  // Messages received after `since` that contain `what`.
  std::size_t count(const std::string& what, std::chrono::steady_clock::time_point since) {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& [t, m] : messages_) n += t >= since && m.find(what) != std::string::npos;
    return n;
  }
  std::string last_status() {
    std::lock_guard lock(mutex_);
    for (auto it = messages_.rbegin(); it != messages_.rend(); ++it)
      if (auto p = it->second.find("STATUS="); p != std::string::npos) return it->second.substr(p + 7);
    return {};
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread reader_;
  std::mutex mutex_;
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::string>> messages_;
};

struct TmpfsRoot {
  fs::path dir = make_temp_dir("health"), mount = dir / "storage";
  TmpfsRoot() {
    fs::create_directories(mount);
    BOOST_TEST_REQUIRE(::mount("tmpfs", mount.c_str(), "tmpfs", 0, "size=64m") == 0, "mount tmpfs: " << std::strerror(errno));
  }
  ~TmpfsRoot() {
    ::umount2((mount / "incoming").c_str(), MNT_DETACH);
    ::umount2(mount.c_str(), MNT_DETACH);
    fs::remove_all(dir);
  }
  // A file system cannot be remounted read-only while files on it are open for writing (the
  // index is), so the spool's folder is made read-only in place: a read-only bind mount over it,
  // as a failing disk or an administrator's remount would leave it.
  void make_incoming_read_only() {
    const auto in = mount / "incoming";
    BOOST_TEST_REQUIRE(::mount(in.c_str(), in.c_str(), nullptr, MS_BIND, nullptr) == 0, "bind: " << std::strerror(errno));
    const int rc = ::mount(nullptr, in.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr);
    const int err = errno;
    BOOST_TEST_REQUIRE(rc == 0, "remount read-only: " << std::strerror(err));
  }
  void make_incoming_writable() { BOOST_TEST_REQUIRE(::umount2((mount / "incoming").c_str(), 0) == 0); }
  void remount_read_only() {
    const int rc = ::mount("tmpfs", mount.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, "size=64m");
    const int err = errno;
    BOOST_TEST_REQUIRE(rc == 0, "remount read-only: " << std::strerror(err));
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(read_only_storage_makes_the_node_failing_and_it_recovers) {
  BOOST_TEST_REQUIRE(::geteuid() == 0, "this test mounts a tmpfs as the storage root: run it as root (CI does)");
  TmpfsRoot fs_root;
  NotifySocket notify(fs_root.dir / "notify");
  ::setenv("NOTIFY_SOCKET", (fs_root.dir / "notify").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "1000000", 1);  // a ping every 0.5 s
  DaemonOptions opt;
  opt.extra = "";
  Daemon d(fs_root.dir, opt);  // its storage root is dir/storage: the tmpfs
  d.start();
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  BOOST_TEST_REQUIRE(eventually([&] { return notify.count("WATCHDOG=1", {}) >= 2; }, 10s));
  BOOST_TEST(notify.last_status().rfind("ok", 0) == 0, notify.last_status());

  fs_root.make_incoming_read_only();
  const auto ro = std::chrono::steady_clock::now();
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("health: failing: storage not writable") != std::string::npos; }, 30s),
                     d.log());
  BOOST_TEST(d.log().find("Read-only file system") != std::string::npos);
  BOOST_TEST_REQUIRE(eventually([&] { return notify.last_status().rfind("failing", 0) == 0; }, 15s), notify.last_status());
  // The watchdog is no longer fed: no ping for 3 s once the failing state was seen.
  const auto quiet_from = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(3s);  // observing an absence: a fixed window is the measurement
  BOOST_TEST(notify.count("WATCHDOG=1", quiet_from) == 0u);
  // A DICOM monitor sees it: the association is rejected as transient.
  const auto echo = d.echo("ECHOSCU");
  BOOST_TEST(echo.exit_code != 0);
  BOOST_TEST(echo.output.find("Rejected Transient") != std::string::npos, echo.output);
  BOOST_TEST(d.log().find("rejected (transient): the node is failing") != std::string::npos);
  BOOST_TEST(d.running());

  fs_root.make_incoming_writable();
  BOOST_TEST_REQUIRE(eventually([&] { return notify.last_status().rfind("ok", 0) == 0; }, 30s), notify.last_status());
  const auto rw = std::chrono::steady_clock::now();
  BOOST_TEST(eventually([&] { return notify.count("WATCHDOG=1", rw) >= 2; }, 10s));
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);
  BOOST_TEST(d.log().find("health: ok") != std::string::npos);
  BOOST_TEST_MESSAGE("failing seen " << std::chrono::duration<double>(quiet_from - ro).count() << " s after the remount");
  BOOST_TEST(d.stop() == 0);
}

BOOST_AUTO_TEST_CASE(start_up_on_an_unusable_storage_root_names_the_path_and_the_cause) {
  BOOST_TEST_REQUIRE(::geteuid() == 0, "this test mounts a read-only tmpfs: run it as root (CI does)");
  TmpfsRoot fs_root;
  fs_root.remount_read_only();
  // The storage root is the read-only mount itself.
  Daemon d(fs_root.dir);
  Child child({daemon_binary().string(), "run", "--config", (fs_root.dir / "pacsnode.toml").string()}, fs_root.dir / "ro.log");
  BOOST_TEST(child.wait(30s) == 1);
  std::ifstream in(fs_root.dir / "ro.log");
  std::stringstream ss;
  ss << in.rdbuf();
  BOOST_TEST(ss.str().find(fs_root.mount.string()) != std::string::npos, ss.str());
  BOOST_TEST(ss.str().find("Read-only file system") != std::string::npos, ss.str());
  BOOST_TEST(ss.str().find("unable to open database file") == std::string::npos, ss.str());

  // A storage root below a regular file: cannot be created, and the message says where.
  const auto file = fs_root.dir / "a-file";
  std::ofstream(file) << "x";
  std::ofstream(fs_root.dir / "bad.toml") << "[storage]\nroot = \"" << (file / "storage").string() << "\"\n[node]\nport = "
                                          << free_port() << "\n";
  const auto r = run({daemon_binary().string(), "run", "--config", (fs_root.dir / "bad.toml").string()});
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(r.output.find("cannot be created") != std::string::npos, r.output);
  BOOST_TEST(r.output.find(file.string()) != std::string::npos, r.output);
}

namespace {

// status.json's "status" and its reasons, once it says `state` (empty when it never did in time).
std::string status_when(const Daemon& d, const std::string& state, std::chrono::seconds limit) {
  std::string seen;
  eventually(
      [&] {
        try {
          const auto j = nlohmann::json::parse(read_text(d.status_file()));
          if (j.at("status") != state) return false;
          seen = j.at("reasons").dump();
          return true;
        } catch (const std::exception&) {
          return false;  // not written yet, or mid-rename
        }
      },
      limit);
  return seen;
}

}  // namespace

BOOST_AUTO_TEST_CASE(free_space_below_the_reserve_is_degraded_not_failing) {
  const auto dir = make_temp_dir("health-space");
  DaemonOptions opt;
  opt.min_free_mb = 1ull << 30;  // a petabyte in reserve: never there
  Daemon d(dir, opt);
  d.start();
  const std::string reasons = status_when(d, "degraded", 30s);
  BOOST_TEST(reasons.find("below storage.min_free_mb") != std::string::npos, reasons << "\n" << read_text(d.status_file()));
  // Degraded still serves: C-ECHO answers, a C-STORE is refused for resources (0xA700), not rejected.
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_destination_that_dead_letters_makes_the_node_degraded) {
  const auto dir = make_temp_dir("health-dead");
  const auto ct = ct_phantom(dir, 24, 64);
  DaemonOptions opt;
  opt.extra = "[[destination]]\nname = \"down\"\nae_title = \"DOWN\"\nhost = \"127.0.0.1\"\nport = " +
              std::to_string(free_port()) + "\n[outbound]\nmax_attempts = 1\nconnect_timeout_seconds = 2\n";
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST(status_when(d, "ok", 30s).size() > 0u);
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  const std::string reasons = status_when(d, "degraded", 120s);
  BOOST_TEST(reasons.find("destination 'down'") != std::string::npos, reasons << "\n" << d.log());
  BOOST_TEST(reasons.find("dead-lettered") != std::string::npos, reasons);
  BOOST_TEST(d.log().find("health: degraded") != std::string::npos, d.log());
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);  // degraded: still accepting
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}
