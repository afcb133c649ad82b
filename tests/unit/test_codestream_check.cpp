#define BOOST_TEST_MODULE codestream_check
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "dicom/check.h"
#include "dicom/codestream_check.h"
#include "dicom/pixel_decoder.h"
#include "support/paths.h"
#include "support/temp_dir.h"

// The checks of encapsulated frame headers that run before DCMTK, GDCM or OpenJPEG see them
// (issue 9): synthetic streams for each rule, then real files of fuzz/corpus/ (real public files,
// provenance in fuzz/corpus/MANIFEST.md) decoded as they are and with one header
// field changed.

using dicom::Codec;
using Bytes = std::vector<std::uint8_t>;

namespace {

void put16(Bytes& b, std::uint32_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(Bytes& b, std::uint32_t v) {
  put16(b, v >> 16);
  put16(b, v & 0xFFFF);
}

// SOI, an APP0 segment, then a frame header SOFn (or SOF55) and the start of a scan.
Bytes jpeg(std::uint8_t sof, unsigned precision, unsigned rows, unsigned cols, unsigned components) {
  Bytes b = {0xFF, 0xD8, 0xFF, 0xE0};
  put16(b, 16);
  for (const char c : std::string("JFIF\0\1\1\0\0\1\0\1\0\0", 14)) b.push_back(static_cast<std::uint8_t>(c));
  b.push_back(0xFF);
  b.push_back(sof);
  put16(b, 8 + 3 * components);
  b.push_back(static_cast<std::uint8_t>(precision));
  put16(b, rows);
  put16(b, cols);
  b.push_back(static_cast<std::uint8_t>(components));
  for (unsigned c = 0; c < components; ++c) b.insert(b.end(), {static_cast<std::uint8_t>(c + 1), 0x11, 0});
  b.insert(b.end(), {0xFF, 0xDA, 0x00, 0x08});
  return b;
}

// SOC + SIZ of a raw JPEG 2000 codestream.
Bytes j2k(std::uint32_t rows, std::uint32_t cols, unsigned components, unsigned precision, std::uint32_t tile = 0,
          std::uint8_t subsampling = 1) {
  Bytes b = {0xFF, 0x4F, 0xFF, 0x51};
  put16(b, 38 + 3 * components);
  put16(b, 0);
  put32(b, cols);
  put32(b, rows);
  put32(b, 0);
  put32(b, 0);
  put32(b, tile ? tile : cols);
  put32(b, tile ? tile : rows);
  put32(b, 0);
  put32(b, 0);
  put16(b, components);
  for (unsigned c = 0; c < components; ++c)
    b.insert(b.end(), {static_cast<std::uint8_t>(precision - 1), subsampling, subsampling});
  b.insert(b.end(), {0xFF, 0x52});
  return b;
}

Bytes rle(std::vector<std::uint32_t> offsets) {
  Bytes b(64, 0);
  const auto le = [&](std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
  };
  le(0, static_cast<std::uint32_t>(offsets.size()));
  for (std::size_t i = 0; i < offsets.size(); ++i) le(4 + 4 * i, offsets[i]);
  return b;
}

std::string check(Codec c, const Bytes& b, const dicom::FrameExpect& e, std::uint64_t length = 0) {
  return dicom::check_frame_codestream(c, b, length ? length : b.size(), e);
}

const dicom::FrameExpect ct{512, 512, 1, 16};

}  // namespace

BOOST_AUTO_TEST_CASE(transfer_syntaxes_map_to_codecs) {
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.4.50") == Codec::jpeg));
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.4.57") == Codec::jpeg));
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.4.70") == Codec::jpeg));
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.4.80") == Codec::jpeg_ls));
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.4.91") == Codec::jpeg_2000));
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.5") == Codec::rle));
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.4.100") == Codec::none));  // MPEG-2
  BOOST_TEST((dicom::codec_of("1.2.840.10008.1.2.1") == Codec::none));
}

BOOST_AUTO_TEST_CASE(jpeg_frame_header_must_match_the_image) {
  BOOST_TEST(check(Codec::jpeg, jpeg(0xC3, 16, 512, 512, 1), ct).empty());  // lossless 16-bit
  BOOST_TEST(check(Codec::jpeg, jpeg(0xC1, 12, 512, 512, 1), ct).empty());  // extended 12-bit
  BOOST_TEST(check(Codec::jpeg, jpeg(0xC0, 8, 512, 512, 1), {512, 512, 1, 8}).empty());
  const auto rows = check(Codec::jpeg, jpeg(0xC3, 16, 256, 512, 1), ct);
  BOOST_TEST(rows.find("256x512") != std::string::npos, rows);
  BOOST_TEST(!check(Codec::jpeg, jpeg(0xC3, 16, 512, 512, 3), ct).empty());        // components
  BOOST_TEST(!check(Codec::jpeg, jpeg(0xC1, 16, 512, 512, 1), ct).empty());        // DCT with 16 bits
  BOOST_TEST(!check(Codec::jpeg, jpeg(0xC3, 17, 512, 512, 1), ct).empty());        // beyond 16 bits
  BOOST_TEST(!check(Codec::jpeg, jpeg(0xC3, 16, 512, 512, 1), {512, 512, 1, 8}).empty());  // > Bits Allocated
  BOOST_TEST(!check(Codec::jpeg, jpeg(0xF7, 16, 512, 512, 1), ct).empty());        // JPEG-LS in a JPEG syntax
  Bytes no_soi = jpeg(0xC3, 16, 512, 512, 1);
  no_soi[1] = 0xD9;
  BOOST_TEST(!check(Codec::jpeg, no_soi, ct).empty());
  Bytes stray = jpeg(0xC3, 16, 512, 512, 1);
  stray.insert(stray.begin() + 22, 0x00);  // a byte between APP0 and SOF
  BOOST_TEST(!check(Codec::jpeg, stray, ct).empty());
  Bytes scan_first = {0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08};
  BOOST_TEST(!check(Codec::jpeg, scan_first, ct).empty());
  // A frame header beyond what was read (huge APPn segment): no verdict, the codec decides.
  BOOST_TEST(check(Codec::jpeg, Bytes{0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xF0, 0, 0, 0, 0}, ct).empty());
}

BOOST_AUTO_TEST_CASE(jpeg_ls_frame_header_must_match_the_image) {
  BOOST_TEST(check(Codec::jpeg_ls, jpeg(0xF7, 16, 512, 512, 1), ct).empty());
  BOOST_TEST(check(Codec::jpeg_ls, jpeg(0xF7, 7, 512, 512, 1), {512, 512, 1, 8}).empty());
  BOOST_TEST(!check(Codec::jpeg_ls, jpeg(0xC3, 16, 512, 512, 1), ct).empty());  // plain JPEG
  BOOST_TEST(!check(Codec::jpeg_ls, jpeg(0xF7, 1, 512, 512, 1), ct).empty());   // 1 bit
  BOOST_TEST(!check(Codec::jpeg_ls, jpeg(0xF7, 16, 512, 512, 4), ct).empty());
  BOOST_TEST(!check(Codec::jpeg_ls, jpeg(0xF7, 16, 512, 511, 1), ct).empty());
}

BOOST_AUTO_TEST_CASE(jpeg_2000_size_must_match_the_image) {
  BOOST_TEST(check(Codec::jpeg_2000, j2k(512, 512, 1, 16), ct).empty());
  BOOST_TEST(check(Codec::jpeg_2000, j2k(512, 512, 1, 12, 128), ct).empty());  // tiled
  const auto why = check(Codec::jpeg_2000, j2k(256, 512, 1, 16), ct);
  BOOST_TEST(why.find("JPEG 2000 SIZ says 256x512") != std::string::npos, why);
  BOOST_TEST(!check(Codec::jpeg_2000, j2k(512, 512, 3, 16), ct).empty());
  BOOST_TEST(!check(Codec::jpeg_2000, j2k(512, 512, 1, 17), ct).empty());      // > Bits Allocated
  BOOST_TEST(!check(Codec::jpeg_2000, j2k(512, 512, 1, 16, 0, 2), ct).empty());  // sub-sampled
  BOOST_TEST(!check(Codec::jpeg_2000, j2k(512, 512, 1, 16, 1), ct).empty());   // 262144 tiles
  Bytes bad_lsiz = j2k(512, 512, 1, 16);
  bad_lsiz[5] = 0x40;
  BOOST_TEST(!check(Codec::jpeg_2000, bad_lsiz, ct).empty());
  BOOST_TEST(!check(Codec::jpeg_2000, Bytes{0xFF, 0xD8, 0xFF, 0xE0}, ct).empty());  // not a codestream
  // Inside a JP2 file: signature box, a header box, then the codestream box.
  Bytes jp2 = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A, 0, 0, 0, 0x0C, 'f', 't', 'y', 'p',
               'j', 'p', '2', ' '};
  const Bytes cs = j2k(512, 512, 1, 16);
  put32(jp2, static_cast<std::uint32_t>(8 + cs.size()));
  jp2.insert(jp2.end(), {'j', 'p', '2', 'c'});
  jp2.insert(jp2.end(), cs.begin(), cs.end());
  BOOST_TEST(check(Codec::jpeg_2000, jp2, ct).empty());
  const auto in_jp2 = check(Codec::jpeg_2000, jp2, {256, 512, 1, 16});
  BOOST_TEST(!in_jp2.empty());
}

