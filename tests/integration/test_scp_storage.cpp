#define BOOST_TEST_MODULE scp_storage
// The real daemon on 127.0.0.1, driven by DCMTK's echoscu/storescu as the modality.
#include <boost/test/unit_test.hpp>

#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  fs::path dir = make_temp_dir("storage");
  ~Fixture() { fs::remove_all(dir); }
};

// storescu's option that proposes a file's own transfer syntax (it proposes uncompressed ones
// only unless told).
std::string propose_option(const std::string& ts) {
  static const std::map<std::string, std::string> opt{
      {"1.2.840.10008.1.2", "-xi"},         {"1.2.840.10008.1.2.1", "-xe"},       {"1.2.840.10008.1.2.2", "-xb"},
      {"1.2.840.10008.1.2.1.99", "-xd"},    {"1.2.840.10008.1.2.4.50", "-xy"},    {"1.2.840.10008.1.2.4.51", "-xx"},
      {"1.2.840.10008.1.2.4.70", "-xs"},    {"1.2.840.10008.1.2.4.80", "-xt"},    {"1.2.840.10008.1.2.4.81", "-xu"},
      {"1.2.840.10008.1.2.4.90", "-xv"},    {"1.2.840.10008.1.2.4.91", "-xw"},    {"1.2.840.10008.1.2.5", "-xr"}};
  auto it = opt.find(ts);
  return it == opt.end() ? "" : it->second;
}

