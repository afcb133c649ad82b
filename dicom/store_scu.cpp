#include "dicom/store_scu.h"

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include <fmt/format.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/ofstd/ofstd.h>

#include "dicom/log.h"

namespace dicom {
namespace {

constexpr int kMaxPresentationContexts = 128;  // odd IDs 1..255

// DCMTK disables Nagle only when TCP_NODELAY is set in the environment; dicom/ must not depend on
// scp/, so it does the same setenv itself, once, before its first association.
void disable_nagle_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Usually scp::disable_nagle() did it already at startup; then no setenv races a getenv.
    const char* v = std::getenv("TCP_NODELAY");
    if (!v || std::string(v) != "1") ::setenv("TCP_NODELAY", "1", 1);
  });
}

bool is_native(E_TransferSyntax xfer) {
  const DcmXfer x(xfer);
  return xfer != EXS_Unknown && !x.isEncapsulated();
}

std::string xfer_name(const std::string& uid) {
  const char* name = dcmFindNameOfUID(uid.c_str());
  return name ? name : uid;
}

std::string sop_class_name(const std::string& uid) {
  const char* name = dcmFindNameOfUID(uid.c_str());
  return name ? name : uid;
}

std::string one_line(const std::string& text) {
  std::string s;
  for (char c : text) {
    if (c == '\r') continue;
    if (c == '\n')
      s += "; ";
    else
      s += c;
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == ';')) s.pop_back();
  return s;
}

// What the pre-scan learns of a file without loading its pixel data.
struct Scanned {
  bool readable = false;
  std::string error;
  std::string sop_class, sop_instance;
  E_TransferSyntax xfer = EXS_Unknown;
  std::string xfer_uid;
};

Scanned scan(const std::filesystem::path& file) {
  Scanned s;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    s.error = "file cannot be read: not a regular file or missing";
    return s;
  }
  DcmFileFormat ff;
  // Values above 1 KiB (pixel data) stay on disk; only the header is needed here.
  const OFCondition c = ff.loadFile(OFFilename(file.c_str()), EXS_Unknown, EGL_noChange, 1024, ERM_autoDetect);
  if (c.bad()) {
    s.error = std::string("file cannot be read as DICOM: ") + c.text();
    return s;
  }
  OFString cls, inst;
  DcmDataset* ds = ff.getDataset();
  if (ds->findAndGetOFString(DCM_SOPClassUID, cls).bad() || cls.empty())
    ff.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPClassUID, cls);
  if (ds->findAndGetOFString(DCM_SOPInstanceUID, inst).bad() || inst.empty())
    ff.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, inst);
  if (cls.empty() || inst.empty()) {
    s.error = "file has no SOP Class UID or SOP Instance UID";
    return s;
  }
  s.xfer = ds->getOriginalXfer();
  if (s.xfer == EXS_Unknown) {
    s.error = "file has an unknown transfer syntax";
    return s;
  }
  s.sop_class = cls.c_str();
  s.sop_instance = inst.c_str();
  s.xfer_uid = DcmXfer(s.xfer).getXferID();
  s.readable = true;
  return s;
}

// Owns the DCMTK network and association and releases (or aborts) them on every path.
class Association {
 public:
  Association() = default;
  Association(const Association&) = delete;
  Association& operator=(const Association&) = delete;
  ~Association() {
    if (assoc_) {
      if (established_) ASC_abortAssociation(assoc_);
      ASC_destroyAssociation(&assoc_);
    } else if (params_) {
      ASC_destroyAssociationParameters(&params_);
    }
    if (net_) ASC_dropNetwork(&net_);
  }

  std::unique_ptr<DcmTLSTransportLayer> tls_;  // DICOM over TLS; outlives net_ (dropped in the destructor's body)
  T_ASC_Network* net_ = nullptr;
  T_ASC_Parameters* params_ = nullptr;  // owned by assoc_ once ASC_requestAssociation created it
  T_ASC_Association* assoc_ = nullptr;
  bool established_ = false;

