#define BOOST_TEST_MODULE scan
// The structural scan (dicom/scan.h) on inputs crafted here, byte by byte: nesting, lengths,
// delimiters, fragments, deflate, pixel sizes, encodings; then every file of tests/data (real
// public files from many tools, malformed ones included) that DCMTK reads must pass it, and the readers must refuse what it refuses.
#include <boost/test/unit_test.hpp>

#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/oflog/oflog.h>

#include "dicom/decode_header.h"
#include "dicom/error.h"
#include "dicom/instance_header.h"
#include "dicom/pixel_decoder.h"
#include "dicom/scan.h"
#include "dicom/seg_reader.h"
#include "support/daemon_fixture.h"
#include "support/dicom_bytes.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using namespace testsupport;

namespace {

dicom::ScanResult scan(const Bytes& b, const dicom::ScanLimits& limits = {}) {
  return dicom::scan_buffer(b.data(), b.size(), limits);
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

struct TempDir {
  fs::path dir = testsupport::make_temp_dir("scan");
  ~TempDir() { fs::remove_all(dir); }
  fs::path write(const std::string& name, const Bytes& b) const {
    write_bytes(dir / name, b);
    return dir / name;
  }
};

Bytes raw_deflate(const Bytes& in) {
  z_stream z{};
  BOOST_REQUIRE(deflateInit2(&z, 9, Z_DEFLATED, -MAX_WBITS, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&z, in.size()));
  z.next_in = const_cast<Bytes::value_type*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  BOOST_REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_well_formed_file_passes_with_its_figures) {
  Writer w;
  identity(w);
  w.element(0x7FE0, 0x0010, "OB", std::string(4, '\x10'));
  const auto r = scan(part10(w.bytes, kExplicitLE));
  BOOST_TEST_REQUIRE(r.ok, r.reason);
  BOOST_TEST(r.has_preamble);
  BOOST_TEST(r.has_meta);
  BOOST_TEST(!r.syntax_guessed);
  BOOST_TEST(r.transfer_syntax_uid == kExplicitLE);
  BOOST_TEST(r.syntax == "explicit VR little endian");
  BOOST_TEST(r.elements == 6u + 14u);  // 6 meta elements, 14 in the data set
  BOOST_TEST(r.rows == 2);
  BOOST_TEST(r.columns == 2);
  BOOST_TEST(r.bits_allocated == 8);
  BOOST_TEST(r.pixel_bytes == 4u);
  BOOST_TEST(r.max_depth == 0);
}

BOOST_AUTO_TEST_CASE(sequences_nested_ten_thousand_deep_are_refused_at_the_limit) {
  const auto r = scan(part10(nested_sq(10000), kExplicitLE));
  BOOST_TEST(!r.ok);
  BOOST_TEST(contains(r.reason, "sequence nesting deeper than 64 at byte"), r.reason);
  BOOST_TEST(contains(r.reason, "in (0008,1115)"), r.reason);
  BOOST_TEST(r.reason.size() <= 64u, "fits a C-STORE Error Comment: " << r.reason);
  // Exactly at the limit it passes; the limit is configurable.
  BOOST_TEST(scan(part10(nested_sq(64), kExplicitLE)).ok);
  BOOST_TEST(!scan(part10(nested_sq(65), kExplicitLE)).ok);
  dicom::ScanLimits shallow;
  shallow.max_depth = 3;
  BOOST_TEST(!scan(part10(nested_sq(4), kExplicitLE), shallow).ok);
  BOOST_TEST(scan(part10(nested_sq(3), kExplicitLE), shallow).max_depth == 3);
}

BOOST_AUTO_TEST_CASE(the_scan_itself_does_not_recurse) {
  // 100,000 levels walk through with a limit that allows them: an explicit stack, not the call stack.
  dicom::ScanLimits deep;
  deep.max_depth = 200000;
  const auto r = scan(part10(nested_sq(100000), kExplicitLE), deep);
  BOOST_TEST_REQUIRE(r.ok, r.reason);
  BOOST_TEST(r.max_depth == 100000);
}

BOOST_AUTO_TEST_CASE(nesting_through_un_and_implicit_vr_counts_too) {
  const auto un = scan(part10(nested_un(10000), kExplicitLE));
  BOOST_TEST(!un.ok);
  BOOST_TEST(contains(un.reason, "sequence nesting deeper than 64"), un.reason);
  BOOST_TEST(contains(un.reason, "(0009,1010)"), un.reason);
  BOOST_TEST(scan(part10(nested_un(10), kExplicitLE)).max_depth == 10);

  const auto implicit = scan(part10(nested_sq(10000, false), kImplicitLE));
  BOOST_TEST(!implicit.ok);
  BOOST_TEST(contains(implicit.reason, "sequence nesting deeper than 64"), implicit.reason);
  BOOST_TEST(scan(part10(nested_sq(10, false), kImplicitLE)).ok);

  // Defined lengths in implicit VR: a sequence only by the dictionary, found by its item tag.
  const auto defined = scan(part10(nested_defined_implicit(200), kImplicitLE));
  BOOST_TEST(!defined.ok);
  BOOST_TEST(contains(defined.reason, "sequence nesting deeper than 64"), defined.reason);
  const auto shallow = scan(part10(nested_defined_implicit(10), kImplicitLE));
  BOOST_TEST(shallow.ok, shallow.reason);
  BOOST_TEST(shallow.max_depth == 10);
}

BOOST_AUTO_TEST_CASE(a_declared_length_beyond_the_data_is_refused) {
  Writer w;
  identity(w, false);
  w.header(0x0009, 0x1010, "UT", 0xFFFFFFF0u);
  w.append(std::string(600, 'x'));
  const Bytes file = part10(w.bytes, kExplicitLE);
  BOOST_TEST_REQUIRE(file.size() < 1100u);
  const auto r = scan(file);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.reason.rfind("truncated: (0009,1010) at byte", 0) == 0u, r.reason);
  BOOST_TEST(contains(r.reason, "needs 4294967280 bytes, 600 left"), r.reason);

  Writer i(false);
  identity(i, false);
  i.header(0x0010, 0x0010, "", 0xFFFFFFF0u);
  i.append(std::string(600, 'x'));
  const auto implicit = scan(part10(i.bytes, kImplicitLE));
  BOOST_TEST(!implicit.ok);
  BOOST_TEST(contains(implicit.reason, "(0010,0010) at byte"), implicit.reason);
  BOOST_TEST(contains(implicit.reason, "needs 4294967280 bytes, 600 left"), implicit.reason);

  // A value longer than its (defined-length) item is refused although bytes follow in the file.
  Writer n;
  identity(n, false);
  n.header(0x0008, 0x1115, "SQ", 8 + 10);
  n.item(10);
  n.element(0x0008, 0x0100, "SH", std::string(12, 'A'));  // 8 + 12 > 10
  n.text(0x0010, 0x0020, "LO", "TRAILER");
  const auto in_item = scan(part10(n.bytes, kExplicitLE));
  BOOST_TEST(!in_item.ok);
  BOOST_TEST(contains(in_item.reason, "declared length 12 of (0008,0100)"), in_item.reason);
  BOOST_TEST(contains(in_item.reason, "exceeds the 2 bytes left in its item"), in_item.reason);
}

BOOST_AUTO_TEST_CASE(a_file_cut_anywhere_passes_only_at_a_top_level_element_boundary) {
  // Sequences of both lengths, nested, encapsulated pixel data: every cut is tried.
  Writer w;
  std::vector<std::size_t> ends;  // data set offsets where a top-level element ends
  auto mark = [&] { ends.push_back(w.bytes.size()); };
  w.text(0x0008, 0x0016, "UI", kSecondaryCapture);
  mark();
  w.undefined(0x0008, 0x1115, "SQ");
  w.item();
  w.text(0x0008, 0x1150, "UI", "1.2.3");
  w.undefined(0x0008, 0x1199, "SQ");
  w.item(8 + 6);
  w.text(0x0008, 0x1155, "UI", "1.2.34");
  w.sequence_end();
  w.item_end();
  w.item(8 + 4);
  w.text(0x0008, 0x0100, "SH", "ABCD");
  w.sequence_end();
  mark();
  w.header(0x0040, 0xA730, "SQ", 8 + 8 + 2);
  w.item(8 + 2);
  w.text(0x0040, 0xA010, "CS", "X");
  mark();
  w.text(0x0020, 0x000D, "UI", "1.2.3.4");
  mark();
  w.undefined(0x7FE0, 0x0010, "OB");
  w.item(4);
  w.u32(0);
  w.item(6);
  w.append(std::string("\xFF\xD8\x01\x02\xFF\xD9", 6));
  w.sequence_end();
  mark();
  const Bytes file = part10(w.bytes, kJpegBaseline);
  const std::size_t data_start = file.size() - w.bytes.size();
  BOOST_TEST_REQUIRE(scan(file).ok, scan(file).reason);
  // Meta header boundaries: the end of each meta element.
  std::vector<std::size_t> good{132, 144};
  for (std::size_t at = 144; at < data_start;) {
    const std::uint16_t len = static_cast<std::uint16_t>(file[at + 6] | file[at + 7] << 8);
    const bool long_len = (file[at + 4] == 'O' && file[at + 5] == 'B');
    at += long_len ? 12 + (file[at + 8] | file[at + 9] << 8) : 8 + len;
    good.push_back(at);
  }
  for (auto e : ends) good.push_back(data_start + e);
  for (std::size_t cut = 132; cut < file.size(); ++cut) {
    const auto r = dicom::scan_buffer(file.data(), cut);
    const bool boundary = std::find(good.begin(), good.end(), cut) != good.end();
    BOOST_TEST(r.ok == boundary, "cut at " << cut << ": " << (r.ok ? "passed" : r.reason));
    if (!r.ok) BOOST_TEST(!r.reason.empty());
  }
}

BOOST_AUTO_TEST_CASE(items_and_delimiters_out_of_place_are_refused) {
  auto refused = [](const Bytes& data_set, const std::string& expect) {
    const auto r = scan(part10(data_set, kExplicitLE));
    BOOST_TEST(!r.ok, expect);
    BOOST_TEST(contains(r.reason, expect), r.reason);
  };
  {  // an element where an item belongs
    Writer w;
    w.undefined(0x0008, 0x1115, "SQ");
    w.text(0x0008, 0x1150, "UI", "1.2.3");
    refused(w.bytes, "(0008,1150) at byte");
  }
  {  // the item tag outside a sequence
    Writer w;
    w.item(0);
    refused(w.bytes, "item tag (FFFE,E000)");
  }
  {  // an item delimiter at the top level
    Writer w;
    w.text(0x0008, 0x0060, "CS", "OT");
    w.item_end();
    refused(w.bytes, "item delimiter at byte");
  }
  {  // a sequence delimiter inside an item (instead of the item delimiter)
    Writer w;
    w.undefined(0x0008, 0x1115, "SQ");
    w.item();
    w.sequence_end();
    refused(w.bytes, "sequence delimiter at byte");
  }
  {  // the sequence delimiter missing at the end of the data
    Writer w;
    w.undefined(0x0008, 0x1115, "SQ");
    w.item();
    w.item_end();
    refused(w.bytes, "no sequence delimiter");
  }
  {  // an item delimiter in an item of defined length
    Writer w;
    w.undefined(0x0008, 0x1115, "SQ");
    w.item(8);
    w.item_end();
    w.sequence_end();
    refused(w.bytes, "item delimiter at byte");
  }
  {  // a sequence delimiter in the middle of a defined-length sequence
    Writer w;
    w.header(0x0008, 0x1115, "SQ", 24);
    w.sequence_end();
    w.item(0);
    w.item(0);
    refused(w.bytes, "inside defined-length sequence (0008,1115)");
  }
  {  // an undefined-length sequence not closed inside its defined-length item
    Writer w;
    w.header(0x0008, 0x1115, "SQ", 8 + 12 + 8 + 8);
    w.item(12 + 8 + 8);
    w.undefined(0x0008, 0x1199, "SQ");
    w.item(0);
    w.item(0);
    w.text(0x0010, 0x0020, "LO", "AFTER");
    refused(w.bytes, "no delimiter before the end of its enclosing item");
  }
  {  // a value in implicit VR that starts with a delimiter
    Writer w(false);
    w.header(0x0009, 0x1010, "", 16);
    w.sequence_end();
    w.u32(0);
    w.u32(0);
    const auto r = scan(part10(w.bytes, kImplicitLE));
    BOOST_TEST(!r.ok);
    BOOST_TEST(contains(r.reason, "starts with a delimiter"), r.reason);
  }
  {  // a lower-case VR (DCMTK-internal names whose length field differs between versions)
    Writer w;
    w.element(0x0028, 0x0010, "xs", std::string(2, '\0'));
    refused(w.bytes, "invalid VR 'xs'");
  }
}

BOOST_AUTO_TEST_CASE(encapsulated_pixel_data_with_bad_fragments_is_refused) {
  auto with_fragments = [](const std::function<void(Writer&)>& body) {
    Writer w;
    identity(w);
    w.undefined(0x7FE0, 0x0010, "OB");
    body(w);
    return scan(part10(w.bytes, kJpegBaseline));
  };
  const auto good = with_fragments([](Writer& w) {
    w.item(0);
    w.item(4);
    w.append(std::string("\xFF\xD8\xFF\xD9", 4));
    w.sequence_end();
  });
  BOOST_TEST(good.ok, good.reason);
  BOOST_TEST(good.max_depth == 1);

  const auto undefined = with_fragments([](Writer& w) {
    w.item(0);
    w.item();
    w.append(std::string("\xFF\xD8\xFF\xD9", 4));
    w.sequence_end();
  });
  BOOST_TEST(!undefined.ok);
  BOOST_TEST(contains(undefined.reason, "fragment of undefined length"), undefined.reason);

  const auto not_an_item = with_fragments([](Writer& w) {
    w.item(0);
    w.text(0x0008, 0x0100, "SH", "XY");
    w.sequence_end();
  });
  BOOST_TEST(!not_an_item.ok);
  BOOST_TEST(contains(not_an_item.reason, "where a fragment item"), not_an_item.reason);

  const auto too_long = with_fragments([](Writer& w) {
    w.item(0);
    w.item(0x7FFFFFF0u);
    w.append(std::string("\xFF\xD8\xFF\xD9", 4));
  });
  BOOST_TEST(!too_long.ok);
  BOOST_TEST(contains(too_long.reason, "truncated: (FFFE,E000) at byte"), too_long.reason);
  BOOST_TEST(contains(too_long.reason, "needs 2147483632 bytes"), too_long.reason);

  const auto unterminated = with_fragments([](Writer& w) {
    w.item(0);
    w.item(4);
    w.append(std::string("\xFF\xD8\xFF\xD9", 4));
  });
  BOOST_TEST(!unterminated.ok);
  BOOST_TEST(contains(unterminated.reason, "encapsulated Pixel Data (no sequence delimiter)"), unterminated.reason);
}

BOOST_AUTO_TEST_CASE(a_deflated_data_set_is_inflated_under_its_limit) {
  Writer w;
  identity(w);
  w.element(0x7FE0, 0x0010, "OB", std::string(4, '\x10'));
  const auto small = scan(part10(raw_deflate(w.bytes), kDeflated));
  BOOST_TEST_REQUIRE(small.ok, small.reason);
  BOOST_TEST(small.inflated_bytes == w.bytes.size());
  BOOST_TEST(small.syntax == "deflated explicit VR little endian");

  // A deflate bomb: 64 MiB of zeros in one element, a few kB on disk.
  Writer bomb;
  identity(bomb, false);
  bomb.header(0x0009, 0x1010, "OB", 64u << 20);
  bomb.bytes.resize(bomb.bytes.size() + (64u << 20), 0);
  const Bytes file = part10(raw_deflate(bomb.bytes), kDeflated);
  BOOST_TEST(file.size() < 200'000u);
  dicom::ScanLimits limits;
  limits.max_inflated_bytes = 16u << 20;
  const auto r = scan(file, limits);
  BOOST_TEST(!r.ok);
  BOOST_TEST((contains(r.reason, "exceeds the 16 MiB inflated-size limit") || contains(r.reason, "inflates beyond the 16 MiB")),
             r.reason);
  BOOST_TEST(scan(file).ok, "within the default 1024 MiB it is a legal file");

  // Corrupt and truncated deflate streams.
  Bytes broken = raw_deflate(w.bytes);
  broken.resize(broken.size() / 2);
  const auto cut = scan(part10(broken, kDeflated));
  BOOST_TEST(!cut.ok);
  BOOST_TEST(contains(cut.reason, "deflated data set is truncated"), cut.reason);
  const auto garbage = scan(part10(Bytes(300, 0xFF), kDeflated));
  BOOST_TEST(!garbage.ok);
  BOOST_TEST(contains(garbage.reason, "deflated data set"), garbage.reason);
}

BOOST_AUTO_TEST_CASE(rows_columns_frames_beyond_the_pixel_limit_are_refused) {
  auto image = [](std::uint16_t rows, std::uint16_t cols, const std::string& frames, std::uint16_t samples,
                  std::uint16_t bits) {
    Writer w;
    w.us(0x0028, 0x0002, samples);
    if (!frames.empty()) w.text(0x0028, 0x0008, "IS", frames);
    w.us(0x0028, 0x0010, rows);
    w.us(0x0028, 0x0011, cols);
    w.us(0x0028, 0x0100, bits);
    w.element(0x7FE0, 0x0010, "OW", std::string(4, '\0'));
    return part10(w.bytes, kExplicitLE);
  };
  const auto huge = scan(image(65535, 65535, "2147483647", 3, 16));
  BOOST_TEST(!huge.ok);
  BOOST_TEST(contains(huge.reason, "exceeds the 4096 MiB pixel limit"), huge.reason);
  BOOST_TEST(contains(huge.reason, "Rows 65535 x Columns 65535 x 2147483647 frames x 3 samples x 16 bits"), huge.reason);
  // More digits than any integer type: still refused, no overflow.
  BOOST_TEST(!scan(image(512, 512, "999999999999999999999999999999", 1, 16)).ok);
  // 512 x 512 x 300 x 16 bits = 150 MiB: fine; with a 100 MiB limit it is not.
  const auto ct = scan(image(512, 512, "300", 1, 16));
  BOOST_TEST(ct.ok, ct.reason);
  BOOST_TEST(ct.pixel_bytes == 512u * 512u * 300u * 2u);
  dicom::ScanLimits limits;
  limits.max_pixel_bytes = 100u << 20;
  BOOST_TEST(!scan(image(512, 512, "300", 1, 16), limits).ok);
  BOOST_TEST(scan(image(512, 512, "", 1, 16), limits).ok);  // no Number of Frames: one frame
}

BOOST_AUTO_TEST_CASE(element_count_and_file_size_limits) {
  Writer w;
  for (int i = 0; i < 200; ++i) w.text(0x0009, static_cast<std::uint16_t>(0x1000 + i), "LO", "X");
  dicom::ScanLimits limits;
  limits.max_elements = 100;
  const auto r = scan(part10(w.bytes, kExplicitLE), limits);
  BOOST_TEST(!r.ok);
  BOOST_TEST(contains(r.reason, "more than 100 data elements"), r.reason);
  BOOST_TEST(scan(part10(w.bytes, kExplicitLE)).elements == 206u);

  limits = {};
  limits.max_file_bytes = 1000;
  const auto big = scan(part10(w.bytes, kExplicitLE), limits);
  BOOST_TEST(!big.ok);
  BOOST_TEST(contains(big.reason, "bytes exceeds the 1000-byte limit"), big.reason);
}

BOOST_AUTO_TEST_CASE(big_endian_data_sets_are_scanned_in_their_byte_order) {
  Writer w(true, true);
  identity(w);
  w.undefined(0x0008, 0x1115, "SQ");
  w.item();
  w.text(0x0008, 0x1150, "UI", "1.2.3");
  w.item_end();
  w.sequence_end();
  w.element(0x7FE0, 0x0010, "OW", std::string(4, '\0'));
  const auto r = scan(part10(w.bytes, kExplicitBE));
  BOOST_TEST_REQUIRE(r.ok, r.reason);
  BOOST_TEST(r.syntax == "explicit VR big endian");
  BOOST_TEST(r.rows == 2);
  BOOST_TEST(r.max_depth == 1);
  const auto deep = scan(part10(nested_sq(1000, true, true), kExplicitBE));
  BOOST_TEST(!deep.ok);
  BOOST_TEST(contains(deep.reason, "sequence nesting deeper than 64"), deep.reason);
  // Read in the wrong byte order, the same bytes do not pass.
  BOOST_TEST(!scan(part10(w.bytes, kExplicitLE)).ok);
}

BOOST_AUTO_TEST_CASE(a_data_set_without_meta_header_is_read_the_way_dcmtk_guesses) {
  for (const bool explicit_vr : {false, true}) {
    Writer w(explicit_vr);
    identity(w);
    w.element(0x7FE0, 0x0010, explicit_vr ? "OW" : "", std::string(4, '\0'));
    const auto r = scan(w.bytes);
    BOOST_TEST_REQUIRE(r.ok, r.reason);
    BOOST_TEST(!r.has_preamble);
    BOOST_TEST(!r.has_meta);
    BOOST_TEST(r.syntax_guessed);
    BOOST_TEST(r.transfer_syntax_uid == (explicit_vr ? kExplicitLE : kImplicitLE));
    BOOST_TEST(r.rows == 2);
  }
  // Nesting beyond the limit is refused in a bare data set too, in either encoding.
  for (const bool explicit_vr : {false, true}) {
    const auto deep = scan(nested_sq(5000, explicit_vr));
    BOOST_TEST(!deep.ok);
    BOOST_TEST(contains(deep.reason, "sequence nesting deeper than 64"), deep.reason);
  }
  // A transfer syntax DCMTK does not know: guessed as well.
  Writer w;
  identity(w);
  const auto unknown = scan(part10(w.bytes, "1.2.3.4.5.6"));
  BOOST_TEST(unknown.ok, unknown.reason);
  BOOST_TEST(unknown.syntax_guessed);
  // Not DICOM at all.
  const std::string text = "this is a text file, not DICOM; it has lines\nand more lines\n";
  const auto r = scan(Bytes(text.begin(), text.end()));
  BOOST_TEST(!r.ok);
  BOOST_TEST(contains(r.reason, "no DICOM meta header and no readable data set"), r.reason);
  BOOST_TEST(!scan(Bytes{}).ok);
}

BOOST_AUTO_TEST_CASE(files_that_cannot_be_opened_are_refused_with_the_reason) {
  BOOST_TEST(contains(dicom::scan_file("/nonexistent/x.dcm").reason, "cannot open"));
  BOOST_TEST(contains(dicom::scan_file("/tmp").reason, "not a regular file"));
}

BOOST_FIXTURE_TEST_CASE(every_reader_refuses_what_the_scan_refuses, TempDir) {
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  Writer good;
  identity(good);
  good.element(0x7FE0, 0x0010, "OB", std::string(4, '\x10'));
  const fs::path ok = write("good.dcm", part10(good.bytes, kExplicitLE));
  BOOST_TEST(dicom::read_instance_header(ok).series_uid == "1.2.826.0.1.3680043.10.543.1.2");
  BOOST_TEST(dicom::read_image_header(ok).rows == 2);

  const fs::path deep = write("deep.dcm", part10(nested_sq(10000), kExplicitLE));
  auto says_nesting = [](const dicom::DicomError& e) { return contains(e.what(), "sequence nesting deeper than 64"); };
  BOOST_CHECK_EXCEPTION(dicom::read_instance_header(deep), dicom::DicomError, says_nesting);
  BOOST_CHECK_EXCEPTION(dicom::read_image_header(deep), dicom::DicomError, says_nesting);
  BOOST_CHECK_EXCEPTION(dicom::read_seg(deep), dicom::DicomError, says_nesting);
  BOOST_CHECK_EXCEPTION(dicom::decode_stored(deep, [](const dicom::DecodedLayout&) -> void* { return nullptr; }),
                        dicom::DicomError, says_nesting);
  // Explicit limits, and the process-wide default they fall back to.
  dicom::ScanLimits strict;
  strict.max_elements = 10;
  BOOST_CHECK_THROW(dicom::read_instance_header(ok, strict), dicom::DicomError);
  dicom::set_default_scan_limits(strict);
  BOOST_CHECK_THROW(dicom::read_image_header(ok), dicom::DicomError);
  dicom::set_default_scan_limits({});
  BOOST_TEST(dicom::read_image_header(ok).cols == 2);
}

BOOST_AUTO_TEST_CASE(every_file_dcmtk_reads_in_the_test_data_passes) {
  // tests/data holds licences, NIfTI, CSV and malformed files beside the DICOM ones: what DCMTK
  // reads must pass the scan, whatever it is.
  const fs::path corpus = testsupport::test_data();
  BOOST_TEST_REQUIRE(fs::is_directory(corpus), corpus.string() << " is missing");
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  // DCMTK reads these although a declared length runs past the end of the file (it stops at the
  // end of the data); the scan refuses any declared length beyond what remains.
  const std::map<std::string, std::string> refused_on_purpose{
      {"pydicom/test_files/dicomdirtests/DICOMDIR-nooffset", "(FFFE,E000) at byte 10860 needs 248 bytes, 224 left"}};
  std::size_t read_by_dcmtk = 0, passed = 0, refused = 0;
  for (const auto& e : fs::recursive_directory_iterator(corpus)) {
    if (!e.is_regular_file()) continue;
    DcmFileFormat ff;
    if (ff.loadFile(e.path().c_str(), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect).bad()) continue;
    ++read_by_dcmtk;
    const auto r = dicom::scan_file(e.path());
    const std::string rel = fs::relative(e.path(), corpus).string();
    if (const auto it = refused_on_purpose.find(rel); it != refused_on_purpose.end()) {
      BOOST_TEST(!r.ok, rel);
      BOOST_TEST(contains(r.reason, it->second), rel << ": " << r.reason);
      ++refused;
      continue;
    }
    BOOST_TEST(r.ok, rel << ": " << r.reason);
    passed += r.ok;
  }
  BOOST_TEST_MESSAGE(read_by_dcmtk << " corpus files read by DCMTK, " << passed << " pass the scan");
  BOOST_TEST(refused == refused_on_purpose.size());  // they are in tests/data, and DCMTK reads them
  BOOST_TEST(read_by_dcmtk >= 414u);  // pydicom's dcmread reads 414 files of tests/data (DCMTK 416)
}
