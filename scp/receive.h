#pragma once
// Where a C-STORE's data set goes while it arrives (issue 17): into memory, behind a File Meta
// Information of our own, so that the scan, the parse, the hash and the journal append all read
// the instance from memory instead of from a file written and read back. An instance larger than
// the memory limit spills into a file and continues there; one larger than
// storage.max_instance_mb is read off the wire and dropped.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

class DcmOutputStream;

namespace scp {

// The Part 10 preamble, "DICM" and File Meta Information (explicit VR little endian, group
// length first) of a data set received on a presentation context: what DCMTK writes in front of
// a received data set (its implementation class UID and version name), with `source_ae` as
// Source Application Entity Title when not empty.
std::string part10_meta(std::string_view sop_class_uid, std::string_view sop_instance_uid, std::string_view transfer_syntax_uid,
                        std::string_view source_ae);

// Bytes received into memory, handed from the receiving thread to the one that finishes the
// instance and back (their pages stay faulted in from one instance to the next).
struct ReceiveBuffer {
  std::unique_ptr<char[]> data;
  std::size_t capacity = 0, size = 0;
  std::string_view view() const { return {data.get(), size}; }
};

class ReceiveSink {
 public:
  // memory_limit: the largest instance held in memory; max_bytes: the largest taken at all.
  ReceiveSink(std::size_t memory_limit, std::uint64_t max_bytes);
  ~ReceiveSink();
  ReceiveSink(const ReceiveSink&) = delete;
  ReceiveSink& operator=(const ReceiveSink&) = delete;

  // Begins an instance: `meta` first; a spill goes to `spill_file` (created only then).
  void start(std::string_view meta, std::filesystem::path spill_file);
  // What DCMTK writes the data set into (DIMSE_receiveDataSetInFile).
  DcmOutputStream& stream();
  // Ends it: a spill file is closed (not fsync'ed). Call before reading the results below.
  void finish();

  bool in_memory() const { return spill_fd_ < 0 && spill_.empty(); }
  // The whole Part 10 instance, while in_memory().
  std::string_view bytes() const { return buf_.view(); }
  // Takes the instance's bytes (in_memory()) away; the sink goes on with a spare buffer.
  ReceiveBuffer take();
  // A buffer taken earlier, back for reuse.
  void give_back(ReceiveBuffer b);
  // The file it spilled into (empty while in memory).
  const std::filesystem::path& spill_file() const { return spill_; }
  std::uint64_t size() const { return total_; }  // bytes of the instance, meta included
  bool too_large() const { return too_large_; }   // more than max_bytes arrived; dropped
  const std::string& error() const { return error_; }  // a spill that could not be written
  // Drops the spill file, if any.
  void discard() noexcept;

 private:
  class Consumer;
  class Stream;
  void take(const char* p, std::size_t n);
  void spill(const char* p, std::size_t n);

  std::size_t memory_limit_;
  std::uint64_t max_bytes_;
  ReceiveBuffer buf_, spare_;  // kept from one instance to the next: no page faults for each
  std::uint64_t total_ = 0;
  std::filesystem::path spill_target_, spill_;
  int spill_fd_ = -1;
  bool too_large_ = false;
  std::string error_;
  std::unique_ptr<Consumer> consumer_;
  std::unique_ptr<Stream> stream_;
};

}  // namespace scp
