#include "scp/store_provider.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <system_error>

#include <fmt/format.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmlayer.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/scpcfg.h>
#include <dcmtk/dcmnet/scpthrd.h>
#include <dcmtk/dcmtls/tlstrans.h>

#include "dicom/log.h"
#include "dicom/tls.h"
#include "scp/negotiation.h"
#include "scp/receive.h"

namespace scp {
namespace {

using Clock = std::chrono::steady_clock;

// The largest instance received into memory (and appended to the journal from there): a CT or MR
// slice, most radiographs. Per association, so at most node.max_associations times this.
constexpr std::size_t kMemoryLimit = 16u << 20;

std::string trim(const OFString& s) {
  std::string t(s.c_str());
  const auto b = t.find_first_not_of(' ');
  if (b == std::string::npos) return {};
  return t.substr(b, t.find_last_not_of(' ') - b + 1);
}

// DCMTK's nested conditions ("outer\nmodule:code inner\n...") on one log line.
std::string one_line(const std::string& text) {
  std::string out;
  for (std::size_t start = 0; start <= text.size();) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string part = text.substr(start, end - start);
    // "0006:020c DIMSE Read PDV failed": drop the module:code prefix.
    if (part.size() > 10 && part[4] == ':' && part[9] == ' ') part = part.substr(10);
    if (!part.empty()) out += (out.empty() ? "" : ": ") + part;
    start = end + 1;
  }
  return out;
}

// What is left of a stored instance after its response (one node): the spool file from the
// journaled bytes, the index row, the study assembly.
struct FinishJob {
  StoredInstance in;
  std::optional<Journal::Ticket> ticket;  // in the journal: lay out `bytes`; else in the spool already
  ReceiveBuffer bytes;
};

// An association's second thread: one FinishJob at a time, so that the association thread
// receives the next instance meanwhile. Started with the first job.
class Finisher {
 public:
  explicit Finisher(std::function<void(FinishJob&)> work) : work_(std::move(work)) {}
  ~Finisher() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  // Waits for the job before to be done, hands this one over, and returns the buffer of the one
  // before (to be reused).
  ReceiveBuffer submit(FinishJob job) {
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !job_; });
    job_ = std::move(job);
    changed_.notify_all();
    return std::move(returned_);
  }
  void drain() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !job_; });
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [this] { return stopping_ || job_; });
      if (!job_) return;  // stopping, nothing left
      lock.unlock();
      try {
        work_(*job_);
      } catch (const std::exception& e) {
        pacsnode::component_logger("scp")->error("after storing an instance: {}", e.what());
      }
      lock.lock();
      returned_ = std::move(job_->bytes);
      job_.reset();
      changed_.notify_all();
    }
  }

  std::function<void(FinishJob&)> work_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<FinishJob> job_;  // being done, or waiting to be
  ReceiveBuffer returned_;        // the bytes of the last job done
  bool stopping_ = false;
  std::thread thread_;
};

// One association: receives C-STORE into the spool, answers C-ECHO, logs one line at the end.
class StoreProvider : public DcmThreadSCP {
 public:
  StoreProvider(ScpContext& ctx, PeerLog& peer_log, Connection conn, T_ASC_Association* assoc)
      : ctx_(ctx), cfg_(ctx.live.get()), peer_log_(peer_log), log_(pacsnode::component_logger("scp")), conn_(std::move(conn)),
        assoc_(assoc) {}

