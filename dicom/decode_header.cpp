#include "dicom/decode_header.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <memory>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmf.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include "dicom/check.h"

namespace dicom {
namespace {

// Values longer than this are left on disk (DCMTK loads them on demand), so pixel data is never read.
constexpr Uint32 kMaxReadLength = 4096;

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

DcmElement* find(DcmItem& item, const DcmTagKey& tag) {
  DcmElement* el = nullptr;
  return item.findAndGetElement(tag, el).good() ? el : nullptr;
}

// Value `pos` (or, for pos < 0, the whole value) of an element that was written with VR UN although
// the dictionary knows it (e.g. after a conversion that lost the VRs): string VRs are the raw
// bytes, US is little endian.
std::string un_value(DcmElement& el, const DcmTagKey& tag, long pos) {
  Uint8* bytes = nullptr;
  const Uint32 len = el.getLength();
  if (len == 0 || el.getUint8Array(bytes).bad() || bytes == nullptr) return std::string();
  const DcmVR vr = DcmTag(tag).getVR();
  if (vr.getEVR() == EVR_US) {
    const std::size_t at = 2 * static_cast<std::size_t>(pos < 0 ? 0 : pos);
    if (len < at + 2) return std::string();
    return std::to_string(bytes[at] | (bytes[at + 1] << 8));
  }
  if (!vr.isaString()) return std::string();
  const std::string all(reinterpret_cast<const char*>(bytes), len);
  if (pos < 0) return trim(all);
  std::size_t start = 0;
  for (long i = 0; i < pos; ++i) {
    start = all.find('\\', start);
    if (start == std::string::npos) return std::string();
    ++start;
  }
  return trim(all.substr(start, all.find('\\', start) - start));
}

// Value `pos` of `el` (pos < 0: all of it) as trimmed text; empty when absent. One element lookup
// serves every value of a multi-valued attribute.
std::string text(DcmElement* el, const DcmTagKey& tag, long pos) {
  if (el == nullptr) return {};
  if (el->ident() == EVR_UN) return un_value(*el, tag, pos);
  OFString v;
  if ((pos < 0 ? el->getOFStringArray(v) : el->getOFString(v, static_cast<unsigned long>(pos))).bad()) return {};
  return trim(v.c_str());
}

std::string str(DcmItem& item, const DcmTagKey& tag) { return text(find(item, tag), tag, -1); }

std::string str_at(DcmItem& item, const DcmTagKey& tag, unsigned long pos) {
  return text(find(item, tag), tag, static_cast<long>(pos));
}

std::optional<double> parse_double(const std::string& s) {
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || !trim(end).empty() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<double> num_at(DcmItem& item, const DcmTagKey& tag, unsigned long pos = 0) {
  // Binary VRs (US, FD, ...) and strings (DS, IS) alike: DCMTK renders the value as text.
  return parse_double(str_at(item, tag, pos));
}

int int_or(DcmItem& item, const DcmTagKey& tag, int fallback) {
  DcmElement* el = find(item, tag);
  Uint16 u = 0;
  if (el != nullptr && el->getUint16(u).good()) return u;
  const auto v = parse_double(text(el, tag, 0));
  return v ? static_cast<int>(*v) : fallback;
}

template <std::size_t N>
std::optional<std::array<double, N>> nums(DcmItem& item, const DcmTagKey& tag) {
  DcmElement* el = find(item, tag);
  std::array<double, N> out{};
  for (std::size_t i = 0; i < N; ++i) {
    const auto v = parse_double(text(el, tag, static_cast<long>(i)));
    if (!v) return std::nullopt;
    out[i] = *v;
  }
  return out;
}

// "HHMMSS.frac" (or legacy "HH:MM:SS") as seconds; 0 when absent or unreadable.
double time_seconds(std::string t) {
  std::erase(t, ':');
  if (t.size() < 2) return 0;
  auto digits = [&](std::size_t at) { return t.size() >= at + 2 ? std::atof(t.substr(at, 2).c_str()) : 0.0; };
  double frac = 0;
  if (const auto dot = t.find('.'); dot != std::string::npos) frac = std::atof(t.substr(dot).c_str());
  return digits(0) * 3600 + digits(2) * 60 + digits(4) + frac;
}

// "YYYYMMDDHHMMSS.frac" as a monotone number (days * 86400 + seconds); 0 when absent.
double datetime_key(const std::string& dt) {
  if (dt.size() < 8) return 0;
  const double day = std::atof(dt.substr(0, 8).c_str());
  return day * 86400.0 + time_seconds(dt.substr(8));
}

DcmItem* item_of(DcmItem& ds, const DcmTagKey& seq) {
  DcmItem* item = nullptr;
  ds.findAndGetSequenceItem(seq, item, 0);
  return item != nullptr ? item : &ds;
}

// The first item of `macro` in the per-frame item, else in the shared item (enhanced objects).
DcmItem* macro_item(DcmItem* per_frame, DcmItem* shared, const DcmTagKey& macro) {
  DcmItem* found = nullptr;
  if (per_frame && per_frame->findAndGetSequenceItem(macro, found, 0).good() && found) return found;
  found = nullptr;
  if (shared && shared->findAndGetSequenceItem(macro, found, 0).good() && found) return found;
  return nullptr;
}

void read_plane(DcmItem& item, FrameHeader& f) {
  if (auto p = nums<3>(item, DCM_ImagePositionPatient)) f.position = Vec3{(*p)[0], (*p)[1], (*p)[2]};
  if (auto o = nums<6>(item, DCM_ImageOrientationPatient)) f.orientation = *o;
}

bool positive(const std::optional<std::array<double, 2>>& s) { return s && (*s)[0] > 0 && (*s)[1] > 0; }

void read_measures(DcmItem& item, FrameHeader& f) {
  if (auto s = nums<2>(item, DCM_PixelSpacing); positive(s)) f.pixel_spacing = *s;
  if (auto t = num_at(item, DCM_SliceThickness)) f.slice_thickness = *t;
}

void read_rescale(DcmItem& item, FrameHeader& f) {
  const auto slope = num_at(item, DCM_RescaleSlope);
  const auto intercept = num_at(item, DCM_RescaleIntercept);
  if (slope || intercept) {
    f.has_rescale = true;
    f.rescale_slope = slope.value_or(1.0);
    f.rescale_intercept = intercept.value_or(0.0);
  }
  if (auto type = str(item, DCM_RescaleType); !type.empty()) f.rescale_type = type;
}

// Reads the first item of the Modality LUT Sequence into h.modality_lut; returns what is wrong, if anything.
std::string read_modality_lut(DcmItem& ds, ImageHeader& h) {
  DcmItem* item = nullptr;
  if (ds.findAndGetSequenceItem(DCM_ModalityLUTSequence, item, 0).bad() || item == nullptr) return "no item";
  const auto entries_value = num_at(*item, DCM_LUTDescriptor, 0);
  const auto first_value = num_at(*item, DCM_LUTDescriptor, 1);
  if (!entries_value || !first_value || *entries_value < 0 || *entries_value > 65535) return "no valid LUT Descriptor";
  const auto entries = static_cast<std::size_t>(*entries_value);
  auto first = static_cast<std::int64_t>(*first_value);  // SS: already signed; US: signed when the pixels are
  if (h.is_signed && first > 32767) first -= 65536;
  const Uint16* values = nullptr;
  unsigned long count = 0;
  if (item->findAndGetUint16Array(DCM_LUTData, values, &count).bad() || values == nullptr) return "no LUT Data";
  const std::size_t size = entries == 0 ? 65536 : entries;
  if (count < size) return "LUT Data holds " + std::to_string(count) + " of " + std::to_string(size) + " entries";
  auto lut = std::make_shared<ModalityLut>();
  lut->first_mapped = first;
  lut->data.assign(values, values + size);
  h.modality_lut = std::move(lut);
  return {};
}

// Offset and length of the Pixel Data value when it is native little endian data that DCMTK left
// in the file (longer than kMaxReadLength); else length 0.
NativePixels native_pixels(DcmDataset& ds) {
  const E_TransferSyntax xfer = ds.getOriginalXfer();
  if (xfer != EXS_LittleEndianExplicit && xfer != EXS_LittleEndianImplicit) return {};
  DcmElement* el = nullptr;
  if (ds.findAndGetElement(DCM_PixelData, el).bad() || el == nullptr) return {};
  const auto* pixels = dynamic_cast<DcmPixelData*>(el);
  const DcmInputStreamFactory* stream = el->getInputStream();
  if (pixels == nullptr || stream == nullptr || stream->ident() != DFT_DcmInputFileStreamFactory) return {};
  const Uint32 length = el->getLength();
  if (length == DCM_UndefinedLength) return {};
  const auto& file = static_cast<const DcmInputFileStreamFactory&>(*stream);
  return {static_cast<std::uint64_t>(file.getOffset()), length};
}

}  // namespace

ImageHeader read_image_header(const std::filesystem::path& file, const ScanLimits& limits) {
  require_scan(file, limits);  // before DCMTK's recursive reader sees the bytes
  DcmFileFormat ff;
  check(ff.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, kMaxReadLength, ERM_autoDetect),
        "not a readable DICOM file (not DICOM, truncated or malformed)");
  DcmDataset& ds = *ff.getDataset();
  DcmMetaInfo& meta = *ff.getMetaInfo();

