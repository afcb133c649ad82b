#include "dicom/scan.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "dicom/error.h"

namespace dicom {
namespace {

constexpr std::uint32_t kUndefinedLength = 0xFFFFFFFFu;
constexpr std::uint64_t kUnbounded = ~std::uint64_t{0};
constexpr std::uint32_t kItem = 0xFFFEE000u, kItemDelimiter = 0xFFFEE00Du, kSequenceDelimiter = 0xFFFEE0DDu;
constexpr std::uint32_t kPixelData = 0x7FE00010u;
constexpr std::uint32_t kGroupLength = 0x00020000u, kTransferSyntaxUid = 0x00020010u;

// Raised inside the scan, turned into ScanResult::reason at its boundary. `limit`: a configured
// limit was exceeded (as opposed to a malformed structure).
struct Failure {
  std::string reason;
  bool limit = false;
};

[[noreturn]] void fail(std::string reason) { throw Failure{std::move(reason), false}; }
[[noreturn]] void fail_limit(std::string reason) { throw Failure{std::move(reason), true}; }

std::string tag_text(std::uint32_t tag) { return fmt::format("({:04X},{:04X})", tag >> 16, tag & 0xFFFFu); }

std::string mib(std::uint64_t bytes) {
  return bytes >= (1u << 20) && bytes % (1u << 20) == 0 ? fmt::format("{} MiB", bytes >> 20) : fmt::format("{}-byte", bytes);
}

// ---- Byte sources: a file (read through a window, large values skipped by arithmetic), memory,
// and an inflating stream over either.

class Source {
 public:
  virtual ~Source() = default;
  std::uint64_t pos() const { return pos_; }
  // Bytes left after pos(), or kUnbounded when only the end of the stream tells (inflated data).
  virtual std::uint64_t remaining() const = 0;
  // Copies the next n (small) bytes without consuming them; false when fewer are left.
  virtual bool peek(std::uint8_t* out, std::size_t n) = 0;
  // Consumes n bytes; false when fewer are left.
  virtual bool skip(std::uint64_t n) = 0;
  // Copies and consumes up to max bytes (the inflater's input); 0 at the end.
  virtual std::size_t read_some(std::uint8_t* out, std::size_t max) = 0;
  // Moves back or forth (files and memory only: a data set whose encoding is guessed is read twice).
  virtual void seek(std::uint64_t at) = 0;

  bool read(std::uint8_t* out, std::size_t n) { return peek(out, n) && skip(n); }
  bool at_end() {
    std::uint8_t b;
    return !peek(&b, 1);
  }

 protected:
  std::uint64_t pos_ = 0;
};

// A source of known size (memory, a file): skipping and seeking are arithmetic.
class SizedSource : public Source {
 public:
  explicit SizedSource(std::uint64_t size) : size_(size) {}
  std::uint64_t remaining() const override { return size_ - pos_; }
  bool skip(std::uint64_t n) override {
    if (n > size_ - pos_) return false;
    pos_ += n;
    return true;
  }
  void seek(std::uint64_t at) override { pos_ = std::min(at, size_); }

 protected:
  std::uint64_t size_;
};

class MemorySource final : public SizedSource {
 public:
  MemorySource(const std::uint8_t* data, std::size_t size) : SizedSource(size), data_(data) {}
  bool peek(std::uint8_t* out, std::size_t n) override {
    if (n > size_ - pos_) return false;
    std::memcpy(out, data_ + pos_, n);
    return true;
  }
  std::size_t read_some(std::uint8_t* out, std::size_t max) override {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(max, size_ - pos_));
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  const std::uint8_t* data_;
};

// Reads through a window: element headers come from one pread of the file's first 16 KiB; large
// values are skipped without reading them.
class FileSource final : public SizedSource {
 public:
  FileSource(int fd, std::uint64_t size) : SizedSource(size), fd_(fd), window_(kWindow) {}
  bool peek(std::uint8_t* out, std::size_t n) override {
    if (n > size_ - pos_) return false;
    if (pos_ < start_ || pos_ + n > start_ + filled_) fill();
    std::memcpy(out, window_.data() + (pos_ - start_), n);
    return true;
  }
  std::size_t read_some(std::uint8_t* out, std::size_t max) override {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(max, size_ - pos_));
    if (n == 0) return 0;
    if (pos_ >= start_ && pos_ + n <= start_ + filled_) {
      std::memcpy(out, window_.data() + (pos_ - start_), n);
    } else {
      pread_all(out, n, pos_);
    }
    pos_ += n;
    return n;
  }

 private:
  static constexpr std::size_t kWindow = 16 * 1024;

  void fill() {
    start_ = pos_;
    filled_ = static_cast<std::size_t>(std::min<std::uint64_t>(kWindow, size_ - pos_));
    pread_all(window_.data(), filled_, start_);
  }
  void pread_all(std::uint8_t* out, std::size_t n, std::uint64_t at) const {
    std::size_t done = 0;
    while (done < n) {
      const ssize_t k = ::pread(fd_, out + done, n - done, static_cast<off_t>(at + done));
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) fail(fmt::format("read error at byte {}: {}", at + done, std::strerror(errno)));
      if (k == 0) fail(fmt::format("file shrank to {} bytes while being read", at + done));
      done += static_cast<std::size_t>(k);
    }
  }

