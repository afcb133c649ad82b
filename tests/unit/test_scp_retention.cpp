#define BOOST_TEST_MODULE scp_retention
// Retention's selection and deletion on a synthetic spool and index (no sockets, no daemon):
// what is settled goes, oldest first; what is open, not analysed or not delivered stays; the
// index forgets what is deleted; a file that arrives during the deletion is put back.
#include <sys/stat.h>

#include <boost/test/unit_test.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>

#include "scp/retention.h"
#include "scp/study_assembler.h"
#include "support/daemon_fixture.h"
#include "support/test_index.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t kDay = 86400 * 1000LL;
const std::string kSeg = "1.2.840.10008.5.1.4.1.1.66.4";

void write_bytes(const fs::path& p, std::size_t n, char fill = 'x') {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << std::string(n, fill);
}

void set_mtime(const fs::path& p, std::int64_t ms) {
  const timespec t{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000};
  const timespec times[2] = {t, t};
  BOOST_TEST_REQUIRE(::utimensat(AT_FDCWD, p.c_str(), times, 0) == 0);
}

std::uint64_t bytes_below(const fs::path& dir) {
  std::uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// A storage root with a spool and an index filled by hand, as the receiver and the job runner
// would have.
struct Store {
  fs::path root = testsupport::make_temp_dir("retention");
  scp::Index index{testsupport::index_settings_for(root)};
  std::int64_t now = scp::wall_ms();

  Store() {
    for (const char* d : {"incoming/.tmp", "outbound", "results", "quarantine/rejected"}) fs::create_directories(root / d);
  }
  ~Store() { fs::remove_all(root); }

  fs::path study_dir(const std::string& study) const { return root / "incoming" / scp::path_component(study); }
  std::string tag(const std::string& study, int gen) const { return scp::study_hash(index.log_key(), study) + "-g" + std::to_string(gen); }

  // `n` instances of `size` bytes, received at `at_ms` (files written just before).
  std::vector<fs::path> receive(const std::string& study, int n, std::size_t size, std::int64_t at_ms) {
    std::vector<fs::path> paths;
    const auto known = index.instances_of(study).size();
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      scp::StoredInstance in;
      in.header.study_uid = study;
      in.header.series_uid = study + ".1";
      in.header.sop_instance_uid = study + ".1." + std::to_string(known + i + 1);
      in.header.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2";
      in.path = study_dir(study) / scp::path_component(in.header.series_uid) / (in.header.sop_instance_uid + ".dcm");
      in.size = size;
      write_bytes(in.path, size);
      set_mtime(in.path, at_ms - 10);
      index.add_instance(in, at_ms);
      paths.push_back(in.path);
    }
    return paths;
  }
  // Completes the study and ends its job in `state` (pending leaves it queued).
  std::int64_t complete(const std::string& study, int gen, const std::string& state) {
    index.mark_complete(study, gen, now);
    for (const auto& j : index.jobs())
      if (j.study_uid == study && j.generation == gen) {
        if (state != "pending") index.set_job_state(j.id, state);
        return j.id;
      }
    throw std::runtime_error("no job");
  }
  // A SEG in outbound/, previews in results/, queued for "pacs" and left in `delivery` state.
  void outputs(const std::string& study, int gen, std::int64_t job, const std::string& delivery, std::size_t size = 5000) {
    const fs::path seg = root / "outbound" / tag(study, gen) / "series_seg.dcm";
    write_bytes(seg, size);
    write_bytes(root / "results" / tag(study, gen) / "preview.png", size / 2);
    scp::ResultRow r{0, job, study, gen, "SEG", kSeg, study + ".9." + std::to_string(gen), study + ".9", study + ".1", seg.string()};
    r.id = index.add_result(r);
    index.enqueue(r, {"pacs"}, now);
    const auto row = index.outbox("pending").back();
    if (delivery == "sent") index.mark_sent(row.id, now);
    if (delivery == "dead") index.mark_dead(row.id, "0xC000", now);
  }
  bool forgotten(const std::string& study) {
    const auto jobs = index.jobs();
    const auto results = index.results(study);
    return !index.study(study) && results.empty() &&
           std::none_of(jobs.begin(), jobs.end(), [&](const scp::JobRow& j) { return j.study_uid == study; });
  }
};