  void release() {
    if (!assoc_ || !established_) return;
    if (ASC_releaseAssociation(assoc_).bad()) ASC_abortAssociation(assoc_);
    established_ = false;
  }
  void abort() {
    if (!assoc_ || !established_) return;
    ASC_abortAssociation(assoc_);
    established_ = false;
  }
  // The peer is gone (aborted/closed): nothing to send, just forget the association.
  void dropped() { established_ = false; }
};

struct ProposedContext {
  std::string sop_class;
  std::vector<std::string> syntaxes;
};

std::vector<ProposedContext> plan_contexts(const std::vector<Scanned>& scanned) {
  std::map<std::string, std::set<std::string>> own;  // SOP class -> own syntaxes needing a context
  for (const auto& s : scanned) {
    if (!s.readable) continue;
    auto& set = own[s.sop_class];
    if (s.xfer != EXS_LittleEndianExplicit && s.xfer != EXS_LittleEndianImplicit) set.insert(s.xfer_uid);
  }
  std::vector<ProposedContext> out;
  for (const auto& [cls, syntaxes] : own) {
    for (const auto& ts : syntaxes) out.push_back({cls, {ts}});
    out.push_back({cls, native_transfer_syntaxes()});
  }
  return out;
}

struct AcceptedContext {
  T_ASC_PresentationContextID id = 0;
  std::string sop_class, xfer_uid;
};

std::vector<AcceptedContext> accepted_contexts(T_ASC_Parameters* params) {
  std::vector<AcceptedContext> out;
  const int n = ASC_countPresentationContexts(params);
  for (int i = 0; i < n; ++i) {
    T_ASC_PresentationContext pc;
    if (ASC_getPresentationContext(params, i, &pc).bad()) continue;
    if (pc.resultReason != ASC_P_ACCEPTANCE) continue;
    out.push_back({pc.presentationContextID, pc.abstractSyntax, pc.acceptedTransferSyntax});
  }
  return out;
}

// The context for a file, or an explanation (permanent) of why there is none.
std::pair<const AcceptedContext*, std::string> pick_context(const std::vector<AcceptedContext>& accepted,
                                                              const Scanned& s) {
  const AcceptedContext* convertible = nullptr;
  bool class_accepted = false;
  for (const auto& pc : accepted) {
    if (pc.sop_class != s.sop_class) continue;
    class_accepted = true;
    if (pc.xfer_uid == s.xfer_uid) return {&pc, {}};
    if (!convertible && is_native(s.xfer) && is_native(DcmXfer(pc.xfer_uid.c_str()).getXfer())) convertible = &pc;
  }
  if (convertible) return {convertible, {}};
  if (!class_accepted) return {nullptr, "SOP class not accepted by the destination (" + sop_class_name(s.sop_class) + ")"};
  return {nullptr, "transfer syntax not accepted by the destination (" + xfer_name(s.xfer_uid) +
                       "; compressed data is not converted)"};
}

// Why an association could not be opened: the outcome for the files it was for, and the reason
// (an A-ASSOCIATE-RJ's result, source and reason when the peer rejected it).
struct AssociationFailure {
  SendOutcome outcome = SendOutcome::transient_failure;
  bool rejected = false;
  std::string detail;
};

