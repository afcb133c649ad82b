#include "dicom/sr_builder.h"

#include <cmath>
#include <memory>
#include <set>
#include <stdexcept>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmsr/cmr/tid1500.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include "dicom/check.h"
#include "dicom/scan.h"
#include "dicom/log.h"
#include "dicom/results_common.h"

namespace dicom {
namespace {

using results_detail::ds;

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("SR spec: " + what);
}

void require_code(const Code& c, const std::string& what) {
  require(!c.value.empty() && !c.scheme.empty() && !c.meaning.empty(), what + " code is incomplete");
  require(c.scheme != "SRT", what + " code uses the retired SRT scheme; use SCT");
}

DSRCodedEntryValue coded(const Code& c) {
  DSRCodedEntryValue v;
  check(v.setCode(c.value.c_str(), c.scheme.c_str(), c.meaning.c_str()), "SR: code (" + c.value + ", " + c.scheme + ")");
  return v;
}

void validate(const SrSpec& s) {
  require(!s.groups.empty(), "no measurement groups");
  require(!s.sources.empty(), "no source instances for the evidence list");
  require(!s.seg.path.empty() && !s.seg.sop_instance_uid.empty() && !s.seg.series_uid.empty(),
          "the SEG reference is incomplete");
  require_code(s.procedure_reported, "procedure reported");
  for (size_t i = 0; i < s.groups.size(); ++i) {
    const auto& g = s.groups[i];
    const std::string what = "group " + std::to_string(i + 1);
    require(!g.tracking_id.empty(), what + ": tracking identifier is required");
    require(g.segment_number >= 1 && g.segment_number <= 0xFFFF, what + ": segment number out of range");
    require_code(g.finding, what + " finding");
    if (g.finding_site) require_code(*g.finding_site, what + " finding site");
    require(!g.measurements.empty(), what + ": at least one measurement is required");
    for (const auto& m : g.measurements) {
      require_code(m.name, what + " measurement name");
      require_code(m.unit, what + " measurement unit");
      require(std::isfinite(m.value), what + ": measurement '" + m.name.meaning + "' is not finite");
      if (m.derivation) require_code(*m.derivation, what + " derivation");
      if (m.method) require_code(*m.method, what + " method");
    }
    for (const auto& q : g.qualitative) {
      require_code(q.name, what + " qualitative name");
      require_code(q.value, what + " qualitative value");
    }
  }
  for (const auto& q : s.qualitative) {
    require_code(q.name, "qualitative name");
    require_code(q.value, "qualitative value");
  }
  if (s.predecessor) {
    const auto& p = *s.predecessor;
    require(!p.sop_class_uid.empty() && !p.sop_instance_uid.empty() && !p.series_uid.empty() && !p.study_uid.empty(),
            "predecessor document reference is incomplete");
  }
}

// Every coding scheme designator used by the spec's codes.
std::set<std::string> schemes_used(const SrSpec& s) {
  std::set<std::string> out{s.procedure_reported.scheme};
  auto add = [&](const Code& c) { out.insert(c.scheme); };
  for (const auto& g : s.groups) {
    add(g.finding);
    if (g.finding_site) add(*g.finding_site);
    for (const auto& m : g.measurements) {
      add(m.name);
      add(m.unit);
      if (m.derivation) add(*m.derivation);
      if (m.method) add(*m.method);
    }
    for (const auto& q : g.qualitative) add(q.name), add(q.value);
  }
  for (const auto& q : s.qualitative) add(q.name), add(q.value);
  return out;
}

void fill_group(CMR_TID1411_in_TID1500& roi, const MeasurementGroupSpec& g, DcmItem& seg_dataset,
                const std::string& tracking_uid, const std::string& source_series, const std::string& what) {
  check(roi.setTrackingIdentifier(g.tracking_id.c_str()), what + ": tracking identifier");
  check(roi.setTrackingUniqueIdentifier(tracking_uid.c_str()), what + ": tracking UID");
  check(roi.setFinding(coded(g.finding)), what + ": finding");
  check(roi.setReferencedSegment(seg_dataset, static_cast<Uint16>(g.segment_number), OFFalse /*copyTracking*/),
        what + ": referenced segment " + std::to_string(g.segment_number) + " (is it in the SEG?)");
  check(roi.setSourceSeriesForSegmentation(source_series.c_str()), what + ": source series");
  if (g.finding_site) check(roi.addFindingSite(coded(*g.finding_site)), what + ": finding site");
  for (const auto& m : g.measurements) {
    CMR_TID1411_in_TID1500::MeasurementValue value(ds(m.value).c_str(),
                                                  CID7181_AbstractMultiDimensionalImageModelComponentUnits(coded(m.unit)));
    check(value.setFloatingPointRepresentation(m.value), what + ": floating point value of " + m.name.meaning);
    check(roi.addMeasurement(CID7469_GenericIntensityAndSizeMeasurements(coded(m.name)), value),
          what + ": measurement '" + m.name.meaning + "'");
    if (m.derivation)
      check(roi.getMeasurement().setDerivation(CID7464_GeneralRegionOfInterestMeasurementModifiers(coded(*m.derivation))),
            what + ": derivation of '" + m.name.meaning + "'");
    if (m.method)
      check(roi.getMeasurement().setMeasurementMethod(CID6147_ResponseCriteria(coded(*m.method))),
            what + ": method of '" + m.name.meaning + "'");
  }
  for (const auto& q : g.qualitative)
    check(roi.addQualitativeEvaluation(coded(q.name), coded(q.value)), what + ": qualitative evaluation");
  if (!roi.isValid()) throw DicomError("SR: " + what + " is not a valid TID 1411 measurement group");
}

}  // namespace