scp::RetentionPolicy ages(std::int64_t incoming, std::int64_t outputs) {
  scp::RetentionPolicy p;
  p.keep = {std::chrono::milliseconds(incoming), std::chrono::milliseconds(outputs), std::chrono::milliseconds(outputs),
            std::chrono::milliseconds(outputs)};
  p.analysis_enabled = true;
  return p;
}

scp::RetentionStudy settled_study() {
  scp::RetentionStudy s;
  s.complete = true;
  s.generation = 1;
  s.latest_job_state = "done";
  return s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_study_is_settled_only_when_complete_analysed_and_delivered) {
  using scp::Hold;
  auto s = settled_study();
  BOOST_TEST((scp::hold_of(s, true) == Hold::none));
  s.latest_job_state = "failed";  // a failed analysis has ended too: nothing more will come
  BOOST_TEST((scp::hold_of(s, true) == Hold::none));
  s.latest_job_state = "ignored";  // any ended state
  BOOST_TEST((scp::hold_of(s, true) == Hold::none));

  auto open = settled_study();
  open.complete = false;
  BOOST_TEST((scp::hold_of(open, true) == Hold::open));
  BOOST_TEST((scp::hold_of(open, false) == Hold::open));

  auto queued = settled_study();
  queued.jobs_pending = 1;  // an earlier or later generation still queued
  BOOST_TEST((scp::hold_of(queued, true) == Hold::analysing));
  BOOST_TEST((scp::hold_of(queued, false) == Hold::none));  // with analysis off a queued job never runs
  auto running = settled_study();
  running.jobs_running = 1;
  BOOST_TEST((scp::hold_of(running, true) == Hold::analysing));
  BOOST_TEST((scp::hold_of(running, false) == Hold::analysing));

  auto never = settled_study();
  never.latest_job_state.clear();  // no job for the latest generation
  BOOST_TEST((scp::hold_of(never, true) == Hold::not_analysed));
  BOOST_TEST((scp::hold_of(never, false) == Hold::none));

  auto sending = settled_study();
  sending.outbox_pending = 1;
  BOOST_TEST((scp::hold_of(sending, true) == Hold::delivering));
  BOOST_TEST((scp::hold_of(sending, false) == Hold::delivering));
}

BOOST_AUTO_TEST_CASE(age_deletes_settled_studies_and_keeps_open_unanalysed_and_undelivered_ones) {
  Store st;
  const auto old = st.now - 20 * kDay;
  // A: analysed, sent. E: analysed, dead-lettered. F: analysis failed, nothing to send.
  const auto a = st.receive("1.1", 3, 1000, old);
  st.outputs("1.1", 1, st.complete("1.1", 1, "done"), "sent");
  st.receive("1.5", 2, 1000, old);
  st.outputs("1.5", 1, st.complete("1.5", 1, "done"), "dead");
  st.receive("1.6", 1, 1000, old);
  st.complete("1.6", 1, "failed");
  // B: still open. C: complete, its job still queued. D: analysed, result not yet delivered.
  const auto b = st.receive("1.2", 2, 1000, old);
  auto c = st.receive("1.3", 2, 1000, old);
  c.push_back(st.receive("1.3", 1, 1000, old).front());
  st.complete("1.3", 1, "pending");
  const auto d = st.receive("1.4", 2, 1000, old);
  st.outputs("1.4", 1, st.complete("1.4", 1, "done"), "pending");

  const auto r = scp::run_retention(st.index, st.root, ages(10 * kDay, 10 * kDay), st.now + 15 * kDay);
  BOOST_TEST(r.deleted[0].items == 3u);  // A, E, F
  BOOST_TEST(r.deleted[0].files == 6u);
  BOOST_TEST(r.deleted[0].bytes == 6000u);
  BOOST_TEST(r.deleted[1].items == 2u);  // outbound of A and E
  BOOST_TEST(r.deleted[1].bytes == 10000u);
  BOOST_TEST(r.deleted[2].items == 2u);  // their results
  BOOST_TEST(r.deleted[3].items == 0u);
  BOOST_TEST(r.studies_forgotten == 3u);
  BOOST_TEST(r.held[1] == 1u);  // open: B
  BOOST_TEST(r.held[3] + r.held[2] == 1u);  // not analysed: C (pending job)
  BOOST_TEST(r.held[4] == 1u);  // delivering: D

  for (const auto& s : {"1.1", "1.5", "1.6"}) {
    BOOST_TEST(!fs::exists(st.study_dir(s)), s);
    BOOST_TEST(st.forgotten(s), s);
    BOOST_TEST(!fs::exists(st.root / "outbound" / st.tag(s, 1)), s);
    BOOST_TEST(!fs::exists(st.root / "results" / st.tag(s, 1)), s);
  }
  BOOST_TEST(st.index.outbox().size() == 1u);  // D's, still pending
  for (const auto& files : {b, c, d})
    for (const auto& f : files) BOOST_TEST(fs::exists(f), f);
  BOOST_TEST(st.index.instances_of("1.2").size() == 2u);
  BOOST_TEST(st.index.instances_of("1.3").size() == 3u);
  BOOST_TEST(st.index.instances_of("1.4").size() == 2u);
  BOOST_TEST(fs::exists(st.root / "outbound" / st.tag("1.4", 1) / "series_seg.dcm"));
  BOOST_TEST(fs::exists(st.root / "quarantine" / "rejected"));  // not retention's
  BOOST_TEST(fs::is_empty(st.root / "incoming" / ".tmp"));      // nothing left in the trash
  BOOST_TEST(!fs::exists(a.front()));
}

