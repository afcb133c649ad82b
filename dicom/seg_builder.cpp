#include "dicom/seg_builder.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrma.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmiod/iodreferences.h>
#include <dcmtk/dcmiod/modcommoninstanceref.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>
#include <opencv2/core/hal/intrin.hpp>

#include "dicom/check.h"
#include "dicom/scan.h"
#include "dicom/log.h"
#include "dicom/results_common.h"

namespace dicom {
namespace {

using results_detail::ds;
using results_detail::new_uid;
using results_detail::SourceHeader;

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("SEG spec: " + what);
}

CodeSequenceMacro to_macro(const Code& c) { return CodeSequenceMacro(c.value, c.scheme, c.meaning); }

void require_code(const Code& c, const std::string& what) {
  require(!c.value.empty() && !c.scheme.empty() && !c.meaning.empty(), what + " code is incomplete");
  require(c.scheme != "SRT", what + " code uses the retired SRT scheme; use SCT");
}

// How a segment's frames are produced from the spec.
enum class Source { mask, label_map };

void validate(const SegSpec& s, Uint16 rows, Uint16 cols) {
  require(!s.segments.empty(), "no segments");
  require(s.segments.size() <= 0xFFFF, "too many segments");
  require(!s.sources.empty(), "no source frames");
  require(s.sources.size() <= 0x7FFFFFFF / s.segments.size(), "too many frames");
  const auto depth = s.sources.size();
  for (const auto& src : s.sources) {
    require(!src.sop_class_uid.empty() && !src.sop_instance_uid.empty(), "source frame without SOP class/instance UID");
    require(src.frame_number >= 0 && src.frame_number <= 0xFFFF, "source frame number out of range");
  }
  if (!s.geom.has_frame_of_reference) require(depth == 1, "a 2D source (no frame of reference) has one slice only");
  auto check_slices = [&](const std::vector<cv::Mat>& v, const std::string& what, bool fractional) {
    require(v.size() == depth, what + ": " + std::to_string(v.size()) + " slices for " + std::to_string(depth) + " source frames");
    for (const auto& m : v) {
      if (m.empty()) continue;
      require(m.rows == rows && m.cols == cols,
              what + ": slice is " + std::to_string(m.cols) + "x" + std::to_string(m.rows) + " (cols x rows), source is " +
                  std::to_string(cols) + "x" + std::to_string(rows));
      require(m.channels() == 1, what + ": single-channel masks only");
      if (fractional)
        require(m.depth() == CV_32F || m.depth() == CV_8U, what + ": FRACTIONAL needs CV_32F or CV_8U");
      else
        require(m.depth() == CV_8U || m.depth() == CV_16U, what + ": BINARY needs CV_8U");
    }
  };
  const bool fractional = s.type == SegmentationType::fractional;
  bool any_mask = false;
  for (const auto& seg : s.segments) any_mask |= !seg.mask.empty();
  if (!s.label_map.empty()) {
    require(!fractional, "label_map is for BINARY segmentations only");
    require(!any_mask, "give either per-segment masks or label_map, not both");
    check_slices(s.label_map, "label_map", false);
  }
  for (size_t i = 0; i < s.segments.size(); ++i) {
    const auto& seg = s.segments[i];
    const std::string what = "segment " + std::to_string(i + 1);
    require(seg.also_labels.empty() || !s.label_map.empty(), what + ": also_labels need a label_map");
    for (int l : seg.also_labels)
      require(l >= 1 && l <= 0xFFFF && l != static_cast<int>(i + 1), what + ": also_labels must be other label values");
    require(seg.description.size() <= 1024, what + ": description too long");
    require(!seg.label.empty() && seg.label.size() <= 64, what + ": label must have 1..64 characters");
    require_code(seg.category, what + " category");
    require_code(seg.type, what + " type");
    if (seg.anatomic_region) require_code(*seg.anatomic_region, what + " anatomic region");
    if (s.label_map.empty()) {
      check_slices(seg.mask, what + " mask", fractional);
      if (!fractional)
        for (const auto& m : seg.mask) require(m.empty() || m.depth() == CV_8U, what + " mask: BINARY needs CV_8U");
    }
  }
  require(!s.algorithm_name.empty() && !s.algorithm_version.empty(), "algorithm name and version are required");
  require_code(s.algorithm_family, "algorithm family");
  require(!s.content_label.empty() && s.content_label.size() <= 16, "content label must have 1..16 characters");
  require(s.series_number >= 0 && s.instance_number >= 0, "negative series/instance number");
  require(s.algorithm_name.size() <= 64, "algorithm name longer than 64 characters");
  require(s.lossy_compression.empty() || s.lossy_compression == "00" || s.lossy_compression == "01",
          "lossy compression must be empty, 00 or 01");
  require(s.series_description.size() <= 64, "series description longer than 64 characters");
}

// Fills out (rows x cols bytes) with frame z of segment k (1-based) as dcmseg takes it; returns
// whether any pixel is set. BINARY frames are "non-zero = set", FRACTIONAL ones 0..255.
bool fill_frame(const SegSpec& s, size_t k, size_t z, Uint8* out_bytes, int rows, int cols) {
  const cv::Mat& m = s.label_map.empty() ? s.segments[k - 1].mask[z] : s.label_map[z];
  cv::Mat out(rows, cols, CV_8U, out_bytes);
  if (m.empty()) {
    out.setTo(0);
    return false;
  }
  if (!s.label_map.empty()) {
    cv::compare(m, cv::Scalar(static_cast<double>(k)), out, cv::CMP_EQ);  // 255 where label k
    cv::Mat other;
    for (int l : s.segments[k - 1].also_labels) {
      cv::compare(m, cv::Scalar(static_cast<double>(l)), other, cv::CMP_EQ);
      cv::bitwise_or(out, other, out);
    }
  } else if (m.depth() == CV_32F) {
    for (int r = 0; r < rows; ++r) {
      const auto* in = m.ptr<float>(r);
      Uint8* o = out.ptr<Uint8>(r);
      for (int c = 0; c < cols; ++c) {
        const float p = std::clamp(std::isfinite(in[c]) ? in[c] : 0.0f, 0.0f, 1.0f);
        o[c] = static_cast<Uint8>(std::lround(p * 255.0f));
      }
    }
  } else {  // CV_8U: binary (non-zero = set) or fractional (0..255), as it is
    m.copyTo(out);
  }
  return cv::countNonZero(out) > 0;
}

// ---- BINARY frames packed straight from the spec's slices (no unpacked frame, no dcmseg frame).

// Which pixels of a slice belong to one segment: the label values of a label map (the segment's
// number and its also_labels), or any non-zero pixel of a per-segment mask; as inclusive ranges of
// values (a body that covers labels 1..5 is one range: one subtraction and one comparison per 16
// pixels), and for 8-bit slices the same ranges as vectors.
struct Membership {
  std::vector<std::pair<int, int>> ranges;  // sorted, disjoint, not adjacent
  int u8_ranges = 0;                        // ranges that meet 0..255 (the first ones)
#if CV_SIMD128
  std::vector<cv::v_uint8x16> lo, span;  // per 8-bit range: v - lo <= span (unsigned, wrapping)
#endif
  bool operator()(int v) const {
    for (const auto& [l, h] : ranges)
      if (v >= l && v <= h) return true;
    return false;
  }
};

Membership membership_of(const SegSpec& s, size_t k) {
  std::vector<int> values;
  if (!s.label_map.empty()) {
    values.push_back(static_cast<int>(k));
    values.insert(values.end(), s.segments[k - 1].also_labels.begin(), s.segments[k - 1].also_labels.end());
  }
  std::sort(values.begin(), values.end());
  Membership m;
  if (s.label_map.empty()) m.ranges.push_back({1, 0xFFFF});  // a mask: any non-zero value (CV_8U)
  for (int v : values) {
    if (!m.ranges.empty() && v <= m.ranges.back().second + 1)
      m.ranges.back().second = std::max(m.ranges.back().second, v);
    else
      m.ranges.push_back({v, v});
  }
  for (const auto& [l, h] : m.ranges) {
    if (l > 255) break;
    ++m.u8_ranges;
#if CV_SIMD128
    m.lo.push_back(cv::v_setall_u8(static_cast<Uint8>(l)));
    m.span.push_back(cv::v_setall_u8(static_cast<Uint8>(std::min(h, 255) - l)));
#endif
  }
  return m;
}

const cv::Mat& slice_of(const SegSpec& s, size_t k, size_t z) {
  return s.label_map.empty() ? s.segments[k - 1].mask[z] : s.label_map[z];
}

// Appends bits to a byte buffer in DICOM's 1-bit order: pixel i of the stream is bit i % 8 of
// byte i / 8 (PS3.5 8.1.1, and frames follow each other without padding, PS3.5 8.2). The first bit
// goes to bit 0 of `out`, which must be byte-aligned; finish() writes the last partial byte with
// its unused bits zero.
class BitSink {
 public:
  explicit BitSink(Uint8* out) : out_(out) {}
  void put(std::uint64_t bits, int n) {  // n <= 32; bits above n are zero
    acc_ |= bits << fill_;
    fill_ += n;
    if (fill_ >= 32) {
      for (int i = 0; i < 4; ++i) out_[i] = static_cast<Uint8>(acc_ >> (8 * i));
      out_ += 4;
      acc_ >>= 32;
      fill_ -= 32;
    }
  }
  void zeros(size_t n) {
    for (; n >= 32; n -= 32) put(0, 32);
    put(0, static_cast<int>(n));
  }
  void finish() {
    for (; fill_ > 0; fill_ -= 8) {
      *out_++ = static_cast<Uint8>(acc_);
      acc_ >>= 8;
    }
    fill_ = 0;
  }