// GDCM walks the marker segments itself up to the first SOD (on past a reversible COD into the
// tile-part headers), trusting each length: one that runs past the fragment made it read beyond
// its buffer (fuzz_decode, two reproducers in fuzz/regressions/fuzz_decode/).
BOOST_AUTO_TEST_CASE(jpeg_2000_marker_segments_must_stay_inside_the_fragment) {
  Bytes cs = j2k(512, 512, 1, 16);
  cs.pop_back();  // j2k() ends with a bare COD marker
  cs.pop_back();
  const auto segment = [](Bytes& b, std::uint16_t marker, std::uint16_t length, std::size_t body) {
    put16(b, marker);
    put16(b, length);
    b.insert(b.end(), body, 0);
  };
  Bytes good = cs;
  segment(good, 0xFF52, 12, 10);  // COD
  good[good.size() - 10 + 9] = 1;  // reversible: GDCM walks on
  segment(good, 0xFF5C, 4, 2);     // QCD
  segment(good, 0xFF90, 10, 8);    // SOT
  put16(good, 0xFF93);             // SOD, then tile data GDCM does not walk
  good.insert(good.end(), {0xFF, 0xFF, 0xFF, 0xFF});
  BOOST_TEST(check(Codec::jpeg_2000, good, ct).empty());

  Bytes long_sot = cs;  // a tile-part header longer than the fragment after a reversible COD
  segment(long_sot, 0xFF52, 12, 10);
  long_sot[long_sot.size() - 1] = 1;
  segment(long_sot, 0xFF90, 255, 8);
  const auto why = check(Codec::jpeg_2000, long_sot, ct);
  BOOST_TEST(why.find("marker segment FF90") != std::string::npos, why);

  Bytes irreversible = long_sot;  // GDCM stops at an irreversible COD: nothing after it matters
  irreversible[cs.size() + 4 + 9] = 0;
  BOOST_TEST(check(Codec::jpeg_2000, irreversible, ct).empty());

  Bytes short_cod = cs;  // GDCM reads the COD's 10th byte whatever its length
  put16(short_cod, 0xFF52);
  put16(short_cod, 2);
  BOOST_TEST(!check(Codec::jpeg_2000, short_cod, ct).empty());

  Bytes long_com = cs;  // before the COD too
  segment(long_com, 0xFF64, 4000, 10);
  BOOST_TEST(!check(Codec::jpeg_2000, long_com, ct).empty());
  // Only the first kCodestreamHead bytes of a longer fragment are read: a segment reaching beyond
  // them gets no verdict; in a fragment that short it is refused.
  Bytes head = cs;
  segment(head, 0xFF64, 60000, 0);
  head.resize(dicom::kCodestreamHead, 0);
  BOOST_TEST(check(Codec::jpeg_2000, head, ct, 1u << 20).empty());
  head.pop_back();
  BOOST_TEST(!check(Codec::jpeg_2000, head, ct).empty());
}

