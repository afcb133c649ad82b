#pragma once
// The service: owns spool, index, assembler and SCP; starts them in order, reconciles the index
// with the files on disk, talks to systemd, and drains on SIGTERM.
#include <cstdint>

#include "config/config.h"
#include "scp/index.h"
#include "scp/spool.h"

namespace scp {

struct ReconcileReport {
  std::size_t indexed = 0;      // files on disk that the index did not know
  std::size_t forgotten = 0;    // index rows whose file is gone
  std::size_t unreadable = 0;   // files on disk that do not parse (left in place, logged)
  int requeued_jobs = 0;
};
// Brings the index in line with the spool: the files are the data.
ReconcileReport reconcile(Spool& spool, Index& index);

// Runs until SIGTERM or SIGINT; returns the process exit code.
int run_daemon(const config::Config& cfg);

}  // namespace scp