  int fd_;
  std::vector<std::uint8_t> window_;
  std::uint64_t start_ = 0;
  std::size_t filled_ = 0;
};

// Deflated Explicit VR Little Endian: the data set after the meta header is a raw deflate stream
// (RFC 1951, as DCMTK reads it). Inflated through a window; skipping inflates and discards.
class InflateSource final : public Source {
 public:
  InflateSource(Source& raw, std::uint64_t limit) : raw_(raw), limit_(limit), in_(kChunk), out_(2 * kChunk) {
    if (inflateInit2(&z_, -MAX_WBITS) != Z_OK) fail("cannot start inflating the deflated data set");
  }
  ~InflateSource() override { inflateEnd(&z_); }
  InflateSource(const InflateSource&) = delete;
  InflateSource& operator=(const InflateSource&) = delete;

  std::uint64_t remaining() const override { return kUnbounded; }
  bool peek(std::uint8_t* out, std::size_t n) override {
    while (have() < n && !ended_) more();
    if (have() < n) return false;
    std::memcpy(out, out_.data() + head_, n);
    return true;
  }
  bool skip(std::uint64_t n) override {
    while (n > 0) {
      if (have() == 0) {
        if (ended_) return false;
        more();
        continue;
      }
      const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(n, have()));
      head_ += k;
      pos_ += k;
      n -= k;
    }
    return true;
  }
  std::size_t read_some(std::uint8_t* out, std::size_t max) override {
    if (have() == 0 && !ended_) more();
    const std::size_t n = std::min(max, have());
    std::memcpy(out, out_.data() + head_, n);
    head_ += n;
    pos_ += n;
    return n;
  }
  void seek(std::uint64_t) override { fail("internal: seek in an inflated stream"); }

  std::uint64_t inflated() const { return total_; }
  bool truncated() const { return truncated_; }

 private:
  static constexpr std::size_t kChunk = 64 * 1024;

  std::size_t have() const { return tail_ - head_; }

  void more() {
    if (head_ > 0) {
      std::memmove(out_.data(), out_.data() + head_, have());
      tail_ -= head_;
      head_ = 0;
    }
    if (z_.avail_in == 0 && !raw_done_) {
      const std::size_t k = raw_.read_some(in_.data(), in_.size());
      raw_done_ = k == 0;
      z_.next_in = in_.data();
      z_.avail_in = static_cast<uInt>(k);
    }
    z_.next_out = out_.data() + tail_;
    z_.avail_out = static_cast<uInt>(out_.size() - tail_);
    const int rc = inflate(&z_, Z_NO_FLUSH);
    const std::size_t produced = out_.size() - tail_ - z_.avail_out;
    tail_ += produced;
    total_ += produced;
    if (total_ > limit_) fail_limit(fmt::format("deflated data set inflates beyond the {} limit", mib(limit_)));
    if (rc == Z_STREAM_END) {
      ended_ = true;
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      fail(fmt::format("deflated data set is corrupt (zlib: {})", z_.msg ? z_.msg : "error"));
    } else if (produced == 0 && raw_done_ && z_.avail_in == 0) {
      ended_ = truncated_ = true;  // the file ends before the deflate stream does
    }
  }

  Source& raw_;
  std::uint64_t limit_;
  z_stream z_{};
  std::vector<std::uint8_t> in_, out_;
  std::size_t head_ = 0, tail_ = 0;
  std::uint64_t total_ = 0;
  bool ended_ = false, truncated_ = false, raw_done_ = false;
};

// ---- Encodings and value representations.

struct Syntax {
  bool explicit_vr = true;
  bool big_endian = false;
};

constexpr Syntax kImplicitLittle{false, false};

std::string syntax_name(Syntax s) {
  return fmt::format("{} VR {} endian", s.explicit_vr ? "explicit" : "implicit", s.big_endian ? "big" : "little");
}

std::uint16_t u16(const std::uint8_t* b, bool big) {
  return big ? static_cast<std::uint16_t>(b[0] << 8 | b[1]) : static_cast<std::uint16_t>(b[1] << 8 | b[0]);
}
std::uint32_t u32(const std::uint8_t* b, bool big) {
  return big ? (std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 | std::uint32_t{b[2]} << 8 | b[3])
             : (std::uint32_t{b[3]} << 24 | std::uint32_t{b[2]} << 16 | std::uint32_t{b[1]} << 8 | b[0]);
}
std::uint32_t tag_at(const std::uint8_t* b, bool big) {
  return std::uint32_t{u16(b, big)} << 16 | u16(b + 2, big);
}

