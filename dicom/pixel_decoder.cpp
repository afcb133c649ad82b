#include "dicom/pixel_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmTrace.h>
#include <gdcmTransferSyntax.h>

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfcache.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include "dicom/check.h"

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

void quiet_gdcm() {
  static std::once_flag once;
  std::call_once(once, [] {
    gdcm::Trace::DebugOff();
    gdcm::Trace::WarningOff();
    gdcm::Trace::ErrorOff();
  });
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

// GDCM, for the encapsulated syntaxes DCMTK has no decoder for (JPEG 2000).
DecodedLayout decode_with_gdcm(const std::filesystem::path& file,
                               const std::function<void*(const DecodedLayout&)>& dst_for) {
  quiet_gdcm();
  gdcm::ImageReader reader;
  reader.SetFileName(file.c_str());
  if (!reader.Read()) throw DicomError("GDCM cannot read the image (malformed or unsupported encoding)");
  const gdcm::Image& img = reader.GetImage();
  const gdcm::PixelFormat& pf = img.GetPixelFormat();
  const char* ts = gdcm::TransferSyntax::GetTSString(img.GetTransferSyntax());
  const std::string ts_name = ts ? ts : "unknown transfer syntax";

  DecodedLayout layout;
  layout.cols = static_cast<int>(img.GetDimension(0));
  layout.rows = static_cast<int>(img.GetDimension(1));
  layout.frames = img.GetNumberOfDimensions() > 2 ? static_cast<int>(img.GetDimension(2)) : 1;
  layout.bits_allocated = pf.GetBitsAllocated();
  layout.samples_per_pixel = pf.GetSamplesPerPixel();
  check_layout_sane(layout, ts_name);
  if (img.GetBufferLength() != layout.bytes())
    throw DicomError("decoded length " + std::to_string(img.GetBufferLength()) + " differs from expected " +
                     std::to_string(layout.bytes()));
  auto* dst = static_cast<char*>(dst_for(layout));
  if (!img.GetBuffer(dst)) throw DicomError("pixel data could not be decoded (" + ts_name + ")");
  return layout;
}

DecodedLayout decode_encapsulated(DcmDataset* ds, DcmPixelData* pixels, const DecodedLayout& layout,
                                  const std::string& ts_name,
                                  const std::function<void*(const DecodedLayout&)>& dst_for);

}  // namespace

DecodedLayout decode_stored(const std::filesystem::path& file,
                            const std::function<void*(const DecodedLayout&)>& dst_for) {
  register_dcmtk_codecs();
  DcmFileFormat ff;
  // Values above 4 kB stay on disk until a frame asks for them.
  check(ff.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect), "not a readable DICOM file");
  DcmDataset* ds = ff.getDataset();
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  const DcmXfer xfer_info(xfer);
  const std::string ts_name = xfer_info.getXferName();
  if (xfer_info.isEncapsulated() && !DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit))
    return decode_with_gdcm(file, dst_for);

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

  try {
    return decode_encapsulated(ds, pixels, layout, ts_name, dst_for);
  } catch (const DicomError& dcmtk_error) {
    try {  // a second opinion: GDCM's codecs accept some streams DCMTK's do not (e.g. 7-bit JPEG-LS)
      return decode_with_gdcm(file, dst_for);
    } catch (const DicomError& gdcm_error) {
      throw DicomError(std::string(dcmtk_error.what()) + "; GDCM: " + gdcm_error.what());
    }
  }
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
