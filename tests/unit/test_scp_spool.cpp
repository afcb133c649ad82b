#define BOOST_TEST_MODULE spool
#include <boost/test/unit_test.hpp>

#include <fstream>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "scp/daemon.h"
#include "scp/index.h"
#include "scp/spool.h"
#include "support/daemon_fixture.h"
#include "support/dicom_bytes.h"
#include "support/test_index.h"

namespace fs = std::filesystem;
using scp::Spool;
using scp::StoreFailure;

namespace {

// A small valid instance written with DCMTK.
void write_instance(const fs::path& p, const std::string& study, const std::string& series, const std::string& sop,
                    bool with_study = true) {
  DcmFileFormat ff;
  auto* ds = ff.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
  if (with_study) ds->putAndInsertString(DCM_StudyInstanceUID, study.c_str());
  ds->putAndInsertString(DCM_SeriesInstanceUID, series.c_str());
  ds->putAndInsertString(DCM_Modality, "OT");
  ds->putAndInsertUint16(DCM_Rows, 2);
  ds->putAndInsertUint16(DCM_Columns, 2);
  BOOST_REQUIRE(ff.saveFile(p.c_str(), EXS_LittleEndianExplicit).good());
}

struct TempSpool {
  fs::path dir = testsupport::make_temp_dir("spool");
  ~TempSpool() { fs::remove_all(dir); }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The files in quarantine/rejected/ with the given extension, oldest first.
std::vector<fs::path> rejected(const Spool& spool, const std::string& ext) {
  std::vector<fs::path> out;
  if (!fs::exists(spool.rejected_dir())) return out;
  for (const auto& e : fs::directory_iterator(spool.rejected_dir()))
    if (e.path().extension() == ext) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(commit_moves_into_study_series_instance_layout, TempSpool) {
  Spool spool(dir);
  const auto tmp = spool.temp_path();
  BOOST_TEST(tmp.parent_path() == dir / "incoming" / ".tmp");
  write_instance(tmp, "1.2.3", "1.2.3.4", "1.2.3.4.5");
  const auto in = spool.commit(tmp);
  BOOST_TEST(in.path == dir / "incoming" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm");
  BOOST_TEST(fs::exists(in.path));
  BOOST_TEST(!fs::exists(tmp));
  BOOST_TEST(in.header.sop_class_uid == UID_SecondaryCaptureImageStorage);
  BOOST_TEST(in.size == fs::file_size(in.path));
  BOOST_TEST(testsupport::count_files(dir / "incoming" / ".tmp") == 0u);
}

BOOST_FIXTURE_TEST_CASE(recommitting_the_same_instance_is_idempotent, TempSpool) {
  Spool spool(dir);
  for (int i = 0; i < 2; ++i) {
    const auto tmp = spool.temp_path();
    write_instance(tmp, "1.2.3", "1.2.3.4", "1.2.3.4.5");
    spool.commit(tmp);
  }
  BOOST_TEST(spool.list_instances().size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(garbage_is_bad_data_and_leaves_nothing, TempSpool) {
  Spool spool(dir);
  const auto tmp = spool.temp_path();
  std::ofstream(tmp) << "this is not DICOM at all";
  BOOST_CHECK_EXCEPTION(spool.commit(tmp), StoreFailure, [](const StoreFailure& e) { return e.kind() == StoreFailure::Kind::bad_data; });
  BOOST_TEST(!fs::exists(tmp));
  BOOST_TEST(spool.list_instances().empty());
}

BOOST_FIXTURE_TEST_CASE(missing_study_uid_is_bad_data, TempSpool) {
  Spool spool(dir);
  const auto tmp = spool.temp_path();
  write_instance(tmp, "", "1.2.3.4", "1.2.3.4.5", false);
  BOOST_CHECK_EXCEPTION(spool.commit(tmp), StoreFailure, [](const StoreFailure& e) {
    return e.kind() == StoreFailure::Kind::bad_data && std::string(e.what()).find("Study Instance UID") != std::string::npos;
  });
  BOOST_TEST(!fs::exists(tmp));
}

BOOST_FIXTURE_TEST_CASE(truncated_file_is_refused, TempSpool) {
  Spool spool(dir);
  const auto tmp = spool.temp_path();
  const auto src = testsupport::test_data("dcmqi/data/segmentations/ct-3slice/01.dcm");
  BOOST_TEST_REQUIRE(fs::exists(src));
  fs::copy_file(src, tmp);
  fs::resize_file(tmp, fs::file_size(tmp) / 2);
  BOOST_CHECK_THROW(spool.commit(tmp), StoreFailure);
  BOOST_TEST(!fs::exists(tmp));
}

BOOST_FIXTURE_TEST_CASE(a_file_shorter_than_what_was_received_is_out_of_resources, TempSpool) {
  Spool spool(dir);
  const auto tmp = spool.temp_path();
  write_instance(tmp, "1.2.3", "1.2.3.4", "1.2.3.4.5");
  BOOST_CHECK_EXCEPTION(spool.commit(tmp, fs::file_size(tmp) + 100), StoreFailure,
                        [](const StoreFailure& e) { return e.kind() == StoreFailure::Kind::out_of_resources; });
  BOOST_TEST(!fs::exists(tmp));
}

BOOST_FIXTURE_TEST_CASE(start_purges_partial_files, TempSpool) {
  { Spool spool(dir); std::ofstream(spool.temp_path()) << "partial"; }
  BOOST_TEST(testsupport::count_files(dir / "incoming" / ".tmp") == 1u);
  Spool again(dir);
  BOOST_TEST(testsupport::count_files(dir / "incoming" / ".tmp") == 0u);
}

BOOST_AUTO_TEST_CASE(path_components_cannot_escape_the_spool) {
  BOOST_TEST(scp::path_component("1.2.840.113619.2.55") == "1.2.840.113619.2.55");
  for (const std::string& bad : std::vector<std::string>{"../../etc", "", "1.2/3", ".", "..", std::string(65, '1'), "1.2.3 "}) {
    const auto c = scp::path_component(bad);
    BOOST_TEST(c.find('/') == std::string::npos);
    BOOST_TEST(c != "..");
    BOOST_TEST(c.front() == 'x');
  }
  BOOST_TEST(scp::path_component("a/b") == scp::path_component("a/b"));  // stable
}

BOOST_FIXTURE_TEST_CASE(a_file_failing_the_scan_is_bad_data_kept_in_quarantine_with_its_reason, TempSpool) {
  Spool spool(dir);
  const auto tmp = spool.temp_path();
  const auto bytes = testsupport::part10(testsupport::nested_sq(10000), testsupport::kExplicitLE);
  testsupport::write_bytes(tmp, bytes);
  BOOST_CHECK_EXCEPTION(spool.commit(tmp, 0, "calling AE 'EVIL' at 10.0.0.9"), StoreFailure, [](const StoreFailure& e) {
    return e.kind() == StoreFailure::Kind::bad_data &&
           std::string(e.what()).find("sequence nesting deeper than 64") != std::string::npos;
  });
  BOOST_TEST(!fs::exists(tmp));
  BOOST_TEST(spool.list_instances().empty());
  const auto dcm = rejected(spool, ".dcm");
  const auto txt = rejected(spool, ".txt");
  BOOST_TEST_REQUIRE(dcm.size() == 1u);
  BOOST_TEST_REQUIRE(txt.size() == 1u);
  BOOST_TEST(slurp(dcm[0]) == std::string(bytes.begin(), bytes.end()));
  BOOST_TEST(txt[0].filename().string() == dcm[0].stem().string() + ".reason.txt");
  const std::string reason = slurp(txt[0]);
  BOOST_TEST(reason.find("reason: sequence nesting deeper than 64 at byte") != std::string::npos, reason);
  BOOST_TEST(reason.find("from: calling AE 'EVIL' at 10.0.0.9") != std::string::npos, reason);
  BOOST_TEST(reason.find("bytes: " + std::to_string(bytes.size())) != std::string::npos, reason);
}

BOOST_FIXTURE_TEST_CASE(the_spool_applies_its_scan_limits, TempSpool) {
  scp::SpoolOptions opt;
  opt.scan.max_elements = 10;
  Spool spool(dir, opt);
  const auto tmp = spool.temp_path();
  write_instance(tmp, "1.2.3", "1.2.3.4", "1.2.3.4.5");
  BOOST_CHECK_EXCEPTION(spool.commit(tmp), StoreFailure, [](const StoreFailure& e) {
    return std::string(e.what()).find("more than 10 data elements") != std::string::npos;
  });
}

BOOST_FIXTURE_TEST_CASE(quarantine_rejected_stays_within_its_budget_oldest_out_first, TempSpool) {
  scp::SpoolOptions opt;
  opt.rejected_max_files = 3;
  {
    Spool spool(dir, opt);
    for (int i = 0; i < 5; ++i) {
      const auto tmp = spool.temp_path();
      std::ofstream(tmp) << "garbage number " << i;
      BOOST_CHECK_THROW(spool.commit(tmp), StoreFailure);
    }
    const auto dcm = rejected(spool, ".dcm");
    BOOST_TEST_REQUIRE(dcm.size() == 3u);
    BOOST_TEST(rejected(spool, ".txt").size() == 3u);
    for (int i = 0; i < 3; ++i) BOOST_TEST(slurp(dcm[static_cast<std::size_t>(i)]) == "garbage number " + std::to_string(i + 2));
  }
  {  // a restart knows what is there; a byte budget of 40 keeps two 16-byte files
    opt.rejected_max_files = 1000;
    opt.rejected_max_bytes = 40;
    Spool spool(dir, opt);
    const auto tmp = spool.temp_path();
    std::ofstream(tmp) << "garbage number 5";
    BOOST_CHECK_THROW(spool.commit(tmp), StoreFailure);
    const auto dcm = rejected(spool, ".dcm");
    BOOST_TEST_REQUIRE(dcm.size() == 2u);
    BOOST_TEST(slurp(dcm[1]) == "garbage number 5");
  }
  {  // a file larger than the budget is not kept
    opt.rejected_max_bytes = 10;
    Spool spool(dir, opt);
    const auto tmp = spool.temp_path();
    std::ofstream(tmp) << "garbage number 6";
    BOOST_CHECK_THROW(spool.commit(tmp), StoreFailure);
    BOOST_TEST(!fs::exists(tmp));
    BOOST_TEST(rejected(spool, ".dcm").empty());  // and the older ones no longer fit either
    BOOST_TEST(rejected(spool, ".txt").empty());
  }
}

BOOST_FIXTURE_TEST_CASE(reconcile_leaves_a_hostile_spool_file_alone_and_indexes_the_rest, TempSpool) {
  Spool spool(dir);
  const auto good = spool.temp_path();
  write_instance(good, "1.2.3", "1.2.3.4", "1.2.3.4.5");
  spool.commit(good);
  // A file placed in the spool behind the receiver's back.
  const fs::path hostile = dir / "incoming" / "1.2.3" / "1.2.3.4" / "1.2.3.4.6.dcm";
  testsupport::write_bytes(hostile, testsupport::part10(testsupport::nested_sq(10000), testsupport::kExplicitLE));
  scp::Index index(testsupport::index_settings_for(dir));
  const auto r = scp::reconcile(spool, index);
  BOOST_TEST(r.indexed == 1u);
  BOOST_TEST(r.unreadable == 1u);
  BOOST_TEST(fs::exists(hostile));  // acknowledged files are never moved or removed
  BOOST_TEST(index.instance_paths().size() == 1u);
}