BOOST_AUTO_TEST_CASE(each_area_goes_by_its_own_age_and_the_study_is_forgotten_when_nothing_is_left) {
  Store st;
  st.receive("2.1", 2, 1000, st.now - 20 * kDay);  // old
  st.outputs("2.1", 1, st.complete("2.1", 1, "done"), "sent");
  st.receive("2.2", 2, 1000, st.now - 1 * kDay);  // young
  st.outputs("2.2", 1, st.complete("2.2", 1, "done"), "sent");

  // Incoming after 10 days, outputs kept: 2.1 loses its instances but stays known (its folders
  // and generation remain, so a re-sent study gets a new generation and new folders).
  auto r = scp::run_retention(st.index, st.root, ages(10 * kDay, 0), st.now);
  BOOST_TEST(r.deleted[0].items == 1u);
  BOOST_TEST(r.deleted[1].items + r.deleted[2].items == 0u);
  BOOST_TEST(r.studies_forgotten == 0u);
  const auto row = st.index.study("2.1");
  BOOST_TEST_REQUIRE(row.has_value());
  BOOST_TEST(row->instance_count == 0);
  BOOST_TEST(row->generation == 1);
  BOOST_TEST(st.index.instances_of("2.2").size() == 2u);
  BOOST_TEST(st.index.results("2.1").size() == 1u);

  // Outputs after 5 days (their analyses ended "now", so 6 days later): 2.1 is then forgotten;
  // 2.2 (instances young) keeps its instances and so its index rows.
  r = scp::run_retention(st.index, st.root, ages(10 * kDay, 5 * kDay), st.now + 6 * kDay);
  BOOST_TEST(r.deleted[0].items == 0u);
  BOOST_TEST(r.deleted[1].items == 2u);
  BOOST_TEST(r.deleted[2].items == 2u);
  BOOST_TEST(r.studies_forgotten == 1u);
  BOOST_TEST(st.forgotten("2.1"));
  BOOST_TEST(st.index.study("2.2").has_value());
  BOOST_TEST(st.index.results("2.2").empty());  // its outbound folder went, with its rows
  BOOST_TEST(st.index.outbox().empty());
}