 private:
  Uint8* out_;
  std::uint64_t acc_ = 0;
  int fill_ = 0;
};

#if CV_SIMD128
// 0xFF in the lanes of v whose value lies in one of the first N 8-bit ranges of m.
template <int N>
cv::v_uint8x16 hits(const cv::v_uint8x16& v, const Membership& m) {
  cv::v_uint8x16 h = cv::v_sub_wrap(v, m.lo[0]) <= m.span[0];
  for (int i = 1; i < N; ++i) h = h | (cv::v_sub_wrap(v, m.lo[i]) <= m.span[i]);
  return h;
}

template <int N>
int put_row_u8_vec(const Uint8* row, int n, const Membership& m, BitSink& sink) {
  int x = 0;
  for (; x + 32 <= n; x += 32) {
    const auto lo = static_cast<std::uint32_t>(cv::v_signmask(hits<N>(cv::v_load(row + x), m)));
    const auto hi = static_cast<std::uint32_t>(cv::v_signmask(hits<N>(cv::v_load(row + x + 16), m)));
    sink.put(lo | (hi << 16), 32);
  }
  return x;
}

template <int N>
bool any_in_row_u8_vec(const Uint8* row, int n, const Membership& m, int& x) {
  cv::v_uint8x16 acc = cv::v_setzero_u8();
  for (x = 0; x + 16 <= n; x += 16) acc = acc | hits<N>(cv::v_load(row + x), m);
  return cv::v_check_any(acc);
}
#endif

// A CV_8U row: the bits of the pixels that belong to the segment.
void put_row_u8(const Uint8* row, int n, const Membership& m, BitSink& sink) {
  int x = 0;
  if (m.u8_ranges == 0) {  // no 8-bit value belongs
    sink.zeros(static_cast<size_t>(n));
    return;
  }
#if CV_SIMD128
  switch (m.u8_ranges) {
    case 1: x = put_row_u8_vec<1>(row, n, m, sink); break;
    case 2: x = put_row_u8_vec<2>(row, n, m, sink); break;
    case 3: x = put_row_u8_vec<3>(row, n, m, sink); break;
    case 4: x = put_row_u8_vec<4>(row, n, m, sink); break;
    default: break;  // scattered labels: one by one
  }
#endif
  while (x < n) {
    const int len = std::min(32, n - x);
    std::uint32_t bits = 0;
    for (int i = 0; i < len; ++i) bits |= static_cast<std::uint32_t>(m(row[x + i])) << i;
    sink.put(bits, len);
    x += len;
  }
}

// A CV_16U row (label maps only; no vector path: 8-bit label maps are the common case).
void put_row_u16(const std::uint16_t* row, int n, const Membership& m, BitSink& sink) {
  for (int x = 0; x < n;) {
    const int len = std::min(32, n - x);
    std::uint32_t bits = 0;
    for (int i = 0; i < len; ++i) bits |= static_cast<std::uint32_t>(m(row[x + i])) << i;
    sink.put(bits, len);
    x += len;
  }
}

// Whether any pixel of the slice belongs to the segment (stops after the first row that has one).
bool any_member(const cv::Mat& slice, const Membership& m) {
  if (slice.empty()) return false;
  for (int r = 0; r < slice.rows; ++r) {
    if (slice.depth() == CV_8U) {
      if (m.u8_ranges == 0) return false;
      const Uint8* row = slice.ptr<Uint8>(r);
      int x = 0;
      bool any = false;
#if CV_SIMD128
      switch (m.u8_ranges) {
        case 1: any = any_in_row_u8_vec<1>(row, slice.cols, m, x); break;
        case 2: any = any_in_row_u8_vec<2>(row, slice.cols, m, x); break;
        case 3: any = any_in_row_u8_vec<3>(row, slice.cols, m, x); break;
        case 4: any = any_in_row_u8_vec<4>(row, slice.cols, m, x); break;
        default: break;
      }
#endif
      for (; !any && x < slice.cols; ++x) any = m(row[x]);
      if (any) return true;
    } else {
      const auto* row = slice.ptr<std::uint16_t>(r);
      for (int x = 0; x < slice.cols; ++x)
        if (m(row[x])) return true;
    }
  }
  return false;
}

// One SEG frame: segment k (1-based) on slice z.
struct FrameRef {
  size_t segment = 0, slice = 0;
  bool empty = false;  // no pixel set: written as zeros
};

// The frames of the SEG in dcmseg's order: segment-major, slice-minor; frames without any set pixel
// are left out unless keep_empty_frames; when that leaves none, the empty frame of segment 1 on
// slice 0 (a SEG needs one frame).
std::vector<FrameRef> select_frames(const SegSpec& s, int rows, int cols) {
  std::vector<FrameRef> out;
  const bool fractional = s.type == SegmentationType::fractional;
  std::vector<Uint8> buf(fractional ? static_cast<size_t>(rows) * cols : 0);
  for (size_t k = 1; k <= s.segments.size(); ++k) {
    const Membership m = membership_of(s, k);
    for (size_t z = 0; z < s.sources.size(); ++z) {
      const bool any = fractional ? fill_frame(s, k, z, buf.data(), rows, cols) : any_member(slice_of(s, k, z), m);
      if (any || s.keep_empty_frames) out.push_back({k, z, !any});
    }
  }
  if (out.empty()) out.push_back({1, 0, true});
  return out;
}

// The Pixel Data value of the frames, as dcmseg concatenates them (BINARY: bits back to back, the
// last byte's unused bits zero; FRACTIONAL: bytes), padded with a zero byte to even length. Made a
// group of frames at a time: 8 BINARY frames always end on a byte boundary, so each group of 8 (or
// each FRACTIONAL frame) is a run of whole bytes that can be made on its own, in order, into a
// buffer of one group that is reused (no buffer of the whole value).
class PixelData {
 public:
  PixelData(const SegSpec& s, std::vector<FrameRef> frames, int rows, int cols)
      : spec_(s), frames_(std::move(frames)), rows_(rows), cols_(cols), pixels_(static_cast<size_t>(rows) * cols),
        binary_(s.type == SegmentationType::binary), per_group_(binary_ ? 8 : 1) {
    const size_t used = binary_ ? (frames_.size() * pixels_ + 7) / 8 : frames_.size() * pixels_;
    length_ = used + used % 2;
    for (size_t k = 1; k <= s.segments.size(); ++k) members_.push_back(membership_of(s, k));
  }
  const std::vector<FrameRef>& frames() const { return frames_; }
  size_t length() const { return length_; }
  size_t groups() const { return (frames_.size() + per_group_ - 1) / per_group_; }
  // Largest group, pad byte included.
  size_t max_group_bytes() const { return group_bytes(0) + 1; }
  // Bytes of group g (the last one with the pad byte).
  size_t group_bytes(size_t g) const {
    const size_t first = g * per_group_, end = std::min(frames_.size(), first + per_group_);
    const size_t bytes = binary_ ? ((end - first) * pixels_ + 7) / 8 : (end - first) * pixels_;
    return end == frames_.size() ? length_ - group_offset(g) : bytes;
  }
  // A group of 8 BINARY frames has `pixels_` bytes, as one FRACTIONAL frame.
  size_t group_offset(size_t g) const { return g * pixels_; }
  size_t frames_in_groups(size_t n) const { return std::min(frames_.size(), n * per_group_); }

