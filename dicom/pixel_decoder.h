#pragma once
// Pixel decoding: DCMTK/GDCM turn any supported transfer syntax into stored values, and a pure kernel
// turns stored values into real-world values (mask to Bits Stored, sign, MONOCHROME1, rescale).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "dicom/scan.h"

class DcmDataset;

namespace dicom {

// How stored values sit in a decoded (native byte order) buffer.
struct StoredFormat {
  int bits_allocated = 16;  // 8, 16 or 32 (integers); 32 or 64 when is_float
  int bits_stored = 16;
  int high_bit = 15;
  bool is_signed = false;
  bool monochrome1 = false;  // invert, so that higher values are brighter
  bool is_float = false;     // Float / Double Float Pixel Data: IEEE samples, no masking
};

// A Modality LUT: real-world value = data[clamp(stored - first_mapped, 0, size - 1)].
struct ModalityLut {
  std::int64_t first_mapped = 0;
  std::vector<std::uint16_t> data;
};

// Real-world value = stored * slope + intercept, or the Modality LUT's entry when there is one.
struct RealMap {
  double slope = 1.0;
  double intercept = 0.0;
  const ModalityLut* lut = nullptr;  // not owned
};

// The stored value of a sample: masked to Bits Stored (garbage above High Bit dropped), sign
// extended when signed, and for MONOCHROME1 mirrored within the stored range.
std::int32_t stored_value(std::uint32_t raw_sample, const StoredFormat& f);

// Converts n samples at `raw` into real-world values at `out` (CV_16S or CV_32F as `out_is_float`;
// float samples (f.is_float) need a float output).
// raw and out may be the same buffer (conversion in place); any other overlap is undefined.
// Returns false when out is int16 and a value is not an integer in [-32768, 32767]; `out` is then
// partly written.
bool stored_to_real(const void* raw, const StoredFormat& f, const RealMap& m, void* out, bool out_is_float,
                    std::size_t n);

// What GDCM decoded: the sample width it produced and the frame count.
struct DecodedLayout {
  int rows = 0, cols = 0, frames = 0;
  int bits_allocated = 0;  // width of one decoded sample (8, 16 or 32; 32 or 64 when is_float)
  int samples_per_pixel = 1;
  bool is_float = false;   // from Float (32) or Double Float (64) Pixel Data
  std::size_t bytes() const {
    return static_cast<std::size_t>(rows) * cols * frames * samples_per_pixel * (bits_allocated / 8);
  }
};

// The value of a native (uncompressed, little endian) Pixel Data element: its byte offset in the
// file and its length (read_image_header records it).
struct NativePixels {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

// Reads the first layout.bytes() bytes of a native Pixel Data value into the buffer `dst_for`
// returns (as decode_stored, without parsing the file again). Throws DicomError when the value is
// shorter than the layout needs or the file cannot be read.
DecodedLayout read_native(const std::filesystem::path& file, const NativePixels& at, const DecodedLayout& layout,
                          const std::function<void*(const DecodedLayout&)>& dst_for);

// Decodes every frame of `file` into stored values in native byte order, frame after frame:
// DCMTK for native (incl. deflated and big endian), RLE, JPEG baseline/extended/lossless and
// JPEG-LS, frame by frame without a second full copy; GDCM for JPEG 2000 (DCMTK has no decoder).
// Float and Double Float Pixel Data (parametric maps) come out as IEEE samples (layout.is_float).
// DCMTK goes first because Debian's GDCM aborts on assertions with some malformed files. `dst_for(layout)` is called once the layout is known and returns a buffer of at
// least layout.bytes() bytes. Throws DicomError with the reason when the file cannot be decoded
// or fails the structural scan (dicom/scan.h), which runs before either toolkit parses it.
DecodedLayout decode_stored(const std::filesystem::path& file,
                            const std::function<void*(const DecodedLayout&)>& dst_for,
                            const ScanLimits& limits = default_scan_limits());

// For readers that let DCMTK decompress a whole data set (the SEG reader): the checks decode_stored
// makes before a codec sees encapsulated Pixel Data (fragments vs Number of Frames, each frame's
// codestream header vs Rows/Columns/Samples/Bits Allocated; dicom/codestream_check.h). Throws
// DicomError with the reason; does nothing for native data.
void check_encapsulated_pixels(DcmDataset& ds);

}  // namespace dicom