std::string transfer_syntax_of(const fs::path& f) {
  auto r = run({"dcmdump", "-s", "-Un", "+P", "0002,0010", f.string()});
  std::smatch m;
  static const std::regex uid(R"(\[([0-9.]+)\])");
  return std::regex_search(r.output, m, uid) ? m[1].str() : "";
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(echo_and_called_ae_check, Fixture) {
  Daemon d(dir);
  d.start();
  BOOST_TEST(d.echo("ANY").exit_code == 0);
  const auto wrong = d.echo("ANY", "NOTUS");
  BOOST_TEST(wrong.exit_code != 0);
  BOOST_TEST(wrong.output.find("Called AE Title Not Recognized") != std::string::npos, wrong.output);
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(d.log().find("association from 'ANY' 127.0.0.1") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(calling_ae_allow_list, Fixture) {
  DaemonOptions opt;
  opt.allowed_calling_ae = "[\"CT_SCANNER\", \"ECHOSCU\"]";
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST(d.echo("CT_SCANNER").exit_code == 0);
  const auto denied = d.echo("INTRUDER");
  BOOST_TEST(denied.exit_code != 0);
  BOOST_TEST(denied.output.find("Rejected Permanent") != std::string::npos, denied.output);
  BOOST_TEST(denied.output.find("Calling AE Title Not Recognized") != std::string::npos, denied.output);
  const auto store = d.store({(test_data("dcmqi/data/segmentations/ct-3slice/01.dcm")).string()}, "INTRUDER");
  BOOST_TEST(store.exit_code != 0);
  BOOST_TEST(stored_files(d.incoming()).empty());
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(d.log().find("rejected: calling AE title not allowed") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(every_transfer_syntax_sample_is_accepted_as_received, Fixture) {
  // One file of every transfer syntax in tests/data that storescu can propose.
  const std::vector<std::string> samples{
      "dcm_qa_ts/In/1.dcm", "dcm_qa_ts/In/2.dcm", "dcm_qa_ts/In/3.dcm", "dcm_qa_ts/In/4.dcm", "dcm_qa_ts/In/5.dcm",
      "dcm_qa_ts/In/7.dcm", "dcm_qa_ts/In/9.dcm", "pydicom/test_files/image_dfl.dcm",
      "pydicom/test_files/SC_rgb_jpeg_dcmtk.dcm", "pydicom/test_files/JPEG-lossy.dcm",
      "pydicom/test_files/JPEGLSNearLossless_16.dcm", "pydicom/test_files/JPEG2000.dcm",
      "pydicom/test_files/MR_small_RLE.dcm", "pydicom/test_files/ExplVR_BigEnd.dcm"};
  Daemon d(dir);
  d.start();
  std::set<std::string> syntaxes;
  std::vector<std::string> sent;
  fs::create_directories(dir / "ts");
  int n = 0;
  for (const auto& rel : samples) {
    // A copy; samples stripped of their Study Instance UID get one (pixels and syntax untouched),
    // since an instance without it cannot be filed (that refusal is tested below).
    const auto f = dir / "ts" / (std::to_string(n++) + ".dcm");
    fs::copy_file(test_data(rel), f);
    for (const std::string tag : {"0020,000d", "0020,000e"})
      if (run({"dcmdump", "-s", "+P", tag, f.string()}).output.find("(" + tag + ")") == std::string::npos)
        BOOST_TEST_REQUIRE(run({"dcmodify", "-nb", "-i", "(" + tag + ")=1.2.826.0.1.3680043.10.543." + std::to_string(n),
                                f.string()}).exit_code == 0);
    const auto ts = transfer_syntax_of(f);
    const auto opt = propose_option(ts);
    BOOST_TEST_REQUIRE(!opt.empty(), rel << ": no storescu option for " << ts);
    syntaxes.insert(ts);
    auto r = run({"storescu", "-v", opt, "-aec", "PACSNODE", "127.0.0.1", std::to_string(d.port()), f.string()});
    BOOST_TEST(r.exit_code == 0, rel << " [" << ts << "]: " << r.output);
    BOOST_TEST(r.output.find("Received Store Response (Success)") != std::string::npos, rel);
    sent.push_back(f.string());
  }
  BOOST_TEST(syntaxes.size() >= 12u);
  BOOST_TEST(stored_files(d.incoming()).size() == samples.size());
  // Stored as received: the file meta records the negotiated (= the file's own) syntax.
  for (const auto& f : stored_files(d.incoming())) BOOST_TEST(syntaxes.count(transfer_syntax_of(f)) == 1u, f);
  const auto cmp = compare_stored(d.incoming(), sent);
  BOOST_TEST(cmp.exit_code == 0, cmp.output);
  BOOST_TEST(d.stop() == 0);
}

BOOST_FIXTURE_TEST_CASE(garbage_and_truncated_data_sets_get_failure_and_the_node_keeps_serving, Fixture) {
  Daemon d(dir);
  d.start();
  const auto raw = (source_dir() / "tests/scripts/raw_store.py").string();
  const auto port = std::to_string(d.port());
  const auto garbage = run({python(), raw, "127.0.0.1", port, "PACSNODE", "--garbage", "20000"});
  BOOST_TEST(garbage.exit_code == 0, garbage.output);
  BOOST_TEST(garbage.output.find("status 0xc000") != std::string::npos, garbage.output);
  const auto src = test_data("dcmqi/data/segmentations/ct-3slice/01.dcm").string();
  const auto truncated = run({python(), raw, "127.0.0.1", port, "PACSNODE", "--truncate", src, "0.6"});
  BOOST_TEST(truncated.output.find("status 0xc000") != std::string::npos, truncated.output);
  // A data set without Study Instance UID cannot be filed: also "cannot understand".
  const auto no_study = dir / "no_study.dcm";
  fs::copy_file(src, no_study);
  BOOST_TEST_REQUIRE(run({"dcmodify", "-nb", "-ea", "(0020,000d)", no_study.string()}).exit_code == 0);
  const auto r = d.store({no_study.string()});
  BOOST_TEST(r.output.find("Error: CannotUnderstand") != std::string::npos, r.output);
  // Nothing partial stayed behind, and the next association is served.
  BOOST_TEST(stored_files(d.incoming()).empty());
  BOOST_TEST(count_files(d.incoming() / ".tmp") == 0u);
  BOOST_TEST(d.echo("ECHOSCU").exit_code == 0);
  const auto good = d.store({src});
  BOOST_TEST(good.exit_code == 0, good.output);
  BOOST_TEST(stored_files(d.incoming()).size() == 1u);
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(count_lines(d.log(), "refused with status 0xC000") == 3u, d.log());
}

BOOST_FIXTURE_TEST_CASE(below_the_free_space_reserve_stores_are_refused_before_receiving, Fixture) {
  DaemonOptions opt;
  opt.min_free_mb = 1ull << 29;  // 512 TiB: more than any disk here has
  Daemon d(dir, opt);
  d.start();
  const auto r = d.store({test_data("dcmqi/data/segmentations/ct-3slice/01.dcm").string()});
  BOOST_TEST(r.output.find("Refused: OutOfResources") != std::string::npos, r.output);
  BOOST_TEST(stored_files(d.incoming()).empty());
  BOOST_TEST(d.stop() == 0);
}

BOOST_FIXTURE_TEST_CASE(a_100_slice_ct_is_stored_unchanged_and_the_study_completes, Fixture) {
  const auto ct = ct_phantom(dir, 100, 256);
  Daemon d(dir);
  d.start();
  const auto r = d.store({ct.string()});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  BOOST_TEST(acknowledged_files(r.output).size() == 100u);
  BOOST_TEST(stored_files(d.incoming()).size() == 100u);
  const auto cmp = compare_stored(d.incoming(), {ct.string()});
  BOOST_TEST(cmp.exit_code == 0, cmp.output);
  BOOST_TEST(cmp.output.find("compared 100 missing 0 different 0 unreadable 0") != std::string::npos, cmp.output);
  // Quiet time is 2 s: the study completes and an analysis job is queued.
  BOOST_TEST(eventually([&] { return d.log().find("complete (quiet time): 100 instances in 1 series") != std::string::npos; }, 30s),
             d.log());
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(completed_jobs(d.root()) == 1u);
  // No patient-identifying attribute in the log (the phantom's name, ID and accession).
  for (const char* phi : {"PHANTOM", "PH0001", "ACC0001"}) BOOST_TEST(d.log().find(phi) == std::string::npos, phi);
}
