#define BOOST_TEST_MODULE scp_retention_tmpfs
// Retention in the real daemon on a small tmpfs storage root, with DCMTK's storescp as the PACS:
// studies that are analysed and delivered go, oldest first, by age or when the file system is
// above the high-water mark; open studies and results not yet delivered stay, whatever their age
// and however full the disk; the index forgets what was deleted.
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <boost/test/unit_test.hpp>

#include <regex>

#include <nlohmann/json.hpp>

#include "dicom/instance_header.h"
#include "support/files.h"
#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

// <dir>/storage is a tmpfs of `mb` MiB (the daemon's storage root).
struct TmpfsRoot {
  fs::path dir = make_temp_dir("retention");
  explicit TmpfsRoot(int mb) {
    BOOST_TEST_REQUIRE(::geteuid() == 0, "this test mounts a small tmpfs as the storage root: run it as root (CI does)");
    fs::create_directories(dir / "storage");
    const std::string opts = "size=" + std::to_string(mb) + "m";
    BOOST_TEST_REQUIRE(::mount("tmpfs", (dir / "storage").c_str(), "tmpfs", 0, opts.c_str()) == 0,
                       "mount tmpfs: " << std::strerror(errno));
  }
  ~TmpfsRoot() {
    ::umount2((dir / "storage").c_str(), MNT_DETACH);
    fs::remove_all(dir);
  }
};

double use_percent(const fs::path& p) {
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return -1;
  const double used = double(st.f_blocks - st.f_bfree);
  return 100.0 * used / (used + double(st.f_bavail));
}

// DCMTK's storescp as the PACS the results go to (a real Storage SCP; stop/start for an outage).
class Pacs {
 public:
  explicit Pacs(const fs::path& dir) : dir_(dir / "pacs"), port_(free_port()) { fs::create_directories(dir_); }
  ~Pacs() { stop(); }
  void start() {
    child_.start({"storescp", "-aet", "PACS", "+xa", "-pm", "-od", dir_.string(), std::to_string(port_)},
                 dir_.parent_path() / "storescp.log");
    BOOST_TEST_REQUIRE(eventually([&] {
      return run({"echoscu", "-aec", "PACS", "127.0.0.1", std::to_string(port_)}).exit_code == 0;
    }, 30s), "storescp did not answer C-ECHO");
  }
  void stop() {
    if (!child_.running()) return;
    child_.kill(SIGTERM);
    if (child_.wait(10s) < 0) child_.kill(SIGKILL), child_.wait(10s);
  }
  std::uint16_t port() const { return port_; }
  std::size_t received() const { return count_files(dir_); }

 private:
  fs::path dir_;
  std::uint16_t port_;
  Child child_;
};

// A synthetic chest CT series of its own study; `announce`: its headers carry Number of Study
// Related Instances, so the study completes on its last instance (otherwise after the quiet time).
fs::path study(const fs::path& dir, int seed, bool announce, int slices = 40, int size = 256) {
  const auto src = ct_phantom(dir, slices, size, seed);
  if (!announce) return src;
  const auto out = dir / ("announced_" + std::to_string(seed));
  fs::create_directories(out);
  std::vector<std::string> argv{"dcmodify", "-nb", "-i", "(0020,1208)=" + std::to_string(slices)};
  for (const auto& e : fs::directory_iterator(src)) {
    fs::copy_file(e.path(), out / e.path().filename(), fs::copy_options::overwrite_existing);
    argv.push_back((out / e.path().filename()).string());
  }
  const auto r = run(argv);
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  return out;
}

DaemonOptions options(const Pacs& pacs, const std::string& retention, int initial_backoff) {
  DaemonOptions opt;
  opt.quiet_seconds = 3600;  // a study without announced counts stays open for the whole test
  opt.extra = "[retention]\n" + retention + "\n[outbound]\ninitial_backoff_seconds = " + std::to_string(initial_backoff) +
              "\nmax_backoff_seconds = " + std::to_string(initial_backoff) + "\nmax_attempts = 1000\n" +
              "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = " +
              std::to_string(pacs.port()) + "\n";
  return opt;
}