// How an explicit VR shapes the header and what an undefined length means.
enum class Vr : std::uint8_t {
  implicit,    // implicit VR, or an item/delimiter tag (no VR field)
  sq,          // SQ
  ob_ow,       // OB, OW: Pixel Data (fragments) when of undefined length
  un,          // UN and unknown upper-case VRs: 4-byte length; undefined length is a sequence in
               // implicit VR little endian (CP-246), a defined one may hold one (GDCM reads it so)
  ox,          // "OX": DCMTK reads it as OW for Pixel Data
  long_other,  // OD OF OL OV SV UC UR UT UV: 4-byte length
  short_std,   // standard VRs with a 2-byte length
  short_odd,   // "??", digits, blanks, NUL: DCMTK assumes a 2-byte length
};

Vr classify_vr(std::uint8_t c1, std::uint8_t c2) {
  static constexpr std::array<std::string_view, 21> kShort{"AE", "AS", "AT", "CS", "DA", "DS", "DT",
                                                            "FD", "FL", "IS", "LO", "LT", "PN", "SH",
                                                            "SL", "SS", "ST", "TM", "UI", "UL", "US"};
  static constexpr std::array<std::string_view, 9> kLong{"OD", "OF", "OL", "OV", "SV", "UC", "UR", "UT", "UV"};
  const char name[2] = {static_cast<char>(c1), static_cast<char>(c2)};
  const std::string_view vr(name, 2);
  if (vr == "SQ") return Vr::sq;
  if (vr == "OB" || vr == "OW") return Vr::ob_ow;
  if (vr == "UN") return Vr::un;
  if (vr == "OX") return Vr::ox;
  if (std::find(kLong.begin(), kLong.end(), vr) != kLong.end()) return Vr::long_other;
  if (std::find(kShort.begin(), kShort.end(), vr) != kShort.end()) return Vr::short_std;
  const auto upper = [](std::uint8_t c) { return c >= 'A' && c <= 'Z'; };
  const auto lower = [](std::uint8_t c) { return c >= 'a' && c <= 'z'; };
  if (upper(c1) && upper(c2)) return Vr::un;  // a VR newer than the reader: 4-byte length
  // Lower-case names collide with DCMTK's internal VRs ("ox", "xs", ...), whose length field
  // differs between DCMTK versions: refused (the caller reports it).
  if (lower(c1) || lower(c2)) return Vr::implicit;
  return Vr::short_odd;
}

bool is_standard_vr(std::uint8_t c1, std::uint8_t c2) {
  const Vr v = classify_vr(c1, c2);
  return v == Vr::sq || v == Vr::ob_ow || v == Vr::long_other || v == Vr::short_std ||
         (c1 == 'U' && c2 == 'N');
}

bool has_long_length(Vr v) { return v == Vr::sq || v == Vr::ob_ow || v == Vr::un || v == Vr::ox || v == Vr::long_other; }

// Binary values that DCMTK and GDCM read by their dictionary as plain data, never as a sequence:
// no need to look for items in them.
bool is_bulk_data(std::uint32_t tag) {
  const std::uint32_t group = tag >> 16, element = tag & 0xFFFFu;
  return tag == kPixelData || tag == 0x7FE00008u || tag == 0x7FE00009u ||
         ((group & 0xFF01u) == 0x6000u && element == 0x3000u);  // Overlay Data (60xx,3000)
}

// The standard transfer syntaxes DCMTK 3.6.7 knows (dcxfer.h): everything else it guesses.
enum class Encoding : std::uint8_t { implicit_little, explicit_little, explicit_big, deflated, unknown };

Encoding encoding_of(std::string_view uid) {
  if (uid == "1.2.840.10008.1.2" || uid == "1.2.840.113619.5.2") return Encoding::implicit_little;
  if (uid == "1.2.840.10008.1.2.1" || uid == "1.2.840.10008.1.2.5") return Encoding::explicit_little;
  if (uid == "1.2.840.10008.1.2.2") return Encoding::explicit_big;
  if (uid == "1.2.840.10008.1.2.1.99" || uid == "1.2.840.10008.1.2.4.95") return Encoding::deflated;
  constexpr std::string_view jpeg = "1.2.840.10008.1.2.4.";
  if (uid.substr(0, jpeg.size()) == jpeg) {
    const std::string_view n = uid.substr(jpeg.size());
    int v = 0;
    for (char c : n) {
      if (c < '0' || c > '9' || n.size() > 3) return Encoding::unknown;
      v = v * 10 + (c - '0');
    }
    if (n.empty() || n.front() == '0') return Encoding::unknown;
    if ((v >= 50 && v <= 66) || v == 70 || v == 80 || v == 81 || (v >= 90 && v <= 94) || (v >= 100 && v <= 108))
      return Encoding::explicit_little;
  }
  return Encoding::unknown;
}

// ---- The scan: an explicit stack of open items and sequences.

enum class Kind : std::uint8_t { top, item, sequence, fragments };

struct Frame {
  Kind kind;
  Syntax syntax;
  std::uint64_t end;    // defined length: where it ends; kUnbounded: undefined length (or the top)
  std::uint64_t bound;  // the nearest end of this or an enclosing frame (kUnbounded: the data's end)
  std::uint32_t tag;    // the sequence's tag (an item's: its sequence's)
  std::uint64_t start;  // byte of its header
};