 protected:
  void notifyAssociationRequest(const T_ASC_Parameters& params, DcmSCPActionType& action) override {
    started_ = Clock::now();
    calling_ae_ = trim(params.DULparams.callingAPTitle);
    peer_ = params.DULparams.callingPresentationAddress;
    DcmThreadSCP::notifyAssociationRequest(params, action);
  }
  OFBool checkCalledAETitleAccepted(const OFString& called) override {
    if (trim(called) == cfg_->node.ae_title) return OFTrue;
    outcome_ = "rejected: called AE title '" + trim(called) + "' not recognized";
    return OFFalse;
  }
  OFBool checkCallingAETitleAccepted(const OFString& calling) override {
    const std::string ae = trim(calling);
    const auto& allowed = cfg_->node.allowed_calling_ae;
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), ae) == allowed.end()) {
      outcome_ = "rejected: calling AE title not allowed";
      return OFFalse;
    }
    if (auto why = calling_ae_binding_problem(cfg_->calling_aes, ae, conn_)) {
      outcome_ = "rejected: " + *why;
      return OFFalse;
    }
    return OFTrue;
  }
  void refuseAssociation(const DcmRefuseReasonType reason) override {
    switch (reason) {
      case DCMSCP_CALLED_AE_TITLE_NOT_RECOGNIZED: refused_ = Rejection::called_ae_title; break;
      case DCMSCP_CALLING_AE_TITLE_NOT_RECOGNIZED: refused_ = Rejection::calling_ae_title; break;
      case DCMSCP_NO_PRESENTATION_CONTEXTS:
        refused_ = Rejection::no_presentation_context;
        outcome_ = "rejected: no acceptable presentation context";
        break;
      default:
        refused_ = Rejection::refused_other;
        if (outcome_.empty()) outcome_ = "rejected";
    }
    DcmThreadSCP::refuseAssociation(reason);
  }
  void notifyAssociationAcknowledge() override { outcome_ = "aborted"; }
  void notifyReleaseRequest() override {
    finisher_.drain();  // every instance recorded before the sender hears the release confirmed
    outcome_ = "released";
  }
  void notifyAbortRequest() override { outcome_ = "aborted by peer"; }
  void notifyRECEIVEProgress(const unsigned long bytes) override { dataset_bytes_ = bytes; }
  void notifyDIMSEError(const OFCondition& cond) override { last_error_ = cond.text(); }

  void notifyAssociationTermination() override {
    finisher_.drain();
    const double secs = std::chrono::duration<double>(Clock::now() - started_).count();
    std::string outcome = outcome_.empty() ? "ended" : outcome_;
    if (outcome == "aborted" && !last_error_.empty()) outcome += " (" + one_line(last_error_) + ")";
    std::string reason;
    if (refused_) {
      ctx_.counters.rejected++;
      ctx_.counters.rejections.add(*refused_);
      reason = name(*refused_);
    } else {
      ctx_.counters.associations++;
      if (outcome_ != "released") {
        const Abort why = abort_reason();
        ctx_.counters.aborted.add(why);
        reason = name(why);
      }
    }
    const auto line = fmt::format("association from '{}' {}{}: {} instances stored, {} failed, {:.1f} MB in {:.2f} s, {}", calling_ae_,
                                  peer_, conn_.tls ? " over TLS" : "", stored_, failed_, bytes_ / 1e6, secs, outcome);
    if (outcome_ == "released") log_->info("{}", line);
    else if (stored_ || failed_) log_->warn("{}", line);  // says what became of instances: always
    else peer_log_.log(spdlog::level::warn, peer_, "association " + reason, line);  // did nothing: at most one a peer per 10 s
  }

  OFCondition handleIncomingCommand(T_DIMSE_Message* msg, const DcmPresentationContextInfo& pc) override {
    if (ctx_.abort_now) {
      outcome_ = "aborted: node shutting down";
      return NET_EC_StopAfterAssociation;  // any bad condition makes DcmSCP abort the association
    }
    if (msg->CommandField != DIMSE_C_STORE_RQ) return DcmThreadSCP::handleIncomingCommand(msg, pc);
    return handle_store(msg->msg.CStoreRQ, pc.presentationContextID);
  }

 private:
  OFCondition handle_store(T_DIMSE_C_StoreRQ& rq, T_ASC_PresentationContextID pcid) {
    const auto reserve = cfg_->storage.min_free_mb * 1024 * 1024;
    if (reserve > 0 && !ctx_.spool.has_free_space(reserve)) {
      // Refuse before receiving: the data set still has to be read off the wire.
      auto c = receiveSTORERequest(rq, pcid, OFString("/dev/null"));
      if (c.bad()) return c;
      return refuse(rq, pcid, STATUS_STORE_Refused_OutOfResources, Refusal::free_space_reserve,
                    "storage below its free-space reserve");
    }
    dataset_bytes_ = 0;
    OFCondition c = receive(rq, pcid);
    if (c.bad()) {
      sink_.discard();
      return c;
    }
    bytes_ += dataset_bytes_;
    ctx_.counters.bytes += dataset_bytes_;
    if (sink_.too_large()) {
      sink_.discard();
      return refuse(rq, pcid, STATUS_STORE_Error_CannotUnderstand, Refusal::too_large,
                    fmt::format("instance exceeds storage.max_instance_mb ({} MB)", cfg_->storage.max_instance_mb));
    }
    if (!sink_.error().empty()) {
      // A failed write is reported after the rest of the data set was read: the association is
      // intact and the sender gets an out-of-resources status.
      sink_.discard();
      log_->error("association from '{}': {}", calling_ae_, sink_.error());
      return refuse(rq, pcid, STATUS_STORE_Refused_OutOfResources, Refusal::storage_error, "cannot write to storage");
    }
    StoredInstance in;
    try {
      in = store();
    } catch (const StoreFailure& e) {
      const bool resources = e.kind() == StoreFailure::Kind::out_of_resources;
      return refuse(rq, pcid, resources ? STATUS_STORE_Refused_OutOfResources : STATUS_STORE_Error_CannotUnderstand,
                    resources ? Refusal::storage_error : Refusal::malformed, e.what());
    } catch (const std::exception& e) {
      return refuse(rq, pcid, STATUS_STORE_Refused_OutOfResources, Refusal::storage_error, e.what());
    }
    // The instance is durable (in the journal, or in the spool). One node: answer first; the
    // association's finisher thread then lays it out in the spool, records it in the index and
    // tells the study assembly, while this thread receives the next one (it waits for the
    // finisher before it takes another, and before the association's release). The journal
    // brings the file back and the index is rebuilt from the spool if the node stops in between.
    // A cluster: the shared index is what the other nodes see, so nothing is acknowledged before
    // the file is in place and its row is committed; while the index is unreachable the instance
    // is refused as transient (the file stays; a re-send replaces it).
    in.calling_ae = calling_ae_;
    if (in.header.sop_instance_uid != rq.AffectedSOPInstanceUID)
      log_->warn("association from '{}': data set SOP Instance UID differs from the C-STORE request; stored under the data set's", calling_ae_);
    if (!ctx_.index.shared()) {
      const OFCondition answered = sendSTOREResponse(pcid, rq, STATUS_Success);
      ++stored_;
      ctx_.counters.instances_stored++;
      sink_.give_back(finisher_.submit({std::move(in), ticket_, ticket_ ? sink_.take() : ReceiveBuffer{}}));
      return answered;
    }
    bool is_new = true;
    std::string why;
    switch (settle(in, ticket_, sink_.bytes(), is_new, why)) {
      case Settled::not_laid_out:
        return refuse(rq, pcid, STATUS_STORE_Refused_OutOfResources, Refusal::storage_error, "cannot write to storage");
      case Settled::index_failed:
        return refuse(rq, pcid, STATUS_STORE_Refused_OutOfResources, Refusal::index_unavailable,
                      fmt::format("the shared index cannot record it: {}", why));
      case Settled::ok: break;
    }
    const OFCondition answered = sendSTOREResponse(pcid, rq, STATUS_Success);
    assemble(in, is_new);
    ++stored_;
    ctx_.counters.instances_stored++;
    return answered;
  }

  enum class Settled { ok, not_laid_out, index_failed };
  // A durable instance into the spool (from the journal: `bytes` written out and renamed) and
  // into the index; `why` says why the index could not take it. `bytes`, when not empty, are the
  // instance's (hashed from memory).
  Settled settle(StoredInstance& in, const std::optional<Journal::Ticket>& ticket, std::string_view bytes, bool& is_new,
                 std::string& why) {
    if (ticket && !lay_out(in, *ticket, bytes)) return Settled::not_laid_out;
    if (in.content_hash.empty()) try {  // here rather than before the response: off the sender's path
      in.content_hash = bytes.empty() ? content_hash(in.path) : content_hash(bytes);
    } catch (const std::exception& e) {
      log_->warn("cannot hash a stored instance ({}); it will be analysed again if re-sent", e.what());
    }
    try {
      in.own = is_own_result(ctx_.index, in.header);
      is_new = ctx_.index.add_instance(in, wall_ms());
    } catch (const std::exception& e) {
      why = e.what();
      return Settled::index_failed;
    }
    return Settled::ok;
  }

  void assemble(const StoredInstance& in, bool is_new) {
    if (in.own)  // our own SEG/SR sent back (a re-send, an auto-routing rule): stored, never analysed
      log_->debug("stored our own result {} for study {}", in.header.sop_instance_uid, in.header.study_uid);
    else
      ctx_.assembler.on_instance(in.header, is_new);
    log_->debug("stored {} ({} bytes) for study {}", in.header.sop_instance_uid, in.size, in.header.study_uid);
  }

  // On the finisher thread (one node): what follows the response.
  void finish(FinishJob& job) {
    bool is_new = true;
    std::string why;
    switch (settle(job.in, job.ticket, job.bytes.view(), is_new, why)) {
      case Settled::not_laid_out: return;  // said; the next start puts it in place and indexes it
      case Settled::index_failed:
        // The file is durable; the index is rebuilt from the spool at the next start.
        log_->error("index: cannot record an instance ({}); it is on disk and will be indexed at the next start", why);
        break;
      case Settled::ok: break;
    }
    assemble(job.in, is_new);
  }

  // The data set off the wire into sink_, behind our File Meta Information: what
  // receiveSTORERequest(filename) does, with memory instead of a file as long as it fits.
  OFCondition receive(T_DIMSE_C_StoreRQ& rq, T_ASC_PresentationContextID pcid) {
    T_ASC_PresentationContext pc;
    OFCondition c = ASC_findAcceptedPresentationContext(assoc_->params, pcid, &pc);
    if (c.bad()) return c;
    sink_.start(part10_meta(rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID, pc.acceptedTransferSyntax, calling_ae_),
                ctx_.spool.temp_path());
    T_ASC_PresentationContextID received_on = pcid;
    c = DIMSE_receiveDataSetInFile(assoc_, DIMSE_NONBLOCKING, cfg_->node.dimse_timeout_seconds, &received_on, &sink_.stream(),
                                   callbackRECEIVEProgress, this);
    sink_.finish();
    if (c.good() && received_on != pcid)
      return makeOFCondition(OFM_dcmnet, DIMSEC_RECEIVEFAILED, OF_error, "DIMSE: data set received on another presentation context");
    return c;
  }

  // Makes the received instance durable. In memory and the journal on: one append (group
  // committed fdatasync); lay_out() then writes its spool file, which the journal's checkpointer
  // makes durable later. Otherwise (too large for memory or the journal, or the journal has no
  // room right now): into the spool with an fsync of the file and of its directory.
  StoredInstance store() {
    const std::string origin = fmt::format("calling AE '{}' at {}", calling_ae_, peer_);
    ticket_.reset();
    if (!sink_.in_memory()) return ctx_.spool.commit(sink_.spill_file(), sink_.size(), origin);
    const std::string_view part10 = sink_.bytes();
    StoredInstance in = ctx_.spool.inspect(part10, origin);
    if (Journal* journal = ctx_.journal; journal && part10.size() <= journal->max_payload())
      ticket_ = journal->append({in.header.study_uid, in.header.series_uid, in.header.sop_instance_uid, calling_ae_, wall_ms()}, part10);
    if (!ticket_) {  // no journal, or it does not fit right now: straight into the spool
      const auto tmp = ctx_.spool.temp_path();
      ctx_.spool.write_file(tmp, part10);
      ctx_.spool.place(tmp, in.path, true);
    }
    return in;
  }

  // The journaled instance into its place in the spool (rename, no fsync). False when that
  // fails: the journal keeps it, and the next start writes it back.
  bool lay_out(const StoredInstance& in, const Journal::Ticket& ticket, std::string_view bytes) {
    try {
      const auto tmp = ctx_.spool.temp_path();
      ctx_.spool.write_file(tmp, bytes);
      ctx_.spool.place(tmp, in.path, false);
      ctx_.journal->laid_out(ticket, in.path);
      return true;
    } catch (const std::exception& e) {
      log_->error("association from '{}': an acknowledged instance is in the journal but cannot be put in the spool ({}); the next "
                  "start puts it there", calling_ae_, e.what());
      return false;
    }
  }

  OFCondition refuse(T_DIMSE_C_StoreRQ& rq, T_ASC_PresentationContextID pcid, Uint16 status, Refusal reason,
                     const std::string& why) {
    ++failed_;
    ctx_.counters.instances_failed++;
    ctx_.counters.refusals.add(reason);
    log_->error("association from '{}': instance refused with status 0x{:04X}: {}", calling_ae_, status, why);
    DcmDataset detail;
    detail.putAndInsertString(DCM_ErrorComment, why.substr(0, 64).c_str());
    return sendSTOREResponse(pcid, rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID, status, &detail);
  }

  // Why an association that ended without a release did so, from DCMTK's last condition.
  Abort abort_reason() const {
    if (outcome_ == "aborted: node shutting down") return Abort::shutdown;
    if (outcome_ == "aborted by peer") return Abort::peer_abort;
    // The cause is the innermost condition: look for it anywhere in the chain.
    const auto is = [this](const OFConditionConst& c) { return last_error_.find(OFCondition(c).text()) != std::string::npos; };
    if (is(DIMSE_NODATAAVAILABLE) || is(DUL_READTIMEOUT)) return Abort::timeout;
    if (is(DUL_NETWORKCLOSED)) return Abort::connection_closed;
    return Abort::protocol_error;
  }

  ScpContext& ctx_;
  const std::shared_ptr<const config::Config> cfg_;  // the config in force when the association started
  PeerLog& peer_log_;
  std::shared_ptr<spdlog::logger> log_;
  std::optional<Rejection> refused_;
  Clock::time_point started_ = Clock::now();
  const Connection conn_;
  std::string calling_ae_, peer_, outcome_, last_error_;
  unsigned long dataset_bytes_ = 0;
  T_ASC_Association* assoc_ = nullptr;
  // Where a data set arrives: memory up to what the journal takes (16 MiB), kept for the
  // association's life; larger ones go on into a file in .tmp.
  ReceiveSink sink_{kMemoryLimit, cfg_->storage.max_instance_mb << 20};
  std::optional<Journal::Ticket> ticket_;  // the instance being stored is in the journal
  Finisher finisher_{[this](FinishJob& job) { finish(job); }};
  std::uint64_t stored_ = 0, failed_ = 0, bytes_ = 0;
};

