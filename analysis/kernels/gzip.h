#pragma once
// gzip (RFC 1952) compression and decompression for .nii.gz, on zlib.
#include <cstddef>
#include <string>
#include <string_view>

namespace analysis::kernels {

bool is_gzip(std::string_view data);

// Decompresses every member of a gzip stream (bytes after the last member that do not start a new
// member are ignored); throws std::runtime_error on malformed or truncated input, a CRC/length
// mismatch, or an output beyond `max_output` bytes (a few KB of gzip can inflate to gigabytes).
std::string gunzip(std::string_view data, std::size_t max_output = std::size_t{4} << 30);

// Compresses into a single gzip member (zlib level 6, no file name, mtime 0).
std::string gzip(std::string_view data);

}  // namespace analysis::kernels
