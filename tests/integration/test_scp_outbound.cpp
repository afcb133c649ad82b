#define BOOST_TEST_MODULE scp_outbound
// The loop, closed against a real PACS: a modality sends a study, SEG and SR appear in Orthanc
// without anyone touching anything, also when Orthanc is down for a while or pacsnode restarts.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <regex>

#include "support/orthanc.h"
#include "support/seg_sources.h"
#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

DaemonOptions with_destination(const Orthanc& pacs, const std::string& ae_title = "ORTHANC") {
  DaemonOptions opt;
  opt.extra = "[[destination]]\nname = \"pacs\"\nae_title = \"" + ae_title + "\"\nhost = \"127.0.0.1\"\nport = " +
              std::to_string(pacs.dicom_port()) +
              "\n[outbound]\ninitial_backoff_seconds = 1\nmax_backoff_seconds = 2\nconnect_timeout_seconds = 5\n";
  return opt;
}

// Orthanc instances whose Modality is one of `modalities`.
std::vector<std::string> instances_with_modality(const Orthanc& pacs, const std::set<std::string>& modalities) {
  std::vector<std::string> out;
  for (const auto& id : pacs.instances())
    if (auto m = pacs.instance_tag(id, "Modality"); m && modalities.count(*m)) out.push_back(id);
  return out;
}

RunResult outbox(const Daemon& d, const std::string& verb) {
  return run({daemon_binary().string(), "outbox", verb, "--config", (d.dir() / "pacsnode.toml").string()});
}

void check_objects_in_pacs(const Orthanc& pacs, const fs::path& source, const fs::path& download) {
  fs::create_directories(download);
  const auto objects = instances_with_modality(pacs, {"SEG", "SR"});
  BOOST_TEST_REQUIRE(objects.size() == 2u);
  for (const auto& id : objects) {
    const auto f = download / (id + ".dcm");
    BOOST_TEST_REQUIRE(pacs.download_instance(id, f));
    expect_dciodvfy_clean(f);
  }
  const auto check = run({python(), (source_dir() / "tests/scripts/check_results.py").string(), download.string(), source.string()});
  BOOST_TEST(check.exit_code == 0, check.output);
}

}  // namespace

