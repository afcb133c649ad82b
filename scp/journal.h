#pragma once
// The ingest journal (issue 17): an instance is made durable before its C-STORE response by one
// append to a preallocated, zero-filled segment file and an fdatasync of it, instead of an fsync
// of its own file and of its directory. Every association appends to the same active segment, one
// record after the other; an fdatasync covers every record written before it started, so
// associations that finish their writes while one is under way share the next one (group
// commit). The spool file is then put in place without an fsync
// (a rename); the checkpointer fsyncs those files and their directories in the background, and
// only then lets the segment be written over. At start every record still in the journal is
// replayed into the spool, so what was acknowledged is there even if a power cut took the spool
// files that were not fsync'ed yet.
//
// On disk, <root>/journal/seg-<n>.wal, each segment_bytes long:
//   [0, 4096)   segment header: "PNJRNL01", generation, segment size, XXH3-64 of those 24 bytes
//   4096 ...    records, each starting on a 4096-byte boundary (an append never rewrites a block
//               that holds an acknowledged record):
//               64-byte record header (magic "PNJR", meta length, generation, payload length,
//               received time, XXH3-64 of meta+payload seeded with the generation, XXH3-64 of
//               the header), then meta (study, series, SOP instance UID and calling AE, one per
//               line), then the payload: the Part 10 file exactly as it goes into the spool.
// A record is valid only with the segment's generation and both hashes right; replay stops at
// the first invalid one. Recycling a segment bumps its generation, which voids its old records.
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "scp/spool.h"

namespace scp {

struct JournalOptions {
  std::uint64_t segment_bytes = 32ull << 20;
  std::size_t max_segments = 8;  // storage.journal_mb / segment size
  // Free space the journal leaves when it makes a segment (storage.min_free_mb).
  std::uint64_t keep_free_bytes = 256ull << 20;
  // How often the checkpointer makes the laid-out spool files durable (sooner when segments run short).
  std::chrono::milliseconds checkpoint_interval{2000};
  // A node of a cluster on a shared storage root: its segments are journal/<node>/ (each node
  // replays its own at its start). Empty: one node, journal/.
  std::string node;
};

// What replay found at start.
struct JournalReplay {
  std::size_t segments = 0;  // segment files found
  std::size_t records = 0;   // valid records in them
  std::size_t restored = 0;  // spool files (re)written from a record: missing or different
};

class Journal {
 public:
  // Replays what <root>/journal holds into the spool (throws when a record cannot be written
  // back: the start must not go on without it), then starts the checkpointer.
  // The journal is off (enabled() false) when options.max_segments is 0, when the storage is a
  // tmpfs (an fsync costs nothing there), or when no segment can be made within the free space.
  Journal(Spool& spool, JournalOptions options);
  ~Journal();  // checkpoints everything, so that a clean stop leaves the journal empty
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  bool enabled() const { return enabled_; }
  const JournalReplay& replayed() const { return replay_; }
  std::filesystem::path dir() const { return dir_; }
  // The largest instance the journal takes; a larger one is committed straight into the spool.
  std::uint64_t max_payload() const;

  struct Segment;
  struct Ticket {
    Segment* segment = nullptr;
  };
  struct Meta {
    std::string study_uid, series_uid, sop_instance_uid, calling_ae;
    std::int64_t received_ms = 0;
  };

  // Appends one instance and makes it durable (fdatasync) before returning. nullopt: it does not
  // fit (larger than max_payload(), or no segment free): commit it straight into the spool.
  // Throws StoreFailure (out of resources) when the write or the flush fails.
  // The record is written whole before the next one starts (records are contiguous and complete
  // in order), so the records acknowledged are always a prefix of the valid ones, which is what
  // replay reads.
  std::optional<Ticket> append(const Meta& meta, std::string_view payload);
  // The record's spool file is in place (renamed, not fsync'ed): the checkpointer makes it durable.
  void laid_out(const Ticket& t, const std::filesystem::path& file);
  // Makes every laid-out file durable and recycles the segments that no longer hold anything
  // else. Runs on the checkpointer thread; callable directly (tests, shutdown).
  void checkpoint();

  // For tests and the status: records appended whose spool files are not durable yet.
  std::size_t pending() const;

 private:
  void replay_segment(Segment& s);
  void restore(const Meta& meta, std::string_view payload);
  // A new segment file (zeros, then its header, fsync'ed), added to segments_ free. False when
  // there is no room for one or max_segments exist. Takes make_mutex_, then mutex_ briefly: the
  // disk writes happen outside mutex_.
  bool make_segment();
  // mutex_ held: s is neither the active segment, nor being recycled, nor broken.
  bool usable(const Segment& s) const;
  Segment* free_segment();           // mutex_ held: an empty usable segment, or nullptr
  void sync_through(Segment& s, std::uint64_t end);  // group commit: s is durable up to `end`
  void recycle(Segment& s);          // new generation: its records are void
  void run_checkpointer();

  Spool& spool_;
  JournalOptions options_;
  std::filesystem::path dir_;
  bool enabled_ = false;
  JournalReplay replay_;
  std::mutex write_mutex_;  // one record written at a time
  std::mutex make_mutex_;   // one segment made at a time
  mutable std::mutex mutex_;  // everything below, and Segment's fields
  std::condition_variable wake_;    // the checkpointer
  std::condition_variable synced_;  // an fdatasync ended
  std::vector<std::unique_ptr<Segment>> segments_;
  Segment* active_ = nullptr;       // where appends go
  std::vector<std::pair<Segment*, std::filesystem::path>> laid_out_;  // awaiting the checkpointer
  std::mutex checkpoint_mutex_;  // one checkpoint at a time
  bool stopping_ = false;
  bool hurry_ = false;       // segments run short: checkpoint now
  bool want_spare_ = false;  // the active segment is filling and no empty one is left: make one
  std::thread checkpointer_;
};

}  // namespace scp
