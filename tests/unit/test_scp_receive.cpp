#define BOOST_TEST_MODULE receive
// What a C-STORE data set is received into (scp/receive.h) and how the spool takes it from
// memory: our File Meta Information in front, memory up to a limit, a file beyond it, nothing
// beyond storage.max_instance_mb; the in-memory scan and parse agree with the file reader and
// send malformed bytes to quarantine.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sstream>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "dicom/instance_header.h"
#include "scp/receive.h"
#include "scp/spool.h"
#include "support/daemon_fixture.h"

namespace fs = std::filesystem;
using scp::ReceiveSink;
using scp::Spool;
using scp::StoreFailure;

namespace {

struct TempDir {
  fs::path dir = testsupport::make_temp_dir("receive");
  ~TempDir() { fs::remove_all(dir); }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A data set (no meta header) in explicit VR little endian, as it arrives on the wire, with
// `pixels` bytes of pixel data.
std::string data_set(const std::string& sop, std::size_t pixels) {
  DcmFileFormat ff;
  auto* ds = ff.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
  ds->putAndInsertString(DCM_StudyInstanceUID, "1.2.3");
  ds->putAndInsertString(DCM_SeriesInstanceUID, "1.2.3.4");
  ds->putAndInsertString(DCM_Modality, "OT");
  std::vector<Uint8> px(pixels);
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<Uint8>(i * 7);
  ds->putAndInsertUint8Array(DCM_PixelData, px.data(), static_cast<unsigned long>(px.size()));
  const fs::path tmp = testsupport::make_temp_dir("receive-ds") / "ds.dcm";
  BOOST_REQUIRE(ds->saveFile(tmp.c_str(), EXS_LittleEndianExplicit).good());
  std::string bytes = slurp(tmp);
  fs::remove_all(tmp.parent_path());
  return bytes;
}

// As DIMSE does: the data set written into the sink's stream in PDV-sized pieces.
void arrive(ReceiveSink& sink, const std::string& meta, const std::string& ds, const fs::path& spill) {
  sink.start(meta, spill);
  for (std::size_t off = 0; off < ds.size(); off += 16384) {
    const auto n = std::min<std::size_t>(16384, ds.size() - off);
    BOOST_REQUIRE(sink.stream().write(ds.data() + off, static_cast<offile_off_t>(n)) == static_cast<offile_off_t>(n));
  }
  sink.finish();
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_meta_header_is_one_dcmtk_reads_back) {
  const std::string meta = scp::part10_meta(UID_SecondaryCaptureImageStorage, "1.2.3.4.5", UID_LittleEndianExplicitTransferSyntax, "MODALITY1");
  const std::string file = meta + data_set("1.2.3.4.5", 100);
  const auto h = dicom::read_instance_header(reinterpret_cast<const std::uint8_t*>(file.data()), file.size());
  BOOST_TEST(h.sop_instance_uid == "1.2.3.4.5");
  BOOST_TEST(h.transfer_syntax_uid == UID_LittleEndianExplicitTransferSyntax);
  // Group length right (the data set starts where it says), AE padded to even length.
  BOOST_TEST(meta.size() % 2 == 0u);
  BOOST_TEST(meta.substr(128, 4) == "DICM");
  const auto group = static_cast<std::uint32_t>(static_cast<unsigned char>(meta[140])) | static_cast<std::uint32_t>(static_cast<unsigned char>(meta[141])) << 8;
  BOOST_TEST(144u + group == meta.size());
  TempDir t;
  std::ofstream(t.dir / "f.dcm", std::ios::binary) << file;
  DcmFileFormat ff;
  BOOST_REQUIRE(ff.loadFile((t.dir / "f.dcm").c_str()).good());
  OFString ae, cls;
  ff.getMetaInfo()->findAndGetOFString(DCM_SourceApplicationEntityTitle, ae);
  ff.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPClassUID, cls);
  BOOST_TEST(ae.c_str() == "MODALITY1");
  BOOST_TEST(cls.c_str() == UID_SecondaryCaptureImageStorage);
}

BOOST_FIXTURE_TEST_CASE(small_instances_stay_in_memory_and_large_ones_spill_whole, TempDir) {
  const std::string meta = scp::part10_meta(UID_SecondaryCaptureImageStorage, "1.2.3.4.5", UID_LittleEndianExplicitTransferSyntax, "M");
  ReceiveSink sink(100'000, 1'000'000);
  const std::string small = data_set("1.2.3.4.5", 50'000);
  arrive(sink, meta, small, dir / "spill1");
  BOOST_TEST(sink.in_memory());
  BOOST_TEST(sink.bytes() == meta + small);
  BOOST_TEST(sink.size() == meta.size() + small.size());
  BOOST_TEST(!fs::exists(dir / "spill1"));

  const std::string large = data_set("1.2.3.4.6", 300'000);
  arrive(sink, meta, large, dir / "spill2");
  BOOST_TEST(!sink.in_memory());
  BOOST_TEST(sink.spill_file() == dir / "spill2");
  BOOST_TEST(slurp(dir / "spill2") == meta + large);  // what was in memory went first
  BOOST_TEST(sink.error().empty());
  sink.discard();
  BOOST_TEST(!fs::exists(dir / "spill2"));

  // The next small one is in memory again.
  arrive(sink, meta, small, dir / "spill3");
  BOOST_TEST(sink.in_memory());
  BOOST_TEST(sink.bytes() == meta + small);
}

BOOST_FIXTURE_TEST_CASE(beyond_the_instance_limit_nothing_is_kept, TempDir) {
  const std::string meta = scp::part10_meta(UID_SecondaryCaptureImageStorage, "1.2.3.4.5", UID_LittleEndianExplicitTransferSyntax, "M");
  ReceiveSink sink(100'000, 200'000);
  arrive(sink, meta, data_set("1.2.3.4.5", 500'000), dir / "spill");
  BOOST_TEST(sink.too_large());
  BOOST_TEST(fs::file_size(dir / "spill") == 0u);  // the disk was given back at once
  sink.discard();
  BOOST_TEST(!fs::exists(dir / "spill"));
}

BOOST_FIXTURE_TEST_CASE(a_spill_that_cannot_be_written_is_an_error_not_a_crash, TempDir) {
  const std::string meta = scp::part10_meta(UID_SecondaryCaptureImageStorage, "1.2.3.4.5", UID_LittleEndianExplicitTransferSyntax, "M");
  ReceiveSink sink(1000, 1'000'000);
  arrive(sink, meta, data_set("1.2.3.4.5", 5'000), dir / "no-such-dir" / "spill");
  BOOST_TEST(!sink.in_memory());
  BOOST_TEST(sink.error().find("create") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(a_taken_buffer_comes_back_for_reuse, TempDir) {
  const std::string meta = scp::part10_meta(UID_SecondaryCaptureImageStorage, "1.2.3.4.5", UID_LittleEndianExplicitTransferSyntax, "M");
  ReceiveSink sink(1'000'000, 2'000'000);
  const std::string a = data_set("1.2.3.4.5", 10'000), b = data_set("1.2.3.4.6", 20'000);
  arrive(sink, meta, a, dir / "s1");
  scp::ReceiveBuffer first = sink.take();
  BOOST_TEST(first.view() == meta + a);
  arrive(sink, meta, b, dir / "s2");  // into another buffer: the taken one is untouched
  BOOST_TEST(first.view() == meta + a);
  BOOST_TEST(sink.bytes() == meta + b);
  const char* reused = first.data.get();
  sink.give_back(std::move(first));
  scp::ReceiveBuffer second = sink.take();
  arrive(sink, meta, a, dir / "s3");
  BOOST_TEST(sink.bytes().data() == reused);  // the given-back buffer, not a new one
  BOOST_TEST(second.view() == meta + b);
}

BOOST_FIXTURE_TEST_CASE(the_spool_reads_memory_as_it_reads_files, TempDir) {
  Spool spool(dir);
  const std::string file =
      scp::part10_meta(UID_SecondaryCaptureImageStorage, "1.2.3.4.5", UID_LittleEndianExplicitTransferSyntax, "M") + data_set("1.2.3.4.5", 1000);
  const auto in = spool.inspect(std::string_view(file), "test");
  std::ofstream(dir / "f.dcm", std::ios::binary) << file;
  const auto h = dicom::read_instance_header(dir / "f.dcm");
  BOOST_TEST(in.header.sop_instance_uid == h.sop_instance_uid);
  BOOST_TEST(in.header.study_uid == h.study_uid);
  BOOST_TEST(in.header.series_uid == h.series_uid);
  BOOST_TEST(in.header.modality == h.modality);
  BOOST_TEST(in.header.transfer_syntax_uid == h.transfer_syntax_uid);
  BOOST_TEST(in.path == spool.instance_path(h));
  BOOST_TEST(in.size == file.size());
  BOOST_TEST(!fs::exists(in.path));  // inspecting writes nothing
}

BOOST_FIXTURE_TEST_CASE(malformed_bytes_in_memory_go_to_quarantine, TempDir) {
  Spool spool(dir);
  std::string file =
      scp::part10_meta(UID_SecondaryCaptureImageStorage, "1.2.3.4.5", UID_LittleEndianExplicitTransferSyntax, "M") + data_set("1.2.3.4.5", 1000);
  file.resize(file.size() - 300);  // cut inside the pixel data
  BOOST_CHECK_EXCEPTION(spool.inspect(std::string_view(file), "calling AE 'X'"), StoreFailure,
                        [](const StoreFailure& e) { return e.kind() == StoreFailure::Kind::bad_data; });
  std::vector<fs::path> kept;
  for (const auto& e : fs::directory_iterator(spool.rejected_dir()))
    if (e.path().extension() == ".dcm") kept.push_back(e.path());
  BOOST_REQUIRE_EQUAL(kept.size(), 1u);
  BOOST_TEST(slurp(kept[0]) == file);
  BOOST_TEST(slurp(fs::path(kept[0]).replace_extension(".reason.txt")).find("calling AE 'X'") != std::string::npos);
}