void reject(T_ASC_Association* assoc, T_ASC_RejectParametersReason reason) {
  T_ASC_RejectParameters rej;
  rej.result = ASC_RESULT_REJECTEDTRANSIENT;
  rej.source = ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED;
  rej.reason = reason;
  ASC_rejectAssociation(assoc, &rej);
  ASC_dropAssociation(assoc);
  ASC_destroyAssociation(&assoc);
}

}  // namespace

// The A-ASSOCIATE-RQ that the acceptor has read off the socket already (decrypted, for TLS):
// DCMTK reads the request from here, which cannot block, and everything after it from the
// connection, as usual.
class Replay {
 public:
  explicit Replay(std::vector<std::uint8_t> bytes) : bytes_(std::move(bytes)) {}
  bool pending() const { return pos_ < bytes_.size(); }
  ssize_t take(void* buf, size_t nbyte) {
    const std::size_t n = std::min(nbyte, bytes_.size() - pos_);
    std::memcpy(buf, bytes_.data() + pos_, n);
    pos_ += n;
    if (pos_ == bytes_.size()) {
      bytes_ = {};
      pos_ = 0;
    }
    return static_cast<ssize_t>(n);
  }

 private:
  std::vector<std::uint8_t> bytes_;
  std::size_t pos_ = 0;
};