// How the top level ends: at the end of the data, or (meta header) after the group length's
// bytes, or before the first tag of another group.
enum class TopEnd : std::uint8_t { data, meta_length, meta_group };

struct Header {
  std::uint32_t tag = 0;
  Vr vr = Vr::implicit;
  std::uint8_t vr_name[2] = {0, 0};
  std::uint32_t length = 0;
};

class Scanner {
 public:
  Scanner(Source& src, const ScanLimits& limits, ScanResult& result, const char* where)
      : src_(src), limits_(limits), r_(result), where_(where) {
    stack_.reserve(2 * static_cast<std::size_t>(std::max(limits.max_depth, 0)) + 4);
  }

  // Scans the File Meta Information starting at the current position (group 0002 next).
  void meta(Syntax syntax) {
    meta_ = true;
    top_end_ = TopEnd::meta_group;
    run(syntax);
  }
  // Scans the data set to the end of the data.
  void data_set(Syntax syntax) {
    meta_ = false;
    top_end_ = TopEnd::data;
    run(syntax);
    finish_image();
  }
  const std::string& transfer_syntax_uid() const { return ts_uid_; }

 private:
  void run(Syntax syntax) {
    stack_.assign(1, Frame{Kind::top, syntax, kUnbounded, kUnbounded, 0, src_.pos()});
    depth_ = 0;
    top_elements_ = 0;
    while (!stack_.empty()) {
      const Frame& f = stack_.back();
      const std::uint64_t at = src_.pos();
      if (f.end != kUnbounded && at >= f.end) {
        pop();
        continue;
      }
      if (f.bound != kUnbounded && at >= f.bound)
        fail(fmt::format("{} {} has no delimiter before the end of its enclosing item (byte {}{})",
                         f.kind == Kind::item ? "item of" : "sequence", tag_text(f.tag), at, where_));
      switch (f.kind) {
        case Kind::top:
          if (top_ended()) return;
          element();
          break;
        case Kind::item: element(); break;
        case Kind::sequence: item(); break;
        case Kind::fragments: fragment(); break;
      }
    }
  }

  bool top_ended() {
    switch (top_end_) {
      case TopEnd::data: return src_.at_end();
      case TopEnd::meta_length: return src_.pos() >= meta_end_ || src_.at_end();
      case TopEnd::meta_group: {
        std::uint8_t b[2];
        if (!src_.peek(b, 2)) return true;
        return !((b[0] == 0x02 && b[1] == 0x00) || (b[0] == 0x00 && b[1] == 0x02));
      }
    }
    return true;
  }

  void pop() {
    if (stack_.back().kind == Kind::sequence || stack_.back().kind == Kind::fragments) --depth_;
    stack_.pop_back();
  }

  void open(Kind kind, Syntax syntax, std::uint64_t end, std::uint32_t tag, std::uint64_t at) {
    if (kind == Kind::sequence || kind == Kind::fragments) {
      if (++depth_ > limits_.max_depth)
        fail_limit(fmt::format("sequence nesting deeper than {} at byte {}{} in {}", limits_.max_depth, at, where_,
                         tag_text(tag)));
      r_.max_depth = std::max(r_.max_depth, depth_);
    }
    const std::uint64_t parent_bound = stack_.back().bound;
    stack_.push_back(Frame{kind, syntax, end, std::min(end, parent_bound), tag, at});
  }

  void count(std::uint64_t at) {
    if (++r_.elements > limits_.max_elements)
      fail_limit(fmt::format("more than {} data elements (at byte {}{})", limits_.max_elements, at, where_));
  }

  // Bytes a value or header starting at pos() may take: up to the enclosing bound and the data's end.
  std::uint64_t room(const Frame& f) const {
    const std::uint64_t pos = src_.pos();
    const std::uint64_t to_bound = f.bound == kUnbounded ? kUnbounded : f.bound - pos;
    return std::min(to_bound, src_.remaining());
  }

  [[noreturn]] void truncated_header(const Frame& f, std::uint64_t at, unsigned size = 8) {
    if (f.bound != kUnbounded && at + size > f.bound)
      fail(fmt::format("element header at byte {}{} crosses the end of the item of {}", at, where_, tag_text(f.tag)));
    if (src_.at_end()) {
      switch (f.kind) {
        case Kind::item: fail(fmt::format("truncated: data ends inside an item of {} (no item delimiter)", tag_text(f.tag)));
        case Kind::sequence:
          fail(fmt::format("truncated: data ends inside sequence {} begun at byte {}{} (no sequence delimiter)", tag_text(f.tag),
                           f.start, where_));
        case Kind::fragments: fail("truncated: data ends inside the encapsulated Pixel Data (no sequence delimiter)");
        case Kind::top: break;
      }
    }
    fail(fmt::format("truncated: data ends inside the element header at byte {}{}", at, where_));
  }

