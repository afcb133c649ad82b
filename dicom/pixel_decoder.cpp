#include "dicom/pixel_decoder.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <opencv2/core/hal/intrin.hpp>

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfcache.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include "dicom/check.h"
#include "dicom/codestream_check.h"
#include "dicom/gdcm_module.h"

namespace dicom {
namespace {

// Precomputed masks for one StoredFormat.
struct Unpack {
  std::uint32_t mask = 0;
  int shift = 0;  // low bits below the stored ones (High Bit + 1 - Bits Stored)
  std::int64_t sign_bit = 0;
  bool is_signed = false;
  bool invert = false;
  std::int64_t mirror = 0;  // stored min + stored max

  explicit Unpack(const StoredFormat& f) {
    const int stored = std::clamp(f.bits_stored, 1, 32);
    const int high = f.high_bit >= stored - 1 && f.high_bit < f.bits_allocated ? f.high_bit : stored - 1;
    shift = high + 1 - stored;
    mask = stored >= 32 ? 0xFFFFFFFFu : ((1u << stored) - 1u);
    is_signed = f.is_signed;
    sign_bit = std::int64_t{1} << (stored - 1);
    invert = f.monochrome1;
    const std::int64_t max = is_signed ? sign_bit - 1 : (std::int64_t{1} << stored) - 1;
    const std::int64_t min = is_signed ? -sign_bit : 0;
    mirror = min + max;
  }
  std::int64_t operator()(std::uint32_t raw) const {
    std::int64_t v = (raw >> shift) & mask;
    if (is_signed && (v & sign_bit)) v -= sign_bit * 2;
    return invert ? mirror - v : v;
  }
};

template <class Raw, class Out, class Map>
void convert_loop(const unsigned char* raw, unsigned char* out, std::size_t n, bool backward, Map&& map) {
  auto one = [&](std::size_t i) {
    Raw r;
    std::memcpy(&r, raw + i * sizeof(Raw), sizeof(Raw));
    const Out o = map(static_cast<std::uint32_t>(r));
    std::memcpy(out + i * sizeof(Out), &o, sizeof(Out));
  };
  if (backward) {
    for (std::size_t i = n; i-- > 0;) one(i);
  } else {
    for (std::size_t i = 0; i < n; ++i) one(i);
  }
}

// 16-bit samples to int16 real values when the map is a shift: out = a + s (or a - s when
// `negate`, i.e. MONOCHROME1 with slope 1), s = sext((raw >> shift) & mask), eight lanes of 16 bits
// at a time. The sum is taken modulo 2^16 and the range of s tracked, so that a value outside
// int16 is detected exactly (if s + a fits int16 for the extreme s, it fits for every s, and the
// modular sum is then the true one). Returns whether every value fits; out may be raw.
bool convert_u16_to_s16_shifted(const unsigned char* raw, unsigned char* out, std::size_t n, const Unpack& u,
                                std::int32_t a, bool negate) {
  const auto sign = static_cast<std::uint16_t>(u.is_signed ? u.sign_bit : 0);
  const auto mask = static_cast<std::uint16_t>(u.mask);
  // s ordered as int16 lanes: unsigned 16-bit values are biased by 0x8000 for the comparisons.
  const bool biased = !u.is_signed && u.mask == 0xFFFF;
  const std::uint16_t bias = biased ? 0x8000 : 0;
  const auto a16 = static_cast<std::uint16_t>(a);
  std::int16_t lo = std::numeric_limits<std::int16_t>::max(), hi = std::numeric_limits<std::int16_t>::min();
  std::size_t i = 0;
#if CV_SIMD128
  const cv::v_uint16x8 vmask = cv::v_setall_u16(mask), vsign = cv::v_setall_u16(sign), vbias = cv::v_setall_u16(bias),
                       va = cv::v_setall_u16(a16);
  cv::v_int16x8 vlo = cv::v_setall_s16(lo), vhi = cv::v_setall_s16(hi);
  for (; i + 8 <= n; i += 8) {
    std::uint16_t in[8];
    std::memcpy(in, raw + 2 * i, sizeof in);  // unaligned source
    const cv::v_uint16x8 s = cv::v_sub_wrap(((cv::v_load(in) >> u.shift) & vmask) ^ vsign, vsign);
    const cv::v_int16x8 ordered = cv::v_reinterpret_as_s16(s ^ vbias);
    vlo = cv::v_min(vlo, ordered);
    vhi = cv::v_max(vhi, ordered);
    const cv::v_uint16x8 v = negate ? cv::v_sub_wrap(va, s) : cv::v_add_wrap(va, s);
    std::uint16_t res[8];
    cv::v_store(res, v);
    std::memcpy(out + 2 * i, res, sizeof res);
  }
  lo = cv::v_reduce_min(vlo);
  hi = cv::v_reduce_max(vhi);
#endif
  for (; i < n; ++i) {
    std::uint16_t r;
    std::memcpy(&r, raw + 2 * i, sizeof r);
    const auto s = static_cast<std::uint16_t>((((r >> u.shift) & mask) ^ sign) - sign);
    const auto ordered = static_cast<std::int16_t>(s ^ bias);
    lo = std::min(lo, ordered), hi = std::max(hi, ordered);
    const auto v = static_cast<std::uint16_t>(negate ? a16 - s : a16 + s);
    std::memcpy(out + 2 * i, &v, sizeof v);
  }
  if (n == 0) return true;
  // The extreme stored values as integers, then the extreme results.
  const auto value = [&](std::int16_t ordered_s) -> std::int64_t {
    const auto bits = static_cast<std::uint16_t>(static_cast<std::uint16_t>(ordered_s) ^ bias);
    return u.is_signed ? static_cast<std::int16_t>(bits) : static_cast<std::int64_t>(bits);
  };
  const std::int64_t s_lo = value(lo), s_hi = value(hi);
  const std::int64_t r_lo = negate ? a - s_hi : a + s_lo, r_hi = negate ? a - s_lo : a + s_hi;
  return r_lo >= std::numeric_limits<std::int16_t>::min() && r_hi <= std::numeric_limits<std::int16_t>::max();
}

template <class Raw>
bool convert_from(const unsigned char* raw, const Unpack& u, const RealMap& m, unsigned char* out, bool out_is_float,
                  std::size_t n) {
  const std::size_t out_size = out_is_float ? sizeof(float) : sizeof(std::int16_t);
  const bool backward = out_size > sizeof(Raw);  // in place, growing: walk from the end
  if (m.lut != nullptr) {
    const auto& lut = *m.lut;
    if (lut.data.empty()) return false;
    const auto last = static_cast<std::int64_t>(lut.data.size()) - 1;
    auto entry = [&](std::uint32_t r) { return lut.data[std::clamp(u(r) - lut.first_mapped, std::int64_t{0}, last)]; };
    if (out_is_float) {
      convert_loop<Raw, float>(raw, out, n, backward, [&](std::uint32_t r) { return static_cast<float>(entry(r)); });
      return true;
    }
    bool fits = true;
    convert_loop<Raw, std::int16_t>(raw, out, n, backward, [&](std::uint32_t r) {
      const std::uint16_t v = entry(r);
      fits = fits && v <= std::numeric_limits<std::int16_t>::max();
      return static_cast<std::int16_t>(v);
    });
    return fits;
  }
  if (out_is_float) {
    convert_loop<Raw, float>(raw, out, n, backward, [&](std::uint32_t r) {
      return static_cast<float>(static_cast<double>(u(r)) * m.slope + m.intercept);
    });
    return true;
  }
  if (m.slope != std::floor(m.slope) || m.intercept != std::floor(m.intercept)) return false;
  if (std::abs(m.slope) > 65536 || std::abs(m.intercept) > 65536) return false;
  const auto slope = static_cast<std::int64_t>(m.slope);
  const auto intercept = static_cast<std::int64_t>(m.intercept);
  if constexpr (sizeof(Raw) == 2) {  // the common case (CT, MR: slope 1): 16-bit lanes
    const std::int64_t b = u.invert ? -slope : slope;
    const std::int64_t a = (u.invert ? u.mirror * slope : 0) + intercept;
    if ((b == 1 || b == -1) && std::abs(a) <= 65535)
      return convert_u16_to_s16_shifted(raw, out, n, u, static_cast<std::int32_t>(a), b == -1);
  }
  bool fits = true;
  convert_loop<Raw, std::int16_t>(raw, out, n, backward, [&](std::uint32_t r) {
    const std::int64_t v = u(r) * slope + intercept;
    if (v < std::numeric_limits<std::int16_t>::min() || v > std::numeric_limits<std::int16_t>::max()) {
      fits = false;
      return std::int16_t{0};
    }
    return static_cast<std::int16_t>(v);
  });
  return fits;
}

// pacsnode-gdcm.so (dicom/gdcm_module.h), loaded on the first JPEG 2000 decode from
// <directory of the executable>/../PACSNODE_MODULE_DIR: where `cmake --install` and the Debian
// package put it, and where the build tree mirrors that for the binaries built beside it.
PacsnodeGdcmDecode gdcm_module() {
  static std::once_flag once;
  static PacsnodeGdcmDecode decode = nullptr;
  static std::string why;
  std::call_once(once, [] {
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) {
      why = "cannot find the executable's directory: " + ec.message();
      return;
    }
    const std::filesystem::path module = exe.parent_path().parent_path() / PACSNODE_MODULE_DIR / "pacsnode-gdcm.so";
    void* handle = ::dlopen(module.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      why = std::string("cannot load ") + ::dlerror();
      return;
    }
    decode = reinterpret_cast<PacsnodeGdcmDecode>(::dlsym(handle, PACSNODE_GDCM_DECODE_SYMBOL));
    if (decode == nullptr) why = module.string() + " lacks " PACSNODE_GDCM_DECODE_SYMBOL;
  });
  if (decode == nullptr) throw DicomError("JPEG 2000 needs GDCM's module: " + why);
  return decode;
}

template <class Raw>
bool convert_float(const unsigned char* raw, const RealMap& m, unsigned char* out, bool out_is_float, std::size_t n) {
  if (!out_is_float) return false;
  const bool backward = sizeof(float) > sizeof(Raw);
  auto one = [&](std::size_t i) {
    Raw r;
    std::memcpy(&r, raw + i * sizeof(Raw), sizeof(Raw));
    const auto o = static_cast<float>(static_cast<double>(r) * m.slope + m.intercept);
    std::memcpy(out + i * sizeof(float), &o, sizeof(float));
  };
  if (backward) {
    for (std::size_t i = n; i-- > 0;) one(i);
  } else {
    for (std::size_t i = 0; i < n; ++i) one(i);
  }
  return true;
}

}  // namespace

