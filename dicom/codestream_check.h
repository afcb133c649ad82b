#pragma once
// Cheap checks of encapsulated pixel data before a codec sees it: the header of each frame's
// codestream (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ, RLE segment table) must describe the image the
// data set announces (Rows, Columns, Samples per Pixel, Bits Allocated). DCMTK's and GDCM's decoders
// and OpenJPEG trust these fields, and Debian's GDCM asserts on them: a crafted file that disagrees
// with itself aborts the process (issue 9). For JPEG 2000 the marker segments are also walked as
// GDCM walks them itself (every length must stay inside the fragment: one that did not made GDCM read
// past its buffer). What fails a check is refused with a reason instead;
// what passes can still crash a library, which the analysis worker process contains.
// Pure functions on bytes, no DICOM toolkit.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace dicom {

enum class Codec { none, jpeg, jpeg_ls, jpeg_2000, rle };

// The codec family of an encapsulated transfer syntax UID; Codec::none for native syntaxes and for
// encapsulated ones pacsnode does not decode (MPEG, HEVC, ...).
Codec codec_of(std::string_view transfer_syntax_uid);

// What the data set says one frame holds.
struct FrameExpect {
  int rows = 0, cols = 0;
  int samples_per_pixel = 1;
  int bits_allocated = 16;
};

// Checks the start of one frame's codestream (`head`: its first bytes, kCodestreamHead or all of a
// shorter frame; the headers the codecs read are there) against the image. `frame_length` is the
// frame's total length in bytes (the RLE segment offsets must lie inside). Returns what is wrong,
// "" when nothing is or when the header lies beyond `head` (then the codec decides), e.g.
//   "JPEG 2000 SIZ says 512x512, 1 component(s); the data set 256x256, 1 sample(s)".
inline constexpr std::size_t kCodestreamHead = 16 * 1024;
std::string check_frame_codestream(Codec codec, std::span<const std::uint8_t> head, std::uint64_t frame_length,
                                   const FrameExpect& expect);

}  // namespace dicom