  // Writes group g's group_bytes(g) bytes to out.
  void fill_group(size_t g, Uint8* out) const {
    const size_t first = g * per_group_, end = std::min(frames_.size(), first + per_group_);
    const size_t bytes = group_bytes(g);
    if (!binary_) {
      for (size_t f = first; f < end; ++f)
        fill_frame(spec_, frames_[f].segment, frames_[f].slice, out + (f - first) * pixels_, rows_, cols_);
      std::fill(out + (end - first) * pixels_, out + bytes, Uint8{0});
      return;
    }
    BitSink sink(out);
    for (size_t f = first; f < end; ++f) {
      const FrameRef& ref = frames_[f];
      const cv::Mat& m = slice_of(spec_, ref.segment, ref.slice);
      if (ref.empty || m.empty()) {
        sink.zeros(pixels_);
        continue;
      }
      const Membership& who = members_[ref.segment - 1];
      for (int r = 0; r < rows_; ++r) {
        if (m.depth() == CV_8U)
          put_row_u8(m.ptr<Uint8>(r), cols_, who, sink);
        else
          put_row_u16(m.ptr<std::uint16_t>(r), cols_, who, sink);
      }
    }
    sink.finish();
    const size_t written = ((end - first) * pixels_ + 7) / 8;
    std::fill(out + written, out + bytes, Uint8{0});
  }