  // Checks that `length` bytes of value fit where they are declared.
  void check_fits(const Frame& f, std::uint32_t tag, std::uint32_t length, std::uint64_t at) {
    if (src_.remaining() == kUnbounded && src_.pos() + length > limits_.max_inflated_bytes)
      fail_limit(fmt::format("declared length {} of {} at byte {}{} exceeds the {} inflated-size limit", length,
                       tag_text(tag), at, where_, mib(limits_.max_inflated_bytes)));
    const std::uint64_t left = room(f);
    if (length <= left) return;
    if (left == src_.remaining())  // the data ends first: cut short, or a length that lies
      fail(fmt::format("truncated: {} at byte {}{} needs {} bytes, {} left", tag_text(tag), at, where_, length, left));
    fail(fmt::format("declared length {} of {} at byte {}{} exceeds the {} bytes left in its item", length,
                     tag_text(tag), at, where_, left));
  }

  Header header(const Frame& f, std::uint64_t at) {
    std::uint8_t b[12];
    if (room(f) < 8 || !src_.peek(b, 8)) truncated_header(f, at);
    Header h;
    const bool big = f.syntax.big_endian;
    h.tag = tag_at(b, big);
    const bool no_vr = h.tag == kItem || h.tag == kItemDelimiter || h.tag == kSequenceDelimiter;
    if (!f.syntax.explicit_vr || no_vr) {
      h.length = u32(b + 4, big);
      src_.skip(8);
      return h;
    }
    h.vr_name[0] = b[4];
    h.vr_name[1] = b[5];
    h.vr = classify_vr(b[4], b[5]);
    if (h.vr == Vr::implicit)
      fail(fmt::format("invalid VR '{}{}' of {} at byte {}{}", static_cast<char>(b[4]), static_cast<char>(b[5]),
                       tag_text(h.tag), at, where_));
    if (!has_long_length(h.vr)) {
      h.length = u16(b + 6, big);
      src_.skip(8);
      return h;
    }
    if (room(f) < 12 || !src_.peek(b, 12)) truncated_header(f, at, 12);
    h.length = u32(b + 8, big);
    src_.skip(12);
    return h;
  }

  // A data element in the top level or an item.
  void element() {
    const Frame f = stack_.back();
    const std::uint64_t at = src_.pos();
    const Header h = header(f, at);
    if ((h.tag >> 16) == 0xFFFEu) {
      if (h.tag == kItemDelimiter && f.kind == Kind::item && f.end == kUnbounded) {
        pop();
        return;
      }
      if (h.tag == kItemDelimiter && f.kind == Kind::item)
        fail(fmt::format("item delimiter at byte {}{} inside a defined-length item of {}", at, where_, tag_text(f.tag)));
      if (h.tag == kItemDelimiter) fail(fmt::format("item delimiter at byte {}{} outside an item", at, where_));
      if (h.tag == kItem)
        fail(fmt::format("item tag (FFFE,E000) at byte {}{} outside a sequence", at, where_));
      if (h.tag == kSequenceDelimiter && f.kind == Kind::item)
        fail(fmt::format("sequence delimiter at byte {}{} inside an item of {}", at, where_, tag_text(f.tag)));
      if (h.tag == kSequenceDelimiter)
        fail(fmt::format("sequence delimiter at byte {}{} outside a sequence", at, where_));
      fail(fmt::format("invalid tag {} at byte {}{}", tag_text(h.tag), at, where_));
    }
    count(at);
    if (f.kind == Kind::top) ++top_elements_;
    if (h.length == kUndefinedLength) {
      undefined_length(f, h, at);
      return;
    }
    check_fits(f, h.tag, h.length, at);
    const std::uint64_t value_end = src_.pos() + h.length;
    if (h.vr == Vr::sq) {
      open(Kind::sequence, f.syntax, value_end, h.tag, at);
      return;
    }
    // Implicit VR (the dictionary decides) and UN: a value that starts with an item tag may be
    // read as a sequence, so it is scanned as one.
    const bool may_hold_items = !f.syntax.explicit_vr || h.vr == Vr::un || h.vr == Vr::short_odd;
    if (may_hold_items && h.length >= 4 && !is_bulk_data(h.tag)) {
      const Syntax items = f.syntax.explicit_vr ? kImplicitLittle : f.syntax;
      std::uint8_t b[4];
      src_.peek(b, 4);
      const std::uint32_t first = tag_at(b, items.big_endian);
      // An empty sequence may be just its delimiter (8 bytes).
      if (first == kItem || (first == kSequenceDelimiter && h.length == 8)) {
        open(Kind::sequence, items, value_end, h.tag, at);
        return;
      }
      if (first == kSequenceDelimiter || first == kItemDelimiter)
        fail(fmt::format("value of {} at byte {}{} starts with a delimiter", tag_text(h.tag), at, where_));
    }
    if (f.kind == Kind::top) {
      if (meta_ && top_elements_ == 1 && h.tag == kGroupLength) return group_length(f, h, at);
      if (meta_ && h.tag == kTransferSyntaxUid && ts_uid_.empty()) return transfer_syntax(h);
      if (!meta_ && image_attribute(f, h)) return;
    }
    if (!src_.skip(h.length))
      fail(fmt::format("truncated: data ends inside the value of {} at byte {}{}", tag_text(h.tag), at, where_));
  }

