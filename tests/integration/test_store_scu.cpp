#define BOOST_TEST_MODULE store_scu
// dicom::store_files against a real Orthanc 1.10 (tests/support/orthanc.h) and, for the answers
// Orthanc cannot give (A-ASSOCIATE-RJ transient, failure statuses, abort, silence), against a
// small DCMTK acceptor in this process. 127.0.0.1 only, free ports, readiness polling.
//
// What Orthanc 1.10.1 answers (observed here, asserted below):
//   * Orthanc stopped: connection refused -> transient.
//   * wrong called AE with DicomCheckCalledAet: A-ASSOCIATE-RJ rejected-permanent, source service
//     user, "Called AE Title Not Recognized" -> permanent.
//   * Lua ReceivedInstanceFilter returning false: C-STORE-RSP 0x0000 and the instance is dropped:
//     indistinguishable from success, so "sent" (Orthanc then holds nothing).
//   * Lua ReceivedInstanceFilter raising an error: C-STORE-RSP 0xA700 (out of resources) ->
//     transient (retried, which is what a PACS-side failure of that kind calls for).
//   * AcceptedTransferSyntaxes without JPEG 2000: the J2K context is refused; the file is
//     permanent ("transfer syntax not accepted"), native files are converted and sent.
#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>

#include "dicom/store_scu.h"
#include "support/daemon_fixture.h"
#include "support/orthanc.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;
using dicom::SendOutcome;

namespace {

fs::path data(const std::string& rel) { return test_data(rel); }

std::vector<fs::path> ct3() {
  return {data("dcmqi/data/segmentations/ct-3slice/01.dcm"), data("dcmqi/data/segmentations/ct-3slice/02.dcm"),
          data("dcmqi/data/segmentations/ct-3slice/03.dcm")};
}
fs::path seg_file() { return data("dcmqi/data/segmentations/liver.dcm"); }
fs::path sr_file() { return data("dcmqi/data/sr-example/sr.dcm"); }
fs::path j2k_file() { return data("dcm_qa_ts/In/9.dcm"); }          // JPEG 2000 lossless
fs::path big_endian_file() { return data("dcm_qa_ts/In/3.dcm"); }   // explicit VR big endian
fs::path implicit_file() { return data("dcm_qa_ts/In/2.dcm"); }     // implicit VR little endian

std::string tag_of(const fs::path& f, const DcmTagKey& key, bool meta = false) {
  DcmFileFormat ff;
  BOOST_TEST_REQUIRE(ff.loadFile(f.c_str()).good(), "cannot read " << f);
  OFString v;
  if (meta)
    ff.getMetaInfo()->findAndGetOFString(key, v);
  else
    ff.getDataset()->findAndGetOFString(key, v);
  return v.c_str();
}
std::string sop_uid(const fs::path& f) { return tag_of(f, DCM_SOPInstanceUID); }
std::string transfer_syntax(const fs::path& f) { return tag_of(f, DCM_TransferSyntaxUID, true); }

dicom::StoreTarget target_for(const Orthanc& pacs) {
  dicom::StoreTarget t;
  t.called_ae = pacs.aet();
  t.host = "127.0.0.1";
  t.port = pacs.dicom_port();
  return t;
}

std::string describe(const std::vector<dicom::SendResult>& rs) {
  std::string s;
  for (const auto& r : rs)
    s += r.file.filename().string() + ": " + dicom::to_string(r.outcome) + " [" + r.detail + "]\n";
  return s;
}

std::size_t count(const std::vector<dicom::SendResult>& rs, SendOutcome o) {
  std::size_t n = 0;
  for (const auto& r : rs) n += r.outcome == o;
  return n;
}

struct TempDir {
  fs::path dir = make_temp_dir("store-scu");
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// A one-association DCMTK acceptor on a free loopback port, in a thread: rejects the association,
// or accepts the given SOP classes (native syntaxes only) and answers each C-STORE with the next
// status of `statuses` (the last one repeats), or aborts after receiving the first data set, or
// never answers.
class FakePeer {
 public:
  enum class Mode { answer, reject_transient, reject_permanent, abort_after_first, never_answer };