 private:
  const SegSpec& spec_;
  std::vector<FrameRef> frames_;
  int rows_, cols_;
  size_t pixels_;
  bool binary_;
  size_t per_group_;
  size_t length_ = 0;
  std::vector<Membership> members_;
};

// DCMTK reads the value of an element that is not in memory through a DcmInputStreamFactory when it
// writes the element (DcmElement::createValueFromTempFile; DcmWriteCache reads it in blocks). This
// producer makes the Pixel Data value group by group as it is read, so that the file is written
// without the value ever being held whole (for 1410 frames of 512 x 512 that is 45 MiB of fresh
// memory, whose page faults alone cost more than packing it). Nothing throws into DCMTK: a failure
// turns the stream bad and the write fails.
class PixelDataProducer final : public DcmProducer {
 public:
  explicit PixelDataProducer(std::shared_ptr<const PixelData> data) : data_(std::move(data)) {}
  OFBool good() const override { return status_.good(); }
  OFCondition status() const override { return status_; }
  OFBool eos() override { return done_ == data_->length(); }
  offile_off_t avail() override { return good() ? static_cast<offile_off_t>(data_->length() - done_) : 0; }
  offile_off_t read(void* buf, offile_off_t buflen) override {
    auto* out = static_cast<Uint8*>(buf);
    offile_off_t n = 0;
    while (n < buflen && good() && done_ < data_->length()) {
      if (pos_ == filled_ && !next_group()) break;
      const size_t take = std::min(static_cast<size_t>(buflen - n), filled_ - pos_);
      std::memcpy(out + n, buffer_.data() + pos_, take);
      pos_ += take;
      done_ += take;
      n += static_cast<offile_off_t>(take);
    }
    return n;
  }
  offile_off_t skip(offile_off_t skiplen) override {
    offile_off_t n = 0;
    while (n < skiplen && good() && done_ < data_->length()) {
      if (pos_ == filled_ && !next_group()) break;
      const size_t take = std::min(static_cast<size_t>(skiplen - n), filled_ - pos_);
      pos_ += take;
      done_ += take;
      n += static_cast<offile_off_t>(take);
    }
    return n;
  }
  void putback(offile_off_t num) override {  // within the current group only (DCMTK puts back at most a value)
    if (num < 0 || static_cast<size_t>(num) > pos_) {
      status_ = EC_PutbackFailed;
      return;
    }
    pos_ -= static_cast<size_t>(num);
    done_ -= static_cast<size_t>(num);
  }

 private:
  bool next_group() {
    if (group_ >= data_->groups()) return false;
    try {
      buffer_.resize(data_->max_group_bytes());
      data_->fill_group(group_, buffer_.data());
      filled_ = data_->group_bytes(group_);
      pos_ = 0;
      ++group_;
      return true;
    } catch (const std::exception& e) {
      pacsnode::component_logger("seg")->error("SEG pixel data: {}", e.what());
      status_ = EC_InvalidStream;
      return false;
    }
  }
  std::shared_ptr<const PixelData> data_;
  std::vector<Uint8> buffer_;
  size_t group_ = 0, filled_ = 0, pos_ = 0, done_ = 0;
  OFCondition status_ = EC_Normal;
};

class PixelDataStream final : public DcmInputStream {
 public:
  explicit PixelDataStream(std::shared_ptr<const PixelData> data)
      : DcmInputStream(&producer_), data_(data), producer_(std::move(data)) {}
  DcmInputStreamFactory* newFactory() const override;

 private:
  std::shared_ptr<const PixelData> data_;
  PixelDataProducer producer_;
};

class PixelDataFactory final : public DcmInputStreamFactory {
 public:
  explicit PixelDataFactory(std::shared_ptr<const PixelData> data) : data_(std::move(data)) {}
  DcmInputStream* create() const override { return new PixelDataStream(data_); }
  DcmInputStreamFactory* clone() const override { return new PixelDataFactory(data_); }
  // DCMTK knows two kinds (file, temporary file); ours reads like a file that is kept.
  DcmInputStreamFactoryType ident() const override { return DFT_DcmInputFileStreamFactory; }