  void undefined_length(const Frame& f, const Header& h, std::uint64_t at) {
    if (!f.syntax.explicit_vr) {  // the dictionary decides: Pixel Data has fragments, the rest is read as SQ
      open(h.tag == kPixelData ? Kind::fragments : Kind::sequence, f.syntax, kUnbounded, h.tag, at);
      return;
    }
    switch (h.vr) {
      case Vr::sq: open(Kind::sequence, f.syntax, kUnbounded, h.tag, at); return;
      case Vr::ob_ow:  // DCMTK 3.6.7 refuses other OB/OW of undefined length; older ones read a sequence
        open(h.tag == kPixelData ? Kind::fragments : Kind::sequence, f.syntax, kUnbounded, h.tag, at);
        return;
      case Vr::ox:
        if (h.tag == kPixelData) {
          open(Kind::fragments, f.syntax, kUnbounded, h.tag, at);
          return;
        }
        [[fallthrough]];
      case Vr::un:
      case Vr::long_other:  // UT, UC, ...: DCMTK fails on them; scanned as the deepest reading
        open(Kind::sequence, kImplicitLittle, kUnbounded, h.tag, at);
        return;
      default:
        fail(fmt::format("undefined length for VR {}{} of {} at byte {}{}", static_cast<char>(h.vr_name[0]),
                         static_cast<char>(h.vr_name[1]), tag_text(h.tag), at, where_));
    }
  }

  // An item (or the sequence's delimiter) in a sequence.
  void item() {
    const Frame f = stack_.back();
    const std::uint64_t at = src_.pos();
    std::uint8_t b[8];
    if (room(f) < 8 || !src_.peek(b, 8)) truncated_header(f, at);
    const std::uint32_t tag = tag_at(b, f.syntax.big_endian);
    const std::uint32_t length = u32(b + 4, f.syntax.big_endian);
    src_.skip(8);
    if (tag == kItem) {
      count(at);
      if (length == kUndefinedLength) {
        open(Kind::item, f.syntax, kUnbounded, f.tag, at);
      } else {
        check_fits(f, tag, length, at);
        open(Kind::item, f.syntax, src_.pos() + length, f.tag, at);
      }
      return;
    }
    if (tag == kSequenceDelimiter) {
      // DCMTK ends a sequence at its delimiter even when the sequence has a defined length; that
      // agrees with the length only when the delimiter is its last 8 bytes.
      if (f.end != kUnbounded && src_.pos() != f.end)
        fail(fmt::format("sequence delimiter at byte {}{} inside defined-length sequence {}", at, where_,
                         tag_text(f.tag)));
      pop();
      return;
    }
    fail(fmt::format("{} at byte {}{} where an item of sequence {} was expected", tag_text(tag), at, where_,
                     tag_text(f.tag)));
  }

  // A fragment (or the delimiter) of encapsulated pixel data.
  void fragment() {
    const Frame f = stack_.back();
    const std::uint64_t at = src_.pos();
    std::uint8_t b[8];
    if (room(f) < 8 || !src_.peek(b, 8)) truncated_header(f, at);
    const std::uint32_t tag = tag_at(b, f.syntax.big_endian);
    const std::uint32_t length = u32(b + 4, f.syntax.big_endian);
    src_.skip(8);
    if (tag == kSequenceDelimiter) {
      pop();
      return;
    }
    if (tag != kItem)
      fail(fmt::format("{} at byte {}{} where a fragment item of the encapsulated Pixel Data was expected",
                       tag_text(tag), at, where_));
    if (length == kUndefinedLength)
      fail(fmt::format("Pixel Data fragment of undefined length at byte {}{}", at, where_));
    count(at);
    check_fits(f, tag, length, at);
    if (!src_.skip(length)) fail(fmt::format("truncated: data ends inside the Pixel Data fragment at byte {}{}", at, where_));
  }

  // (0002,0000) as the first meta element: where the meta header ends, as DCMTK reads it.
  void group_length(const Frame& f, const Header& h, std::uint64_t at) {
    if (f.syntax.explicit_vr && !(h.vr_name[0] == 'U' && h.vr_name[1] == 'L'))
      fail(fmt::format("File Meta Information Group Length at byte {} has VR {}{}", at, static_cast<char>(h.vr_name[0]),
                       static_cast<char>(h.vr_name[1])));
    if (h.length == 0) {  // DCMTK then looks for group 0002 tags
      return;
    }
    std::uint8_t b[4];
    if (h.length != 4)
      fail(fmt::format("File Meta Information Group Length at byte {} has length {}", at, h.length));
    value(b, 4, 4);
    meta_end_ = src_.pos() + u32(b, false);
    top_end_ = TopEnd::meta_length;
  }

  // Reads the first min(length, size) bytes of a value into b and skips the rest.
  std::size_t value(std::uint8_t* b, std::size_t size, std::uint32_t length) {
    const std::size_t n = std::min<std::size_t>(length, size);
    if (!src_.read(b, n) || !src_.skip(length - n))
      fail(fmt::format("truncated: data ends inside a value at byte {}{}", src_.pos(), where_));
    return n;
  }