// Network, parameters, the proposed contexts, A-ASSOCIATE-RQ. Nagle off, connect/ACSE timeouts
// from the target. On success `a` holds the established association.
std::optional<AssociationFailure> open_association(const StoreTarget& t, const std::vector<ProposedContext>& contexts,
                                                   Association& a) {
  const std::string peer = fmt::format("{}@{}:{}", t.called_ae, t.host, t.port);
  disable_nagle_once();
  OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, t.acse_timeout_seconds, &a.net_);
  if (c.bad())
    return AssociationFailure{SendOutcome::transient_failure, false,
                              std::string("cannot initialise the network: ") + c.text()};
  c = ASC_createAssociationParameters(&a.params_, ASC_DEFAULTMAXPDU);
  if (c.bad())
    return AssociationFailure{SendOutcome::transient_failure, false,
                              std::string("cannot create association parameters: ") + c.text()};
  if (t.tls) {
    try {
      a.tls_ = make_tls_layer(false, *t.tls, t.tls_key_prefix);
    } catch (const TlsError& e) {  // the config names a file that is missing or wrong: fixable, so retried
      return AssociationFailure{SendOutcome::transient_failure, false, fmt::format("cannot set up TLS for {}: {}", peer, e.what())};
    }
    c = ASC_setTransportLayer(a.net_, a.tls_.get(), 0);
    if (c.good()) c = ASC_setTransportLayerType(a.params_, OFTrue);
    if (c.bad())
      return AssociationFailure{SendOutcome::transient_failure, false, std::string("cannot set up TLS: ") + c.text()};
  }
  ASC_setAPTitles(a.params_, t.calling_ae.c_str(), t.called_ae.c_str(), nullptr);
  const std::string address = fmt::format("{}:{}", t.host, t.port);
  ASC_setPresentationAddresses(a.params_, "localhost", address.c_str());
  for (std::size_t k = 0; k < contexts.size(); ++k) {
    std::vector<const char*> ts;
    for (const auto& s : contexts[k].syntaxes) ts.push_back(s.c_str());
    c = ASC_addPresentationContext(a.params_, static_cast<T_ASC_PresentationContextID>(2 * k + 1),
                                   contexts[k].sop_class.c_str(), ts.data(), static_cast<int>(ts.size()));
    if (c.bad())
      return AssociationFailure{SendOutcome::permanent_failure, false,
                                std::string("cannot propose a presentation context: ") + c.text()};
  }

  dcmConnectionTimeout.set(t.connect_timeout_seconds);
  c = ASC_requestAssociation(a.net_, a.params_, &a.assoc_, nullptr, nullptr, DUL_NOBLOCK, t.acse_timeout_seconds);
  if (c.bad()) {
    if (c == DUL_ASSOCIATIONREJECTED) {
      T_ASC_RejectParameters rej;
      ASC_getRejectParameters(a.params_, &rej);
      OFString text;
      ASC_printRejectParameters(text, &rej);
      const bool permanent = rej.result == ASC_RESULT_REJECTEDPERMANENT;
      return AssociationFailure{permanent ? SendOutcome::permanent_failure : SendOutcome::transient_failure, true,
                                fmt::format("association rejected by {}: {}", peer, one_line(text.c_str()))};
    }
    std::string why = one_line(c.text());
    if (t.tls) {  // say why the handshake failed, when OpenSSL knows (an unknown CA, an expired certificate)
      if (const std::string detail = tls_error_text(nullptr); !detail.empty() && why.find(detail) == std::string::npos) why += ": " + detail;
      why += " (DICOM over TLS)";
    }
    return AssociationFailure{SendOutcome::transient_failure, false, fmt::format("cannot associate with {}: {}", peer, why)};
  }
  a.established_ = true;
  return std::nullopt;
}

}  // namespace

const std::vector<std::string>& native_transfer_syntaxes() {
  static const std::vector<std::string> syntaxes{UID_LittleEndianExplicitTransferSyntax,
                                                 UID_LittleEndianImplicitTransferSyntax};
  return syntaxes;
}

SendOutcome classify_store_status(std::uint16_t st) {
  if (st == 0x0000) return SendOutcome::sent;
  // Warnings: the instance was stored (B000 coercion, B006 elements discarded, B007 data set
  // does not match SOP class; 0001, 0107, 0116 and other Bxxx are warnings as well).
  if ((st & 0xF000) == 0xB000 || st == 0x0001 || st == 0x0107 || st == 0x0116) return SendOutcome::sent;
  if ((st & 0xFF00) == 0xA700) return SendOutcome::transient_failure;  // refused: out of resources
  return SendOutcome::permanent_failure;  // A9xx, Cxxx, 0122, 0124, 0210, 0211, 0110, anything else
}

const char* to_string(SendOutcome o) {
  switch (o) {
    case SendOutcome::sent:
      return "sent";
    case SendOutcome::transient_failure:
      return "transient_failure";
    case SendOutcome::permanent_failure:
      return "permanent_failure";
  }
  return "?";
}