std::int32_t stored_value(std::uint32_t raw_sample, const StoredFormat& f) {
  return static_cast<std::int32_t>(Unpack(f)(raw_sample));
}

bool stored_to_real(const void* raw, const StoredFormat& f, const RealMap& m, void* out, bool out_is_float,
                    std::size_t n) {
  const auto* r = static_cast<const unsigned char*>(raw);
  auto* o = static_cast<unsigned char*>(out);
  if (f.is_float) {
    if (f.bits_allocated == 32) return convert_float<float>(r, m, o, out_is_float, n);
    if (f.bits_allocated == 64) return convert_float<double>(r, m, o, out_is_float, n);
    throw DicomError("float samples of " + std::to_string(f.bits_allocated) + " bits not supported");
  }
  const Unpack u(f);
  switch (f.bits_allocated) {
    case 8: return convert_from<std::uint8_t>(r, u, m, o, out_is_float, n);
    case 16: return convert_from<std::uint16_t>(r, u, m, o, out_is_float, n);
    case 32: return convert_from<std::uint32_t>(r, u, m, o, out_is_float, n);
    default: throw DicomError("Bits Allocated " + std::to_string(f.bits_allocated) + " not supported");
  }
}

namespace {

void register_dcmtk_codecs() {
  static std::once_flag once;
  std::call_once(once, [] {
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

// Swaps the 16-bit halves of every 32-bit sample: explicit big endian 32-bit data comes out of
// both toolkits swapped per 16-bit word (OW), not per 32-bit sample.
void fix_big_endian_32(char* data, std::size_t bytes) {
  for (std::size_t i = 0; i + 4 <= bytes; i += 4) {
    std::swap(data[i], data[i + 2]);
    std::swap(data[i + 1], data[i + 3]);
  }
}

constexpr std::size_t kMaxImageBytes = std::size_t{4} << 30;  // 4 GiB of samples: refuse beyond

void check_layout_sane(const DecodedLayout& layout, const std::string& ts_name) {
  const int ba = layout.bits_allocated;
  if (layout.is_float ? (ba != 32 && ba != 64) : (ba != 8 && ba != 16 && ba != 32))
    throw DicomError("Bits Allocated " + std::to_string(ba) + " not supported");
  if (layout.rows <= 0 || layout.cols <= 0 || layout.frames <= 0 || layout.samples_per_pixel <= 0)
    throw DicomError("image has no pixels (" + ts_name + ")");
  if (layout.bytes() > kMaxImageBytes)
    throw DicomError("image of " + std::to_string(layout.bytes()) + " bytes exceeds the 4 GiB limit");
}

// The fragments of encapsulated Pixel Data (without the offset table item), as DCMTK parsed them.
std::vector<DcmPixelItem*> fragments_of(DcmPixelData& pixels, E_TransferSyntax xfer) {
  DcmPixelSequence* seq = nullptr;
  if (pixels.getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || seq == nullptr)
    throw DicomError("encapsulated Pixel Data without a fragment sequence");
  std::vector<DcmPixelItem*> out;
  for (unsigned long i = 1; i < seq->card(); ++i) {
    DcmPixelItem* item = nullptr;
    if (seq->getItem(item, i).bad() || item == nullptr) throw DicomError("Pixel Data fragment not readable");
    out.push_back(item);
  }
  return out;
}

// Checks the codestream header of every frame that starts a fragment against the image, before any
// codec sees it (dicom/codestream_check.h): DCMTK's and GDCM's decoders and OpenJPEG trust those
// fields, and a disagreement made them crash. Frames start fragments when there is one fragment
// per frame; otherwise only the first fragment is known to start a frame.
void check_fragments(const std::vector<DcmPixelItem*>& fragments, Codec codec, const DecodedLayout& layout,
                     DcmFileCache& cache) {
  if (fragments.empty()) throw DicomError("encapsulated Pixel Data has no fragments");
  const auto frames = static_cast<std::size_t>(layout.frames);
  if (fragments.size() < frames)
    throw DicomError(std::to_string(fragments.size()) + " Pixel Data fragments for " + std::to_string(frames) +
                     " frames (at least one per frame)");
  if (codec == Codec::rle && frames > 1 && fragments.size() != frames)
    throw DicomError("RLE: " + std::to_string(fragments.size()) + " fragments for " + std::to_string(frames) +
                     " frames (one per frame)");
  const bool one_per_frame = fragments.size() == frames;
  FrameExpect expect;
  expect.rows = layout.rows;
  expect.cols = layout.cols;
  expect.samples_per_pixel = layout.samples_per_pixel;
  expect.bits_allocated = layout.bits_allocated;
  std::vector<std::uint8_t> head;
  for (std::size_t f = 0; f < (one_per_frame ? frames : 1); ++f) {
    DcmPixelItem& item = *fragments[f];
    std::uint64_t frame_length = item.getLength();
    if (!one_per_frame)  // one frame in several fragments
      for (std::size_t k = 1; k < fragments.size(); ++k) frame_length += fragments[k]->getLength();
    head.resize(std::min<std::size_t>(item.getLength(), kCodestreamHead));
    if (!head.empty())
      check(item.getPartialValue(head.data(), 0, static_cast<Uint32>(head.size()), &cache),
            "Pixel Data fragment not readable");
    if (const std::string why = check_frame_codestream(codec, head, frame_length, expect); !why.empty())
      throw DicomError(frames > 1 ? "frame " + std::to_string(f + 1) + ": " + why : why);
  }
}

// Serialises `ff` in transfer syntax `xfer` (a Part 10 file, meta header included).
std::string write_part10(DcmFileFormat& ff, E_TransferSyntax xfer) {
  std::string out;
  std::vector<char> buffer(1 << 20);
  DcmOutputBufferStream stream(buffer.data(), static_cast<offile_off_t>(buffer.size()));
  ff.transferInit();
  OFCondition c;
  do {
    c = ff.write(stream, xfer, EET_ExplicitLength, nullptr);
    void* chunk = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(chunk, length);
    out.append(static_cast<const char*>(chunk), static_cast<std::size_t>(length));
  } while (c == EC_StreamNotifyClient);
  ff.transferEnd();
  check(c, "writing the data set for GDCM");
  return out;
}

// GDCM, only for JPEG 2000 (DCMTK has no decoder). GDCM does not parse the file: it reads a
// minimal data set that DCMTK writes from what it parsed, the image pixel attributes with their
// proper VRs and sane values and the fragments byte for byte. Debian's GDCM asserts on malformed
// attributes while it gathers an image's metadata (VRs, planar configuration, rescale, spacing);
// here it only ever sees well-formed ones, so that only its JPEG 2000 codec and OpenJPEG see
// untrusted bytes (checked above by check_fragments).
DecodedLayout decode_with_gdcm(DcmDataset& source, const std::vector<DcmPixelItem*>& fragments, E_TransferSyntax xfer,
                               const DecodedLayout& expected, const std::function<void*(const DecodedLayout&)>& dst_for) {
  const std::string ts_name = DcmXfer(xfer).getXferName();
  if (expected.frames > 1 && fragments.size() != static_cast<std::size_t>(expected.frames))
    throw DicomError("JPEG 2000: " + std::to_string(fragments.size()) + " fragments for " +
                     std::to_string(expected.frames) + " frames (one per frame needed)");
  Uint16 v = 0;
  const int bits_stored = source.findAndGetUint16(DCM_BitsStored, v).good() && v >= 1 && v <= expected.bits_allocated
                              ? v
                              : expected.bits_allocated;
  const bool is_signed = source.findAndGetUint16(DCM_PixelRepresentation, v).good() && v == 1;
  OFString photometric;
  source.findAndGetOFString(DCM_PhotometricInterpretation, photometric);
  static const char* const kColour[] = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"};
  const bool known = photometric == "MONOCHROME1" || photometric == "MONOCHROME2" ||
                     std::any_of(std::begin(kColour), std::end(kColour), [&](const char* p) { return photometric == p; });
  if (!known || (expected.samples_per_pixel == 1) != (photometric.compare(0, 10, "MONOCHROME") == 0))
    photometric = expected.samples_per_pixel == 1 ? "MONOCHROME2" : "RGB";

  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  check(ds.putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage), "SOP Class UID");
  check(ds.putAndInsertString(DCM_SOPInstanceUID, "2.25.1"), "SOP Instance UID");
  check(ds.putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(expected.samples_per_pixel)), "Samples");
  check(ds.putAndInsertString(DCM_PhotometricInterpretation, photometric.c_str()), "Photometric Interpretation");
  if (expected.samples_per_pixel > 1) check(ds.putAndInsertUint16(DCM_PlanarConfiguration, 0), "Planar Configuration");
  if (expected.frames > 1)
    check(ds.putAndInsertString(DCM_NumberOfFrames, std::to_string(expected.frames).c_str()), "Number of Frames");
  check(ds.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(expected.rows)), "Rows");
  check(ds.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(expected.cols)), "Columns");
  check(ds.putAndInsertUint16(DCM_BitsAllocated, static_cast<Uint16>(expected.bits_allocated)), "Bits Allocated");
  check(ds.putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(bits_stored)), "Bits Stored");
  check(ds.putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(bits_stored - 1)), "High Bit");
  check(ds.putAndInsertUint16(DCM_PixelRepresentation, is_signed ? 1 : 0), "Pixel Representation");
  auto sequence = std::make_unique<DcmPixelSequence>(DCM_PixelSequenceTag);
  check(sequence->insert(new DcmPixelItem(DCM_PixelItemTag)), "offset table");  // empty Basic Offset Table
  for (DcmPixelItem* from : fragments) {
    Uint8* bytes = nullptr;
    check(from->getUint8Array(bytes), "Pixel Data fragment not readable");
    auto item = std::make_unique<DcmPixelItem>(DCM_PixelItemTag);
    check(item->putUint8Array(bytes, from->getLength()), "fragment copy");
    check(sequence->insert(item.get()), "fragment copy");
    item.release();  // the sequence owns it now
  }
  auto pixel_data = std::make_unique<DcmPixelData>(DCM_PixelData);
  pixel_data->putOriginalRepresentation(xfer, nullptr, sequence.release());  // takes the sequence
  check(ds.insert(pixel_data.get()), "Pixel Data");
  pixel_data.release();
  const std::string part10 = write_part10(ff, xfer);

  // GDCM reports what it decoded; the layout is checked before any buffer is asked for, and a
  // failure inside dst_for comes back as its own exception.
  struct Context {
    const std::string& ts_name;
    const std::function<void*(const DecodedLayout&)>& dst_for;
    DecodedLayout layout;
    std::exception_ptr failure;
  } context{ts_name, dst_for, {}, nullptr};
  const PacsnodeGdcmAlloc alloc = [](void* c, const PacsnodeGdcmImage* image) -> void* {
    auto& ctx = *static_cast<Context*>(c);
    try {
      ctx.layout.cols = image->cols;
      ctx.layout.rows = image->rows;
      ctx.layout.frames = image->frames;
      ctx.layout.bits_allocated = image->bits_allocated;
      ctx.layout.samples_per_pixel = image->samples_per_pixel;
      check_layout_sane(ctx.layout, ctx.ts_name);
      if (image->buffer_length != ctx.layout.bytes())
        throw DicomError("decoded length " + std::to_string(image->buffer_length) + " differs from expected " +
                         std::to_string(ctx.layout.bytes()));
      return ctx.dst_for(ctx.layout);
    } catch (...) {
      ctx.failure = std::current_exception();
      return nullptr;
    }
  };
  char error[256] = {};
  const int rc = gdcm_module()(part10.data(), part10.size(), alloc, &context, error, sizeof error);
  if (context.failure) std::rethrow_exception(context.failure);
  if (rc == 1) throw DicomError("no buffer for the decoded pixels (" + ts_name + ")");
  if (rc != 0) throw DicomError(std::string(error[0] != 0 ? error : "GDCM failed") + " (" + ts_name + ")");
  return context.layout;
}

