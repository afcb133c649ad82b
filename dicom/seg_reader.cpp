#include "dicom/seg_reader.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include "dicom/check.h"
#include "dicom/pixel_decoder.h"

namespace dicom {
namespace {

static_assert(std::endian::native == std::endian::little, "SEG pixel data is read as little-endian bytes");

void register_decoders() {
  static std::once_flag once;
  std::call_once(once, [] {
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

class Reader {
 public:
  explicit Reader(const std::filesystem::path& p) : path_(p) {}
  [[noreturn]] void fail(const std::string& why) const { throw DicomError("SEG " + path_.string() + ": " + why); }

  std::string str(DcmItem& item, const DcmTagKey& tag) const {
    OFString v;
    if (item.findAndGetOFStringArray(tag, v).bad()) return {};
    return v.c_str();
  }
  bool doubles(DcmItem& item, const DcmTagKey& tag, double* out, int n) const {
    for (int i = 0; i < n; ++i) {
      Float64 v = 0;
      if (item.findAndGetFloat64(tag, v, i).bad() || !std::isfinite(v)) return false;
      out[i] = v;
    }
    return true;
  }
  // Item 0 of sequence `seq` in a functional groups item, or nullptr.
  static DcmItem* group(DcmItem* fg, const DcmTagKey& seq) {
    DcmItem* it = nullptr;
    if (fg && fg->findAndGetSequenceItem(seq, it, 0).good()) return it;
    return nullptr;
  }
  // The macro `seq` of frame `pf`, else of the shared groups.
  static DcmItem* macro(DcmItem* pf, DcmItem* shared, const DcmTagKey& seq) {
    if (DcmItem* it = group(pf, seq)) return it;
    return group(shared, seq);
  }
  Code code(DcmItem& item, const DcmTagKey& seq) const {
    DcmItem* c = nullptr;
    if (item.findAndGetSequenceItem(seq, c, 0).bad() || !c) return {};
    return {str(*c, DCM_CodeValue), str(*c, DCM_CodingSchemeDesignator), str(*c, DCM_CodeMeaning)};
  }

  const std::filesystem::path& path_;
};

bool same_dir(const Vec3& a, const Vec3& b) {
  return std::abs(a[0] - b[0]) < 1e-4 && std::abs(a[1] - b[1]) < 1e-4 && std::abs(a[2] - b[2]) < 1e-4;
}

}  // namespace

const SegSegment* SegObject::segment(int number) const {
  for (const auto& s : segments)
    if (s.number == number) return &s;
  return nullptr;
}

bool has_dicom_preamble(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[132];
  if (!in.read(buf, sizeof buf)) return false;
  return std::memcmp(buf + 128, "DICM", 4) == 0;
}

bool looks_like_dicom(const std::filesystem::path& path, const ScanLimits& limits) {
  if (has_dicom_preamble(path)) return true;
  {  // A bare dataset starts with a group 0002 or 0008 tag; anything else is not tried with DCMTK,
     // which would log parse errors for arbitrary files.
    std::ifstream in(path, std::ios::binary);
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) return false;
    const bool le = b[1] == 0 && (b[0] == 0x02 || b[0] == 0x08), be = b[0] == 0 && (b[1] == 0x02 || b[1] == 0x08);
    if (!le && !be) return false;
  }
  if (!scan_file(path, limits).ok) return true;  // DICOM-like but malformed: read_seg says why
  DcmFileFormat ff;
  // Only the header matters: values longer than 64 bytes (pixel data) stay on disk. Read as the
  // scan read it (a meta header, if any, names the transfer syntax).
  if (ff.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 64, ERM_autoDetect).bad()) return false;
  OFString cls;
  return ff.getDataset()->findAndGetOFString(DCM_SOPClassUID, cls).good() && cls == UID_SegmentationStorage;
}

SegObject read_seg(const std::filesystem::path& path, const ScanLimits& limits) {
  const Reader rd(path);
  if (const ScanResult scan = scan_file(path, limits); !scan.ok) rd.fail(scan.reason);
  DcmFileFormat ff;
  if (const OFCondition c = ff.loadFile(path.c_str(), EXS_Unknown, EGL_noChange); c.bad())
    rd.fail(std::string("cannot read as DICOM: ") + c.text());
  DcmDataset& ds = *ff.getDataset();

  const std::string sop_class = rd.str(ds, DCM_SOPClassUID);
  if (sop_class != UID_SegmentationStorage)
    rd.fail("not a Segmentation Storage object (SOP Class UID '" + sop_class + "', expected " +
            UID_SegmentationStorage + ")");
  SegObject seg;
  seg.sop_instance_uid = rd.str(ds, DCM_SOPInstanceUID);
  seg.segmentation_type = rd.str(ds, DCM_SegmentationType);
  const bool binary = seg.segmentation_type == "BINARY";
  if (!binary && seg.segmentation_type != "FRACTIONAL")
    rd.fail("Segmentation Type '" + seg.segmentation_type + "' is not supported (BINARY or FRACTIONAL)");

  Uint16 rows = 0, cols = 0, bits = 0, samples = 1;
  ds.findAndGetUint16(DCM_Rows, rows);
  ds.findAndGetUint16(DCM_Columns, cols);
  ds.findAndGetUint16(DCM_BitsAllocated, bits);
  ds.findAndGetUint16(DCM_SamplesPerPixel, samples);
  if (rows == 0 || cols == 0) rd.fail("Rows/Columns missing or zero");
  if (samples != 1) rd.fail("Samples per Pixel " + std::to_string(samples) + " (expected 1)");
  if (binary && bits != 1) rd.fail("BINARY with Bits Allocated " + std::to_string(bits) + " (expected 1)");
  if (!binary && bits != 8) rd.fail("FRACTIONAL with Bits Allocated " + std::to_string(bits) + " (expected 8)");
  seg.rows = rows, seg.cols = cols;
  if (!binary) {
    Uint16 maxv = 0;
    if (ds.findAndGetUint16(DCM_MaximumFractionalValue, maxv).bad() || maxv == 0)
      rd.fail("FRACTIONAL without a Maximum Fractional Value");
    seg.max_fractional_value = maxv;
  }
  Sint32 nframes = 1;
  if (ds.findAndGetSint32(DCM_NumberOfFrames, nframes).bad()) nframes = 1;
  if (nframes < 1) rd.fail("Number of Frames " + std::to_string(nframes));

  // Segments (items in order by walking the list; the numbers defined in a set: a file with many
  // segments and frames must not cost segments x frames lookups).
  std::set<int> defined;
  DcmSequenceOfItems* segment_seq = nullptr;
  if (ds.findAndGetSequence(DCM_SegmentSequence, segment_seq).bad()) segment_seq = nullptr;
  for (DcmObject* next = segment_seq ? segment_seq->nextInContainer(nullptr) : nullptr; next != nullptr;
       next = segment_seq->nextInContainer(next)) {
    auto* it = dynamic_cast<DcmItem*>(next);
    if (!it) break;
    SegSegment s;
    Uint16 no = 0;
    if (it->findAndGetUint16(DCM_SegmentNumber, no).bad()) rd.fail("Segment Sequence item without a Segment Number");
    s.number = no;
    s.label = rd.str(*it, DCM_SegmentLabel);
    s.category = rd.code(*it, DCM_SegmentedPropertyCategoryCodeSequence);
    s.type = rd.code(*it, DCM_SegmentedPropertyTypeCodeSequence);
    if (!defined.insert(s.number).second) rd.fail("Segment Number " + std::to_string(s.number) + " defined twice");
    seg.segments.push_back(std::move(s));
  }
  if (seg.segments.empty()) rd.fail("empty or missing Segment Sequence");

  // Geometry and per-frame attributes.
  DcmItem* shared = nullptr;
  ds.findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
  seg.frame_of_reference_uid = rd.str(ds, DCM_FrameOfReferenceUID);
  bool have_iop = false, all_positions = true;
  // One Per-frame Functional Groups item per frame, checked before anything is sized by Number of
  // Frames (a 12-byte element asking for 2^31 frames must not allocate for them).
  DcmSequenceOfItems* per_frame_seq = nullptr;
  const unsigned long items = ds.findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame_seq).good() &&
                                      per_frame_seq
                                  ? per_frame_seq->card()
                                  : 0;
  if (items < static_cast<unsigned long>(nframes))
    rd.fail("Per-frame Functional Groups Sequence has " + std::to_string(items) + " items for " +
            std::to_string(nframes) + " frames");
  seg.frames.resize(static_cast<std::size_t>(nframes));
  DcmObject* next = nullptr;  // items in order by walking the list (getItem(i) would be quadratic)
  for (Sint32 i = 0; i < nframes; ++i) {
    next = per_frame_seq->nextInContainer(next);
    DcmItem* pf = dynamic_cast<DcmItem*>(next);
    if (!pf) rd.fail("Per-frame Functional Groups Sequence item " + std::to_string(i + 1) + " is not readable");
    SegFrame& f = seg.frames[static_cast<std::size_t>(i)];
    const std::string where = "frame " + std::to_string(i + 1) + ": ";
    DcmItem* sid = Reader::macro(pf, shared, DCM_SegmentIdentificationSequence);
    Uint16 segno = 0;
    if (!sid || sid->findAndGetUint16(DCM_ReferencedSegmentNumber, segno).bad())
      rd.fail(where + "no Segment Identification (Referenced Segment Number)");
    if (!defined.count(segno)) rd.fail(where + "refers to segment " + std::to_string(segno) + ", which is not defined");
    f.segment = segno;

    if (DcmItem* pos = Reader::macro(pf, shared, DCM_PlanePositionSequence))
      f.has_position = rd.doubles(*pos, DCM_ImagePositionPatient, f.position.data(), 3);
    all_positions = all_positions && f.has_position;

    if (DcmItem* ori = Reader::macro(pf, shared, DCM_PlaneOrientationSequence)) {
      double v[6];
      if (rd.doubles(*ori, DCM_ImageOrientationPatient, v, 6)) {
        const Vec3 r{v[0], v[1], v[2]}, c{v[3], v[4], v[5]};
        if (!have_iop) {
          seg.row_dir = r, seg.col_dir = c, have_iop = true;
        } else if (!same_dir(r, seg.row_dir) || !same_dir(c, seg.col_dir)) {
          rd.fail(where + "Image Orientation (Patient) differs from frame 1 (frames of one SEG must be parallel)");
        }
      }
    }
    if (DcmItem* pm = Reader::macro(pf, shared, DCM_PixelMeasuresSequence)) {
      double ps[2];
      if (rd.doubles(*pm, DCM_PixelSpacing, ps, 2)) {
        if (!(ps[0] > 0) || !(ps[1] > 0)) rd.fail(where + "Pixel Spacing is not positive");
        if (seg.has_pixel_spacing && (std::abs(ps[0] - seg.spacing_row) > 1e-4 * ps[0] ||
                                      std::abs(ps[1] - seg.spacing_col) > 1e-4 * ps[1]))
          rd.fail(where + "Pixel Spacing differs from frame 1");
        seg.spacing_row = ps[0], seg.spacing_col = ps[1], seg.has_pixel_spacing = true;
      }
      double t = 0;
      if (seg.slice_thickness <= 0 && rd.doubles(*pm, DCM_SliceThickness, &t, 1) && t > 0) seg.slice_thickness = t;
      if (seg.spacing_between_slices <= 0 && rd.doubles(*pm, DCM_SpacingBetweenSlices, &t, 1) && t > 0)
        seg.spacing_between_slices = t;
    }
    if (DcmItem* der = Reader::group(pf, DCM_DerivationImageSequence)) {
      DcmItem* src = nullptr;
      if (der->findAndGetSequenceItem(DCM_SourceImageSequence, src, 0).good() && src) {
        f.source_sop_instance_uid = rd.str(*src, DCM_ReferencedSOPInstanceUID);
        Sint32 fr = 0;
        if (src->findAndGetSint32(DCM_ReferencedFrameNumber, fr).good()) f.source_frame = fr;
      }
    }
  }
  if (!seg.has_pixel_spacing) {  // 2D objects may carry it at the top level only
    double ps[2];
    if (rd.doubles(ds, DCM_PixelSpacing, ps, 2) && ps[0] > 0 && ps[1] > 0)
      seg.spacing_row = ps[0], seg.spacing_col = ps[1], seg.has_pixel_spacing = true;
  }
  seg.has_frame_of_reference = !seg.frame_of_reference_uid.empty() && have_iop && all_positions;
  if (seg.has_frame_of_reference && !seg.has_pixel_spacing)
    rd.fail("frames have a position and orientation but no Pixel Spacing");

