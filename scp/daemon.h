#pragma once
// The service: owns spool, index, assembler and SCP; starts them in order, reconciles the index
// with the files on disk, talks to systemd, and drains on SIGTERM.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

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
// Brings the index in line with the spool: the files are the data. Also on a shared index (a
// node that starts on a root moved from SQLite, files copied in): there each node scans the
// shared spool at its start, and returns only its own running jobs to pending.
ReconcileReport reconcile(Spool& spool, Index& index);

// This node's name: [node] name, else the host name (characters a node name may not hold become '-').
std::string node_name(const config::Config& cfg);
// The index this config names, for the storage root `root`.
IndexSettings index_settings(const config::Config& cfg, const std::filesystem::path& root);

// Runs until SIGTERM or SIGINT; returns the process exit code. SIGHUP re-reads `config_file`
// (when the node runs on a file) and applies what can change while running (see reload_config).
int run_daemon(const config::Config& cfg, const std::optional<std::filesystem::path>& config_file = std::nullopt);

// What a reload does with `next` against the config in force: the keys that need a restart keep
// their running values (returned, one line each: "node.port 11112 -> 11113"), everything else is
// taken from `next`.
std::vector<std::string> keep_restart_only(const config::Config& running, config::Config& next);

}  // namespace scp