std::vector<SendResult> store_files(const StoreTarget& t, const std::vector<std::filesystem::path>& files) {
  auto log = pacsnode::component_logger("store_scu");
  const auto started = std::chrono::steady_clock::now();
  const std::string peer = fmt::format("{}@{}:{}", t.called_ae, t.host, t.port);

  std::vector<SendResult> results(files.size());
  std::vector<Scanned> scanned(files.size());
  std::vector<bool> done(files.size(), false);
  for (std::size_t i = 0; i < files.size(); ++i) {
    results[i].file = files[i];
    scanned[i] = scan(files[i]);
    if (!scanned[i].readable) {
      results[i].outcome = SendOutcome::permanent_failure;
      results[i].detail = scanned[i].error;
      done[i] = true;
    }
  }
  // Every file without a result yet gets the same outcome (association-level failures).
  auto fail_rest = [&](SendOutcome o, const std::string& detail) {
    for (std::size_t i = 0; i < files.size(); ++i) {
      if (done[i]) continue;
      results[i].outcome = o;
      results[i].detail = detail;
      done[i] = true;
    }
  };
  auto summary = [&] {
    std::size_t n[3] = {0, 0, 0};
    for (const auto& r : results) ++n[static_cast<int>(r.outcome)];
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
    log->info("C-STORE {} -> {}: {} sent, {} transient, {} permanent, {} ms", t.calling_ae, peer, n[0], n[1], n[2], ms);
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (results[i].outcome == SendOutcome::sent) continue;
      log->warn("C-STORE file {}/{} {}{}: {}", i + 1, results.size(), to_string(results[i].outcome),
                results[i].status ? fmt::format(" (status 0x{:04X})", *results[i].status) : std::string(),
                results[i].detail);
      log->debug("C-STORE file {}/{} is {}", i + 1, results.size(), results[i].file.string());
    }
    return results;
  };

  const auto contexts = plan_contexts(scanned);
  if (contexts.empty()) return summary();  // nothing readable: no association

  Association a;
  const std::size_t proposed = std::min<std::size_t>(contexts.size(), kMaxPresentationContexts);
  if (auto failed = open_association(t, {contexts.begin(), contexts.begin() + proposed}, a)) {
    fail_rest(failed->outcome, failed->detail);
    return summary();
  }
  const auto accepted = accepted_contexts(a.params_);
  log->debug("association with {}: {} of {} presentation contexts accepted", peer, accepted.size(), proposed);
  OFCondition c;

  for (std::size_t i = 0; i < files.size(); ++i) {
    if (done[i]) continue;
    const Scanned& s = scanned[i];
    auto [pc, why] = pick_context(accepted, s);
    if (!pc) {
      // A context that did not fit in the 128 proposed is reported as such.
      bool was_proposed = false;
      for (std::size_t k = 0; k < proposed; ++k) was_proposed |= contexts[k].sop_class == s.sop_class;
      results[i].outcome = SendOutcome::permanent_failure;
      results[i].detail = was_proposed ? why : "too many distinct SOP classes/transfer syntaxes for one association";
      done[i] = true;
      continue;
    }

    DcmFileFormat ff;
    c = ff.loadFile(OFFilename(files[i].c_str()), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
    if (c.bad()) {
      results[i].outcome = SendOutcome::permanent_failure;
      results[i].detail = std::string("file cannot be read as DICOM: ") + c.text();
      done[i] = true;
      continue;
    }
    DcmDataset* ds = ff.getDataset();
    const E_TransferSyntax target = DcmXfer(pc->xfer_uid.c_str()).getXfer();
    if (target != s.xfer) {
      // Only native <-> native (see pick_context): no codec involved, but check anyway.
      if (ds->chooseRepresentation(target, nullptr).bad() || !ds->canWriteXfer(target, s.xfer)) {
        results[i].outcome = SendOutcome::permanent_failure;
        results[i].detail = "cannot convert from " + xfer_name(s.xfer_uid) + " to " + xfer_name(pc->xfer_uid);
        done[i] = true;
        continue;
      }
    }

    T_DIMSE_C_StoreRQ req{};
    req.MessageID = a.assoc_->nextMsgID++;
    OFStandard::strlcpy(req.AffectedSOPClassUID, s.sop_class.c_str(), sizeof req.AffectedSOPClassUID);
    OFStandard::strlcpy(req.AffectedSOPInstanceUID, s.sop_instance.c_str(), sizeof req.AffectedSOPInstanceUID);
    req.DataSetType = DIMSE_DATASET_PRESENT;
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    T_DIMSE_C_StoreRSP rsp{};
    DcmDataset* status_detail = nullptr;
    c = DIMSE_storeUser(a.assoc_, pc->id, &req, nullptr, ds, nullptr, nullptr, DIMSE_NONBLOCKING,
                        t.dimse_timeout_seconds, &rsp, &status_detail);
    std::unique_ptr<DcmDataset> detail_owner(status_detail);
    if (c.bad()) {
      // No usable response: the association's state is unknown, so it ends here; this file and
      // the rest are retried later.
      if (c == DUL_PEERABORTEDASSOCIATION || c == DUL_PEERREQUESTEDRELEASE || c == DUL_NETWORKCLOSED)
        a.dropped();
      else
        a.abort();
      const std::string why_failed = c == DIMSE_NODATAAVAILABLE
                                         ? fmt::format("no C-STORE-RSP within {} s (DIMSE timeout)", t.dimse_timeout_seconds)
                                         : "C-STORE failed: " + one_line(c.text());
      results[i].outcome = SendOutcome::transient_failure;
      results[i].detail = fmt::format("{} ({})", why_failed, peer);
      done[i] = true;
      fail_rest(SendOutcome::transient_failure, fmt::format("not sent: the association ended after an earlier failure ({})", why_failed));
      return summary();
    }
    results[i].status = rsp.DimseStatus;
    results[i].outcome = classify_store_status(rsp.DimseStatus);
    OFString error_comment;
    if (status_detail) status_detail->findAndGetOFString(DCM_ErrorComment, error_comment);
    results[i].detail = fmt::format("C-STORE-RSP 0x{:04X} {}{}", rsp.DimseStatus, DU_cstoreStatusString(rsp.DimseStatus),
                                    error_comment.empty() ? "" : fmt::format(" ({})", error_comment.c_str()));
    done[i] = true;
  }
  a.release();
  return summary();
}