BOOST_AUTO_TEST_CASE(jp2_boxes_must_stay_inside_the_fragment) {
  const Bytes cs = j2k(512, 512, 1, 16);
  Bytes jp2 = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};
  Bytes too_long = jp2;
  put32(too_long, static_cast<std::uint32_t>(8 + cs.size() + 100));  // codestream box beyond the fragment
  too_long.insert(too_long.end(), {'j', 'p', '2', 'c'});
  too_long.insert(too_long.end(), cs.begin(), cs.end());
  const auto why = check(Codec::jpeg_2000, too_long, ct);
  BOOST_TEST(why.find("codestream box declares") != std::string::npos, why);
  Bytes box_past_end = jp2;
  put32(box_past_end, 5000);
  box_past_end.insert(box_past_end.end(), {'f', 't', 'y', 'p', 'j', 'p', '2', ' '});
  BOOST_TEST(!check(Codec::jpeg_2000, box_past_end, ct).empty());
  Bytes to_the_end = jp2;  // length 0: the box runs to the end of the fragment
  put32(to_the_end, 0);
  to_the_end.insert(to_the_end.end(), {'j', 'p', '2', 'c'});
  to_the_end.insert(to_the_end.end(), cs.begin(), cs.end());
  BOOST_TEST(check(Codec::jpeg_2000, to_the_end, ct).empty());
}