  void transfer_syntax(const Header& h) {
    std::uint8_t b[128];
    const std::size_t n = value(b, sizeof b, h.length);
    std::string uid(reinterpret_cast<const char*>(b), n);
    while (!uid.empty() && (uid.back() == '\0' || uid.back() == ' ')) uid.pop_back();
    const auto first = uid.find_first_not_of(' ');
    ts_uid_ = first == std::string::npos ? std::string() : uid.substr(first);
    if (ts_uid_.empty()) ts_uid_ = " ";  // present but empty: only the first occurrence counts
  }

  // Rows, Columns, Number of Frames, Samples per Pixel and Bits Allocated of the data set (the
  // first occurrence, as DCMTK keeps it). Returns whether the value was consumed.
  bool image_attribute(const Frame& f, const Header& h) {
    int* target = nullptr;
    switch (h.tag) {
      case 0x00280002u: target = &r_.samples_per_pixel; break;
      case 0x00280010u: target = &r_.rows; break;
      case 0x00280011u: target = &r_.columns; break;
      case 0x00280100u: target = &r_.bits_allocated; break;
      case 0x00280008u: {
        if (frames_seen_) return false;
        frames_seen_ = true;
        std::uint8_t b[64];
        const std::size_t n = value(b, sizeof b, h.length);
        r_.number_of_frames = parse_frames(std::string_view(reinterpret_cast<const char*>(b), n));
        return true;
      }
      default: return false;
    }
    if (h.length < 2 || *target != 0) return false;
    std::uint8_t b[2];
    value(b, 2, h.length);
    // UN values are little endian whatever the data set's byte order.
    *target = u16(b, f.syntax.big_endian && h.vr != Vr::un);
    return true;
  }

  // Number of Frames (IS): the first value's integer part; unreadable or below 1 counts as 1, more
  // digits than fit count as unbounded (the pixel limit then refuses the file).
  static std::int64_t parse_frames(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\0')) ++i;
    if (i < s.size() && s[i] == '+') ++i;
    std::int64_t v = 0;
    bool any = false;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      any = true;
      v = v * 10 + (s[i] - '0');
      if (v > (std::int64_t{1} << 40)) return std::int64_t{1} << 40;
    }
    return any && v >= 1 ? v : 1;
  }

  void finish_image() {
    if (r_.rows <= 0 || r_.columns <= 0) return;
    const unsigned __int128 frames = r_.number_of_frames > 0 ? static_cast<std::uint64_t>(r_.number_of_frames) : 1;
    const unsigned __int128 samples = r_.samples_per_pixel > 0 ? static_cast<unsigned>(r_.samples_per_pixel) : 1;
    const unsigned __int128 bits = r_.bits_allocated > 0 ? static_cast<unsigned>(r_.bits_allocated) : 1;
    const unsigned __int128 total = (static_cast<unsigned __int128>(r_.rows) * static_cast<unsigned>(r_.columns) *
                                         frames * samples * bits + 7) / 8;
    r_.pixel_bytes = total > ~std::uint64_t{0} ? ~std::uint64_t{0} : static_cast<std::uint64_t>(total);
    if (total > limits_.max_pixel_bytes)
      fail_limit(fmt::format("image of {} bytes (Rows {} x Columns {} x {} frames x {} samples x {} bits) exceeds the {} "
                       "pixel limit",
                       r_.pixel_bytes, r_.rows, r_.columns, static_cast<std::uint64_t>(frames),
                       static_cast<unsigned>(samples), static_cast<unsigned>(bits), mib(limits_.max_pixel_bytes)));
  }

  Source& src_;
  const ScanLimits& limits_;
  ScanResult& r_;
  const char* where_;  // "" or " of the inflated data set": byte offsets are in that stream
  std::vector<Frame> stack_;
  int depth_ = 0;
  bool meta_ = false;
  TopEnd top_end_ = TopEnd::data;
  std::uint64_t meta_end_ = 0;
  std::uint64_t top_elements_ = 0;
  std::string ts_uid_;
  bool frames_seen_ = false;
};

// The encoding DCMTK guesses for a data set from its first element (DcmItem::checkTransferSyntax):
// explicit VR when bytes 4-5 name a standard VR. The byte order depends on its data dictionary,
// so both are returned, the likelier first.
std::vector<Syntax> guesses(Source& src) {
  std::uint8_t b[6];
  if (!src.peek(b, 6)) return {Syntax{false, false}};
  const bool explicit_vr = std::isalpha(b[4]) && std::isalpha(b[5]) && is_standard_vr(b[4], b[5]);
  const std::uint16_t little = u16(b, false), big = u16(b, true);
  const bool big_likelier = little > 0xFF && big <= 0xFF;
  return {Syntax{explicit_vr, big_likelier}, Syntax{explicit_vr, !big_likelier}};
}

const char* uid_of(Syntax s) {
  if (!s.explicit_vr) return s.big_endian ? "" : "1.2.840.10008.1.2";
  return s.big_endian ? "1.2.840.10008.1.2.2" : "1.2.840.10008.1.2.1";
}

