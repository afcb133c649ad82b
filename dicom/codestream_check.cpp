#include "dicom/codestream_check.h"

#include <fmt/format.h>

namespace dicom {
namespace {

using Bytes = std::span<const std::uint8_t>;

std::uint32_t be16(Bytes b, std::size_t at) { return (std::uint32_t{b[at]} << 8) | b[at + 1]; }
std::uint32_t be32(Bytes b, std::size_t at) { return (be16(b, at) << 16) | be16(b, at + 2); }
std::uint32_t le32(Bytes b, std::size_t at) {
  return std::uint32_t{b[at]} | (std::uint32_t{b[at + 1]} << 8) | (std::uint32_t{b[at + 2]} << 16) |
         (std::uint32_t{b[at + 3]} << 24);
}

bool is_jpeg_sof(std::uint8_t m) {  // SOF0..SOF15 without DHT (C4), JPG (C8) and DAC (CC)
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

// A JPEG or JPEG-LS frame header: walks the marker segments from SOI to the first SOF (JPEG-LS:
// SOF55) and compares it with the image. The segments must follow each other without stray bytes
// (IJG reports those as a warning, on which GDCM asserts). Running out of `head` before the frame
// header (large APPn segments) gives no verdict.
std::string check_jpeg(Codec codec, Bytes head, const FrameExpect& e) {
  const char* name = codec == Codec::jpeg ? "JPEG" : "JPEG-LS";
  if (head.size() < 4 || head[0] != 0xFF || head[1] != 0xD8)
    return fmt::format("{} frame does not start with an SOI marker", name);
  std::size_t pos = 2;
  while (pos + 4 <= head.size()) {
    if (head[pos] != 0xFF) return fmt::format("{} stream: no marker at byte {} of the frame", name, pos);
    while (pos + 1 < head.size() && head[pos + 1] == 0xFF) ++pos;  // fill bytes
    if (pos + 4 > head.size()) break;
    const std::uint8_t m = head[pos + 1];
    if (m == 0xD9 || m == 0xDA || m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01 || m == 0x00)
      return fmt::format("{} stream: marker FF{:02X} before the frame header", name, m);
    const std::uint32_t length = be16(head, pos + 2);
    if (length < 2) return fmt::format("{} stream: segment FF{:02X} of length {}", name, m, length);
    const bool ls_sof = m == 0xF7;
    if (ls_sof || is_jpeg_sof(m)) {
      if (codec == Codec::jpeg && ls_sof) return "JPEG transfer syntax holds a JPEG-LS stream (SOF55)";
      if (codec == Codec::jpeg_ls && !ls_sof)
        return fmt::format("JPEG-LS transfer syntax holds a JPEG stream (SOF marker FF{:02X})", m);
      if (pos + 10 > head.size()) break;
      const unsigned precision = head[pos + 4], rows = be16(head, pos + 5), cols = be16(head, pos + 7),
                     components = head[pos + 9];
      if (length < 8 + 3 * components) return fmt::format("{} frame header too short ({} bytes)", name, length);
      const bool lossless = m == 0xC3 || m == 0xC7 || m == 0xCB || m == 0xCF || ls_sof;
      const bool precision_ok = lossless ? precision >= 2 && precision <= 16 : precision == 8 || precision == 12;
      if (!precision_ok)
        return fmt::format("{} frame header: {} bits per sample are not valid for this process (SOF FF{:02X})", name,
                           precision, m);
      if (static_cast<int>(precision) > e.bits_allocated)
        return fmt::format("{} frame header: {} bits per sample, Bits Allocated is {}", name, precision,
                           e.bits_allocated);
      if (static_cast<int>(rows) != e.rows || static_cast<int>(cols) != e.cols ||
          static_cast<int>(components) != e.samples_per_pixel)
        return fmt::format("{} frame header says {}x{}, {} component(s); the data set {}x{}, {} sample(s)", name, rows,
                           cols, components, e.rows, e.cols, e.samples_per_pixel);
      return {};
    }
    pos += 2 + length;
  }
  return {};
}

// A structure reaching beyond the bytes read: refused only when they are all of the fragment
// (`whole`), otherwise no verdict.
std::string past_end(bool whole, std::string why) { return whole ? why : std::string{}; }

// GDCM (Debian's 3.0.21) walks a JPEG 2000 fragment's marker segments itself to learn whether the
// transform is reversible (parsej2k_imp, before and beside OpenJPEG): from the codestream's start to
// the first SOD, trusting every segment's length, reading the COD's 5th and 10th bytes whatever its
// length, and going on into the tile-part headers after a reversible COD. A length that runs past
// the fragment sends it reading beyond its buffer (a SEGV fuzz_decode found twice). Walk as it does
// over [at, end) and refuse what it would overrun. `whole`: head holds all of the fragment, so a
// segment reaching past `end` really is past its end (otherwise no verdict).
std::string check_j2k_segments(Bytes head, std::size_t at, std::size_t end, bool whole) {
  while (at + 2 <= end) {
    const std::uint32_t m = be16(head, at);
    at += 2;
    if ((m >= 0xFF30 && m <= 0xFF3F) || m == 0xFF4F || m == 0xFF92 || m == 0xFFD9) continue;  // no length
    if (m == 0xFF93) return {};                                                               // SOD: GDCM stops
    if (at + 2 > end) return {};
    const std::uint32_t length = be16(head, at);
    at += 2;
    if (length < 2) return {};  // GDCM stops at an impossible length
    if (m == 0xFF52) {          // COD
      if (at + 10 > end)
        return past_end(whole, fmt::format("JPEG 2000 codestream: the COD segment at byte {} ends with the fragment", at - 4));
      if (head[at + 4] > 1 || head[at + 9] != 1) return {};  // GDCM stops unless reversible
    }
    if (at + (length - 2) > end)
      return past_end(whole, fmt::format("JPEG 2000 codestream: marker segment FF{:02X} at byte {} declares {} bytes, {} "
                                  "remain in the fragment",
                                  m & 0xFF, at - 4, length, end - at + 2));
    at += length - 2;
  }
  return {};
}

// The JPEG 2000 image and tile size (SIZ), in a raw codestream or a JP2 file's contiguous
// codestream box. OpenJPEG allocates and indexes by these fields. `whole`: head is all of the
// fragment.
std::string check_j2k(Bytes head, const FrameExpect& e, bool whole) {
  std::size_t at = 0, end = head.size();
  static constexpr std::uint8_t jp2_signature[] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};
  if (head.size() >= 12 && std::equal(std::begin(jp2_signature), std::end(jp2_signature), head.begin())) {
    // JP2 boxes (length, type) up to 'jp2c', the codestream; GDCM walks them as trustingly.
    for (at = 0;;) {
      if (at + 8 > head.size()) return past_end(whole, "JP2 file: no codestream box in the fragment");
      std::uint64_t len = be32(head, at);
      const std::uint32_t type = be32(head, at + 4);
      std::size_t header = 8;
      if (len == 1) {
        if (at + 16 > head.size()) return past_end(whole, "JP2 file: a box header ends with the fragment");
        len = (std::uint64_t{be32(head, at + 8)} << 32) | be32(head, at + 12);
        header = 16;
      }
      if (type == 0x6A703263) {  // 'jp2c'; length 0: to the end
        if (len != 0 && len < header) return "JP2 file: the codestream box has an invalid length";
        if (len != 0 && whole && len > head.size() - at)
          return fmt::format("JP2 file: the codestream box declares {} bytes, {} remain in the fragment", len,
                             head.size() - at);
        if (len != 0 && len <= head.size() - at) end = at + static_cast<std::size_t>(len);
        at += header;
        break;
      }
      if (len < header) return "JP2 file: a box before the codestream has an invalid length";
      if (len > head.size() - at)
        return past_end(whole, fmt::format("JP2 file: a box declares {} bytes, {} remain in the fragment", len, head.size() - at));
      at += static_cast<std::size_t>(len);
    }
  }
  if (at + 4 > end) return past_end(whole, "JPEG 2000 codestream shorter than its SOC and SIZ markers");
  if (be16(head, at) != 0xFF4F || be16(head, at + 2) != 0xFF51)
    return "JPEG 2000 codestream does not start with SOC and SIZ markers";
  const std::size_t siz = at + 4;  // Lsiz
  if (siz + 38 > end) return past_end(whole, "JPEG 2000 codestream ends inside its SIZ segment");
  const std::uint32_t lsiz = be16(head, siz), xsiz = be32(head, siz + 4), ysiz = be32(head, siz + 8),
                      xosiz = be32(head, siz + 12), yosiz = be32(head, siz + 16), xtsiz = be32(head, siz + 20),
                      ytsiz = be32(head, siz + 24), xtosiz = be32(head, siz + 28), ytosiz = be32(head, siz + 32),
                      csiz = be16(head, siz + 36);
  if (csiz == 0 || lsiz != 38 + 3 * csiz) return fmt::format("JPEG 2000 SIZ: {} components in {} bytes", csiz, lsiz);
  if (xsiz <= xosiz || ysiz <= yosiz || xtsiz == 0 || ytsiz == 0 || xtosiz > xosiz || ytosiz > yosiz ||
      std::uint64_t{xtosiz} + xtsiz <= xosiz || std::uint64_t{ytosiz} + ytsiz <= yosiz)
    return "JPEG 2000 SIZ: image or tile grid out of range";
  const std::uint64_t width = xsiz - xosiz, height = ysiz - yosiz;
  const std::uint64_t tiles = ((std::uint64_t{xsiz} - xtosiz + xtsiz - 1) / xtsiz) *
                              ((std::uint64_t{ysiz} - ytosiz + ytsiz - 1) / ytsiz);
  if (tiles > 65535) return fmt::format("JPEG 2000 SIZ: {} tiles (at most 65535)", tiles);
  if (width != static_cast<std::uint64_t>(e.cols) || height != static_cast<std::uint64_t>(e.rows) ||
      csiz != static_cast<std::uint32_t>(e.samples_per_pixel))
    return fmt::format("JPEG 2000 SIZ says {}x{}, {} component(s); the data set {}x{}, {} sample(s)", height, width,
                       csiz, e.rows, e.cols, e.samples_per_pixel);
  if (siz + 38 + 3 * std::size_t{csiz} > end) return past_end(whole, "JPEG 2000 codestream ends inside its SIZ segment");
  for (std::uint32_t c = 0; c < csiz; ++c) {
    const std::size_t p = siz + 38 + 3 * c;
    const int precision = (head[p] & 0x7F) + 1;
    if (precision > e.bits_allocated)
      return fmt::format("JPEG 2000 SIZ: component {} has {} bits, Bits Allocated is {}", c, precision,
                         e.bits_allocated);
    if (head[p + 1] != 1 || head[p + 2] != 1)
      return fmt::format("JPEG 2000 SIZ: component {} is sub-sampled {}x{}", c, head[p + 1], head[p + 2]);
  }
  return check_j2k_segments(head, at, end, whole);
}

// The 64-byte RLE header (PS3.5 G.4): one segment per byte of a sample and per sample, the first
// at offset 64, offsets increasing and inside the frame.
std::string check_rle(Bytes head, std::uint64_t frame_length, const FrameExpect& e) {
  if (head.size() < 64 || frame_length < 64) return "RLE frame shorter than its 64-byte header";
  const std::uint32_t segments = le32(head, 0);
  const int expected = e.samples_per_pixel * ((e.bits_allocated + 7) / 8);  // 1-bit (SEG) data: one byte
  if (segments < 1 || segments > 15 || static_cast<int>(segments) != expected)
    return fmt::format("RLE header: {} segments, the image needs {} ({} sample(s) of {} bits)", segments, expected,
                       e.samples_per_pixel, e.bits_allocated);
  std::uint32_t previous = 0;
  for (std::uint32_t s = 0; s < segments; ++s) {
    const std::uint32_t offset = le32(head, 4 + 4 * s);
    if ((s == 0 && offset != 64) || (s > 0 && offset <= previous) || offset >= frame_length)
      return fmt::format("RLE header: segment {} at offset {} (frame of {} bytes)", s + 1, offset, frame_length);
    previous = offset;
  }
  return {};
}

}  // namespace

Codec codec_of(std::string_view ts) {
  if (ts == "1.2.840.10008.1.2.5") return Codec::rle;
  if (ts == "1.2.840.10008.1.2.4.80" || ts == "1.2.840.10008.1.2.4.81") return Codec::jpeg_ls;
  if (ts == "1.2.840.10008.1.2.4.90" || ts == "1.2.840.10008.1.2.4.91" || ts == "1.2.840.10008.1.2.4.92" ||
      ts == "1.2.840.10008.1.2.4.93")
    return Codec::jpeg_2000;
  static constexpr std::string_view jpeg_prefix = "1.2.840.10008.1.2.4.";
  if (ts.substr(0, jpeg_prefix.size()) == jpeg_prefix) {
    const std::string_view n = ts.substr(jpeg_prefix.size());
    // 50..57 and 70 (and the retired 58..66): the JPEG processes. 100+ are MPEG/HEVC.
    if (n.size() == 2 && n >= "50" && n <= "66") return Codec::jpeg;
    if (n == "70") return Codec::jpeg;
  }
  return Codec::none;
}

std::string check_frame_codestream(Codec codec, std::span<const std::uint8_t> head, std::uint64_t frame_length,
                                   const FrameExpect& expect) {
  switch (codec) {
    case Codec::jpeg:
    case Codec::jpeg_ls: return check_jpeg(codec, head, expect);
    case Codec::jpeg_2000: return check_j2k(head, expect, head.size() < kCodestreamHead || head.size() >= frame_length);
    case Codec::rle: return check_rle(head, frame_length, expect);
    case Codec::none: break;
  }
  return {};
}

}  // namespace dicom