  ImageHeader h;
  h.path = file.string();
  h.transfer_syntax_uid = str(meta, DCM_TransferSyntaxUID);
  if (h.transfer_syntax_uid.empty()) h.transfer_syntax_uid = DcmXfer(ds.getOriginalXfer()).getXferID();
  h.sop_class_uid = str(ds, DCM_SOPClassUID);
  if (h.sop_class_uid.empty()) h.sop_class_uid = str(meta, DCM_MediaStorageSOPClassUID);
  h.sop_instance_uid = str(ds, DCM_SOPInstanceUID);
  if (h.sop_instance_uid.empty()) h.sop_instance_uid = str(meta, DCM_MediaStorageSOPInstanceUID);
  h.modality = str(ds, DCM_Modality);
  h.body_part = str(ds, DCM_BodyPartExamined);
  h.series_description = str(ds, DCM_SeriesDescription);
  h.protocol_name = str(ds, DCM_ProtocolName);
  h.study_uid = str(ds, DCM_StudyInstanceUID);
  h.series_uid = str(ds, DCM_SeriesInstanceUID);
  h.frame_of_reference_uid = str(ds, DCM_FrameOfReferenceUID);
  h.manufacturer = str(ds, DCM_Manufacturer);
  h.image_type = str(ds, DCM_ImageType);
  h.photometric = str(ds, DCM_PhotometricInterpretation);
  h.pet_units = str(ds, DCM_Units);
  h.rows = int_or(ds, DCM_Rows, 0);
  h.cols = int_or(ds, DCM_Columns, 0);
  h.samples_per_pixel = int_or(ds, DCM_SamplesPerPixel, 1);
  h.bits_allocated = int_or(ds, DCM_BitsAllocated, 0);
  h.bits_stored = int_or(ds, DCM_BitsStored, h.bits_allocated);
  h.high_bit = int_or(ds, DCM_HighBit, h.bits_stored - 1);
  h.is_signed = int_or(ds, DCM_PixelRepresentation, 0) == 1;
  h.has_pixel_data = ds.tagExists(DCM_PixelData);
  h.native_pixels = native_pixels(ds);
  h.has_float_pixel_data = ds.tagExists(DCM_FloatPixelData) || ds.tagExists(DCM_DoubleFloatPixelData);
  // A Modality LUT Sequence without items, or whose first item is empty (seen in vendor test
  // files), describes no transformation: read as identity, i.e. as if it were absent (a Rescale
  // Slope/Intercept beside it still applies).
  {
    DcmItem* first = nullptr;
    h.has_modality_lut = ds.tagExists(DCM_ModalityLUTSequence) &&
                         ds.findAndGetSequenceItem(DCM_ModalityLUTSequence, first, 0).good() && first != nullptr &&
                         first->card() > 0;
  }
  h.spacing_between_slices = num_at(ds, DCM_SpacingBetweenSlices).value_or(0.0);
  if (h.has_modality_lut) {
    if (auto why = read_modality_lut(ds, h); !why.empty()) {
      h.problem = "malformed Modality LUT Sequence: " + why;
      return h;
    }
  }

