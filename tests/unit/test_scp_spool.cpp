#define BOOST_TEST_MODULE spool
#include <boost/test/unit_test.hpp>

#include <fstream>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "scp/spool.h"
#include "support/daemon_fixture.h"

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
  const auto src = testsupport::shared_data("dcmqi/data/segmentations/ct-3slice/01.dcm");
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