DecodedLayout decode_encapsulated(DcmDataset* ds, DcmPixelData* pixels, const DecodedLayout& layout,
                                  const std::string& ts_name,
                                  const std::function<void*(const DecodedLayout&)>& dst_for);

}  // namespace

DecodedLayout read_native(const std::filesystem::path& file, const NativePixels& at, const DecodedLayout& layout,
                          const std::function<void*(const DecodedLayout&)>& dst_for) {
  check_layout_sane(layout, "native");
  const std::size_t bytes = layout.bytes();
  if (at.length < bytes)
    throw DicomError("Pixel Data holds " + std::to_string(at.length) + " bytes, " + std::to_string(bytes) +
                     " expected (truncated)");
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DicomError("cannot open file: " + std::string(std::strerror(errno)));
  auto* dst = static_cast<char*>(dst_for(layout));
  std::size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd, dst + done, bytes - done, static_cast<off_t>(at.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "file ends inside Pixel Data (truncated)";
      ::close(fd);
      throw DicomError("Pixel Data not readable: " + why);
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return layout;
}

DecodedLayout decode_stored(const std::filesystem::path& file,
                            const std::function<void*(const DecodedLayout&)>& dst_for, const ScanLimits& limits) {
  require_scan(file, limits);  // before DCMTK (and GDCM for JPEG 2000) parse the file
  register_dcmtk_codecs();
  DcmFileFormat ff;
  // Values above 4 kB stay on disk until a frame asks for them.
  check(ff.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect), "not a readable DICOM file");
  DcmDataset* ds = ff.getDataset();
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  const DcmXfer xfer_info(xfer);
  const std::string ts_name = xfer_info.getXferName();
  const Codec codec = xfer_info.isEncapsulated() ? codec_of(xfer_info.getXferID()) : Codec::none;
  if (xfer_info.isEncapsulated() && codec == Codec::none)
    throw DicomError("transfer syntax " + ts_name + " is not decoded (not an image codec pacsnode supports)");

  DecodedLayout layout;
  DcmElement* element = nullptr;
  if (ds->findAndGetElement(DCM_FloatPixelData, element).good() && element != nullptr) {
    layout.is_float = true;
  } else if (ds->findAndGetElement(DCM_DoubleFloatPixelData, element).good() && element != nullptr) {
    layout.is_float = true;
  } else if (ds->findAndGetElement(DCM_PixelData, element).bad() || element == nullptr) {
    throw DicomError("no Pixel Data element");
  }
  auto* pixels = dynamic_cast<DcmPixelData*>(element);
  if (pixels == nullptr && !layout.is_float) throw DicomError("Pixel Data element has an unexpected VR");

  Uint16 v = 0;
  layout.rows = ds->findAndGetUint16(DCM_Rows, v).good() ? v : 0;
  layout.cols = ds->findAndGetUint16(DCM_Columns, v).good() ? v : 0;
  layout.bits_allocated = ds->findAndGetUint16(DCM_BitsAllocated, v).good() ? v : 0;
  if (layout.is_float) layout.bits_allocated = element->getTag() == DCM_DoubleFloatPixelData ? 64 : 32;
  layout.samples_per_pixel = ds->findAndGetUint16(DCM_SamplesPerPixel, v).good() ? v : 1;
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  layout.frames = frames;
  check_layout_sane(layout, ts_name);

  const std::size_t frame_bytes = layout.bytes() / static_cast<std::size_t>(layout.frames);
  DcmFileCache cache;
  if (!xfer_info.isEncapsulated() || layout.is_float) {
    // Native data (DCMTK has already inflated a deflated dataset): copy each frame in local byte
    // order; a short value means a truncated file.
    const std::size_t have = element->getLength();
    if (have < layout.bytes())
      throw DicomError("Pixel Data holds " + std::to_string(have) + " bytes, " + std::to_string(layout.bytes()) +
                       " expected (truncated)");
    auto* dst = static_cast<char*>(dst_for(layout));
    for (int f = 0; f < layout.frames; ++f)
      check(element->getPartialValue(dst + f * frame_bytes, static_cast<Uint32>(f * frame_bytes),
                                     static_cast<Uint32>(frame_bytes), &cache),
            "Pixel Data not readable");
    if (xfer == EXS_BigEndianExplicit && layout.bits_allocated == 8 && element->getVR() == EVR_OW) {
      for (std::size_t i = 0; i + 2 <= layout.bytes(); i += 2) std::swap(dst[i], dst[i + 1]);  // bytes in OW words
    }
    if (xfer == EXS_BigEndianExplicit && layout.bits_allocated == 32) fix_big_endian_32(dst, layout.bytes());
    return layout;
  }

  // Encapsulated: every frame's codestream header is checked before a codec sees it. GDCM only for
  // JPEG 2000; DCMTK decodes the rest. (GDCM used to be a second opinion when DCMTK failed: over the
  // 2,048 files of ../shared/data it rescued none, and it added GDCM's asserting parsers to what
  // untrusted bytes reach.)
  const std::vector<DcmPixelItem*> fragments = fragments_of(*pixels, xfer);
  check_fragments(fragments, codec, layout, cache);
  if (codec == Codec::jpeg_2000) return decode_with_gdcm(*ds, fragments, xfer, layout, dst_for);
  return decode_encapsulated(ds, pixels, layout, ts_name, dst_for);
}