EchoResult echo(const StoreTarget& t) {
  using Clock = std::chrono::steady_clock;
  const auto ms_since = [](Clock::time_point from) {
    return std::chrono::duration<double, std::milli>(Clock::now() - from).count();
  };
  EchoResult r;
  const auto started = Clock::now();
  Association a;
  const std::vector<ProposedContext> contexts{
      {UID_VerificationSOPClass, native_transfer_syntaxes()}};
  const auto failed = open_association(t, contexts, a);
  r.associate_ms = ms_since(started);
  if (failed) {
    r.rejected = failed->rejected;
    r.rejected_permanent = failed->rejected && failed->outcome == SendOutcome::permanent_failure;
    r.detail = failed->detail;
    r.total_ms = ms_since(started);
    return r;
  }
  r.associated = true;
  const auto accepted = accepted_contexts(a.params_);
  if (accepted.empty()) {
    r.detail = "the peer accepted the association but not the Verification SOP class";
    a.release();
    r.total_ms = ms_since(started);
    return r;
  }
  const auto echo_started = Clock::now();
  DIC_US status = 0;
  DcmDataset* status_detail = nullptr;
  const OFCondition c =
      DIMSE_echoUser(a.assoc_, a.assoc_->nextMsgID++, DIMSE_NONBLOCKING, t.dimse_timeout_seconds, &status, &status_detail);
  std::unique_ptr<DcmDataset> detail_owner(status_detail);
  r.echo_ms = ms_since(echo_started);
  if (c.bad()) {
    if (c == DUL_PEERABORTEDASSOCIATION || c == DUL_PEERREQUESTEDRELEASE || c == DUL_NETWORKCLOSED)
      a.dropped();
    else
      a.abort();
    r.detail = c == DIMSE_NODATAAVAILABLE ? fmt::format("no C-ECHO-RSP within {} s (DIMSE timeout)", t.dimse_timeout_seconds)
                                          : "C-ECHO failed: " + one_line(c.text());
  } else {
    r.status = status;
    r.detail = status == STATUS_Success ? "Success" : fmt::format("failure status 0x{:04X}", status);
    a.release();
  }
  r.total_ms = ms_since(started);
  return r;
}

}  // namespace dicom