 private:
  std::shared_ptr<const PixelData> data_;
};

DcmInputStreamFactory* PixelDataStream::newFactory() const { return new PixelDataFactory(data_); }

std::unique_ptr<DcmSegment> make_segment(const SegSpec& s, const SegmentSpec& in, const std::string& tracking_uid) {
  DcmSegment* raw = nullptr;
  check(DcmSegment::create(raw, in.label.c_str(), to_macro(in.category), to_macro(in.type), DcmSegTypes::SAT_AUTOMATIC,
                           s.algorithm_name.c_str()),
        "SEG: create segment '" + in.label + "'");
  std::unique_ptr<DcmSegment> seg(raw);
  if (!in.description.empty()) check(seg->setSegmentDescription(in.description.c_str()), "SEG: segment description");
  check(seg->setRecommendedDisplayCIELabValue(in.cielab[0], in.cielab[1], in.cielab[2]), "SEG: CIELab value");
  check(seg->setTrackingID((in.tracking_id.empty() ? in.label : in.tracking_id).c_str()), "SEG: tracking ID");
  check(seg->setTrackingUID(tracking_uid.c_str()), "SEG: tracking UID");
  if (in.anatomic_region) {
    const auto& r = *in.anatomic_region;
    check(seg->getGeneralAnatomyCode().getAnatomicRegion().set(r.value.c_str(), r.scheme.c_str(), r.meaning.c_str()),
          "SEG: anatomic region");
  }
  AlgorithmIdentificationMacro algo;
  check(algo.getAlgorithmFamilyCode().set(s.algorithm_family.value.c_str(), s.algorithm_family.scheme.c_str(),
                                          s.algorithm_family.meaning.c_str()),
        "SEG: algorithm family");
  check(algo.setAlgorithmName(s.algorithm_name.c_str()), "SEG: algorithm name");
  check(algo.setAlgorithmVersion(s.algorithm_version.c_str()), "SEG: algorithm version");
  if (!s.algorithm_parameters.empty())
    check(algo.setAlgorithmParameters(s.algorithm_parameters.c_str()), "SEG: algorithm parameters");
  check(seg->setSegmentationAlgorithmIdentification(algo), "SEG: algorithm identification");
  return seg;
}

// Every SEG pixel lies where the source pixel lies (we never resample): say so in each Source
// Image Sequence item, as highdicom does. dcmfg 3.6.7 has no setter for it.
void mark_spatial_locations_preserved(DcmItem& dataset) {
  DcmItem* frame = nullptr;
  for (long f = 0; dataset.findAndGetSequenceItem(DCM_PerFrameFunctionalGroupsSequence, frame, f).good(); ++f) {
    DcmItem* derivation = nullptr;
    for (long d = 0; frame->findAndGetSequenceItem(DCM_DerivationImageSequence, derivation, d).good(); ++d) {
      DcmItem* source = nullptr;
      for (long i = 0; derivation->findAndGetSequenceItem(DCM_SourceImageSequence, source, i).good(); ++i)
        check(source->putAndInsertString(DCM_SpatialLocationsPreserved, "YES"), "SEG: spatial locations preserved");
    }
  }
}

// Coding Scheme Identification Sequence for the codes whose scheme is not in PS3.16 Table 8-1.
void declare_private_schemes(DcmDataset& ds, const SegSpec& spec) {
  std::set<std::string> used;
  const auto add = [&](const Code& c) { used.insert(c.scheme); };
  add(spec.algorithm_family);
  for (const auto& seg : spec.segments) {
    add(seg.category);
    add(seg.type);
    if (seg.anatomic_region) add(*seg.anatomic_region);
  }
  for (const auto& designator : used) {
    const auto known = codes::known_private_scheme(designator);
    if (!known) continue;
    DcmItem* item = nullptr;
    check(ds.findOrCreateSequenceItem(DCM_CodingSchemeIdentificationSequence, item, -2), "SEG: coding scheme item");
    check(item->putAndInsertString(DCM_CodingSchemeDesignator, known->designator.c_str()), "SEG: coding scheme");
    check(item->putAndInsertString(DCM_CodingSchemeName, known->name.c_str()), "SEG: coding scheme name");
    check(item->putAndInsertString(DCM_CodingSchemeResponsibleOrganization, known->responsible_organization.c_str()),
          "SEG: coding scheme organisation");
    if (!known->uid.empty()) check(item->putAndInsertString(DCM_CodingSchemeUID, known->uid.c_str()), "SEG: coding scheme UID");
  }
}

// A SEG being built: the dcmseg document with everything but its frames and references.
struct Document {
  std::unique_ptr<DcmSegmentation> seg;
  SourceHeader hdr;
  std::string source_series;
  WrittenObject out;
};

Document start_document(const SegSpec& spec) {
  Document d;
  d.hdr = results_detail::read_source_header(spec.source_file);
  const SourceHeader& hdr = d.hdr;
  require(hdr.rows > 0 && hdr.cols > 0, "source file has no Rows/Columns");
  validate(spec, hdr.rows, hdr.cols);
  d.source_series = spec.source_series_uid.empty() ? hdr.series_uid : spec.source_series_uid;
  require(!d.source_series.empty(), "source series UID unknown");
  if (spec.geom.has_frame_of_reference) require(!hdr.frame_of_reference_uid.empty(), "source has no Frame of Reference UID");

  const bool fractional = spec.type == SegmentationType::fractional;
  IODGeneralEquipmentModule::EquipmentInfo equipment(spec.device.manufacturer.c_str(), spec.device.model_name.c_str(),
                                                     spec.device.serial_number.c_str(),
                                                     spec.device.software_versions.c_str());
  ContentIdentificationMacro content(std::to_string(spec.instance_number).c_str(), spec.content_label.c_str(),
                                     spec.content_description.c_str(), "");
  DcmSegmentation* raw = nullptr;
  if (fractional)
    check(DcmSegmentation::createFractionalSegmentation(raw, hdr.rows, hdr.cols, DcmSegTypes::SFT_PROBABILITY, 255,
                                                        equipment, content),
          "SEG: create FRACTIONAL segmentation");
  else
    check(DcmSegmentation::createBinarySegmentation(raw, hdr.rows, hdr.cols, equipment, content),
          "SEG: create BINARY segmentation");
  d.seg.reset(raw);
  DcmSegmentation* seg = d.seg.get();
  seg->setCheckFGOnWrite(OFTrue);
  seg->setCheckDimensionsOnWrite(OFTrue);

  // Patient, study and (when present) frame of reference from the source; then a new series.
  {
    DcmFileFormat ff;
    require_scan(spec.source_file, default_scan_limits(), "SEG: read " + spec.source_file.string());
    check(ff.loadFile(spec.source_file.c_str(), EXS_Unknown, EGL_noChange, 4096), "SEG: read " + spec.source_file.string());
    check(seg->importFromSourceImage(*ff.getDataset(), OFTrue), "SEG: import patient/study from source");
  }
  if (!spec.geom.has_frame_of_reference) {
    // dcmiod makes the Frame of Reference Module mandatory; the SEG IOD only needs it when the
    // source images have one. Without it, neither attribute may be written (and a stray FoR UID
    // of a projection image is not imported: without plane positions it would be invalid).
    seg->getFrameOfReference().clearData();
    seg->getFrameOfReference().makeOptional();
    // ...and Patient Orientation becomes type 2 (General Image Module, 2C).
    if (IODRule* rule = seg->getRules()->getByTag(DCM_PatientOrientation)) rule->setType("2");
    if (!hdr.patient_orientation.empty())
      check(seg->getGeneralImage().setPatientOrientation(hdr.patient_orientation.c_str()), "SEG: patient orientation");
  }
  WrittenObject& out = d.out;
  out.sop_class_uid = UID_SegmentationStorage;
  out.sop_instance_uid = new_uid(SITE_INSTANCE_UID_ROOT);
  out.series_uid = spec.series_uid.empty() ? new_uid(SITE_SERIES_UID_ROOT) : spec.series_uid;
  out.study_uid = hdr.study_uid;
  const auto now = results_detail::now_da_tm();
  check(seg->getSeries().setSeriesInstanceUID(out.series_uid.c_str()), "SEG: series UID");
  check(seg->getSeries().setSeriesNumber(std::to_string(spec.series_number).c_str()), "SEG: series number");
  check(seg->getSeries().setSeriesDescription(spec.series_description.c_str()), "SEG: series description");
  check(seg->getSeries().setSeriesDate(now.first.c_str()), "SEG: series date");
  check(seg->getSeries().setSeriesTime(now.second.c_str()), "SEG: series time");
  check(seg->getSOPCommon().setSOPInstanceUID(out.sop_instance_uid.c_str()), "SEG: SOP instance UID");
  check(seg->getGeneralImage().setContentDate(now.first.c_str()), "SEG: content date");
  check(seg->getGeneralImage().setContentTime(now.second.c_str()), "SEG: content time");

  // Segments, numbered 1..N in spec order.
  for (size_t i = 0; i < spec.segments.size(); ++i) {
    const auto& in = spec.segments[i];
    out.tracking_uids.push_back(in.tracking_uid.empty() ? new_uid(SITE_INSTANCE_UID_ROOT) : in.tracking_uid);
    auto segment = make_segment(spec, in, out.tracking_uids.back());
    Uint16 number = 0;
    check(seg->addSegment(segment.get(), number), "SEG: add segment '" + in.label + "'");
    segment.release();  // seg owns it only now
    if (number != i + 1) throw DicomError("SEG: segment '" + in.label + "' got number " + std::to_string(number));
  }

  // Shared functional groups.
  const Geometry& g = spec.geom;
  FGPixelMeasures measures;
  check(measures.setPixelSpacing((ds(g.spacing_row) + "\\" + ds(g.spacing_col)).c_str()), "SEG: pixel spacing");
  if (g.has_frame_of_reference) {
    check(measures.setSliceThickness(ds(g.spacing_slice).c_str()), "SEG: slice thickness");
    if (spec.sources.size() > 1)
      check(measures.setSpacingBetweenSlices(ds(g.spacing_slice).c_str()), "SEG: spacing between slices");
  }
  check(seg->addForAllFrames(measures), "SEG: pixel measures");
  if (g.has_frame_of_reference) {
    FGPlaneOrientationPatient orientation;
    check(orientation.setImageOrientationPatient(ds(g.row_dir[0]).c_str(), ds(g.row_dir[1]).c_str(), ds(g.row_dir[2]).c_str(),
                                                 ds(g.col_dir[0]).c_str(), ds(g.col_dir[1]).c_str(), ds(g.col_dir[2]).c_str()),
          "SEG: image orientation");
    check(seg->addForAllFrames(orientation), "SEG: plane orientation");
  }

  // Dimension organisation: segment number, then position along the stack.
  const OFString dim_uid = new_uid(SITE_INSTANCE_UID_ROOT).c_str();
  check(seg->getDimensions().addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid, DCM_SegmentIdentificationSequence,
                                               "Referenced Segment Number"),
        "SEG: dimension index (segment)");
  if (g.has_frame_of_reference)
    check(seg->getDimensions().addDimensionIndex(DCM_ImagePositionPatient, dim_uid, DCM_PlanePositionSequence,
                                                 "Image Position Patient"),
          "SEG: dimension index (position)");
  return d;
}

