#pragma once
// The DICOM Storage SCP: a listening socket of ours (so `bind` is honoured), one DCMTK
// DcmThreadSCP per association on its own thread, at most max_associations at once.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/ofstd/ofcond.h>
#include <dcmtk/dcmnet/scpcfg.h>

#include "config/config.h"
#include "scp/index.h"
#include "scp/spool.h"
#include "scp/study_assembler.h"

namespace scp {

// Counters the daemon reports (health/metrics); updated by the SCP threads.
struct ScpCounters {
  std::atomic<std::uint64_t> associations{0}, rejected{0}, instances_stored{0}, instances_failed{0}, bytes{0};
};

// What every association needs; owned by the daemon, outlives the server.
struct ScpContext {
  const config::Config& cfg;
  Spool& spool;
  Index& index;
  StudyAssembler& assembler;
  ScpCounters counters;
  // Set once draining has gone on for drain_seconds: associations still open are aborted.
  std::atomic<bool> abort_now{false};
};

class StorageServer {
 public:
  explicit StorageServer(ScpContext& ctx);
  ~StorageServer();
  StorageServer(const StorageServer&) = delete;
  StorageServer& operator=(const StorageServer&) = delete;

  // Binds and listens (throws std::system_error naming the address), then accepts on a thread.
  void start();
  std::uint16_t port() const { return port_; }
  std::size_t active() const { return active_.load(); }
  // Stops accepting; lets associations in flight finish for up to `drain`, aborts the rest at
  // their next message, and returns once every association thread has ended.
  void stop(std::chrono::seconds drain);

 private:
  void accept_loop();
  void serve(struct T_ASC_Association* assoc, int fd);  // fd: its socket, accepted here
  static void dicom_check(const OFCondition& c);
  static bool accepted_abstract_syntax(const std::string& uid);
  DcmSharedSCPConfig config_for(struct T_ASC_Association* assoc) const;

  ScpContext& ctx_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  struct T_ASC_Network* network_ = nullptr;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> active_{0};
  std::mutex mutex_;
  std::condition_variable idle_;
  std::list<std::thread> workers_;
  std::set<int> sockets_;  // of the associations in flight, to cut them off after the drain time
};

// DCMTK reads TCP_NODELAY from the environment for every socket it opens: without it a C-STORE
// round trip stalls ~40 ms on loopback. Call before any association, in both directions.
void disable_nagle();

}  // namespace scp