BOOST_AUTO_TEST_CASE(high_water_deletes_the_oldest_settled_items_until_use_is_below_the_mark) {
  Store st;
  // Use = bytes under the root against a 100 kB "file system".
  auto p = ages(0, 0);
  p.high_water_percent = 50;
  p.use_percent = [](const fs::path& root) { return 100.0 * static_cast<double>(bytes_below(root / "incoming") + bytes_below(root / "outbound") + bytes_below(root / "results")) / 100000.0; };
  // The oldest two cannot go: U is open, D's result is not delivered.
  st.receive("3.0", 10, 1000, st.now - 9 * kDay);  // U
  st.receive("3.9", 10, 1000, st.now - 8 * kDay);  // D
  st.outputs("3.9", 1, st.complete("3.9", 1, "done"), "pending", 1000);
  for (int i = 1; i <= 4; ++i) {  // S1 (oldest) .. S4, 12.5 kB each with outputs
    const std::string s = "3." + std::to_string(i);
    st.receive(s, 11, 1000, st.now - (7 - i) * kDay);
    st.outputs(s, 1, st.complete(s, 1, "done"), "sent", 1000);
  }
  const double before = p.use_percent(st.root);
  BOOST_TEST(before == 71.5);  // 10 kB + 11.5 kB + 4 x 12.5 kB

  const auto r = scp::run_retention(st.index, st.root, p, st.now);
  BOOST_TEST(r.use_before == before);
  BOOST_TEST(r.use_after < 50.0);
  BOOST_TEST(!r.above_high_water);
  // The instances of S1 and S2 (11 kB each) bring 71.5 % down to 49.5 %: two go, oldest first.
  BOOST_TEST(r.deleted[0].items == 2u);
  BOOST_TEST(r.use_after == 49.5);
  BOOST_TEST(!fs::exists(st.study_dir("3.1")));
  BOOST_TEST(!fs::exists(st.study_dir("3.2")));
  BOOST_TEST(fs::exists(st.study_dir("3.3")));  // younger: not needed
  BOOST_TEST(fs::exists(st.study_dir("3.4")));
  BOOST_TEST(r.deleted[1].items == 0u);          // outputs ended "now": younger than every study
  BOOST_TEST(st.index.instances_of("3.0").size() == 10u);
  BOOST_TEST(st.index.instances_of("3.9").size() == 10u);

  // A mark that cannot be reached: everything settled goes, the held studies stay, the report says so.
  p.high_water_percent = 10;
  const auto r2 = scp::run_retention(st.index, st.root, p, st.now);
  BOOST_TEST(r2.above_high_water);
  BOOST_TEST(r2.deleted[0].items == 2u);  // S3, S4
  BOOST_TEST(r2.deleted[1].items == 4u);  // outbound of S1..S4; D's stays (pending)
  BOOST_TEST(r2.deleted[2].items == 4u);
  BOOST_TEST(r2.studies_forgotten == 4u);
  BOOST_TEST(st.index.instances_of("3.0").size() == 10u);
  BOOST_TEST(st.index.instances_of("3.9").size() == 10u);
  BOOST_TEST(fs::exists(st.root / "outbound" / st.tag("3.9", 1)));
  BOOST_TEST(fs::exists(st.root / "results" / st.tag("3.9", 1)));
  BOOST_TEST(r2.use_after == 21.5);
}

BOOST_AUTO_TEST_CASE(files_that_arrive_while_their_study_is_deleted_are_put_back) {
  Store st;
  const auto old = st.now - 20 * kDay;
  const auto files = st.receive("4.1", 3, 1000, old);
  st.complete("4.1", 1, "done");
  // Renamed into the spool but not yet indexed (its C-STORE response comes after the index):
  // a new instance, and a re-sent one that replaced an indexed file under the same name.
  const auto fresh = files.front().parent_path() / "4.1.1.99.dcm";
  write_bytes(fresh, 700, 'n');
  write_bytes(files[1], 800, 'r');  // mtime now: newer than its row

  const auto r = scp::run_retention(st.index, st.root, ages(10 * kDay, 10 * kDay), st.now);
  BOOST_TEST(r.deleted[0].items == 1u);
  BOOST_TEST(r.deleted[0].files == 2u);  // the two files the forgotten rows described
  BOOST_TEST(r.files_put_back == 2u);
  BOOST_TEST(st.index.instances_of("4.1").empty());
  BOOST_TEST(fs::file_size(fresh) == 700u);
  BOOST_TEST(fs::file_size(files[1]) == 800u);
  BOOST_TEST(!fs::exists(files[0]));
  BOOST_TEST(!fs::exists(files[2]));
}

