#pragma once
// Writes a TID 1500 "Imaging Measurement Report" (DCMTK dcmsr/cmr) from a plain SrSpec: one
// Measurement Group (TID 1411 Volumetric ROI Measurements) per SEG segment, each with tracking
// identifier/UID, finding, finding site, the referenced segment, the source series, NUM
// measurements and CODE qualitative evaluations. The SR joins the source's study in a new series.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dicom/codes.h"
#include "dicom/seg_builder.h"
#include "dicom/volume.h"

namespace dicom {

struct Measurement {
  Code name;     // concept name, CID 7469 (extensible), e.g. codes::volume(), codes::attenuation_coefficient()
  double value = 0;
  Code unit;     // UCUM, e.g. codes::unit_ml(), codes::unit_hu()
  std::optional<Code> derivation;  // CID 7464, e.g. codes::mean()
  std::optional<Code> method;      // Measurement Method, e.g. codes::sum_of_voxel_volumes()
};

struct QualitativeEvaluation {
  Code name;   // concept name, e.g. codes::emphysema()
  Code value;    // e.g. codes::present() / codes::absent()
};

// One TID 1411 Measurement Group, describing one segment of the SEG.
struct MeasurementGroupSpec {
  std::string tracking_id;   // required, human readable
  std::string tracking_uid;  // optional; defaults to SrSpec::seg.tracking_uids[segment_number-1]
  Code finding;              // e.g. the segment's property type
  std::optional<Code> finding_site;
  int segment_number = 1;    // 1-based segment of SrSpec::seg
  std::vector<Measurement> measurements;  // at least one
  std::vector<QualitativeEvaluation> qualitative;
};

// A reference to an earlier SR document (Predecessor Documents Sequence).
struct DocumentRef {
  std::string sop_class_uid, sop_instance_uid, series_uid, study_uid;
};

enum class SrKind { comprehensive3d, enhanced };

struct SrSpec {
  std::filesystem::path source_file;  // one source instance: patient and study are copied
  std::string source_series_uid;      // optional; read from source_file when empty
  std::vector<SourceFrame> sources;   // listed in Current Requested Procedure Evidence
  WrittenObject seg;                  // the SEG written by write_seg (its file is read back)
  Code procedure_reported = codes::imaging_procedure();  // CID 100, see codes::procedure_for_modality
  std::vector<MeasurementGroupSpec> groups;             // at least one
  std::vector<QualitativeEvaluation> qualitative;       // document level (TID 1500 row 12)
  std::optional<DocumentRef> predecessor;               // "replaces an earlier report"
  SrKind kind = SrKind::comprehensive3d;
  std::string series_description = "pacsnode measurements";
  int series_number = 9002;
  int instance_number = 1;
  std::string series_uid;  // empty: a new series; else the series of the report this one supersedes
  DeviceInfo device;
  std::vector<CodingScheme> coding_schemes;  // declared in addition to the known private ones
};

// Validates the spec, builds the report, checks it with TID1500_MeasurementReport::isValid()
// and writes it via a temporary file and rename. Throws std::invalid_argument for a bad spec and
// dicom::DicomError (reason included) when DCMTK refuses the content.
WrittenObject write_sr(const SrSpec& spec, const std::filesystem::path& out_file);

}  // namespace dicom