class ReplayConnection : public DcmTCPConnection {
 public:
  ReplayConnection(DcmNativeSocketType fd, std::vector<std::uint8_t> prefix) : DcmTCPConnection(fd), prefix_(std::move(prefix)) {}

  ssize_t read(void* buf, size_t nbyte) override {
    return prefix_.pending() ? prefix_.take(buf, nbyte) : DcmTCPConnection::read(buf, nbyte);
  }
  OFBool networkDataAvailable(int timeout) override {
    return prefix_.pending() ? OFTrue : DcmTCPConnection::networkDataAvailable(timeout);
  }
  // While bytes are buffered here, a select() on the socket would not see them.
  OFBool isTransparentConnection() override { return prefix_.pending() ? OFFalse : OFTrue; }

 private:
  Replay prefix_;
};

// DICOM over TLS: DCMTK's TLS connection on the session whose handshake the acceptor has done.
class ReplayTlsConnection : public DcmTLSConnection {
 public:
  ReplayTlsConnection(DcmNativeSocketType fd, ssl_st* ssl, std::vector<std::uint8_t> prefix)
      : DcmTLSConnection(fd, ssl), prefix_(std::move(prefix)) {}

  OFCondition serverSideHandshake() override { return EC_Normal; }  // done before the request was read
  ssize_t read(void* buf, size_t nbyte) override {
    return prefix_.pending() ? prefix_.take(buf, nbyte) : DcmTLSConnection::read(buf, nbyte);
  }
  OFBool networkDataAvailable(int timeout) override {
    return prefix_.pending() ? OFTrue : DcmTLSConnection::networkDataAvailable(timeout);
  }

