#pragma once
// The on-disk spool of received instances:
//   <root>/incoming/.tmp/<unique>                    being received
//   <root>/incoming/<study>/<series>/<sop>.dcm       acknowledged (fsync'ed file and directory)
//   <root>/quarantine/rejected/<time>-<n>.dcm        refused as malformed, beside <same>.reason.txt
// An instance is answered with success only after commit() returned.
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dicom/instance_header.h"
#include "dicom/scan.h"

namespace scp {

// Why an instance could not be stored: the DIMSE status family follows from it.
class StoreFailure : public std::runtime_error {
 public:
  enum class Kind { out_of_resources, bad_data };
  StoreFailure(Kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

struct StoredInstance {
  dicom::InstanceHeader header;
  std::filesystem::path path;
  std::uintmax_t size = 0;
  std::string calling_ae;    // who sent it (empty: found on disk)
  std::string content_hash;  // content_hash(path): its data set, not the meta header we wrote
  bool own = false;          // one of our own results, sent back to us
};

struct SpoolOptions {
  dicom::ScanLimits scan;  // what a received file must pass before DCMTK parses it
  // Budget of quarantine/rejected/ (storage.rejected_max_mb, rejected_max_files).
  std::uint64_t rejected_max_bytes = 512ull << 20;
  std::uint64_t rejected_max_files = 1000;
  // A node of a cluster on a shared storage root (issue 14): its partial files go to
  // incoming/.tmp/<node>/, and only those are removed at its start. Empty: one node, incoming/.tmp/.
  std::string node;
};

class Spool {
 public:
  // Creates the folders and removes what an interrupted run left in .tmp.
  explicit Spool(std::filesystem::path root, SpoolOptions options = {});

  const std::filesystem::path& root() const { return root_; }
  const SpoolOptions& options() const { return options_; }
  std::filesystem::path incoming() const { return root_ / "incoming"; }
  std::filesystem::path rejected_dir() const { return root_ / "quarantine" / "rejected"; }

  // A fresh, unique file name in .tmp (same filesystem as the final place).
  std::filesystem::path temp_path();
  // fsync, scan and parse (dicom::read_instance_header with options().scan), rename to its final
  // place, fsync the directory. On failure StoreFailure says whether it was resources or the
  // data; malformed data (it fails the scan or cannot be parsed) moves to quarantine/rejected/
  // with the reason and `origin` (who sent it), anything else is removed.
  StoredInstance commit(const std::filesystem::path& tmp, std::uintmax_t min_expected_size = 0,
                        const std::string& origin = {});
  // commit() in two halves, for the journal (scp/journal.h). inspect: the size check, the scan and
  // the parse (malformed data to quarantine/rejected/, as commit does); the file stays where it is
  // and is not fsync'ed; `path` says where it goes. place: into that place (durable: the file
  // and its directories fsync'ed, as commit does; else only a rename, which the journal's
  // checkpointer makes durable later). Both remove `tmp` when they throw StoreFailure.
  StoredInstance inspect(const std::filesystem::path& tmp, std::uintmax_t min_expected_size = 0, const std::string& origin = {});
  void place(const std::filesystem::path& tmp, const std::filesystem::path& path, bool durable);
  // inspect() of a Part 10 file received into memory: malformed data is written to
  // quarantine/rejected/ from `part10`. Nothing is written when it passes.
  StoredInstance inspect(std::string_view part10, const std::string& origin = {});
  // `bytes` into a new file at `tmp` (not fsync'ed). Throws StoreFailure (out of resources);
  // nothing is left at `tmp` then.
  void write_file(const std::filesystem::path& tmp, std::string_view bytes);
  void discard(const std::filesystem::path& tmp) noexcept;
  // Moves `file` into quarantine/rejected/ beside a .reason.txt, then removes the oldest entries
  // beyond the budget (one log line per removal run). Removes `file` when it cannot be kept.
  void reject(const std::filesystem::path& file, const std::string& reason, const std::string& origin) noexcept;

  // Free space at the root is at least `bytes`.
  bool has_free_space(std::uint64_t bytes) const;
  std::filesystem::path instance_path(const dicom::InstanceHeader& h) const;
  // Every committed instance file (for reconciling the index at start).
  std::vector<std::filesystem::path> list_instances() const;

 private:
  struct RejectedEntry {
    std::string stem;  // <stem>.dcm and <stem>.reason.txt
    std::uint64_t bytes = 0;
  };
  void load_rejected();     // rejected_mutex_ held
  void evict_rejected();    // rejected_mutex_ held

  std::filesystem::path root_;
  std::filesystem::path tmp_dir_;
  SpoolOptions options_;
  std::mutex rejected_mutex_;
  bool rejected_loaded_ = false;
  std::deque<RejectedEntry> rejected_;  // oldest first
  std::uint64_t rejected_bytes_ = 0;
};

// The storage root a config names: a relative storage.root lives in the service's state
// directory under systemd (STATE_DIRECTORY), else in the working directory. Absolute.
std::filesystem::path storage_root(const std::filesystem::path& configured);
// The same with $STATE_DIRECTORY given (null or empty: unset; of a ':'-separated list, the first).
std::filesystem::path storage_root(const std::filesystem::path& configured, const char* state_directory);
// FNV-1a, 64 bits: stable across runs and builds (path components, log hashes).
std::uint64_t fnv1a(const std::string& s);
// A UID as a path component: itself when it is a well-formed UID, else a stable hex digest.
std::string path_component(const std::string& uid);
// A hash of a Part 10 file's data set (everything after the File Meta Information, whose
// Source AE and implementation fields differ between senders of the same instance): XXH3-128 as
// 32 hex digits. Throws std::system_error when the file cannot be read.
std::string content_hash(const std::filesystem::path& file);
// The same of a Part 10 file held in memory.
std::string content_hash(std::string_view part10);
// fsync a file or directory; throws std::system_error.
void fsync_path(const std::filesystem::path& p, bool directory);

}  // namespace scp