BOOST_AUTO_TEST_CASE(forget_instances_rechecks_in_its_transaction_and_undoes_a_failed_move) {
  Store st;
  st.receive("5.1", 2, 100, st.now - kDay);
  st.complete("5.1", 1, "done");
  const auto selected = st.index.study("5.1")->last_instance_ms;
  st.receive("5.1", 1, 100, st.now);  // a new instance after the selection: the study reopened
  bool moved = false;
  auto same = [&](const scp::RetentionStudy& s) { return s.complete && s.last_instance_ms == selected; };
  auto none = [](const std::vector<scp::InstanceFile>&) {};
  BOOST_TEST(!st.index.forget_instances("5.1", same, [&](const std::vector<scp::InstanceFile>&) { moved = true; }, none));
  BOOST_TEST(!moved);
  BOOST_TEST(st.index.instances_of("5.1").size() == 3u);

  // A move that fails: the rows stay and undo is told.
  bool undone = false;
  BOOST_CHECK_THROW(st.index.forget_instances(
                        "5.1", [](const scp::RetentionStudy&) { return true; },
                        [](const std::vector<scp::InstanceFile>&) { throw std::runtime_error("EIO"); },
                        [&](const std::vector<scp::InstanceFile>& rows) { undone = rows.size() == 3; }),
                    std::runtime_error);
  BOOST_TEST(undone);
  BOOST_TEST(st.index.instances_of("5.1").size() == 3u);
}

BOOST_AUTO_TEST_CASE(folders_no_job_knows_age_by_their_mtime_and_other_folders_are_left_alone) {
  Store st;
  const auto orphan = st.root / "outbound" / "s-0123456789ab-g1";
  const auto young = st.root / "results" / "s-0123456789ab-g2";
  const auto other = st.root / "results" / "notes";
  write_bytes(orphan / "a.dcm", 300);
  write_bytes(young / "b.png", 300);
  write_bytes(other / "c.txt", 300);
  set_mtime(orphan, st.now - 20 * kDay);
  const auto r = scp::run_retention(st.index, st.root, ages(10 * kDay, 10 * kDay), st.now);
  BOOST_TEST(r.deleted[1].items == 1u);
  BOOST_TEST(r.deleted[1].bytes == 300u);
  BOOST_TEST(!fs::exists(orphan));
  BOOST_TEST(fs::exists(young));
  BOOST_TEST(fs::exists(other));
  BOOST_TEST(fs::exists(st.root / "quarantine" / "rejected"));
}