 private:
  Replay prefix_;
};

// Hands the connection DCMTK is about to take (through dcmExternalSocketHandle) its buffered
// request, and its TLS session if it has one. One slot: used only inside StorageServer's hand-off
// critical section.
class ReplayLayer : public DcmTransportLayer {
 public:
  void hand_over(int fd, std::vector<std::uint8_t> pdu, SslPtr tls) {
    fd_ = fd;
    pdu_ = std::move(pdu);
    tls_ = std::move(tls);
    taken_ = false;
  }
  // DCMTK created the connection, which now owns the socket (and the TLS session).
  bool taken() const { return taken_; }

  DcmTransportConnection* createConnection(DcmNativeSocketType fd, OFBool secure) override {
    if (fd != fd_ || taken_) return secure ? nullptr : new DcmTCPConnection(fd);
    if (secure != (tls_ != nullptr)) return nullptr;
    taken_ = true;
    if (tls_) return new ReplayTlsConnection(fd, tls_.release(), std::move(pdu_));
    return new ReplayConnection(fd, std::move(pdu_));
  }

 private:
  int fd_ = -1;
  std::vector<std::uint8_t> pdu_;
  SslPtr tls_;
  bool taken_ = false;
};

std::optional<std::string> calling_ae_binding_problem(const std::vector<config::CallingAe>& bindings, const std::string& ae,
                                                      const Connection& conn) {
  const auto b = std::find_if(bindings.begin(), bindings.end(), [&](const config::CallingAe& c) { return c.ae_title == ae; });
  if (b == bindings.end()) return std::nullopt;
  auto listed = [](const std::vector<std::string>& v) {
    std::string all;
    for (const auto& x : v) all += (all.empty() ? "'" : ", '") + x + "'";
    return all;
  };
  if (!b->hosts.empty() && std::find(b->hosts.begin(), b->hosts.end(), conn.peer) == b->hosts.end())
    return fmt::format("calling AE title '{}' connected from {}, not from its [[calling_ae]] hosts ({})", ae, conn.peer, listed(b->hosts));
  if (b->tls_subjects.empty()) return std::nullopt;
  if (!conn.tls) return fmt::format("calling AE title '{}' must use DICOM over TLS ([[calling_ae]] tls_subjects)", ae);
  if (std::find(b->tls_subjects.begin(), b->tls_subjects.end(), conn.tls_subject) == b->tls_subjects.end())
    return fmt::format("calling AE title '{}' presented the certificate of '{}', not one of its [[calling_ae]] tls_subjects ({})", ae,
                       conn.tls_subject.empty() ? "(none)" : conn.tls_subject, listed(b->tls_subjects));
  return std::nullopt;
}

