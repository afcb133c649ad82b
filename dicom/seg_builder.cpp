#include "dicom/seg_builder.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <stdexcept>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
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
}

// Fills buf with frame z of segment k (1-based); returns whether any pixel is set. BINARY frames
// are "non-zero = set" (DCMTK packs them to bits), FRACTIONAL ones 0..255.
bool fill_frame(const SegSpec& s, size_t k, size_t z, std::vector<Uint8>& buf, int rows, int cols) {
  const cv::Mat& m = s.label_map.empty() ? s.segments[k - 1].mask[z] : s.label_map[z];
  cv::Mat out(rows, cols, CV_8U, buf.data());
  if (m.empty()) {
    out.setTo(0);
    return false;
  }
  if (!s.label_map.empty()) {
    cv::compare(m, cv::Scalar(static_cast<double>(k)), out, cv::CMP_EQ);  // 255 where label k
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

}  // namespace

WrittenObject write_seg(const SegSpec& spec, const std::filesystem::path& out_file) {
  auto log = pacsnode::component_logger("seg");
  const SourceHeader hdr = results_detail::read_source_header(spec.source_file);
  require(hdr.rows > 0 && hdr.cols > 0, "source file has no Rows/Columns");
  validate(spec, hdr.rows, hdr.cols);
  const std::string source_series = spec.source_series_uid.empty() ? hdr.series_uid : spec.source_series_uid;
  require(!source_series.empty(), "source series UID unknown");
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
  std::unique_ptr<DcmSegmentation> seg(raw);
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
  WrittenObject out;
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

  // Frames: segment-major, slice-minor, empty ones omitted unless asked to keep them.
  const int rows = hdr.rows, cols = hdr.cols;
  std::vector<Uint8> buf(static_cast<size_t>(rows) * cols);
  auto add_frame = [&](size_t k, size_t z) {
    const SourceFrame& src = spec.sources[z];
    FGFrameContent content_fg;
    check(content_fg.setDimensionIndexValues(static_cast<Uint32>(k), 0), "SEG: dimension index value");
    OFVector<FGBase*> groups;
    groups.push_back(&content_fg);
    std::unique_ptr<FGPlanePosPatient> position;
    if (g.has_frame_of_reference) {
      check(content_fg.setDimensionIndexValues(static_cast<Uint32>(z + 1), 1), "SEG: dimension index value");
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
    check(seg->addFrame(buf.data(), static_cast<Uint16>(k), groups), "SEG: add frame");  // groups are copied
  };
  for (size_t k = 1; k <= spec.segments.size(); ++k)
    for (size_t z = 0; z < spec.sources.size(); ++z)
      if (fill_frame(spec, k, z, buf, rows, cols) || spec.keep_empty_frames) add_frame(k, z);
  if (seg->getNumberOfFrames() == 0) {  // every segment empty: a SEG still needs one frame
    std::fill(buf.begin(), buf.end(), Uint8{0});
    add_frame(1, 0);
  }
  out.number_of_frames = static_cast<int>(seg->getNumberOfFrames());

  // Referenced Series Sequence: every source instance, once.
  IODReferences references;
  std::set<std::string> seen;
  for (const auto& src : spec.sources) {
    if (!seen.insert(src.sop_instance_uid).second) continue;
    auto ref = std::make_unique<IODImageReference>(hdr.patient_id.c_str(), hdr.study_uid.c_str(), source_series.c_str(),
                                                   src.sop_instance_uid.c_str(), src.sop_class_uid.c_str());
    if (!references.add(ref.get())) throw DicomError("SEG: invalid source reference (UIDs)");
    ref.release();  // references owns it only now
  }
  if (seg->getCommonInstanceReference().addReferences(references, hdr.study_uid.c_str()) != seen.size())
    throw DicomError("SEG: could not add every source instance to the Referenced Series Sequence");

  DcmFileFormat file;
  check(seg->writeDataset(*file.getDataset()), "SEG: encode");
  seg.reset();  // frames are in the dataset now
  mark_spatial_locations_preserved(*file.getDataset());
  results_detail::atomic_write(out_file, [&](const std::string& tmp) {
    check(file.saveFile(tmp.c_str(), EXS_LittleEndianExplicit), "SEG: write");
  });
  out.path = out_file;
  log->debug("SEG written: {} segments, {} frames, series {}", spec.segments.size(), out.number_of_frames, out.series_uid);
  return out;
}

}  // namespace dicom