BOOST_AUTO_TEST_CASE(summary_and_stats_name_counts_and_bytes_per_area_only) {
  scp::RetentionReport r;
  r.deleted[0] = {2, 80, 10'500'000};
  r.deleted[1] = {1, 2, 250'000};
  r.studies_forgotten = 2;
  r.held = {0, 1, 0, 0, 3};
  r.use_after = 41.25;
  scp::RetentionPolicy p;
  p.high_water_percent = 85;
  const auto line = scp::summary(r, p);
  BOOST_TEST(line.find("incoming 2 studies (80 files, 10.50 MB), outbound 1 folder (2 files, 0.25 MB)") != std::string::npos, line);
  BOOST_TEST(line.find("2 study(ies) forgotten; held 1 open, 0 not analysed, 3 delivery pending") != std::string::npos, line);
  BOOST_TEST(line.find("storage 41.2% used (high-water 85%)") != std::string::npos, line);

  scp::RetentionStats s;
  s.runs = 3;
  s.deleted[3] = {1, 4, 99};
  s.last_error = "index: \"locked\"";
  const auto json = nlohmann::json::parse(scp::to_json(s));
  BOOST_TEST(json.at("deleted").at("quarantine") == (nlohmann::json{{"items", 1}, {"files", 4}, {"bytes", 99}}), json.dump());
  BOOST_TEST(json.at("deleted").at("incoming").at("items") == 0);
  BOOST_TEST(json.at("last_error") == "index: \"locked\"");
  BOOST_TEST(json.at("runs") == 3);
}

BOOST_AUTO_TEST_CASE(the_timer_runs_at_start_then_after_the_interval_a_reload_sets) {
  Store st;
  st.receive("6.1", 2, 1000, st.now - 20 * kDay);
  st.outputs("6.1", 1, st.complete("6.1", 1, "done"), "sent");
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread loop([&] { io.run(); });
  {
    scp::Retention retention(io, st.index, st.root, ages(10 * kDay, 10 * kDay), 3600s);
    retention.start();
    BOOST_TEST_REQUIRE(testsupport::eventually([&] { return retention.stats().runs == 1; }, 10s));
    const auto s = retention.stats();
    BOOST_TEST(s.deleted[0].items == 1u);
    BOOST_TEST(s.deleted[0].bytes == 2000u);
    BOOST_TEST(s.studies_forgotten == 0u);  // its folders are young
    BOOST_TEST(s.failed_runs == 0u);
    BOOST_TEST(s.last_run_ms >= st.now);
    // A reload with a short interval: the armed hour-long wait is replaced.
    retention.update(ages(10 * kDay, 1), 1s);
    BOOST_TEST_REQUIRE(testsupport::eventually([&] { return retention.stats().runs >= 2; }, 10s));
    BOOST_TEST(retention.stats().deleted[1].items == 1u);
    BOOST_TEST(retention.stats().studies_forgotten == 1u);
    retention.stop();
  }
  guard.reset();
  io.stop();
  loop.join();
  BOOST_TEST(st.forgotten("6.1"));
}

BOOST_AUTO_TEST_CASE(instances_received_during_a_deletion_are_never_lost) {
  // A receiver thread does what the SCP does (file renamed into the spool, then indexed, then
  // acknowledged) into a settled study while retention deletes that study. Every acknowledged
  // instance must be on disk and in the index afterwards, whichever side won.
  Store st;
  const auto policy = ages(10 * kDay, 10 * kDay);
  std::size_t deleted_first = 0, put_back = 0;
  for (int round = 0; round < 30; ++round) {
    const std::string study = "7." + std::to_string(round);
    st.receive(study, 5, 100, st.now - 20 * kDay);
    st.complete(study, 1, "done");
    std::vector<std::pair<std::string, fs::path>> acked;
    std::thread receiver([&] {
      for (int i = 0; i < 20; ++i) {
        scp::StoredInstance in;
        in.header.study_uid = study;
        in.header.series_uid = study + ".1";
        in.header.sop_instance_uid = study + ".2." + std::to_string(i);
        in.header.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2";
        in.path = st.study_dir(study) / scp::path_component(in.header.series_uid) / (in.header.sop_instance_uid + ".dcm");
        in.size = 100;
        const auto tmp = st.root / "incoming" / ".tmp" / (in.header.sop_instance_uid + ".part");
        write_bytes(tmp, 100, 'a');
        std::error_code ec;
        fs::create_directories(in.path.parent_path(), ec);
        fs::rename(tmp, in.path, ec);
        if (ec) {  // the folder moved away under us: refused, the sender sends it again
          fs::remove(tmp, ec);
          continue;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(300 * (i % 4)));  // the directory fsync takes this long
        st.index.add_instance(in, scp::wall_ms());
        acked.emplace_back(in.header.sop_instance_uid, in.path);
      }
    });
    const auto r = scp::run_retention(st.index, st.root, policy, st.now);
    receiver.join();
    deleted_first += r.deleted[0].items;
    put_back += r.files_put_back;
    std::set<std::string> indexed;
    for (const auto& i : st.index.instances_of(study)) indexed.insert(i.sop_uid);
    for (const auto& [sop, path] : acked) {
      BOOST_TEST(fs::exists(path), "round " << round << ": acknowledged " << path << " is gone");
      BOOST_TEST(indexed.count(sop) == 1u, "round " << round << ": acknowledged " << sop << " not indexed");
    }
  }
  BOOST_TEST_MESSAGE(deleted_first << " of 30 studies deleted while instances arrived, " << put_back << " file(s) put back");
}