// Adds frame f to the dcmseg document: `pixels` (rows x cols bytes, as fill_frame makes them) and
// its per-frame groups (dcmseg checks and copies them).
void add_dcmseg_frame(DcmSegmentation& seg, const SegSpec& spec, const FrameRef& f, Uint8* pixels) {
  const SourceFrame& src = spec.sources[f.slice];
  FGFrameContent content_fg;
  check(content_fg.setDimensionIndexValues(static_cast<Uint32>(f.segment), 0), "SEG: dimension index value");
  OFVector<FGBase*> groups;
  groups.push_back(&content_fg);
  std::unique_ptr<FGPlanePosPatient> position;
  if (spec.geom.has_frame_of_reference) {
    check(content_fg.setDimensionIndexValues(static_cast<Uint32>(f.slice + 1), 1), "SEG: dimension index value");
    position.reset(FGPlanePosPatient::createMinimal(ds(src.position[0]).c_str(), ds(src.position[1]).c_str(),
                                                    ds(src.position[2]).c_str()));
    if (!position) throw DicomError("SEG: cannot create plane position");
    groups.push_back(position.get());
  }
  ImageSOPInstanceReferenceMacro ref;
  check(ref.setReferencedSOPClassUID(src.sop_class_uid.c_str()), "SEG: source SOP class UID");
  check(ref.setReferencedSOPInstanceUID(src.sop_instance_uid.c_str()), "SEG: source SOP instance UID");
  if (src.frame_number > 0)
    check(ref.addReferencedFrameNumber(static_cast<Uint16>(src.frame_number)), "SEG: referenced frame number");
  OFVector<ImageSOPInstanceReferenceMacro> refs;
  refs.push_back(ref);
  std::unique_ptr<FGDerivationImage> derivation(DcmSegmentation::createDerivationImageFG(refs, ""));
  if (!derivation) throw DicomError("SEG: cannot create derivation image functional group");
  groups.push_back(derivation.get());
  check(seg.addFrame(pixels, static_cast<Uint16>(f.segment), groups), "SEG: add frame");  // groups are copied
}

// Referenced Series Sequence: every source instance, once.
void add_references(Document& d, const SegSpec& spec) {
  IODReferences references;
  std::set<std::string> seen;
  for (const auto& src : spec.sources) {
    if (!seen.insert(src.sop_instance_uid).second) continue;
    auto ref = std::make_unique<IODImageReference>(d.hdr.patient_id.c_str(), d.hdr.study_uid.c_str(),
                                                   d.source_series.c_str(), src.sop_instance_uid.c_str(),
                                                   src.sop_class_uid.c_str());
    if (!references.add(ref.get())) throw DicomError("SEG: invalid source reference (UIDs)");
    ref.release();  // references owns it only now
  }
  if (d.seg->getCommonInstanceReference().addReferences(references, d.hdr.study_uid.c_str()) != seen.size())
    throw DicomError("SEG: could not add every source instance to the Referenced Series Sequence");
}