void scan_data_set_guessed(Source& src, const ScanLimits& limits, ScanResult& r) {
  r.syntax_guessed = true;
  const std::uint64_t start = src.pos();
  const ScanResult before = r;
  std::string first_failure;
  std::optional<ScanResult> passed;
  for (const Syntax s : guesses(src)) {
    ScanResult attempt = before;
    src.seek(start);
    try {
      Scanner(src, limits, attempt, "").data_set(s);
    } catch (const Failure& f) {
      // A limit met in either reading refuses the file: DCMTK might read it that way.
      if (f.limit) fail_limit(f.reason + " (reading the data set as " + syntax_name(s) + ")");
      if (first_failure.empty()) first_failure = f.reason;
      continue;
    }
    if (!passed) {
      attempt.syntax = syntax_name(s);
      if (attempt.transfer_syntax_uid.empty()) attempt.transfer_syntax_uid = uid_of(s);
      passed = std::move(attempt);
    }
  }
  if (!passed)
    fail(fmt::format("{}: {}", r.has_meta ? "transfer syntax unknown, data set unreadable" : "no DICOM meta header and "
                                                                                            "no readable data set",
                     first_failure));
  r = std::move(*passed);
}

void scan(Source& src, std::uint64_t size, const ScanLimits& limits, ScanResult& r) {
  r.bytes = size;
  if (size > limits.max_file_bytes)
    fail_limit(fmt::format("file of {} bytes exceeds the {} limit", size, mib(limits.max_file_bytes)));
  if (size == 0) fail("empty file");
  std::uint8_t pre[132];
  if (src.peek(pre, 132) && std::memcmp(pre + 128, "DICM", 4) == 0) {
    r.has_preamble = true;
    src.skip(132);
  }
  std::uint8_t b[6];
  std::string ts;
  if (src.peek(b, 6) && b[0] == 0x02 && b[1] == 0x00) {
    r.has_meta = true;
    const bool explicit_vr = std::isalpha(b[4]) && std::isalpha(b[5]) && is_standard_vr(b[4], b[5]);
    Scanner meta(src, limits, r, "");
    meta.meta(Syntax{explicit_vr, false});
    ts = meta.transfer_syntax_uid();
    if (ts == " ") ts.clear();
    r.transfer_syntax_uid = ts;
  } else if (src.peek(b, 2) && b[0] == 0x00 && b[1] == 0x02) {
    fail("File Meta Information is big endian");
  }
  const Encoding enc = encoding_of(ts);
  switch (enc) {
    case Encoding::implicit_little:
    case Encoding::explicit_little:
    case Encoding::explicit_big: {
      const Syntax s{enc != Encoding::implicit_little, enc == Encoding::explicit_big};
      r.syntax = syntax_name(s);
      Scanner(src, limits, r, "").data_set(s);
      return;
    }
    case Encoding::deflated: {
      r.syntax = "deflated explicit VR little endian";
      InflateSource inflated(src, limits.max_inflated_bytes);
      try {
        Scanner(inflated, limits, r, " of the inflated data set").data_set(Syntax{true, false});
      } catch (const Failure&) {
        r.inflated_bytes = inflated.inflated();
        if (inflated.truncated()) fail("deflated data set is truncated");
        throw;
      }
      r.inflated_bytes = inflated.inflated();
      if (inflated.truncated()) fail("deflated data set is truncated");
      return;
    }
    case Encoding::unknown: scan_data_set_guessed(src, limits, r); return;
  }
}

ScanResult run_scan(Source& src, std::uint64_t size, const ScanLimits& limits) {
  ScanResult r;
  try {
    scan(src, size, limits, r);
    r.ok = true;
  } catch (const Failure& f) {
    r.ok = false;
    r.reason = f.reason;
  }
  return r;
}

std::mutex& defaults_mutex() {
  static std::mutex m;
  return m;
}
ScanLimits& defaults() {
  static ScanLimits l;
  return l;
}

}  // namespace

ScanResult scan_buffer(const std::uint8_t* data, std::size_t size, const ScanLimits& limits) {
  MemorySource src(data, data ? size : 0);
  return run_scan(src, data ? size : 0, limits);
}

ScanResult scan_file(const std::filesystem::path& file, const ScanLimits& limits) {
  ScanResult r;
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r.reason = fmt::format("cannot open: {}", std::strerror(errno));
    return r;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    r.reason = "not a regular file";
    return r;
  }
  FileSource src(fd, static_cast<std::uint64_t>(st.st_size));
  r = run_scan(src, static_cast<std::uint64_t>(st.st_size), limits);
  ::close(fd);
  return r;
}

void set_default_scan_limits(const ScanLimits& limits) {
  std::lock_guard lock(defaults_mutex());
  defaults() = limits;
}

ScanLimits default_scan_limits() {
  std::lock_guard lock(defaults_mutex());
  return defaults();
}

void require_scan(const std::filesystem::path& file, const ScanLimits& limits, const std::string& what) {
  const ScanResult r = scan_file(file, limits);
  if (!r.ok) throw DicomError(what.empty() ? r.reason : what + ": " + r.reason);
}

}  // namespace dicom