// The daemon's index, read while it runs (SQLite WAL: readers do not disturb it).
struct View {
  scp::Index index;
  explicit View(const Daemon& d) : index(testsupport::index_settings_for(d.root())) {}
  std::vector<std::string> studies() {
    std::vector<std::string> out;
    for (const auto& s : index.studies()) out.push_back(s.study_uid);
    return out;
  }
  std::vector<scp::OutboxRow> outbox_of(const std::string& study) {
    std::vector<scp::OutboxRow> out;
    for (const auto& o : index.outbox())
      if (o.study_uid == study) out.push_back(o);
    return out;
  }
  // Analysed, with results, and every one of them sent.
  bool delivered(const std::string& study) {
    const auto rows = outbox_of(study);
    return !rows.empty() && std::all_of(rows.begin(), rows.end(), [](const auto& o) { return o.state == "sent"; }) &&
           job_state(study) == "done";
  }
  // Analysed, and every result tried at least once and still pending.
  bool waiting(const std::string& study) {
    const auto rows = outbox_of(study);
    return !rows.empty() && job_state(study) == "done" &&
           std::all_of(rows.begin(), rows.end(), [](const auto& o) { return o.state == "pending" && o.attempts >= 1; });
  }
  std::string job_state(const std::string& study) {
    std::string state;
    for (const auto& j : index.jobs())
      if (j.study_uid == study) state = j.state;
    return state;
  }
  bool known(const std::string& study) {
    const auto jobs = index.jobs();
    return index.study(study).has_value() || !index.results(study).empty() || !outbox_of(study).empty() ||
           std::any_of(jobs.begin(), jobs.end(), [&](const scp::JobRow& j) { return j.study_uid == study; });
  }
  std::string tag(const std::string& study, int gen = 1) { return scp::study_hash(index.log_key(), study) + "-g" + std::to_string(gen); }
};

// Sends a folder of one study to the daemon; returns its Study Instance UID.
std::string send(const Daemon& d, const fs::path& series) {
  const auto r = d.store({series.string()});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  return dicom::read_instance_header(fs::directory_iterator(series)->path()).study_uid;
}

fs::path incoming_of(const Daemon& d, const std::string& study) { return d.incoming() / scp::path_component(study); }

// Sums of the "retention run:" info lines: per area items, files and MB.
struct Deleted {
  std::size_t runs = 0;
  std::array<std::size_t, 4> items{}, files{};
  std::array<double, 4> mb{};
};
Deleted deleted(const std::string& log) {
  static const std::regex line(
      R"(retention run: deleted incoming (\d+) stud\w+ \((\d+) files?, ([\d.]+) MB\), outbound (\d+) folders? \((\d+) files?, ([\d.]+) MB\), )"
      R"(results (\d+) folders? \((\d+) files?, ([\d.]+) MB\), quarantine (\d+) folders? \((\d+) files?, ([\d.]+) MB\))");
  Deleted d;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator(); ++it) {
    ++d.runs;
    for (std::size_t a = 0; a < 4; ++a) {
      d.items[a] += std::stoul((*it)[1 + 3 * a]);
      d.files[a] += std::stoul((*it)[2 + 3 * a]);
      d.mb[a] += std::stod((*it)[3 + 3 * a]);
    }
  }
  return d;
}

void report(const std::string& what, const Deleted& d) {
  BOOST_TEST_MESSAGE(what << ": " << d.runs << " run(s); incoming " << d.items[0] << " study(ies), " << d.files[0] << " files, "
                          << d.mb[0] << " MB; outbound " << d.items[1] << " folder(s), " << d.files[1] << " files, " << d.mb[1]
                          << " MB; results " << d.items[2] << " folder(s), " << d.files[2] << " files, " << d.mb[2]
                          << " MB; quarantine " << d.items[3] << " folder(s)");
}

}  // namespace

