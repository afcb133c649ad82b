#pragma once
// DICOM bytes written by hand, for tests that need what no toolkit writes: sequences nested
// thousands deep, lengths that lie, delimiters out of place. Explicit or implicit VR, either byte
// order; a Part 10 wrapper with an explicit VR little endian meta header.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace testsupport {

using Bytes = std::vector<std::uint8_t>;

constexpr const char* kExplicitLE = "1.2.840.10008.1.2.1";
constexpr const char* kImplicitLE = "1.2.840.10008.1.2";
constexpr const char* kExplicitBE = "1.2.840.10008.1.2.2";
constexpr const char* kDeflated = "1.2.840.10008.1.2.1.99";
constexpr const char* kJpegBaseline = "1.2.840.10008.1.2.4.50";
constexpr const char* kSecondaryCapture = "1.2.840.10008.5.1.4.1.1.7";

inline bool long_vr(const std::string& vr) {
  for (const char* v : {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
    if (vr == v) return true;
  return false;
}

inline std::string padded(std::string s, char pad = '\0') {
  if (s.size() % 2) s.push_back(pad);
  return s;
}

// Writes data elements in one encoding.
class Writer {
 public:
  explicit Writer(bool explicit_vr = true, bool big_endian = false) : explicit_(explicit_vr), big_(big_endian) {}

  Bytes bytes;

  void u16(std::uint16_t v) {
    if (big_) {
      bytes.push_back(static_cast<std::uint8_t>(v >> 8));
      bytes.push_back(static_cast<std::uint8_t>(v));
    } else {
      bytes.push_back(static_cast<std::uint8_t>(v));
      bytes.push_back(static_cast<std::uint8_t>(v >> 8));
    }
  }
  void u32(std::uint32_t v) {
    if (big_) {
      u16(static_cast<std::uint16_t>(v >> 16));
      u16(static_cast<std::uint16_t>(v));
    } else {
      u16(static_cast<std::uint16_t>(v));
      u16(static_cast<std::uint16_t>(v >> 16));
    }
  }
  void tag(std::uint16_t g, std::uint16_t e) {
    u16(g);
    u16(e);
  }
  void header(std::uint16_t g, std::uint16_t e, const std::string& vr, std::uint32_t length) {
    tag(g, e);
    if (!explicit_) return u32(length);
    bytes.push_back(static_cast<std::uint8_t>(vr[0]));
    bytes.push_back(static_cast<std::uint8_t>(vr[1]));
    if (long_vr(vr)) {
      u16(0);
      u32(length);
    } else {
      u16(static_cast<std::uint16_t>(length));
    }
  }
  void element(std::uint16_t g, std::uint16_t e, const std::string& vr, const std::string& value) {
    header(g, e, vr, static_cast<std::uint32_t>(value.size()));
    append(value);
  }
  void text(std::uint16_t g, std::uint16_t e, const std::string& vr, const std::string& value) {
    element(g, e, vr, padded(value, vr == "UI" ? '\0' : ' '));
  }
  void us(std::uint16_t g, std::uint16_t e, std::uint16_t v) {
    header(g, e, "US", 2);
    u16(v);
  }
  void undefined(std::uint16_t g, std::uint16_t e, const std::string& vr) { header(g, e, vr, 0xFFFFFFFFu); }
  void item(std::uint32_t length = 0xFFFFFFFFu) {
    tag(0xFFFE, 0xE000);
    u32(length);
  }
  void item_end() {
    tag(0xFFFE, 0xE00D);
    u32(0);
  }
  void sequence_end() {
    tag(0xFFFE, 0xE0DD);
    u32(0);
  }
  void append(const std::string& s) { bytes.insert(bytes.end(), s.begin(), s.end()); }
  void append(const Bytes& b) { bytes.insert(bytes.end(), b.begin(), b.end()); }

 private:
  bool explicit_, big_;
};

// Preamble, "DICM" and the File Meta Information (explicit VR little endian) naming `ts`.
inline Bytes meta_header(const std::string& ts) {
  Writer m;
  m.element(0x0002, 0x0001, "OB", std::string("\0\1", 2));
  m.text(0x0002, 0x0002, "UI", kSecondaryCapture);
  m.text(0x0002, 0x0003, "UI", "1.2.826.0.1.3680043.10.543.1.1");
  m.text(0x0002, 0x0010, "UI", ts);
  m.text(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.543");
  Writer g;
  g.header(0x0002, 0x0000, "UL", 4);
  g.u32(static_cast<std::uint32_t>(m.bytes.size()));
  Bytes out(128, 0);
  for (char c : std::string("DICM")) out.push_back(static_cast<std::uint8_t>(c));
  out.insert(out.end(), g.bytes.begin(), g.bytes.end());
  out.insert(out.end(), m.bytes.begin(), m.bytes.end());
  return out;
}

inline Bytes part10(const Bytes& data_set, const std::string& ts) {
  Bytes out = meta_header(ts);
  out.insert(out.end(), data_set.begin(), data_set.end());
  return out;
}

// The identifying attributes and a 2x2 8-bit image: what the readers need.
inline void identity(Writer& w, bool with_pixels = true, const std::string& sop_instance = "1.2.826.0.1.3680043.10.543.1.1") {
  w.text(0x0008, 0x0016, "UI", kSecondaryCapture);
  w.text(0x0008, 0x0018, "UI", sop_instance);
  w.text(0x0008, 0x0060, "CS", "OT");
  w.text(0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.10.543.1");
  w.text(0x0020, 0x000E, "UI", "1.2.826.0.1.3680043.10.543.1.2");
  if (!with_pixels) return;
  w.us(0x0028, 0x0002, 1);
  w.text(0x0028, 0x0004, "CS", "MONOCHROME2");
  w.us(0x0028, 0x0010, 2);
  w.us(0x0028, 0x0011, 2);
  w.us(0x0028, 0x0100, 8);
  w.us(0x0028, 0x0101, 8);
  w.us(0x0028, 0x0102, 7);
  w.us(0x0028, 0x0103, 0);
}

// Sequences (0008,1115) of undefined length nested `depth` deep, one item each.
inline Bytes nested_sq(int depth, bool explicit_vr = true, bool big_endian = false) {
  Writer w(explicit_vr, big_endian);
  identity(w, false);
  for (int i = 0; i < depth; ++i) {
    w.undefined(0x0008, 0x1115, "SQ");
    w.item();
  }
  w.text(0x0008, 0x0100, "SH", "LEAF");
  for (int i = 0; i < depth; ++i) {
    w.item_end();
    w.sequence_end();
  }
  return w.bytes;
}

// The same through a private element of VR UN and undefined length (explicit VR outside; inside,
// per CP-246, implicit VR little endian elements of undefined length).
inline Bytes nested_un(int depth) {
  Writer w;
  identity(w, false);
  w.text(0x0009, 0x0010, "LO", "PACSNODE TEST");
  w.undefined(0x0009, 0x1010, "UN");
  Writer in(false, false);
  in.item();
  for (int i = 1; i < depth; ++i) {
    in.undefined(0x0009, 0x1010, "");
    in.item();
  }
  in.text(0x0008, 0x0100, "SH", "LEAF");
  for (int i = 1; i < depth; ++i) {
    in.item_end();
    in.sequence_end();
  }
  in.item_end();
  in.sequence_end();
  w.append(in.bytes);
  return w.bytes;
}

// Implicit VR, every length defined: a sequence only by the data dictionary.
inline Bytes nested_defined_implicit(int depth) {
  Writer leaf(false, false);
  leaf.text(0x0008, 0x0100, "SH", "LEAF");
  Bytes inner = leaf.bytes;
  for (int i = 0; i < depth; ++i) {
    Writer level(false, false);
    level.header(0x0008, 0x1115, "", static_cast<std::uint32_t>(inner.size() + 8));
    level.item(static_cast<std::uint32_t>(inner.size()));
    level.append(inner);
    inner = std::move(level.bytes);
  }
  Writer w(false, false);
  identity(w, false);
  w.append(inner);
  return w.bytes;
}

inline void write_bytes(const std::filesystem::path& file, const Bytes& b) {
  std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace testsupport
