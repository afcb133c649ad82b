// The bounded structural scan every untrusted file passes before DCMTK or GDCM parses it
// (dicom::scan_buffer, and scan_file on the same bytes as a file). It must never crash, hang, recurse
// or allocate in proportion to a declared length, and both entry points must agree.
#include <cstdint>

#include "dicom/scan.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  dicom::ScanLimits limits;  // small enough that inputs reach every limit
  limits.max_depth = 16;
  limits.max_elements = 20'000;
  limits.max_pixel_bytes = std::uint64_t{64} << 20;
  limits.max_inflated_bytes = std::uint64_t{4} << 20;
  const dicom::ScanResult b = dicom::scan_buffer(data, size, limits);
  if (!b.ok && b.reason.empty()) __builtin_trap();  // a refusal always says why
  if (b.ok && (b.max_depth > limits.max_depth || b.elements > limits.max_elements ||
               b.pixel_bytes > limits.max_pixel_bytes || b.inflated_bytes > limits.max_inflated_bytes))
    __builtin_trap();  // accepted beyond a limit
  const fuzz::MemFile file(data, size);
  const dicom::ScanResult f = dicom::scan_file(file.path(), limits);
  if (f.ok != b.ok || f.reason != b.reason || f.elements != b.elements) __builtin_trap();
  return 0;
}