  if (const auto nf = str(ds, DCM_NumberOfFrames); !nf.empty()) {
    const auto v = parse_double(nf);
    if (!v || *v < 1 || *v != std::floor(*v) || *v > 1e6) {
      h.problem = "invalid Number of Frames '" + nf + "'";
      return h;
    }
    h.number_of_frames = static_cast<int>(*v);
  }

  // Attributes of the top-level dataset, used by single-frame images and as fallback.
  FrameHeader base;
  read_plane(ds, base);
  read_measures(ds, base);
  if (!base.pixel_spacing) {
    if (auto s = nums<2>(ds, DCM_ImagerPixelSpacing); positive(s)) base.pixel_spacing = *s;
  }
  read_rescale(ds, base);
  if (h.modality_lut) {
    base.has_rescale = true;
    if (auto type = str(*item_of(ds, DCM_ModalityLUTSequence), DCM_ModalityLUTType); !type.empty()) base.rescale_type = type;
  }
  if (auto dose = num_at(ds, DCM_DoseGridScaling)) {  // RT Dose: real value = stored * scaling
    base.has_rescale = true;
    base.rescale_slope = *dose;
    base.rescale_intercept = 0;
    if (base.rescale_type.empty()) base.rescale_type = str(ds, DCM_DoseUnits);
  }
  const double acq_time = time_seconds(str(ds, DCM_AcquisitionTime));
  const double acq_date = std::atof(str(ds, DCM_AcquisitionDate).c_str());
  base.temporal_key = {num_at(ds, DCM_TemporalPositionIdentifier).value_or(0),
                       num_at(ds, DCM_TriggerTime).value_or(0),
                       acq_date * 86400.0 + acq_time,
                       num_at(ds, DCM_AcquisitionNumber).value_or(0),
                       num_at(ds, DCM_InstanceNumber).value_or(0),
                       0};