WrittenObject write_sr(const SrSpec& spec, const std::filesystem::path& out_file) {
  auto log = pacsnode::component_logger("sr");
  validate(spec);
  const auto hdr = results_detail::read_source_header(spec.source_file);
  const std::string source_series = spec.source_series_uid.empty() ? hdr.series_uid : spec.source_series_uid;
  require(!source_series.empty(), "source series UID unknown");

  // The SEG as written: its header is needed to resolve (and check) the referenced segments.
  DcmFileFormat seg_file;
  check(seg_file.loadFile(spec.seg.path.c_str(), EXS_Unknown, EGL_noChange, 4096), "SR: read SEG " + spec.seg.path.string());
  DcmDataset& seg_ds = *seg_file.getDataset();
  {
    OFString uid, study;
    seg_ds.findAndGetOFString(DCM_SOPInstanceUID, uid);
    seg_ds.findAndGetOFString(DCM_StudyInstanceUID, study);
    require(uid == spec.seg.sop_instance_uid.c_str(), "SEG file does not hold the SEG instance named in the spec");
    require(study == hdr.study_uid.c_str(), "SEG and source are in different studies");
    // DCMTK takes any segment number; a reference must resolve to a segment of this SEG.
    std::set<int> numbers;
    DcmItem* item = nullptr;
    for (unsigned long i = 0; seg_ds.findAndGetSequenceItem(DCM_SegmentSequence, item, static_cast<long>(i)).good(); ++i) {
      Uint16 n = 0;
      if (item->findAndGetUint16(DCM_SegmentNumber, n).good()) numbers.insert(n);
    }
    for (size_t i = 0; i < spec.groups.size(); ++i)
      if (!numbers.count(spec.groups[i].segment_number))
        throw DicomError("SR: group " + std::to_string(i + 1) + ": referenced segment " +
                         std::to_string(spec.groups[i].segment_number) + " is not in the SEG");
  }

  // Content tree (TID 1500).
  TID1500_MeasurementReport report(CMR_CID7021::ImagingMeasurementReport);
  // Language without country: DCMTK's CID 5001 meaning for US differs from the current standard.
  check(report.setLanguage(CID5000_Languages::English), "SR: language");
  const std::string device_uid =
      spec.device.device_uid.empty() ? results_detail::new_uid(SITE_INSTANCE_UID_ROOT) : spec.device.device_uid;
  check(report.getObservationContext().addDeviceObserver(device_uid.c_str(), spec.device.device_name.c_str(),
                                                         spec.device.manufacturer.c_str(), spec.device.model_name.c_str(),
                                                         spec.device.serial_number.c_str()),
        "SR: device observer");
  check(report.addProcedureReported(CID100_QuantitativeDiagnosticImagingProcedures(coded(spec.procedure_reported))),
        "SR: procedure reported");
  WrittenObject out;
  for (size_t i = 0; i < spec.groups.size(); ++i) {
    const auto& g = spec.groups[i];
    if (i > 0) check(report.addVolumetricROIMeasurements(), "SR: new measurement group");
    std::string tracking_uid = g.tracking_uid;
    if (tracking_uid.empty() && static_cast<size_t>(g.segment_number) <= spec.seg.tracking_uids.size())
      tracking_uid = spec.seg.tracking_uids[g.segment_number - 1];  // same finding as the SEG segment
    if (tracking_uid.empty()) tracking_uid = results_detail::new_uid(SITE_INSTANCE_UID_ROOT);
    out.tracking_uids.push_back(tracking_uid);
    fill_group(report.getVolumetricROIMeasurements(), g, seg_ds, tracking_uid, source_series,
               "group " + std::to_string(i + 1) + " ('" + g.tracking_id + "')");
  }
  for (const auto& q : spec.qualitative)
    check(report.addQualitativeEvaluation(coded(q.name), coded(q.value)), "SR: qualitative evaluation");
  if (!report.isValid()) throw DicomError("SR: the TID 1500 measurement report is not valid");

  // Document: new series in the source's study, patient/study copied from the source.
  DSRDocument doc(spec.kind == SrKind::enhanced ? DSRTypes::DT_EnhancedSR : DSRTypes::DT_Comprehensive3DSR);
  check(doc.setTreeFromRootTemplate(report, OFTrue /*expandTree*/), "SR: set content tree");
  // The template's tree carries its own document type (Enhanced SR); set the one asked for.
  check(doc.changeDocumentType(spec.kind == SrKind::enhanced ? DSRTypes::DT_EnhancedSR : DSRTypes::DT_Comprehensive3DSR),
        "SR: document type");
  {
    DcmFileFormat src;
    require_scan(spec.source_file, default_scan_limits(), "SR: read " + spec.source_file.string());
    check(src.loadFile(spec.source_file.c_str(), EXS_Unknown, EGL_noChange, 4096), "SR: read " + spec.source_file.string());
    DcmDataset& d = *src.getDataset();
    check(doc.readStudyData(d), "SR: patient/study from source");
    OFString charset;
    if (d.findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).good() && !charset.empty())
      check(doc.setSpecificCharacterSet(charset), "SR: specific character set");
  }
  doc.createNewSeries();  // new Series and SOP Instance UID, study kept
  const auto now = results_detail::now_da_tm();
  check(doc.setSeriesNumber(std::to_string(spec.series_number).c_str()), "SR: series number");
  check(doc.setSeriesDescription(spec.series_description.c_str()), "SR: series description");
  check(doc.setSeriesDate(now.first.c_str()), "SR: series date");
  check(doc.setSeriesTime(now.second.c_str()), "SR: series time");
  check(doc.setInstanceNumber(std::to_string(spec.instance_number).c_str()), "SR: instance number");
  check(doc.setContentDate(now.first.c_str()), "SR: content date");
  check(doc.setContentTime(now.second.c_str()), "SR: content time");
  check(doc.setManufacturer(spec.device.manufacturer.c_str()), "SR: manufacturer");
  check(doc.setManufacturerModelName(spec.device.model_name.c_str()), "SR: model name");
  check(doc.setDeviceSerialNumber(spec.device.serial_number.c_str()), "SR: device serial number");
  check(doc.setSoftwareVersions(spec.device.software_versions.c_str()), "SR: software versions");

  // Evidence: the SEG and every source instance.
  auto& evidence = doc.getCurrentRequestedProcedureEvidence();
  check(evidence.addItem(hdr.study_uid.c_str(), spec.seg.series_uid.c_str(), spec.seg.sop_class_uid.c_str(),
                         spec.seg.sop_instance_uid.c_str()),
        "SR: SEG evidence");
  std::set<std::string> seen;
  for (const auto& src : spec.sources)
    if (seen.insert(src.sop_instance_uid).second)
      check(evidence.addItem(hdr.study_uid.c_str(), source_series.c_str(), src.sop_class_uid.c_str(),
                             src.sop_instance_uid.c_str()),
            "SR: source evidence");
  if (spec.predecessor) {
    const auto& p = *spec.predecessor;
    check(doc.getPredecessorDocuments().addItem(p.study_uid.c_str(), p.series_uid.c_str(), p.sop_class_uid.c_str(),
                                                p.sop_instance_uid.c_str()),
          "SR: predecessor document");
  }

  // Coding schemes outside PS3.16 Table 8-1 that the content uses.
  auto& schemes = doc.getCodingSchemeIdentification();
  for (const auto& designator : schemes_used(spec))
    if (auto known = codes::known_private_scheme(designator))
      check(schemes.addItem(known->designator.c_str(), known->uid.c_str(), known->name.c_str(),
                            known->responsible_organization.c_str()),
            "SR: coding scheme " + designator);
  for (const auto& cs : spec.coding_schemes)
    check(schemes.addItem(cs.designator.c_str(), cs.uid.c_str(), cs.name.c_str(), cs.responsible_organization.c_str()),
          "SR: coding scheme " + cs.designator);

  check(doc.completeDocument(), "SR: complete document");
  DcmFileFormat ff;
  check(doc.write(*ff.getDataset()), "SR: encode document");
  // DSRDocument makes a new series; a superseding report goes into its predecessor's series.
  if (!spec.series_uid.empty())
    check(ff.getDataset()->putAndInsertString(DCM_SeriesInstanceUID, spec.series_uid.c_str()), "SR: series UID");
  results_detail::atomic_write(out_file, [&](const std::string& tmp) {
    check(ff.saveFile(tmp.c_str(), EXS_LittleEndianExplicit), "SR: write");
  });

  OFString v;
  out.path = out_file;
  out.sop_class_uid = doc.getSOPClassUID(v).good() ? v.c_str() : "";
  out.sop_instance_uid = doc.getSOPInstanceUID(v).good() ? v.c_str() : "";
  out.series_uid = !spec.series_uid.empty() ? spec.series_uid : doc.getSeriesInstanceUID(v).good() ? v.c_str() : "";
  out.study_uid = doc.getStudyInstanceUID(v).good() ? v.c_str() : "";
  log->debug("SR written: {} measurement groups, series {}", spec.groups.size(), out.series_uid);
  return out;
}

}  // namespace dicom