void check_encapsulated_pixels(DcmDataset& ds) {
  const E_TransferSyntax xfer = ds.getOriginalXfer();
  const DcmXfer info(xfer);
  if (!info.isEncapsulated()) return;
  const Codec codec = codec_of(info.getXferID());
  if (codec == Codec::none)
    throw DicomError(std::string("transfer syntax ") + info.getXferName() + " is not decoded");
  DcmElement* element = nullptr;
  auto* pixels = ds.findAndGetElement(DCM_PixelData, element).good() ? dynamic_cast<DcmPixelData*>(element) : nullptr;
  if (pixels == nullptr) throw DicomError("no Pixel Data element");
  DecodedLayout layout;
  Uint16 v = 0;
  layout.rows = ds.findAndGetUint16(DCM_Rows, v).good() ? v : 0;
  layout.cols = ds.findAndGetUint16(DCM_Columns, v).good() ? v : 0;
  layout.bits_allocated = ds.findAndGetUint16(DCM_BitsAllocated, v).good() ? v : 0;
  layout.samples_per_pixel = ds.findAndGetUint16(DCM_SamplesPerPixel, v).good() ? v : 1;
  Sint32 frames = 1;
  if (ds.findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  layout.frames = frames;
  DcmFileCache cache;
  check_fragments(fragments_of(*pixels, xfer), codec, layout, cache);
}

namespace {

DecodedLayout decode_encapsulated(DcmDataset* ds, DcmPixelData* pixels, const DecodedLayout& layout,
                                  const std::string& ts_name,
                                  const std::function<void*(const DecodedLayout&)>& dst_for) {
  const std::size_t frame_bytes = layout.bytes() / static_cast<std::size_t>(layout.frames);
  DcmFileCache cache;
  Uint32 frame_size = 0;
  if (layout.frames == 1) {
    // One frame: decode the whole value (DCMTK's per-frame access mishandles some RLE fragmentations).
    check(ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr),
          "pixel data could not be decoded (" + ts_name + ")");
    if (pixels->getLength() < frame_bytes) throw DicomError("decoded pixel data too short (" + ts_name + ")");
    auto* dst = static_cast<char*>(dst_for(layout));
    check(pixels->getPartialValue(dst, 0, static_cast<Uint32>(frame_bytes), &cache), "decoded Pixel Data not readable");
    return layout;
  }
  check(pixels->getUncompressedFrameSize(ds, frame_size), "frame size");
  if (frame_size < frame_bytes) throw DicomError("frame size " + std::to_string(frame_size) + " below expected");
  auto* dst = static_cast<char*>(dst_for(layout));
  std::vector<char> temp(frame_size > frame_bytes ? frame_size : 0);  // padded (odd-length) frames
  Uint32 fragment = 0;
  for (int f = 0; f < layout.frames; ++f) {
    char* out = temp.empty() ? dst + f * frame_bytes : temp.data();
    OFString color_model;
    check(pixels->getUncompressedFrame(ds, static_cast<Uint32>(f), fragment, out, frame_size, color_model, &cache),
          "pixel data could not be decoded (" + ts_name + ", frame " + std::to_string(f + 1) + ")");
    if (!temp.empty()) std::memcpy(dst + f * frame_bytes, temp.data(), frame_bytes);
  }
  return layout;
}

}  // namespace
}  // namespace dicom