BOOST_AUTO_TEST_CASE(by_age_only_analysed_and_delivered_studies_go_and_the_index_forgets_them) {
  TmpfsRoot fsroot(128);
  Pacs pacs(fsroot.dir);
  pacs.start();
  // Every area kept 2 s; a run every second.
  Daemon d(fsroot.dir, options(pacs, "incoming_days = 0.0000232\noutbound_days = 0.0000232\nresults_days = 0.0000232\n"
                                     "quarantine_days = 0.0000232\nhigh_water_percent = 0\ninterval_seconds = 1",
                               2));
  d.start();

  // A: analysed and delivered.
  const auto a = send(d, study(fsroot.dir, 1, true));
  BOOST_TEST_REQUIRE(eventually([&] { return View(d).delivered(a); }, 120s), d.log());
  const auto a_tag = View(d).tag(a);
  // The PACS goes away. C: analysed, its results cannot be delivered. B: never completes.
  pacs.stop();
  const auto c = send(d, study(fsroot.dir, 2, true));
  const auto b = send(d, study(fsroot.dir, 3, false));
  BOOST_TEST_REQUIRE(eventually([&] { return View(d).waiting(c); }, 120s), d.log());

  // A goes: its instances, its outbound and results folders, and every row of it.
  BOOST_TEST_REQUIRE(eventually([&] { return !View(d).known(a) && !fs::exists(incoming_of(d, a)); }, 60s), d.log());
  BOOST_TEST(!fs::exists(d.root() / "outbound" / a_tag));
  BOOST_TEST(!fs::exists(d.root() / "results" / a_tag));
  BOOST_TEST(d.log().find("retention run: deleted incoming 1 study (40 files") != std::string::npos, d.log());

  // B and C are older than 2 s by now; two more runs later they are still all there.
  const auto runs = deleted(d.log()).runs;
  BOOST_TEST_REQUIRE(eventually([&] { return deleted(d.log()).runs >= runs + 2; }, 30s));
  {
    View v(d);
    BOOST_TEST(v.index.instances_of(b).size() == 40u);
    BOOST_TEST(v.index.instances_of(c).size() == 40u);
    BOOST_TEST(stored_files(incoming_of(d, b)).size() == 40u);
    BOOST_TEST(stored_files(incoming_of(d, c)).size() == 40u);
    BOOST_TEST(v.waiting(c));
    BOOST_TEST(fs::exists(d.root() / "outbound" / v.tag(c)));
    for (const auto& o : v.outbox_of(c)) BOOST_TEST(fs::exists(o.path), o.path);
  }
  BOOST_TEST(d.log().find("held 1 open, 0 not analysed, 1 delivery pending") != std::string::npos, d.log());

  // The PACS is back: C's results are delivered, then C goes too. B stays open.
  pacs.start();
  BOOST_TEST_REQUIRE(eventually([&] { return !View(d).known(c) && !fs::exists(incoming_of(d, c)); }, 60s), d.log());
  {
    View v(d);
    BOOST_TEST(v.index.instances_of(b).size() == 40u);
    BOOST_TEST(stored_files(incoming_of(d, b)).size() == 40u);
    BOOST_TEST(v.studies() == std::vector<std::string>{b});
    BOOST_TEST(v.index.outbox().empty());
  }
  // status.json says the same as the log: two studies' instances deleted since the start.
  const auto status_says = [&] {
    try {
      const auto j = nlohmann::json::parse(read_text(d.status_file()));
      return j.at("retention").at("deleted").at("incoming").at("items").get<int>() == 2 &&
             j.at("retention").at("deleted").at("incoming").at("files").get<int>() == 80;
    } catch (const std::exception&) {
      return false;  // not written yet, or mid-rename
    }
  };
  BOOST_TEST(eventually(status_says, 30s), read_text(d.status_file()));
  BOOST_TEST(d.stop() == 0);
  const auto del = deleted(d.log());
  report("age", del);
  BOOST_TEST(del.items[0] == 2u);  // A and C
  BOOST_TEST(del.files[0] == 80u);
  BOOST_TEST(del.items[1] == 2u);  // their outbound folders
  BOOST_TEST(del.items[2] == 2u);  // their results folders
  BOOST_TEST(del.files[1] >= 4u);  // at least a SEG and an SR each
}