  // Pixel data: decompress when encapsulated, then unpack frame by frame.
  if (DcmXfer(ds.getOriginalXfer()).isEncapsulated()) {
    try {
      check_encapsulated_pixels(ds);  // the codestream checks decode_stored makes
    } catch (const DicomError& e) {
      rd.fail(std::string("encapsulated pixel data: ") + e.what());
    }
    register_decoders();
    if (const OFCondition c = ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr); c.bad())
      rd.fail(std::string("cannot decompress the pixel data (") + DcmXfer(ds.getOriginalXfer()).getXferName() +
              "): " + c.text());
  }
  DcmElement* px = nullptr;
  if (ds.findAndGetElement(DCM_PixelData, px).bad() || !px) rd.fail("no Pixel Data");
  const Uint8* bytes = nullptr;
  {
    Uint8* b8 = nullptr;
    if (px->getUint8Array(b8).good() && b8) {
      bytes = b8;
    } else {
      Uint16* b16 = nullptr;  // OW (e.g. implicit VR): host order is little endian, i.e. the byte stream
      if (px->getUint16Array(b16).good() && b16) bytes = reinterpret_cast<const Uint8*>(b16);
    }
  }
  if (!bytes) rd.fail("cannot access the Pixel Data");
  const std::size_t have = px->getLength();
  const std::size_t per_frame = static_cast<std::size_t>(rows) * cols;
  const std::size_t total = per_frame * static_cast<std::size_t>(nframes);
  const std::size_t need = binary ? (total + 7) / 8 : total;
  if (have < need)
    rd.fail("Pixel Data has " + std::to_string(have) + " bytes, " + std::to_string(nframes) + " frames of " +
            std::to_string(rows) + "x" + std::to_string(cols) + " need " + std::to_string(need));
  const unsigned maxv = static_cast<unsigned>(seg.max_fractional_value);
  for (std::size_t k = 0; k < seg.frames.size(); ++k) {
    cv::Mat m(rows, cols, CV_8U);
    std::uint8_t* out = m.ptr<std::uint8_t>(0);  // freshly allocated: continuous
    const std::size_t first = k * per_frame;
    if (binary) {
      for (std::size_t p = 0; p < per_frame; ++p) {
        const std::size_t bit = first + p;
        out[p] = static_cast<std::uint8_t>((bytes[bit >> 3] >> (bit & 7)) & 1u);
      }
    } else {
      for (std::size_t p = 0; p < per_frame; ++p) out[p] = 2u * bytes[first + p] >= maxv ? 1 : 0;
    }
    seg.frames[k].mask = m;
  }
  return seg;
}

}  // namespace dicom