  DcmSequenceOfItems* per_frame_seq = nullptr;
  DcmItem* shared = nullptr;
  ds.findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame_seq);
  ds.findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
  h.enhanced = per_frame_seq != nullptr && per_frame_seq->card() > 0;

  if (h.enhanced) {
    if (per_frame_seq->card() != static_cast<unsigned long>(h.number_of_frames)) {
      h.problem = "Per-frame Functional Groups Sequence has " + std::to_string(per_frame_seq->card()) +
                  " items for " + std::to_string(h.number_of_frames) + " frames";
      return h;
    }
    // Items in order by walking the list (getItem(i) walks from the start each time: quadratic).
    DcmObject* next = nullptr;
    for (int i = 0; i < h.number_of_frames; ++i) {
      next = per_frame_seq->nextInContainer(next);
      DcmItem* pf = dynamic_cast<DcmItem*>(next);
      FrameHeader f = base;
      f.frame_number = i + 1;
      f.position.reset();
      f.orientation.reset();
      if (auto* it = macro_item(pf, shared, DCM_PlanePositionSequence)) read_plane(*it, f);
      if (auto* it = macro_item(pf, shared, DCM_PlaneOrientationSequence)) read_plane(*it, f);
      if (auto* it = macro_item(pf, shared, DCM_PixelMeasuresSequence)) read_measures(*it, f);
      if (auto* it = macro_item(pf, shared, DCM_PixelValueTransformationSequence)) read_rescale(*it, f);
      f.temporal_key[5] = i + 1;
      if (auto* it = macro_item(pf, shared, DCM_FrameContentSequence)) {
        f.temporal_key[0] = num_at(*it, DCM_TemporalPositionIndex).value_or(f.temporal_key[0]);
        if (const auto dt = str(*it, DCM_FrameAcquisitionDateTime); !dt.empty()) f.temporal_key[2] = datetime_key(dt);
      }
      h.frames.push_back(std::move(f));
    }
  } else {
    // Classic multi-frame: RT Dose and NM-like objects place frame i at position + offset[i]*normal.
    // The whole value split once (value i on its own walks the string from the start: quadratic).
    std::vector<double> offsets;
    if (h.number_of_frames > 1) {
      const std::string all = str(ds, DCM_GridFrameOffsetVector);
      std::size_t start = 0;
      for (int i = 0; i < h.number_of_frames && start <= all.size(); ++i) {
        const std::size_t end = std::min(all.find('\\', start), all.size());
        const auto v = parse_double(trim(all.substr(start, end - start)));
        if (!v) break;
        offsets.push_back(*v);
        start = end + 1;
      }
      if (offsets.size() != static_cast<std::size_t>(h.number_of_frames)) offsets.clear();
    }
    for (int i = 0; i < h.number_of_frames; ++i) {
      FrameHeader f = base;
      f.frame_number = h.number_of_frames > 1 ? i + 1 : 0;
      f.temporal_key[5] = i + 1;
      if (h.number_of_frames > 1) {
        if (!offsets.empty() && f.position && f.orientation) {
          const auto& o = *f.orientation;
          const Vec3 n{o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
          // Offsets relative to the first frame (whose offset is 0, or its absolute z).
          for (int k = 0; k < 3; ++k) (*f.position)[k] += (offsets[i] - offsets[0]) * n[k];
        } else {
          f.position.reset();  // frames without their own position: not a spatial stack
        }
      }
      h.frames.push_back(std::move(f));
    }
  }
  return h;
}

}  // namespace dicom
