#pragma once
// The DICOM Storage SCP: a listening socket of ours (so `bind` is honoured); an Acceptor reads
// each connection's A-ASSOCIATE-RQ concurrently and with a deadline; DCMTK then negotiates from
// that request and serves the association as a DcmThreadSCP on a thread of its own, at most
// max_associations at once.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/ofstd/ofcond.h>
#include <dcmtk/dcmnet/scpcfg.h>
#include <dcmtk/dcmtls/tlslayer.h>

#include "config/config.h"
#include "config/live.h"
#include "dicom/tls.h"
#include "scp/acceptor.h"
#include "scp/counters.h"
#include "scp/index.h"
#include "scp/journal.h"
#include "scp/peer_log.h"
#include "scp/spool.h"
#include "scp/study_assembler.h"

namespace scp {

// Counters the daemon reports (health/metrics); updated by the SCP threads.
struct ScpCounters {
  std::atomic<std::uint64_t> associations{0}, rejected{0}, instances_stored{0}, instances_failed{0}, bytes{0};
  ReasonCounters<Rejection> rejections;  // connections and associations turned away, by reason
  ReasonCounters<Abort> aborted;         // associations that ended without a release, by reason
  ReasonCounters<Refusal> refusals;      // instances answered with a failure status, by reason
};

// What every association needs; owned by the daemon, outlives the server.
struct ScpContext {
  const config::LiveConfig& live;  // each association takes the config in force when it starts
  Spool& spool;
  Index& index;
  StudyAssembler& assembler;
  ScpCounters counters;
  // Set once draining has gone on for drain_seconds: associations still open are aborted.
  std::atomic<bool> abort_now{false};
  // Set while the health is failing (storage or index cannot be written): new associations are
  // rejected as transient, so that C-ECHO monitors see it and senders keep their data.
  std::atomic<bool> failing{false};
  // The ingest journal, when it is on (scp/journal.h); else every instance is committed durably
  // into the spool before its response.
  Journal* journal = nullptr;
};

// Where an association comes from, as the acceptor saw it.
struct Connection {
  std::string peer;         // source IPv4 address
  bool tls = false;         // DICOM over TLS
  std::string tls_subject;  // the client certificate's subject (RFC 2253), "" without one
};

// Why `ae` may not call from `conn` under the [[calling_ae]] bindings (wrong host; not TLS, or
// another certificate subject), or nullopt: a title without a binding is not constrained here.
std::optional<std::string> calling_ae_binding_problem(const std::vector<config::CallingAe>& bindings, const std::string& ae,
                                                      const Connection& conn);

// The TLS listener's settings from [tls].
dicom::TlsSettings listener_tls(const config::Config::Tls& tls);

class ReplayLayer;

class StorageServer {
 public:
  explicit StorageServer(ScpContext& ctx);
  ~StorageServer();
  StorageServer(const StorageServer&) = delete;
  StorageServer& operator=(const StorageServer&) = delete;

  // Binds and listens (throws std::system_error naming the address), then accepts on a thread.
  void start();
  std::uint16_t port() const { return port_; }          // plain DICOM (0: not listening, TLS only)
  std::uint16_t tls_port() const { return tls_port_; }  // DICOM over TLS (0: not listening)
  std::size_t active() const { return active_.load(); }
  // Connections still waiting for their A-ASSOCIATE-RQ.
  std::size_t pending() const {
    return (acceptor_ ? acceptor_->pending() : 0) + (tls_acceptor_ ? tls_acceptor_->pending() : 0);
  }
  // Stops accepting; lets associations in flight finish for up to `drain`, aborts the rest at
  // their next message, and returns once every association thread has ended.
  void stop(std::chrono::seconds drain);

 private:
  // On the acceptor's thread: DCMTK parses the request (from memory), then the association is
  // rejected at once or served on a thread of its own.
  void on_request(AssociateRequest rq);
  void serve(struct T_ASC_Association* assoc, int fd, std::list<std::thread>::iterator self, const Connection& conn);
  void reap_finished_locked();  // joins the association threads that have ended; mutex_ held
  static void dicom_check(const OFCondition& c);
  DcmSharedSCPConfig config_for(struct T_ASC_Association* assoc) const;

  ScpContext& ctx_;
  std::uint16_t port_ = 0, tls_port_ = 0;
  struct T_ASC_Network* network_ = nullptr;
  std::unique_ptr<DcmTLSTransportLayer> tls_;  // the OpenSSL context of the TLS listener
  PeerLog peer_log_;
  // DCMTK takes an accepted socket only through the process-global dcmExternalSocketHandle, and
  // reads the request through this transport layer, which replays what the acceptor read.
  std::unique_ptr<ReplayLayer> layer_;
  std::mutex handoff_mutex_;  // around the global handle and the layer's one slot
  std::unique_ptr<Acceptor> acceptor_;      // plain DICOM on node.port
  std::unique_ptr<Acceptor> tls_acceptor_;  // DICOM over TLS on tls.port
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> active_{0};
  std::mutex mutex_;
  std::condition_variable idle_;
  std::list<std::thread> workers_;
  std::vector<std::list<std::thread>::iterator> finished_;  // workers_ whose thread is ending
  std::set<int> sockets_;  // of the associations in flight, to cut them off after the drain time
};

// DCMTK reads TCP_NODELAY from the environment for every socket it opens: without it a C-STORE
// round trip stalls ~40 ms on loopback. Call before any association, in both directions.
void disable_nagle();

}  // namespace scp