BOOST_AUTO_TEST_CASE(synthetic_and_real_ct_reach_the_pacs_with_seg_and_sr) {
  const auto dir = make_temp_dir("outbound");
  Orthanc pacs;
  const auto ct = ct_phantom(dir, 40, 128);
  const auto real = test_data("mirp/ct_images_seg/CRLM-CT-1004/image");
  Daemon d(dir, with_destination(pacs));
  d.start();
  for (const auto& series : {ct, real}) {
    // The modality sends the study to the PACS and to pacsnode.
    const auto to_pacs = run({"storescu", "-aec", "ORTHANC", "+sd", "127.0.0.1", std::to_string(pacs.dicom_port()), series.string()});
    BOOST_TEST_REQUIRE(to_pacs.exit_code == 0, to_pacs.output);
    BOOST_TEST_REQUIRE(d.store({series.string()}).exit_code == 0);
  }
  const std::size_t sources = 40 + 18;  // tests/data keeps slices 1-01..1-18 of CRLM-CT-1004's 41
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == sources + 4; }, 180s), d.log());
  BOOST_TEST(pacs.studies().size() == 2u);  // SEG and SR joined their source studies
  // Per study: the original series plus one SEG and one SR.
  for (const auto& study : pacs.studies()) {
    const auto series = Orthanc::json_values_of(pacs.get("/studies/" + study + "/series"), "ID");
    BOOST_TEST(series.size() == 3u);
  }
  // Download and check them: dciodvfy, and the SR's references resolve to the SEG and sources.
  const auto objects = instances_with_modality(pacs, {"SEG", "SR"});
  BOOST_TEST_REQUIRE(objects.size() == 4u);
  for (const auto& [series, name] : {std::pair{ct, "phantom"}, std::pair{real, "real"}}) {
    const auto download = dir / ("from_pacs_" + std::string(name));
    fs::create_directories(download);
    const auto study_uid = run({python(), "-c", "import pydicom,sys,os; d=sys.argv[1]; "
                                                "print(pydicom.dcmread(os.path.join(d, sorted(os.listdir(d))[0])).StudyInstanceUID)",
                                series.string()}).output;
    for (const auto& id : objects) {
      const auto f = download / (id + ".dcm");
      BOOST_TEST_REQUIRE(pacs.download_instance(id, f));
      if (study_uid.find(*pacs.instance_tag(id, "StudyInstanceUID")) == std::string::npos) fs::remove(f);
    }
    BOOST_TEST(testsupport::count_files(download) == 2u);
    for (const auto& e : fs::directory_iterator(download)) {
      expect_dciodvfy_clean(e.path());
    }
    const auto check = run({python(), (source_dir() / "tests/scripts/check_results.py").string(), download.string(), series.string()});
    BOOST_TEST(check.exit_code == 0, name << ": " << check.output);
  }
  const auto list = outbox(d, "list");
  BOOST_TEST(list.output.find("4 object(s)") != std::string::npos, list.output);
  BOOST_TEST(list.output.find("pending") == std::string::npos, list.output);
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(pacs_down_during_processing_results_arrive_after_it_returns) {
  const auto dir = make_temp_dir("outbound-down");
  Orthanc pacs;
  pacs.stop();  // the PACS is down when the study is analysed
  const auto ct = ct_phantom(dir, 30, 96, 3);
  Daemon d(dir, with_destination(pacs));
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("to retry") != std::string::npos; }, 120s), d.log());
  BOOST_TEST(outbox(d, "list").output.find("pending") != std::string::npos);
  pacs.start();
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == 2; }, 60s), d.log());
  check_objects_in_pacs(pacs, ct, dir / "from_pacs");
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(sigkill_with_a_full_outbox_loses_nothing) {
  const auto dir = make_temp_dir("outbound-kill");
  Orthanc pacs;
  pacs.stop();
  const auto ct = ct_phantom(dir, 30, 96, 4);
  Daemon d(dir, with_destination(pacs));
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("to retry") != std::string::npos; }, 120s), d.log());
  d.kill9();  // objects are queued, none delivered
  BOOST_TEST(outbox(d, "list").output.find("2 object(s)") != std::string::npos);
  pacs.start();
  d.start();
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == 2; }, 60s), d.log());
  check_objects_in_pacs(pacs, ct, dir / "from_pacs");
  BOOST_TEST(d.stop() == 0);
  const auto list = outbox(d, "list");
  BOOST_TEST(list.output.find("sent") != std::string::npos, list.output);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_refusing_destination_dead_letters_and_retry_sends_once_it_accepts) {
  const auto dir = make_temp_dir("outbound-refuse");
  Orthanc pacs;  // answers as ORTHANC only: a call for PACSB is rejected permanently
  const auto ct = ct_phantom(dir, 30, 96, 5);
  Daemon d(dir, with_destination(pacs, "PACSB"));
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return count_lines(d.log(), "dead-lettered:") >= 2; }, 120s), d.log());
  BOOST_TEST(d.log().find("Called AE Title Not Recognized") != std::string::npos, d.log());
  const auto dead = outbox(d, "list");
  BOOST_TEST(count_lines(dead.output, " dead ") == 2u, dead.output);
  BOOST_TEST(pacs.count_instances() == 0u);
  // The PACS administrator fixes the PACS: it now answers as PACSB.
  pacs.stop();
  {
    const auto cfg = pacs.dir() / "orthanc.json";
    std::ifstream in(cfg);
    std::stringstream ss;
    ss << in.rdbuf();
    std::ofstream(cfg) << std::regex_replace(ss.str(), std::regex("\"DicomAet\": \"ORTHANC\""), "\"DicomAet\": \"PACSB\"");
  }
  pacs.start();
  const auto retry = outbox(d, "retry");
  BOOST_TEST(retry.output.find("2 object(s) queued again") != std::string::npos, retry.output);
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == 2; }, 60s), d.log());
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(outbox(d, "purge").output.find("2 sent object(s) removed") != std::string::npos);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_failing_destination_does_not_hold_up_the_others) {
  const auto dir = make_temp_dir("outbound-two");
  Orthanc pacs;
  const auto ct = ct_phantom(dir, 30, 96, 6);
  DaemonOptions opt = with_destination(pacs);
  // A second destination that nobody listens on, listed first.
  opt.extra = "[[destination]]\nname = \"down\"\nae_title = \"DOWN\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(free_port()) +
              "\n" + opt.extra;
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == 2; }, 60s), d.log());
  BOOST_TEST(eventually([&] { return d.log().find("destination 'down'") != std::string::npos; }, 30s), d.log());
  BOOST_TEST(d.stop() == 0);
  scp::Index index(testsupport::index_settings_for(d.root()));
  std::size_t sent = 0, pending = 0;
  for (const auto& r : index.outbox()) {
    if (r.destination == "pacs") sent += r.state == "sent";
    if (r.destination == "down") pending += r.state == "pending" && r.attempts >= 1 && !r.last_error.empty();
  }
  BOOST_TEST(sent == 2u);
  BOOST_TEST(pending == 2u);  // still queued for the destination that is down, with the reason
  fs::remove_all(dir);
}