BOOST_AUTO_TEST_CASE(rle_segment_table_must_match_the_image) {
  BOOST_TEST(check(Codec::rle, rle({64, 1000}), ct, 2000).empty());  // 16-bit: two segments
  BOOST_TEST(check(Codec::rle, rle({64}), {512, 512, 1, 8}, 2000).empty());
  BOOST_TEST(!check(Codec::rle, rle({64}), ct, 2000).empty());                // one segment for 16 bits
  BOOST_TEST(!check(Codec::rle, rle({}), ct, 2000).empty());                  // none (GDCM divided by it)
  BOOST_TEST(!check(Codec::rle, rle({64, 3000}), ct, 2000).empty());          // beyond the frame
  BOOST_TEST(!check(Codec::rle, rle({80, 1000}), ct, 2000).empty());          // first not at 64
  BOOST_TEST(!check(Codec::rle, rle({64, 64}), ct, 2000).empty());            // not increasing
  BOOST_TEST(!check(Codec::rle, Bytes(10, 0), ct, 10).empty());               // shorter than the header
}

namespace {

Bytes read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::filesystem::path corpus(const std::string& name) { return testsupport::source_dir() / "fuzz/corpus/dicom" / name; }

dicom::DecodedLayout decode(const std::filesystem::path& p) {
  std::vector<char> buffer;
  return dicom::decode_stored(p, [&](const dicom::DecodedLayout& l) {
    buffer.resize(l.bytes());
    return buffer.data();
  });
}

// Decodes `name` as it is, then with `patch` applied at the first occurrence of `marker`.
std::string decode_patched(const std::string& name, const Bytes& marker, std::size_t offset, const Bytes& patch) {
  Bytes b = read_file(corpus(name));
  const auto at = std::search(b.begin(), b.end(), marker.begin(), marker.end());
  BOOST_REQUIRE(at != b.end());
  std::copy(patch.begin(), patch.end(), at + static_cast<std::ptrdiff_t>(offset));
  testsupport::TempDir dir;
  const auto path = dir.path / name;
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  try {
    decode(path);
  } catch (const dicom::DicomError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

BOOST_AUTO_TEST_CASE(real_files_pass_and_a_changed_header_field_is_refused_with_its_reason) {
  // As they are: every codec decodes (the checks accept real encoders' streams).
  for (const char* name : {"MR_small_jp2klossless.dcm", "693_J2KI.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm",
                           "JPEGBaseline_1s_1f_u_08_08.dcm", "MR_small_jpeg_ls_lossless.dcm",
                           "emri_small_jpeg_2k_lossless.dcm", "emri_small_RLE.dcm"}) {
    BOOST_TEST_CONTEXT(name) { BOOST_CHECK_NO_THROW(decode(corpus(name))); }
  }
  // JPEG 2000 SIZ width (Xsiz, 4 bytes after SOC+SIZ+Lsiz+Rsiz) 64 -> 65.
  const auto j2k_why = decode_patched("MR_small_jp2klossless.dcm", {0xFF, 0x4F, 0xFF, 0x51}, 8, {0, 0, 0, 65});
  BOOST_TEST(j2k_why.find("JPEG 2000 SIZ says 64x65") != std::string::npos, j2k_why);
  // JPEG-LS SOF55 rows 64 -> 63.
  const auto jls_why = decode_patched("MR_small_jpeg_ls_lossless.dcm", {0xFF, 0xF7}, 5, {0, 63});
  BOOST_TEST(jls_why.find("JPEG-LS frame header says 63x64") != std::string::npos, jls_why);
  // RLE: 0 segments (the RLE header follows the first fragment's item header).
  const auto rle_why = decode_patched("MR_small_RLE.dcm", {0x02, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00}, 0, {0});
  BOOST_TEST(rle_why.find("RLE header: 0 segments") != std::string::npos, rle_why);
}