// What follows dcmseg's encoding: the sources' lossy compression, private coding schemes; then the file.
void finish_and_save(DcmFileFormat& file, const SegSpec& spec, const std::filesystem::path& out_file) {
  DcmDataset& ds = *file.getDataset();
  if (spec.lossy_compression == "01") {  // dcmseg writes 00; the sources decide
    check(ds.putAndInsertString(DCM_LossyImageCompression, "01"), "SEG: lossy image compression");
    if (!spec.lossy_ratio.empty())
      check(ds.putAndInsertString(DCM_LossyImageCompressionRatio, spec.lossy_ratio.c_str()), "SEG: lossy ratio");
    if (!spec.lossy_method.empty())
      check(ds.putAndInsertString(DCM_LossyImageCompressionMethod, spec.lossy_method.c_str()), "SEG: lossy method");
  }
  declare_private_schemes(ds, spec);
  results_detail::atomic_write(out_file, [&](const std::string& tmp) {
    check(file.saveFile(tmp.c_str(), EXS_LittleEndianExplicit), "SEG: write");
  });
}

void add_code_item(DcmItem& parent, const DcmTagKey& sequence, const char* value, const char* meaning) {
  DcmItem* code = nullptr;
  check(parent.findOrCreateSequenceItem(sequence, code, -2), "SEG: code item");
  check(code->putAndInsertString(DCM_CodeValue, value), "SEG: code value");
  check(code->putAndInsertString(DCM_CodingSchemeDesignator, "DCM"), "SEG: coding scheme");
  check(code->putAndInsertString(DCM_CodeMeaning, meaning), "SEG: code meaning");
}

// The Per-Frame Functional Groups Sequence item of frame f, element for element what dcmseg
// writes for the groups add_dcmseg_frame gives it (Derivation Image with the codes of
// DcmSegmentation::createDerivationImageFG, Frame Content, Plane Position (Patient), Segment
// Identification), with Spatial Locations Preserved as mark_spatial_locations_preserved adds it.
// write_seg checks that the frames dcmseg encodes itself come out identical.
std::unique_ptr<DcmItem> frame_groups(const SegSpec& spec, const FrameRef& f) {
  const SourceFrame& src = spec.sources[f.slice];
  auto item = std::make_unique<DcmItem>();
  DcmItem* derivation = nullptr;
  check(item->findOrCreateSequenceItem(DCM_DerivationImageSequence, derivation, -2), "SEG: derivation image item");
  DcmItem* source = nullptr;
  check(derivation->findOrCreateSequenceItem(DCM_SourceImageSequence, source, -2), "SEG: source image item");
  check(source->putAndInsertString(DCM_ReferencedSOPClassUID, src.sop_class_uid.c_str()), "SEG: source SOP class UID");
  check(source->putAndInsertString(DCM_ReferencedSOPInstanceUID, src.sop_instance_uid.c_str()),
        "SEG: source SOP instance UID");
  if (src.frame_number > 0)
    check(source->putAndInsertString(DCM_ReferencedFrameNumber, std::to_string(src.frame_number).c_str()),
          "SEG: referenced frame number");
  check(source->putAndInsertString(DCM_SpatialLocationsPreserved, "YES"), "SEG: spatial locations preserved");
  add_code_item(*source, DCM_PurposeOfReferenceCodeSequence, "121322", "Source Image for Image Processing Operation");
  add_code_item(*derivation, DCM_DerivationCodeSequence, "113076", "Segmentation");

  DcmItem* content = nullptr;
  check(item->findOrCreateSequenceItem(DCM_FrameContentSequence, content, -2), "SEG: frame content item");
  const Uint32 index[2] = {static_cast<Uint32>(f.segment), static_cast<Uint32>(f.slice + 1)};
  check(content->putAndInsertUint32Array(DCM_DimensionIndexValues, index, spec.geom.has_frame_of_reference ? 2 : 1),
        "SEG: dimension index values");
  if (spec.geom.has_frame_of_reference) {
    DcmItem* position = nullptr;
    check(item->findOrCreateSequenceItem(DCM_PlanePositionSequence, position, -2), "SEG: plane position item");
    const std::string ipp = ds(src.position[0]) + "\\" + ds(src.position[1]) + "\\" + ds(src.position[2]);
    check(position->putAndInsertString(DCM_ImagePositionPatient, ipp.c_str()), "SEG: image position");
  }
  DcmItem* segment = nullptr;
  check(item->findOrCreateSequenceItem(DCM_SegmentIdentificationSequence, segment, -2), "SEG: segment identification");
  check(segment->putAndInsertUint16(DCM_ReferencedSegmentNumber, static_cast<Uint16>(f.segment)),
        "SEG: referenced segment number");
  return item;
}

}  // namespace