  explicit FakePeer(Mode mode, std::vector<std::uint16_t> statuses = {0x0000}, std::vector<std::string> classes = {})
      : mode_(mode), statuses_(std::move(statuses)), classes_(std::move(classes)) {
    port_ = free_port();
    // Listening once this returns: no readiness wait needed.
    BOOST_TEST_REQUIRE(ASC_initializeNetwork(NET_ACCEPTOR, port_, 30, &net_).good());
    thread_ = std::thread([this] { serve(); });
  }
  ~FakePeer() {
    if (thread_.joinable()) thread_.join();
    ASC_dropNetwork(&net_);
  }
  std::uint16_t port() const { return port_; }
  int received() const { return received_; }

  dicom::StoreTarget target() const {
    dicom::StoreTarget t;
    t.called_ae = "FAKEPEER";
    t.host = "127.0.0.1";
    t.port = port_;
    return t;
  }

 private:
  void serve() {
    T_ASC_Association* assoc = nullptr;
    if (ASC_receiveAssociation(net_, &assoc, ASC_DEFAULTMAXPDU, nullptr, nullptr, OFFalse, DUL_NOBLOCK, 30).bad()) {
      if (assoc) ASC_destroyAssociation(&assoc);
      return;
    }
    if (mode_ == Mode::reject_transient || mode_ == Mode::reject_permanent) {
      T_ASC_RejectParameters rej;
      if (mode_ == Mode::reject_transient) {
        rej = {ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
               ASC_REASON_SP_PRES_TEMPORARYCONGESTION};
      } else {
        rej = {ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED};
      }
      ASC_rejectAssociation(assoc, &rej);
      ASC_dropSCPAssociation(assoc);
      ASC_destroyAssociation(&assoc);
      return;
    }
    std::vector<const char*> classes;
    if (classes_.empty()) {
      for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; ++i) classes.push_back(dcmAllStorageSOPClassUIDs[i]);
    } else {
      for (const auto& c : classes_) classes.push_back(c.c_str());
    }
    const char* ts[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
    ASC_acceptContextsWithPreferredTransferSyntaxes(assoc->params, classes.data(), static_cast<int>(classes.size()), ts, 2);
    if (ASC_acknowledgeAssociation(assoc).bad()) {
      ASC_dropSCPAssociation(assoc);
      ASC_destroyAssociation(&assoc);
      return;
    }
    for (;;) {
      T_DIMSE_Message msg;
      T_ASC_PresentationContextID pid = 0;
      OFCondition c = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, 30, &pid, &msg, nullptr);
      if (c == DUL_PEERREQUESTEDRELEASE) {
        ASC_acknowledgeRelease(assoc);
        break;
      }
      if (c.bad() || msg.CommandField != DIMSE_C_STORE_RQ) break;
      const T_DIMSE_C_StoreRQ req = msg.msg.CStoreRQ;
      DcmDataset* ds = nullptr;
      c = DIMSE_receiveDataSetInMemory(assoc, DIMSE_NONBLOCKING, 30, &pid, &ds, nullptr, nullptr);
      delete ds;
      if (c.bad()) break;
      const int k = received_++;
      if (mode_ == Mode::abort_after_first) {
        ASC_abortAssociation(assoc);
        break;
      }
      if (mode_ == Mode::never_answer) continue;  // the SCU times out and aborts
      T_DIMSE_C_StoreRSP rsp{};
      rsp.MessageIDBeingRespondedTo = req.MessageID;
      rsp.DimseStatus = statuses_[std::min<std::size_t>(k, statuses_.size() - 1)];
      rsp.DataSetType = DIMSE_DATASET_NULL;
      OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID, sizeof rsp.AffectedSOPClassUID);
      OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID, sizeof rsp.AffectedSOPInstanceUID);
      rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
      if (DIMSE_sendStoreResponse(assoc, pid, &req, &rsp, nullptr).bad()) break;
    }
    ASC_dropSCPAssociation(assoc);
    ASC_destroyAssociation(&assoc);
  }

  Mode mode_;
  std::vector<std::uint16_t> statuses_;
  std::vector<std::string> classes_;
  std::uint16_t port_ = 0;
  T_ASC_Network* net_ = nullptr;
  std::thread thread_;
  std::atomic<int> received_{0};
};