dicom::TlsSettings listener_tls(const config::Config::Tls& tls) {
  return {tls.certificate, tls.private_key, tls.ca_certificates, tls.require_client_certificate, tls.profile, ""};
}

void disable_nagle() { ::setenv("TCP_NODELAY", "1", 1); }

StorageServer::StorageServer(ScpContext& ctx)
    : ctx_(ctx), peer_log_(pacsnode::component_logger("scp")), layer_(std::make_unique<ReplayLayer>()) {}

StorageServer::~StorageServer() {
  if (acceptor_ || tls_acceptor_) stop(std::chrono::seconds(0));
  if (network_) ASC_dropNetwork(&network_);
}

namespace {

// A listening IPv4 TCP socket on bind:port (port 0: any free one); `bound` gets the port.
int listen_socket(const std::string& bind, std::uint16_t port, std::uint16_t& bound, const char* key) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  try {
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (::inet_pton(AF_INET, bind.c_str(), &addr.sin_addr) != 1)
      throw std::system_error(EINVAL, std::generic_category(), "node.bind " + bind);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::system_error(errno, std::generic_category(), fmt::format("cannot listen on {}:{} ({})", bind, port, key));
    // The backlog holds connections only while the acceptor is busy for a moment: it accepts at once.
    if (::listen(fd, 256) != 0) throw std::system_error(errno, std::generic_category(), "listen");
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    bound = ntohs(addr.sin_port);
    return fd;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

}  // namespace

void StorageServer::start() {
  const auto cfg = ctx_.live.get();
  const auto& n = cfg->node;
  const auto& tls = cfg->tls;
  disable_nagle();
  dcmDisableGethostbyaddr.set(OFTrue);
  if (tls.enabled)  // the certificate, key and CAs are read and checked here: a problem stops the start
    tls_ = dicom::make_tls_layer(true, listener_tls(tls), "tls.");

  struct Closer {
    int fd = -1;
    ~Closer() { if (fd >= 0) ::close(fd); }
  } plain, secure;
  if (!tls.enabled || tls.plain) plain.fd = listen_socket(n.bind, n.port, port_, "node.port");
  if (tls.enabled) secure.fd = listen_socket(n.bind, tls.port, tls_port_, "tls.port");

  // An acceptor network without a listening socket of DCMTK's own (a valid handle at this moment
  // stops it from opening one): connections are accepted by the Acceptors and handed over one at
  // a time through dcmExternalSocketHandle.
  {
    std::lock_guard lock(handoff_mutex_);
    dcmExternalSocketHandle.set(plain.fd >= 0 ? plain.fd : secure.fd);
    OFCondition c = ASC_initializeNetwork(NET_ACCEPTOR, 0, n.acse_timeout_seconds, &network_);
    dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    dicom_check(c);
    dicom_check(ASC_setTransportLayer(network_, layer_.get(), 0));
  }

  AcceptorLimits limits;
  limits.timeout = std::chrono::seconds(n.preassociation_timeout_seconds);
  limits.max_pending = static_cast<std::size_t>(n.max_pending_connections);
  limits.max_pending_per_source = static_cast<std::size_t>(n.max_pending_per_source);
  auto handler = [this](AssociateRequest rq) { on_request(std::move(rq)); };
  if (plain.fd >= 0) {
    acceptor_ = std::make_unique<Acceptor>(plain.fd, limits, ctx_.counters.rejections, peer_log_, handler);
    plain.fd = -1;  // the acceptor owns it now
    acceptor_->start();
  }
  if (secure.fd >= 0) {
    tls_acceptor_ = std::make_unique<Acceptor>(secure.fd, limits, ctx_.counters.rejections, peer_log_, handler, tls_->getNativeHandle());
    secure.fd = -1;
    tls_acceptor_->start();
  }
}

// DCMTK limits an SCP profile to 128 presentation contexts, fewer than the storage classes it
// knows; an association proposes at most 128, so each gets a config with just what it proposed.
DcmSharedSCPConfig StorageServer::config_for(T_ASC_Association* assoc) const {
  const auto current = ctx_.live.get();  // the config in force when the association starts
  const auto& n = current->node;
  DcmSCPConfig cfg;
  cfg.setAETitle(n.ae_title.c_str());
  cfg.setMaxReceivePDULength(ASC_MAXIMUMPDUSIZE);
  cfg.setACSETimeout(n.acse_timeout_seconds);
  cfg.setDIMSETimeout(n.dimse_timeout_seconds);
  cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  cfg.setHostLookupEnabled(OFFalse);
  cfg.setProgressNotificationMode(OFTrue);
  cfg.setRespondWithCalledAETitle(OFFalse);
  OFList<OFString> ts;
  for (const char* t : accepted_transfer_syntaxes()) ts.push_back(t);
  // One profile entry per proposed context: an SCU often proposes a SOP class twice (uncompressed,
  // and the file's own compressed syntax), and each entry accepts one proposed context.
  const int n_pc = ASC_countPresentationContexts(assoc->params);
  for (int i = 0; i < n_pc; ++i) {
    T_ASC_PresentationContext pc;
    if (ASC_getPresentationContext(assoc->params, i, &pc).bad()) continue;
    if (accepts_abstract_syntax(pc.abstractSyntax)) cfg.addPresentationContext(pc.abstractSyntax, ts);
  }
  return DcmSharedSCPConfig(cfg);
}

void StorageServer::dicom_check(const OFCondition& c) {
  if (c.bad()) throw std::runtime_error(std::string("DICOM network setup: ") + c.text());
}

void StorageServer::on_request(AssociateRequest rq) {
  if (stopping_) {
    ::close(rq.fd);
    return;
  }
  // The critical section: DCMTK takes the socket from the process-global handle and parses the
  // request from memory, so nothing in here waits for the peer.
  T_ASC_Association* assoc = nullptr;
  OFCondition c;
  bool taken = false;
  const Connection conn{rq.peer, rq.tls != nullptr, rq.tls_subject};
  {
    std::lock_guard lock(handoff_mutex_);
    layer_->hand_over(rq.fd, std::move(rq.pdu), std::move(rq.tls));
    dcmExternalSocketHandle.set(rq.fd);
    c = ASC_receiveAssociation(network_, &assoc, ASC_MAXIMUMPDUSIZE, nullptr, nullptr, conn.tls ? OFTrue : OFFalse, DUL_NOBLOCK,
                               ctx_.live.get()->node.acse_timeout_seconds);
    dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    taken = layer_->taken();
    layer_->hand_over(-1, {}, nullptr);
  }
  if (c.bad()) {
    ctx_.counters.rejections.add(Rejection::associate_rq_invalid);
    peer_log_.log(spdlog::level::warn, rq.peer, std::string(name(Rejection::associate_rq_invalid)),
                  fmt::format("connection from {} closed: its A-ASSOCIATE-RQ was not understood: {}", rq.peer, one_line(c.text())));
    if (assoc) {
      ASC_dropAssociation(assoc);  // closes the socket if DCMTK still holds it
      ASC_destroyAssociation(&assoc);
    }
    if (!taken) ::close(rq.fd);
    return;
  }
  if (ctx_.failing) {
    ctx_.counters.rejected++;
    ctx_.counters.rejections.add(Rejection::node_failing);
    peer_log_.log(spdlog::level::warn, rq.peer, std::string(name(Rejection::node_failing)),
                  fmt::format("association from '{}' {} rejected (transient): the node is failing, see its health",
                              trim(assoc->params->DULparams.callingAPTitle), rq.peer));
    reject(assoc, ASC_REASON_SP_PRES_TEMPORARYCONGESTION);
    return;
  }
  std::lock_guard lock(mutex_);
  reap_finished_locked();
  if (active_ >= static_cast<std::size_t>(ctx_.live.get()->node.max_associations)) {
    ctx_.counters.rejected++;
    ctx_.counters.rejections.add(Rejection::association_limit);
    peer_log_.log(spdlog::level::warn, rq.peer, std::string(name(Rejection::association_limit)),
                  fmt::format("association from '{}' {} rejected: {} associations already open (node.max_associations)",
                              trim(assoc->params->DULparams.callingAPTitle), rq.peer, active_.load()));
    reject(assoc, ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
    return;
  }
  auto self = workers_.emplace(workers_.end());
  try {
    *self = std::thread([this, assoc, fd = rq.fd, self, conn] { serve(assoc, fd, self, conn); });
  } catch (const std::system_error& e) {  // no thread to be had: as if the limit were reached
    workers_.erase(self);
    ctx_.counters.rejected++;
    ctx_.counters.rejections.add(Rejection::association_limit);
    pacsnode::component_logger("scp")->error("association from {} rejected: cannot start its thread: {}", rq.peer, e.what());
    reject(assoc, ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
    return;
  }
  ++active_;  // mutex_ is held: serve() cannot end before these
  sockets_.insert(rq.fd);
}

void StorageServer::serve(T_ASC_Association* assoc, int fd, std::list<std::thread>::iterator self, const Connection& conn) {
  bool handed = false;
  try {
    StoreProvider scp(ctx_, peer_log_, conn, assoc);
    scp.setSharedConfig(config_for(assoc));
    handed = true;
    scp.run(assoc);  // negotiates, serves and releases/aborts; frees the association
  } catch (const std::exception& e) {
    pacsnode::component_logger("scp")->error("association: {}", e.what());
    if (!handed) {  // still ours: close it
      ASC_dropAssociation(assoc);
      ASC_destroyAssociation(&assoc);
    }
  }
  std::lock_guard lock(mutex_);
  sockets_.erase(fd);
  --active_;
  finished_.push_back(self);  // joined by the next association or by stop()
  idle_.notify_all();
}

void StorageServer::reap_finished_locked() {
  // A thread listed here has nothing left to do but return: joining it is immediate.
  for (auto it : finished_) {
    if (it->joinable()) it->join();
    workers_.erase(it);
  }
  finished_.clear();
}

void StorageServer::stop(std::chrono::seconds drain) {
  stopping_ = true;
  if (acceptor_) acceptor_->stop();  // no new association from here on
  if (tls_acceptor_) tls_acceptor_->stop();
  {
    std::unique_lock lock(mutex_);
    if (!idle_.wait_for(lock, drain, [this] { return active_ == 0; })) {
      // Drain time is over: abort what is left. Everything acknowledged is on disk already.
      pacsnode::component_logger("scp")->warn("{} association(s) still open after {} s: aborting them", active_.load(), drain.count());
      ctx_.abort_now = true;
      for (int fd : sockets_)
        if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    }
  }
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  std::lock_guard lock(mutex_);
  workers_.clear();
  finished_.clear();
  acceptor_.reset();
  tls_acceptor_.reset();
  peer_log_.flush_all();
}

}  // namespace scp