WrittenObject write_seg(const SegSpec& spec, const std::filesystem::path& out_file) {
  auto log = pacsnode::component_logger("seg");
  using Clock = std::chrono::steady_clock;
  auto t = Clock::now();
  std::string phases;  // for the debug log: where the time went
  auto lap = [&](const char* what) {
    const auto now = Clock::now();
    phases += fmt::format(" {} {:.1f}", what, std::chrono::duration<double, std::milli>(now - t).count());
    t = now;
  };
  Document d = start_document(spec);
  const int rows = d.hdr.rows, cols = d.hdr.cols;
  const size_t pixels = static_cast<size_t>(rows) * cols;
  const bool fractional = spec.type == SegmentationType::fractional;
  lap("start");
  const auto pixel_data = std::make_shared<const PixelData>(spec, select_frames(spec, rows, cols), rows, cols);
  const std::vector<FrameRef>& frames = pixel_data->frames();
  lap("select");
  if (pixel_data->length() > 0xFFFFFFFEu) throw DicomError("SEG: pixel data longer than 4 GiB");

  // dcmseg encodes everything but the frames itself, and the first frames too (as many as there
  // are segments: it refuses fewer frames than segments). Checking and copying per-frame groups
  // and packing frame by frame is most of its time for thousands of frames, so the Per-Frame
  // Functional Groups Sequence and the Pixel Data are then built directly and replace its own,
  // once its first frames are seen to be encoded identically by both.
  const size_t n_dcmseg = std::min(frames.size(), std::max<size_t>(spec.segments.size(), 1));
  {
    std::vector<Uint8> buf(pixels);
    for (size_t i = 0; i < n_dcmseg; ++i) {
      fill_frame(spec, frames[i].segment, frames[i].slice, buf.data(), rows, cols);
      add_dcmseg_frame(*d.seg, spec, frames[i], buf.data());
    }
  }
  add_references(d, spec);
  DcmFileFormat file;
  check(d.seg->writeDataset(*file.getDataset()), "SEG: encode");
  d.seg.reset();
  DcmDataset& ds = *file.getDataset();
  mark_spatial_locations_preserved(ds);
  lap("dcmseg");

  auto groups = std::make_unique<DcmSequenceOfItems>(DCM_PerFrameFunctionalGroupsSequence);
  for (const FrameRef& f : frames) {
    auto item = frame_groups(spec, f);
    check(groups->append(item.get()), "SEG: per-frame functional groups");
    item.release();  // groups owns it only now
  }
  lap("groups");
  auto pixels_element = std::make_unique<DcmPixelData>(DCM_PixelData);
  check(pixels_element->setVR(EVR_OB), "SEG: pixel data VR");  // as dcmseg's putAndInsertUint8Array
  auto factory = std::make_unique<PixelDataFactory>(pixel_data);
  check(pixels_element->createValueFromTempFile(factory.get(), static_cast<Uint32>(pixel_data->length()),
                                                EBO_LittleEndian),
        "SEG: pixel data");
  factory.release();  // the element owns it only now

  DcmSequenceOfItems* theirs = nullptr;
  check(ds.findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, theirs), "SEG: dcmseg's per-frame groups");
  for (size_t i = 0; i < n_dcmseg; ++i) {
    DcmItem* a = theirs->getItem(static_cast<unsigned long>(i));
    if (!a || a->compare(*groups->getItem(static_cast<unsigned long>(i))) != 0)
      throw DicomError("SEG: per-frame functional groups of frame " + std::to_string(i + 1) +
                       " differ from dcmseg's encoding");
  }
  {  // dcmseg's first frames against the same frames made here
    std::vector<Uint8> ours;
    size_t g = 0;
    for (; pixel_data->frames_in_groups(g) < n_dcmseg; ++g) {
      ours.resize(pixel_data->group_offset(g) + pixel_data->max_group_bytes());
      pixel_data->fill_group(g, ours.data() + pixel_data->group_offset(g));
    }
    DcmElement* their_pixels = nullptr;
    Uint8* their_bytes = nullptr;
    check(ds.findAndGetElement(DCM_PixelData, their_pixels), "SEG: dcmseg's pixel data");
    check(their_pixels->getUint8Array(their_bytes), "SEG: dcmseg's pixel data");
    // dcmseg 3.6.7 clears the wrong bits of a last partial byte (DcmSegmentation::concatFrames keeps
    // its unused high bits and clears the low ones, the last pixels of its last frame): that byte
    // is left out. Here it holds those pixels, and zeros after them.
    const size_t bits = (fractional ? 8 : 1) * n_dcmseg * pixels;
    if (their_pixels->getVR() != pixels_element->getVR() || std::memcmp(their_bytes, ours.data(), bits / 8) != 0)
      throw DicomError("SEG: packed frames differ from dcmseg's encoding");
  }

  check(ds.putAndInsertString(DCM_NumberOfFrames, std::to_string(frames.size()).c_str()), "SEG: number of frames");
  delete ds.remove(DCM_PerFrameFunctionalGroupsSequence);
  check(ds.insert(groups.get()), "SEG: per-frame functional groups");
  groups.release();  // the dataset owns it only now
  delete ds.remove(DCM_PixelData);
  check(ds.insert(pixels_element.get()), "SEG: pixel data");
  pixels_element.release();

  d.out.number_of_frames = static_cast<int>(frames.size());
  lap("check");
  finish_and_save(file, spec, out_file);
  lap("save");
  d.out.path = out_file;
  log->debug("SEG written: {} segments, {} frames, series {}; ms:{}", spec.segments.size(), d.out.number_of_frames,
             d.out.series_uid, phases);
  return d.out;
}

WrittenObject write_seg_reference(const SegSpec& spec, const std::filesystem::path& out_file) {
  Document d = start_document(spec);
  const int rows = d.hdr.rows, cols = d.hdr.cols;
  std::vector<Uint8> buf(static_cast<size_t>(rows) * cols);
  // Frames: segment-major, slice-minor, empty ones omitted unless asked to keep them.
  for (size_t k = 1; k <= spec.segments.size(); ++k)
    for (size_t z = 0; z < spec.sources.size(); ++z)
      if (fill_frame(spec, k, z, buf.data(), rows, cols) || spec.keep_empty_frames)
        add_dcmseg_frame(*d.seg, spec, {k, z}, buf.data());
  if (d.seg->getNumberOfFrames() == 0) {  // every segment empty: a SEG still needs one frame
    std::fill(buf.begin(), buf.end(), Uint8{0});
    add_dcmseg_frame(*d.seg, spec, {1, 0}, buf.data());
  }
  d.out.number_of_frames = static_cast<int>(d.seg->getNumberOfFrames());
  add_references(d, spec);
  DcmFileFormat file;
  check(d.seg->writeDataset(*file.getDataset()), "SEG: encode");
  d.seg.reset();  // frames are in the dataset now
  mark_spatial_locations_preserved(*file.getDataset());
  finish_and_save(file, spec, out_file);
  d.out.path = out_file;
  return d.out;
}

}  // namespace dicom