// A loopback socket that listens but never accepts: TCP connects, no A-ASSOCIATE-AC ever comes.
struct BlackHole {
  int fd = -1;
  std::uint16_t port = 0;
  BlackHole() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_TEST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    BOOST_TEST_REQUIRE(::listen(fd, 4) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~BlackHole() { ::close(fd); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(status_table) {
  using dicom::classify_store_status;
  for (std::uint16_t s : {0x0000, 0xB000, 0xB006, 0xB007}) BOOST_TEST((classify_store_status(s) == SendOutcome::sent), s);
  for (std::uint16_t s : {0xA700, 0xA701, 0xA7FF}) BOOST_TEST((classify_store_status(s) == SendOutcome::transient_failure), s);
  for (std::uint16_t s : {0xA900, 0xA9FF, 0xC000, 0xC123, 0x0122, 0x0124, 0x0210, 0x0211, 0x0110, 0xFE00, 0xA800})
    BOOST_TEST((classify_store_status(s) == SendOutcome::permanent_failure), s);
}

BOOST_FIXTURE_TEST_CASE(real_files_reach_orthanc, TempDir) {
  Orthanc pacs;
  std::vector<fs::path> files = ct3();
  files.push_back(seg_file());
  files.push_back(sr_file());
  files.push_back(j2k_file());

  const auto rs = dicom::store_files(target_for(pacs), files);
  BOOST_TEST_REQUIRE(rs.size() == files.size());
  for (std::size_t i = 0; i < rs.size(); ++i) {
    BOOST_TEST((rs[i].outcome == SendOutcome::sent), describe(rs));
    BOOST_TEST(rs[i].file == files[i]);
    BOOST_TEST((rs[i].status && *rs[i].status == 0x0000));
  }
  BOOST_TEST(pacs.count_instances() == files.size());
  // Nagle is off for DCMTK sockets (the env var DCMTK reads), set by store_files itself.
  BOOST_TEST(std::getenv("TCP_NODELAY") != nullptr);
  BOOST_TEST(std::string(std::getenv("TCP_NODELAY") ? std::getenv("TCP_NODELAY") : "") == "1");

  // Every file is in Orthanc by SOP Instance UID, and the studies list them all.
  std::set<std::string> sent_uids, held_uids;
  for (const auto& f : files) sent_uids.insert(sop_uid(f));
  std::size_t in_studies = 0;
  for (const auto& study : pacs.studies()) {
    for (const auto& id : pacs.instances_of_study(study)) {
      ++in_studies;
      held_uids.insert(pacs.instance_tag(id, "SOPInstanceUID").value_or(""));
    }
  }
  BOOST_TEST(in_studies == files.size());
  BOOST_TEST((held_uids == sent_uids));

  // Downloaded copies: the SEG and the JPEG 2000 file (kept in its own transfer syntax).
  for (const auto& f : {seg_file(), j2k_file()}) {
    std::string id;
    for (const auto& i : pacs.instances())
      if (pacs.instance_tag(i, "SOPInstanceUID") == sop_uid(f)) id = i;
    BOOST_TEST_REQUIRE(!id.empty());
    const auto copy = dir / (f.stem().string() + "-copy.dcm");
    BOOST_TEST_REQUIRE(pacs.download_instance(id, copy));
    BOOST_TEST(sop_uid(copy) == sop_uid(f));
    BOOST_TEST(tag_of(copy, DCM_SOPClassUID) == tag_of(f, DCM_SOPClassUID));
    BOOST_TEST(transfer_syntax(copy) == transfer_syntax(f));
  }
}

BOOST_FIXTURE_TEST_CASE(native_syntaxes_are_converted_compressed_ones_are_not, TempDir) {
  // Orthanc accepting only implicit and explicit VR little endian.
  OrthancOptions opt;
  opt.extra_json = R"("AcceptedTransferSyntaxes": ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])";
  Orthanc pacs(opt);
  const std::vector<fs::path> files{big_endian_file(), implicit_file(), j2k_file()};
  const auto rs = dicom::store_files(target_for(pacs), files);
  BOOST_TEST_REQUIRE(rs.size() == 3u);
  BOOST_TEST((rs[0].outcome == SendOutcome::sent), describe(rs));
  BOOST_TEST((rs[1].outcome == SendOutcome::sent), describe(rs));
  BOOST_TEST((rs[2].outcome == SendOutcome::permanent_failure), describe(rs));
  BOOST_TEST(!rs[2].status.has_value());
  BOOST_TEST(rs[2].detail.find("transfer syntax not accepted") != std::string::npos, rs[2].detail);
  BOOST_TEST(pacs.count_instances() == 2u);

  // The big endian file arrived as little endian, same instance.
  const auto ids = pacs.instances();
  std::string id;
  for (const auto& i : ids)
    if (pacs.instance_tag(i, "SOPInstanceUID") == sop_uid(big_endian_file())) id = i;
  BOOST_TEST_REQUIRE(!id.empty());
  const auto copy = dir / "be-copy.dcm";
  BOOST_TEST_REQUIRE(pacs.download_instance(id, copy));
  const auto ts = transfer_syntax(copy);
  BOOST_TEST((ts == UID_LittleEndianExplicitTransferSyntax || ts == UID_LittleEndianImplicitTransferSyntax), ts);
}

BOOST_AUTO_TEST_CASE(orthanc_down_is_transient_and_recovers) {
  Orthanc pacs;
  pacs.stop();
  const std::vector<fs::path> files{sr_file(), seg_file()};
  auto rs = dicom::store_files(target_for(pacs), files);
  BOOST_TEST_REQUIRE(rs.size() == 2u);
  for (const auto& r : rs) {
    BOOST_TEST((r.outcome == SendOutcome::transient_failure), describe(rs));
    BOOST_TEST(!r.status.has_value());
    BOOST_TEST(r.detail.find("Connection refused") != std::string::npos, r.detail);
  }
  // The outage ends: same storage, same ports, the retry goes through.
  pacs.start();
  rs = dicom::store_files(target_for(pacs), files);
  BOOST_TEST(count(rs, SendOutcome::sent) == 2u, describe(rs));
  BOOST_TEST(pacs.count_instances() == 2u);
}

BOOST_AUTO_TEST_CASE(wrong_called_ae_is_permanent) {
  Orthanc pacs;
  auto t = target_for(pacs);
  t.called_ae = "NOT_ORTHANC";
  const auto rs = dicom::store_files(t, {sr_file(), seg_file()});
  BOOST_TEST_REQUIRE(rs.size() == 2u);
  for (const auto& r : rs) {
    BOOST_TEST((r.outcome == SendOutcome::permanent_failure), describe(rs));
    BOOST_TEST(!r.status.has_value());
    BOOST_TEST(r.detail.find("Rejected Permanent") != std::string::npos, r.detail);
    BOOST_TEST(r.detail.find("Called AE Title Not Recognized") != std::string::npos, r.detail);
  }
  BOOST_TEST(pacs.count_instances() == 0u);
}

BOOST_AUTO_TEST_CASE(orthanc_lua_filter_returning_false_answers_success_and_drops) {
  OrthancOptions opt;
  opt.lua_script = source_dir() / "tests/scripts/orthanc_drop_all.lua";
  Orthanc pacs(opt);
  const auto rs = dicom::store_files(target_for(pacs), {sr_file(), seg_file()});
  BOOST_TEST_REQUIRE(rs.size() == 2u);
  for (const auto& r : rs) {
    // Orthanc 1.10.1 answers 0x0000: the SCU cannot know the instance was filtered out.
    BOOST_TEST((r.outcome == SendOutcome::sent), describe(rs));
    BOOST_TEST((r.status && *r.status == 0x0000));
  }
  BOOST_TEST(pacs.count_instances() == 0u);
}

BOOST_AUTO_TEST_CASE(orthanc_lua_filter_error_is_out_of_resources_transient) {
  OrthancOptions opt;
  opt.lua_script = source_dir() / "tests/scripts/orthanc_error_filter.lua";
  Orthanc pacs(opt);
  const auto rs = dicom::store_files(target_for(pacs), {sr_file(), seg_file()});
  BOOST_TEST_REQUIRE(rs.size() == 2u);
  for (const auto& r : rs) {
    BOOST_TEST((r.outcome == SendOutcome::transient_failure), describe(rs));
    BOOST_TEST((r.status && *r.status == 0xA700), describe(rs));
  }
  BOOST_TEST(pacs.count_instances() == 0u);
}

BOOST_FIXTURE_TEST_CASE(unreadable_files_are_permanent_others_still_go, TempDir) {
  Orthanc pacs;
  const auto not_dicom = dir / "not-dicom.dcm";
  std::ofstream(not_dicom) << "this is not DICOM";
  const std::vector<fs::path> files{dir / "missing.dcm", sr_file(), not_dicom};
  const auto rs = dicom::store_files(target_for(pacs), files);
  BOOST_TEST_REQUIRE(rs.size() == 3u);
  BOOST_TEST((rs[0].outcome == SendOutcome::permanent_failure), describe(rs));
  BOOST_TEST((rs[1].outcome == SendOutcome::sent), describe(rs));
  BOOST_TEST((rs[2].outcome == SendOutcome::permanent_failure), describe(rs));
  BOOST_TEST(!rs[0].status.has_value());
  BOOST_TEST(pacs.count_instances() == 1u);

  // Only unreadable files: no association at all, still one result each.
  const auto only_missing = dicom::store_files(target_for(pacs), {dir / "missing.dcm"});
  BOOST_TEST_REQUIRE(only_missing.size() == 1u);
  BOOST_TEST((only_missing[0].outcome == SendOutcome::permanent_failure));
  BOOST_TEST(dicom::store_files(target_for(pacs), {}).empty());
}

BOOST_AUTO_TEST_CASE(reject_transient_and_permanent) {
  {
    FakePeer peer(FakePeer::Mode::reject_transient);
    const auto rs = dicom::store_files(peer.target(), {sr_file()});
    BOOST_TEST((rs.at(0).outcome == SendOutcome::transient_failure), describe(rs));
    BOOST_TEST(rs[0].detail.find("Rejected Transient") != std::string::npos, rs[0].detail);
  }
  {
    FakePeer peer(FakePeer::Mode::reject_permanent);
    const auto rs = dicom::store_files(peer.target(), {sr_file()});
    BOOST_TEST((rs.at(0).outcome == SendOutcome::permanent_failure), describe(rs));
  }
}

BOOST_AUTO_TEST_CASE(response_statuses_are_classified_per_file) {
  const std::vector<fs::path> files{ct3()[0], ct3()[1], ct3()[2], sr_file(), seg_file(), implicit_file()};
  FakePeer peer(FakePeer::Mode::answer, {0xB000, 0xA700, 0xA900, 0xC000, 0x0122, 0x0000});
  const auto rs = dicom::store_files(peer.target(), files);
  BOOST_TEST_REQUIRE(rs.size() == files.size());
  const SendOutcome want[] = {SendOutcome::sent, SendOutcome::transient_failure, SendOutcome::permanent_failure,
                              SendOutcome::permanent_failure, SendOutcome::permanent_failure, SendOutcome::sent};
  const std::uint16_t status[] = {0xB000, 0xA700, 0xA900, 0xC000, 0x0122, 0x0000};
  for (std::size_t i = 0; i < files.size(); ++i) {
    BOOST_TEST((rs[i].outcome == want[i]), i << ": " << describe(rs));
    BOOST_TEST((rs[i].status && *rs[i].status == status[i]), i << ": " << describe(rs));
  }
  BOOST_TEST(peer.received() == 6);
}

BOOST_AUTO_TEST_CASE(sop_class_not_accepted_is_permanent) {
  // The peer accepts CT only: the SR and the SEG have no context.
  FakePeer peer(FakePeer::Mode::answer, {0x0000}, {UID_CTImageStorage});
  const auto rs = dicom::store_files(peer.target(), {sr_file(), ct3()[0], seg_file()});
  BOOST_TEST_REQUIRE(rs.size() == 3u);
  BOOST_TEST((rs[0].outcome == SendOutcome::permanent_failure), describe(rs));
  BOOST_TEST(rs[0].detail.find("SOP class not accepted by the destination") != std::string::npos, rs[0].detail);
  BOOST_TEST((rs[1].outcome == SendOutcome::sent), describe(rs));
  BOOST_TEST((rs[2].outcome == SendOutcome::permanent_failure), describe(rs));
  BOOST_TEST(peer.received() == 1);
}

BOOST_AUTO_TEST_CASE(peer_abort_leaves_the_rest_transient) {
  FakePeer peer(FakePeer::Mode::abort_after_first);
  const auto rs = dicom::store_files(peer.target(), {ct3()[0], ct3()[1], ct3()[2]});
  BOOST_TEST_REQUIRE(rs.size() == 3u);
  for (const auto& r : rs) {
    BOOST_TEST((r.outcome == SendOutcome::transient_failure), describe(rs));
    BOOST_TEST(!r.status.has_value());
  }
  BOOST_TEST(rs[0].detail.find("Peer aborted") != std::string::npos, rs[0].detail);
  BOOST_TEST(rs[1].detail.find("not sent") != std::string::npos, rs[1].detail);
  BOOST_TEST(peer.received() == 1);
}

BOOST_AUTO_TEST_CASE(timeouts_are_transient) {
  {  // A-ASSOCIATE-AC never comes.
    BlackHole hole;
    dicom::StoreTarget t;
    t.called_ae = "HOLE";
    t.host = "127.0.0.1";
    t.port = hole.port;
    t.acse_timeout_seconds = 2;
    const auto start = std::chrono::steady_clock::now();
    const auto rs = dicom::store_files(t, {sr_file()});
    BOOST_TEST((rs.at(0).outcome == SendOutcome::transient_failure), describe(rs));
    BOOST_TEST((std::chrono::steady_clock::now() - start < 20s));
  }
  {  // C-STORE-RSP never comes.
    FakePeer peer(FakePeer::Mode::never_answer);
    auto t = peer.target();
    t.dimse_timeout_seconds = 2;
    const auto rs = dicom::store_files(t, {ct3()[0], ct3()[1]});
    BOOST_TEST_REQUIRE(rs.size() == 2u);
    for (const auto& r : rs) BOOST_TEST((r.outcome == SendOutcome::transient_failure), describe(rs));
    BOOST_TEST(rs[0].detail.find("DIMSE timeout") != std::string::npos, rs[0].detail);
    BOOST_TEST(rs[1].detail.find("not sent") != std::string::npos, rs[1].detail);
    BOOST_TEST(peer.received() == 1);
  }
}
