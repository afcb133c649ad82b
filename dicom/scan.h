#pragma once
// The bounded structural scan every untrusted file passes before DCMTK or GDCM parses it.
//
// DCMTK 3.6.7 and GDCM read nested sequences recursively, without a depth limit, and trust every
// declared length: a data set of items nested ten thousand deep overflows their stack, and a few
// header values make them allocate gigabytes. This scan walks the same structure iteratively
// (an explicit stack, no recursion), with limits, and reads nothing but element headers and a few
// small values: large values (pixel data) are skipped, not read.
//
// What it follows, the way DCMTK 3.6.7 reads a file (or stricter):
//   * the 128-byte preamble and "DICM" when present; the File Meta Information (group 0002, explicit
//     or implicit VR little endian, ended by its group length or by the first tag of another
//     group); then the data set in the transfer syntax the meta header names;
//   * explicit and implicit VR, little and big endian, Deflated Explicit VR Little Endian (inflated
//     on the fly, at most max_inflated_bytes); a transfer syntax DCMTK does not know, or a data set
//     without meta header: DCMTK guesses the encoding from the first element, and the scan tries
//     both byte orders of that guess (neither may exceed a limit, one must parse);
//   * sequences of defined and undefined length, items and their delimiters, encapsulated pixel
//     data (offset table and fragments up to the sequence delimiter);
//   * everything DCMTK or GDCM may read as a sequence counts as one: SQ; any element of undefined
//     length (UN and unknown VRs per CP-246 in implicit VR little endian, OB/OW, implicit VR and
//     private elements); and a defined-length value in implicit VR (or with VR UN) that starts
//     with an item tag (a sequence by the data dictionary).
// Limits: sequence nesting, data elements (items and fragments included) at all levels, every
// declared length within what remains of its item, sequence and file, the file size, the inflated
// size, and Rows x Columns x Number of Frames x Samples per Pixel x Bits Allocated / 8.
// Refused although DCMTK may accept it (stricter): delimiters out of place (a sequence delimiter
// in a defined-length sequence, an item delimiter in a defined-length item, a defined-length
// value in implicit VR that starts with a delimiter), headers crossing the end of their item,
// lower-case VRs, a big endian meta header, bytes after the last element.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace dicom {

struct ScanLimits {
  int max_depth = 64;                                // nested sequences ([limits] max_depth)
  std::uint64_t max_elements = 1'000'000;            // data elements, items and fragments, all levels
  std::uint64_t max_file_bytes = 2048ull << 20;      // the file (storage.max_instance_mb)
  std::uint64_t max_pixel_bytes = 4096ull << 20;     // Rows x Columns x Frames x Samples x Bits Allocated / 8
  std::uint64_t max_inflated_bytes = 1024ull << 20;  // deflated transfer syntax: the inflated data set
};

struct ScanResult {
  bool ok = false;
  std::string reason;  // why not, specific: "sequence nesting deeper than 64 at byte 1234 in (0008,1115)"
  std::string transfer_syntax_uid;  // from the meta header; for a guessed encoding its UID (if it has one)
  std::string syntax;               // how the data set was read, e.g. "explicit VR little endian"
  bool has_preamble = false;
  bool has_meta = false;        // File Meta Information present
  bool syntax_guessed = false;  // no meta header or a transfer syntax DCMTK does not know
  std::uint64_t elements = 0;   // data elements, items and fragments, meta header included
  int max_depth = 0;            // deepest sequence nesting met
  std::uint64_t bytes = 0;           // file or buffer size
  std::uint64_t inflated_bytes = 0;  // deflated data set: its inflated size
  // Image Pixel attributes of the data set (0 when absent), and the bytes they imply.
  int rows = 0, columns = 0, samples_per_pixel = 0, bits_allocated = 0;
  std::int64_t number_of_frames = 0;
  std::uint64_t pixel_bytes = 0;
};

// Scans a DICOM file (Part 10, or a bare data set as DCMTK reads it). Never throws.
ScanResult scan_file(const std::filesystem::path& file, const ScanLimits& limits = {});
// The same on bytes in memory (fuzzing, tests).
ScanResult scan_buffer(const std::uint8_t* data, std::size_t size, const ScanLimits& limits = {});

// The limits the readers use when their caller passes none (read_instance_header,
// read_image_header, read_seg, decode_stored, ...). ScanLimits{} until set; the daemon and
// `pacsnode analyze` set it once at start from the config's [limits] and storage.max_instance_mb.
void set_default_scan_limits(const ScanLimits& limits);
ScanLimits default_scan_limits();

// scan_file, throwing DicomError with the reason (prefixed with `what: ` when given) on failure.
void require_scan(const std::filesystem::path& file, const ScanLimits& limits = default_scan_limits(),
                  const std::string& what = {});

}  // namespace dicom
