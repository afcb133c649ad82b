#define BOOST_TEST_MODULE scp_analysis
// A completed study is analysed by the daemon: SEG + SR in outbound/, previews and features in
// results/, every object valid (dciodvfy) and consistent (pydicom); a late instance reopens the
// study and gives new objects.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "support/seg_sources.h"
#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

std::vector<fs::path> files_in(const fs::path& dir, const std::string& ext = "") {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && (ext.empty() || e.path().extension() == ext)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(chest_ct_gives_valid_seg_and_sr_and_a_late_instance_reanalyses) {
  const auto dir = make_temp_dir("analysis");
  const auto ct = ct_phantom(dir, 40, 128);
  Daemon d(dir);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 1 analysed") != std::string::npos; }, 120s), d.log());

  const auto outbound = files_in(d.root() / "outbound", ".dcm");
  BOOST_TEST_REQUIRE(outbound.size() == 2u, d.log());
  for (const auto& f : outbound) expect_dciodvfy_clean(f);
  const auto check = run({python(), (source_dir() / "tests/scripts/check_results.py").string(),
                          outbound.front().parent_path().string(), ct.string(), "44029006", "3341006"});  // left, right lung
  BOOST_TEST(check.exit_code == 0, check.output);
  BOOST_TEST_MESSAGE(check.output);
  BOOST_TEST(files_in(d.root() / "results", ".png").size() == 1u);
  BOOST_TEST(files_in(d.root() / "results", ".json").size() == 1u);
  BOOST_TEST(run({python(), "-c", "import json,sys; json.load(open(sys.argv[1]))", files_in(d.root() / "results", ".json").front().string()}).exit_code == 0);

  // A late series of the same study (copies of 12 slices under new series and instance UIDs)
  // reopens it; only the new series is analysed: the first one has not changed.
  const auto late = dir / "late";
  fs::create_directories(late);
  for (int z = 10; z < 22; ++z) {
    const auto f = late / fmt::format("ct_{:04d}.dcm", z);
    fs::copy_file(ct / fmt::format("ct_{:04d}.dcm", z), f);
    BOOST_TEST_REQUIRE(run({"dcmodify", "-nb", "-gin", "-m", "(0020,000e)=1.2.826.0.1.3680043.10.543.77", "-m",
                            "(0020,0011)=3", f.string()}).exit_code == 0);
  }
  BOOST_TEST_REQUIRE(d.store({late.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 2 analysed") != std::string::npos; }, 120s), d.log());
  BOOST_TEST(d.log().find("reopened by a late instance") != std::string::npos);
  BOOST_TEST(d.log().find("instances unchanged since generation 1") != std::string::npos, d.log());
  BOOST_TEST(files_in(d.root() / "outbound", ".dcm").size() == 4u);
  for (const auto& f : outbound) BOOST_TEST(fs::exists(f));

  // One instance of the first series is sent again with other content: that series changed, and
  // its new SEG and SR supersede the first ones in the same series, with the next instance number.
  const auto changed = dir / "changed.dcm";
  fs::copy_file(ct / "ct_0005.dcm", changed);
  BOOST_TEST_REQUIRE(run({"dcmodify", "-nb", "-i", "(0008,103e)=REPROCESSED", changed.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(d.store({changed.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 3 analysed") != std::string::npos; }, 120s), d.log());
  BOOST_TEST(files_in(d.root() / "outbound", ".dcm").size() == 6u);
  BOOST_TEST(d.stop() == 0);

  scp::Index index(testsupport::index_settings_for(d.root()));
  const auto results = index.results();
  BOOST_TEST_REQUIRE(results.size() == 6u);
  std::set<std::string> uids, series;
  std::set<int> numbers;
  for (const auto& r : results) {
    uids.insert(r.sop_instance_uid);
    series.insert(r.series_uid);
    numbers.insert(r.series_number);
  }
  BOOST_TEST(uids.size() == 6u);    // every object is a new instance
  BOOST_TEST(series.size() == 4u);  // SEG and SR series per source series; the superseding ones reuse theirs
  BOOST_TEST(numbers.size() == 4u);  // no two result series share a number
  for (const auto& j : index.jobs()) BOOST_TEST(j.state == "done", "job " << j.id << ": " << j.state << " " << j.error);
  const std::string first_series = results.front().source_series_uid;
  std::map<std::string, std::vector<scp::ResultRow>> by_kind;  // of the first source series, in generation order
  for (const auto& r : results)
    if (r.source_series_uid == first_series) by_kind[r.kind].push_back(r);
  for (const char* kind : {"SEG", "SR"}) {
    BOOST_TEST_CONTEXT(kind) {
      const auto& rows = by_kind[kind];
      BOOST_TEST_REQUIRE(rows.size() == 2u);
      BOOST_TEST(rows[0].generation == 1);
      BOOST_TEST(rows[1].generation == 3);
      BOOST_TEST(rows[1].series_uid == rows[0].series_uid);
      BOOST_TEST(rows[1].series_number == rows[0].series_number);
      BOOST_TEST(rows[0].instance_number == 1);
      BOOST_TEST(rows[1].instance_number == 2);
      const auto read = run({python(), "-c",
                             "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.SeriesInstanceUID, d.InstanceNumber)",
                             rows[1].path});
      BOOST_TEST(read.output.find(rows[0].series_uid + " 2") != std::string::npos, read.output);
    }
  }
  // The superseding report lists the first in its Predecessor Documents Sequence.
  const auto pred = run({python(), "-c",
                         "import pydicom,sys; a=pydicom.dcmread(sys.argv[1]); b=pydicom.dcmread(sys.argv[2]); "
                         "refs=[i.ReferencedSOPInstanceUID for s in b.PredecessorDocumentsSequence for r in s.ReferencedSeriesSequence "
                         "for i in r.ReferencedSOPSequence]; print('replaces' if a.SOPInstanceUID in refs else 'missing')",
                         by_kind["SR"][0].path, by_kind["SR"][1].path});
  BOOST_TEST(pred.output.find("replaces") != std::string::npos, pred.output);
  for (const auto& f : files_in(d.root() / "outbound", ".dcm")) expect_dciodvfy_clean(f);
  for (const char* phi : {"PHANTOM", "PH0001", "ACC0001"}) BOOST_TEST(d.log().find(phi) == std::string::npos, phi);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(key_images_option_adds_valid_secondary_captures) {
  const auto dir = make_temp_dir("keyimages");
  const auto ct = ct_phantom(dir, 30, 96, 7);
  DaemonOptions opt;
  opt.extra = "[analysis]\nkey_images = true\n";
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 1 analysed") != std::string::npos; }, 120s), d.log());
  BOOST_TEST(d.stop() == 0);
  std::vector<fs::path> keys;
  for (const auto& f : files_in(d.root() / "outbound", ".dcm"))
    if (f.filename().string().find("_key") != std::string::npos) keys.push_back(f);
  BOOST_TEST(keys.size() >= 1u);
  BOOST_TEST(keys.size() <= 3u);
  for (const auto& f : keys) {
    expect_dciodvfy_clean(f);
    const auto r = run({python(), "-c",
                        "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); "
                        "print(d.SOPClassUID, d.BurnedInAnnotation, d.ImageType[0], d.ImageType[1], d.PhotometricInterpretation)",
                        f.string()});
    BOOST_TEST(r.output.find("1.2.840.10008.5.1.4.1.1.7 YES DERIVED SECONDARY RGB") != std::string::npos, r.output);
  }
  scp::Index index(testsupport::index_settings_for(d.root()));
  std::size_t key_rows = 0;
  for (const auto& r : index.results()) key_rows += r.kind == "KEY";
  BOOST_TEST(key_rows == keys.size());
  // The same images as PNG in results/, for the status page: one per key image object.
  std::size_t pngs = 0;
  for (const auto& f : files_in(d.root() / "results", ".png"))
    if (f.filename().string().find("_key_") != std::string::npos) {
      ++pngs;
      const auto r = run({python(), "-c", "import sys; print(open(sys.argv[1],'rb').read(8) == b'\\x89PNG\\r\\n\\x1a\\n')", f.string()});
      BOOST_TEST(r.output.find("True") != std::string::npos, f.string() << ": " << r.output);
    }
  BOOST_TEST(pngs == keys.size());
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_profile_sends_its_results_only_to_the_destinations_it_names) {
  const auto dir = make_temp_dir("profile-destinations");
  const auto ct = ct_phantom(dir, 24, 64, 9);
  DaemonOptions opt;
  // Two destinations nobody listens on: the outbox shows where each object is queued.
  opt.extra = "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = " +
              std::to_string(free_port()) + "\n[[destination]]\nname = \"archive\"\nae_title = \"ARCHIVE\"\nhost = \"127.0.0.1\"\nport = " +
              std::to_string(free_port()) +
              "\n[[profile]]\nname = \"chest-archive\"\nbase = \"ct-chest\"\nkeywords = [\"CHEST\"]\ndestinations = [\"archive\"]\n"
              "[outbound]\ninitial_backoff_seconds = 60\nmax_backoff_seconds = 60\n";
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 1 analysed") != std::string::npos; }, 120s), d.log());
  BOOST_TEST(d.log().find("(chest-archive)") != std::string::npos, d.log());
  BOOST_TEST(d.stop() == 0);
  scp::Index index(testsupport::index_settings_for(d.root()));
  const auto rows = index.outbox();
  BOOST_TEST(rows.size() == 2u);  // SEG and SR, for the archive only
  for (const auto& r : rows) BOOST_TEST(r.destination == "archive");
  fs::remove_all(dir);
}

// VmHWM (peak resident set) of a process, in KiB; 0 when it cannot be read.
long peak_rss_kib(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

BOOST_AUTO_TEST_CASE(the_daemon_never_holds_a_volume_the_worker_does_and_status_reports_jobs) {
  // A 64 x 512 x 512 CT is 32 MiB as int16, and its analysis needs several times that: all of it
  // lives in the worker process; the daemon's own peak stays below the size of the volume.
  const auto dir = make_temp_dir("analysis-memory");
  const auto ct = ct_phantom(dir, 64, 512);
  Daemon d(dir);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  const long stored_peak_kib = peak_rss_kib(d.pid());  // libraries mapped, one association served
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 1 analysed") != std::string::npos; }, 180s), d.log());
  const long daemon_peak_kib = peak_rss_kib(d.pid());
  BOOST_TEST_MESSAGE("daemon peak RSS " << stored_peak_kib / 1024 << " MiB after storing, " << daemon_peak_kib / 1024
                                        << " MiB after the analysis");
  BOOST_TEST(stored_peak_kib > 0);
  BOOST_TEST(daemon_peak_kib - stored_peak_kib < 16 * 1024, "daemon peak RSS grew by " << daemon_peak_kib - stored_peak_kib << " KiB");
  // status.json is rewritten every 5 s: wait for a version written after the job, read with
  // Python's json module.
  const auto status = d.status_file();
  std::string values;
  const bool idle = eventually(
      [&] {
        const auto r = run({python(), "-c",
                            "import json,sys; s=json.load(open(sys.argv[1])); "
                            "print(s['jobs_queued'], s['jobs_running'], s['instances_stored'])",
                            status.string()});
        values = r.output;
        return r.exit_code == 0 && values.rfind("0 0 64", 0) == 0;
      },
      30s);
  BOOST_TEST(idle, "status.json: " << values);
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}