BOOST_AUTO_TEST_CASE(above_the_high_water_mark_the_oldest_settled_studies_go_until_use_is_below_it) {
  TmpfsRoot fsroot(64);
  Pacs pacs(fsroot.dir);  // not started yet
  // No age limit; the mark at 45 %; runs at start only (and then hourly): each start is one run.
  Daemon d(fsroot.dir, options(pacs, "high_water_percent = 45\ninterval_seconds = 3600", 86400));
  d.start();

  // D: analysed, its results fail once (PACS down) and wait a day for the next attempt.
  const auto dd = send(d, study(fsroot.dir, 11, true));
  BOOST_TEST_REQUIRE(eventually([&] { return View(d).waiting(dd); }, 120s), d.log());
  pacs.start();
  // U: never completes. Then S1..S4, each analysed and delivered before the next comes.
  const auto u = send(d, study(fsroot.dir, 12, false));
  std::vector<std::string> s;
  for (int i = 0; i < 4; ++i) {
    s.push_back(send(d, study(fsroot.dir, 13 + i, true)));
    BOOST_TEST_REQUIRE(eventually([&] { return View(d).delivered(s.back()); }, 120s), d.log());
  }
  BOOST_TEST(d.stop() == 0);
  const double before = use_percent(d.root());
  BOOST_TEST_MESSAGE("storage use before the run: " << before << " %");
  BOOST_TEST_REQUIRE(before >= 45.0, "the studies do not fill the tmpfs above the mark: recalibrate the test");

  std::map<std::string, std::string> tags;
  {
    View v(d);
    for (const auto& uid : v.studies()) tags[uid] = v.tag(uid);
  }
  d.start();  // the start-up run
  BOOST_TEST_REQUIRE(eventually([&] { return deleted(d.log()).runs >= 2; }, 60s), d.log());
  const double after = use_percent(d.root());
  BOOST_TEST_MESSAGE("storage use after the run: " << after << " %");
  BOOST_TEST(after < 45.0);

  View v(d);
  // The oldest settled study went entirely, the newest is untouched (the mark did not need it).
  BOOST_TEST(!v.known(s[0]));
  BOOST_TEST(!fs::exists(incoming_of(d, s[0])));
  BOOST_TEST(!fs::exists(d.root() / "outbound" / tags[s[0]]));
  BOOST_TEST(v.index.instances_of(s[3]).size() == 40u);
  BOOST_TEST(fs::exists(d.root() / "outbound" / tags[s[3]]));
  // Oldest first: a study still has its instances only if every older settled one lost its own.
  bool kept_older = false;
  for (const auto& uid : s) {
    const bool kept = !v.index.instances_of(uid).empty();
    BOOST_TEST(!(kept_older && !kept), "a younger study lost its instances before an older one");
    kept_older = kept_older || kept;
  }
  // D and U are the oldest of all, yet kept: D's results are not delivered, U is open.
  BOOST_TEST(v.index.instances_of(dd).size() == 40u);
  BOOST_TEST(stored_files(incoming_of(d, dd)).size() == 40u);
  BOOST_TEST(v.waiting(dd));
  for (const auto& o : v.outbox_of(dd)) BOOST_TEST(fs::exists(o.path), o.path);
  BOOST_TEST(v.index.instances_of(u).size() == 40u);
  BOOST_TEST(stored_files(incoming_of(d, u)).size() == 40u);
  BOOST_TEST(d.log().find("held 1 open, 0 not analysed, 1 delivery pending") != std::string::npos, d.log());
  BOOST_TEST(d.stop() == 0);
  const auto del = deleted(d.log());
  report("high water", del);
  BOOST_TEST(del.items[0] >= 1u);
  BOOST_TEST(del.items[0] <= 3u);
}
