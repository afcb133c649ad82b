// Pixel decoding of one instance as analysis does it: dicom::load_files reads the header, screens it,
// plans the planes and decodes them through every codec path (native read, DCMTK for deflate, big
// endian, RLE, JPEG baseline/extended/lossless and JPEG-LS, GDCM for JPEG 2000 and as a second
// opinion), then converts stored values to real-world values.
#include <algorithm>
#include <cstdint>
#include <exception>

#include "dicom/decode_header.h"
#include "dicom/series_loader.h"
#include "fuzz/fuzz_common.h"
#include "fuzz/fuzz_quiet.h"

namespace {

// Inputs whose header announces more than this many pixel bytes are skipped: the allocation would
// only hit libFuzzer's memory limit. (The structural scan's max_pixel_mb is what bounds this in
// pacsnode; here the point is to reach the decoders quickly.)
constexpr std::uint64_t kMaxPixelBytes = std::uint64_t{64} << 20;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemFile file(data, size);
  try {
    const dicom::ImageHeader h = dicom::read_image_header(file.path());
    const std::uint64_t pixels = std::uint64_t(std::max(h.rows, 0)) * std::uint64_t(std::max(h.cols, 0)) *
                                 std::uint64_t(std::max(h.number_of_frames, 1)) *
                                 std::uint64_t(std::max(h.samples_per_pixel, 1));
    if (pixels * 8 > kMaxPixelBytes) return 0;  // 8: the widest sample (float64) or output
  } catch (const std::exception&) {
    return 0;  // load_files would only list it as rejected
  }
  const dicom::LoadResult r = dicom::load_files({file.path()});
  // The file ends up in a volume or in `rejected` (or both: planes of one multi-frame file may form
  // a volume while others are rejected), never nowhere.
  if (r.volumes.empty() && r.rejected.empty()) __builtin_trap();
  for (const auto& v : r.volumes)
    for (const auto& s : v.slices)
      if (s.empty()) __builtin_trap();
  return 0;
}
