#include "dicom/key_images.h"

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "dicom/check.h"
#include "dicom/scan.h"
#include "dicom/log.h"
#include "dicom/results_common.h"

namespace dicom {
namespace {

using results_detail::new_uid;
using results_detail::SourceHeader;

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("key images: " + what);
}

// Printable ASCII only (see the header); other bytes become '?'.
std::string ascii(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) out.push_back(c >= 32 && c < 127 ? static_cast<char>(c) : '?');
  return out;
}

// Attributes of the Patient, Clinical Trial Subject, General Study, Patient Study and Clinical
// Trial Study modules, copied as they are when the source has them.
const DcmTagKey kCopied[] = {
    // Patient
    DCM_PatientName, DCM_PatientID, DCM_IssuerOfPatientID, DCM_IssuerOfPatientIDQualifiersSequence, DCM_TypeOfPatientID,
    DCM_PatientBirthDate, DCM_PatientBirthTime, DCM_PatientSex, DCM_OtherPatientIDsSequence, DCM_OtherPatientNames,
    DCM_PatientComments, DCM_PatientSpeciesDescription, DCM_PatientSpeciesCodeSequence, DCM_PatientBreedDescription,
    DCM_PatientBreedCodeSequence, DCM_BreedRegistrationSequence, DCM_StrainDescription, DCM_StrainNomenclature,
    DCM_ResponsiblePerson, DCM_ResponsiblePersonRole, DCM_ResponsibleOrganization, DCM_PatientIdentityRemoved,
    DCM_DeidentificationMethod, DCM_DeidentificationMethodCodeSequence, DCM_QualityControlSubject,
    // Clinical Trial Subject
    DCM_ClinicalTrialSponsorName, DCM_ClinicalTrialProtocolID, DCM_ClinicalTrialProtocolName, DCM_ClinicalTrialSiteID,
    DCM_ClinicalTrialSiteName, DCM_ClinicalTrialSubjectID, DCM_ClinicalTrialSubjectReadingID,
    // General Study
    DCM_StudyInstanceUID, DCM_StudyDate, DCM_StudyTime, DCM_ReferringPhysicianName,
    DCM_ReferringPhysicianIdentificationSequence, DCM_ConsultingPhysicianName,
    DCM_ConsultingPhysicianIdentificationSequence, DCM_StudyID, DCM_AccessionNumber,
    DCM_IssuerOfAccessionNumberSequence, DCM_StudyDescription, DCM_PhysiciansOfRecord,
    DCM_PhysiciansOfRecordIdentificationSequence, DCM_NameOfPhysiciansReadingStudy,
    DCM_PhysiciansReadingStudyIdentificationSequence, DCM_RequestingServiceCodeSequence, DCM_ReferencedStudySequence,
    DCM_ProcedureCodeSequence, DCM_ReasonForPerformedProcedureCodeSequence,
    // Patient Study
    DCM_AdmittingDiagnosesDescription, DCM_AdmittingDiagnosesCodeSequence, DCM_PatientAge, DCM_PatientSize,
    DCM_PatientWeight, DCM_Occupation, DCM_AdditionalPatientHistory, DCM_AdmissionID, DCM_IssuerOfAdmissionIDSequence,
    DCM_ServiceEpisodeID, DCM_ServiceEpisodeDescription, DCM_PatientSexNeutered, DCM_SmokingStatus,
    DCM_PregnancyStatus, DCM_LastMenstrualDate, DCM_PatientState, DCM_MedicalAlerts, DCM_Allergies,
    // Clinical Trial Study
    DCM_ClinicalTrialTimePointID, DCM_ClinicalTrialTimePointDescription, DCM_ConsentForClinicalTrialUseSequence,
};
// Type 2 attributes of those modules: present (maybe empty) in every key image.
const DcmTagKey kType2[] = {DCM_PatientName, DCM_PatientID,   DCM_PatientBirthDate,        DCM_PatientSex,
                            DCM_StudyDate,   DCM_StudyTime,   DCM_ReferringPhysicianName, DCM_StudyID,
                            DCM_AccessionNumber};

// The source's patient/study attributes (and character set), read once for all key images.
std::unique_ptr<DcmItem> patient_study_attributes(const std::filesystem::path& source_file) {
  DcmFileFormat ff;
  require_scan(source_file, default_scan_limits(), "key images: read " + source_file.string());
  check(ff.loadFile(source_file.c_str(), EXS_Unknown, EGL_noChange, 4096), "key images: read " + source_file.string());
  DcmDataset& src = *ff.getDataset();
  auto out = std::make_unique<DcmItem>();
  auto copy = [&](const DcmTagKey& tag) {
    DcmElement* e = nullptr;
    if (src.findAndGetElement(tag, e).good() && e && (e->getLength() > 0 || e->ident() == EVR_SQ)) {
      std::unique_ptr<DcmElement> clone(static_cast<DcmElement*>(e->clone()));
      check(out->insert(clone.get(), OFTrue), "key images: copy " + std::string(DcmTag(tag).getTagName()));
      clone.release();  // out owns it only now
    }
  };
  copy(DCM_SpecificCharacterSet);  // not when empty: Specific Character Set is type 1C
  for (const auto& tag : kCopied) copy(tag);
  for (const auto& tag : kType2)
    if (!out->tagExists(tag)) check(out->insertEmptyElement(tag), "key images: empty " + std::string(DcmTag(tag).getTagName()));
  // General Series: Body Part Examined, and Laterality (type 2C: required unless the body part is
  // unpaired; the SC IOD has no Image Laterality to stand in for it). The source's Laterality or
  // Image Laterality when R or L; else empty ("unknown") when the source has an empty Laterality
  // or names no body part; else absent, as in the source (an unpaired body part).
  copy(DCM_BodyPartExamined);
  OFString laterality, image_laterality, body_part;
  src.findAndGetOFString(DCM_Laterality, laterality);
  src.findAndGetOFString(DCM_ImageLaterality, image_laterality);
  src.findAndGetOFString(DCM_BodyPartExamined, body_part);
  auto side = [](const OFString& v) { return v == "R" || v == "L"; };
  if (side(laterality))
    check(out->putAndInsertOFStringArray(DCM_Laterality, laterality), "key images: laterality");
  else if (side(image_laterality))
    check(out->putAndInsertOFStringArray(DCM_Laterality, image_laterality), "key images: laterality");
  else if (src.tagExists(DCM_Laterality) || body_part.empty())
    check(out->insertEmptyElement(DCM_Laterality), "key images: laterality");
  return out;
}

void validate(const KeyImageSpec& s) {
  require(!s.source_file.empty(), "no source file");
  require(s.images.size() == s.slice_index.size(), std::to_string(s.images.size()) + " images but " +
                                                       std::to_string(s.slice_index.size()) + " slice indices");
  for (size_t i = 0; i < s.images.size(); ++i) {
    const std::string what = "image " + std::to_string(i + 1);
    const cv::Mat& m = s.images[i];
    require(!m.empty(), what + " is empty");
    require(m.type() == CV_8UC3, what + " is not CV_8UC3 (8-bit, 3 channels)");
    require(m.rows <= 0xFFFF && m.cols <= 0xFFFF, what + " exceeds 65535 rows or columns");
    const int z = s.slice_index[i];
    require(z >= 0 && static_cast<size_t>(z) < s.sources.size(),
            what + ": slice index " + std::to_string(z) + " outside the " + std::to_string(s.sources.size()) + " sources");
    const SourceFrame& src = s.sources[z];
    require(!src.sop_class_uid.empty() && !src.sop_instance_uid.empty(), what + ": source without SOP class/instance UID");
    require(src.frame_number >= 0 && src.frame_number <= 0xFFFF, what + ": source frame number out of range");
  }
  require(s.series_number >= 0, "negative series number");
  require(s.series_description.size() <= 64, "series description longer than 64 characters");
  require(!s.modality.empty() && s.modality.size() <= 16, "modality must have 1..16 characters");
  require(s.derivation_descriptions.empty() || s.derivation_descriptions.size() == s.images.size(),
          "derivation descriptions: give none or one per image");
  for (const auto& text : s.derivation_descriptions)
    require(text.size() <= 1024, "derivation description longer than 1024 characters");
  require(!s.file_prefix.empty() && s.file_prefix.find('/') == std::string::npos, "file prefix empty or with '/'");
}

void put(DcmItem& d, const DcmTagKey& tag, const std::string& value) {
  check(d.putAndInsertString(tag, value.c_str()), "key images: " + std::string(DcmTag(tag).getTagName()));
}

// Interleaved RGB from an OpenCV BGR image (which need not be continuous).
std::vector<Uint8> rgb_bytes(const cv::Mat& bgr) {
  std::vector<Uint8> out(static_cast<size_t>(bgr.rows) * bgr.cols * 3);
  Uint8* o = out.data();
  for (int r = 0; r < bgr.rows; ++r) {
    const auto* p = bgr.ptr<cv::Vec3b>(r);
    for (int c = 0; c < bgr.cols; ++c, o += 3) {
      o[0] = p[c][2];
      o[1] = p[c][1];
      o[2] = p[c][0];
    }
  }
  return out;
}

// One code item: value, scheme, meaning.
void put_code(DcmItem& item, const char* value, const char* scheme, const char* meaning) {
  put(item, DCM_CodeValue, value);
  put(item, DCM_CodingSchemeDesignator, scheme);
  put(item, DCM_CodeMeaning, meaning);
}

}  // namespace

std::vector<WrittenObject> write_key_images(const KeyImageSpec& spec, const std::filesystem::path& out_dir) {
  auto log = pacsnode::component_logger("keyimages");
  validate(spec);
  if (spec.images.empty()) return {};
  const SourceHeader hdr = results_detail::read_source_header(spec.source_file);
  require(!hdr.series_uid.empty(), "source file has no Series Instance UID");
  const auto common = patient_study_attributes(spec.source_file);
  std::filesystem::create_directories(out_dir);

  const std::string series_uid = spec.series_uid.empty() ? new_uid(SITE_SERIES_UID_ROOT) : spec.series_uid;
  const auto [date, time] = results_detail::now_da_tm();
  std::vector<WrittenObject> written;
  try {
    for (size_t i = 0; i < spec.images.size(); ++i) {
      const int z = spec.slice_index[i];
      const SourceFrame& src = spec.sources[z];
      WrittenObject out;
      out.sop_class_uid = UID_SecondaryCaptureImageStorage;
      out.sop_instance_uid = new_uid(SITE_INSTANCE_UID_ROOT);
      out.series_uid = series_uid;
      out.study_uid = hdr.study_uid;

      DcmFileFormat file;
      DcmDataset& d = *file.getDataset();
      // Patient, study (copied); SOP Common.
      for (unsigned long k = 0; k < common->card(); ++k) {
        std::unique_ptr<DcmElement> e(static_cast<DcmElement*>(common->getElement(k)->clone()));
        check(d.insert(e.get(), OFTrue), "key images: patient/study attribute");
        e.release();  // d owns it only now
      }
      put(d, DCM_SOPClassUID, out.sop_class_uid);
      put(d, DCM_SOPInstanceUID, out.sop_instance_uid);
      put(d, DCM_InstanceCreationDate, date);
      put(d, DCM_InstanceCreationTime, time);
      // General Series.
      put(d, DCM_Modality, ascii(spec.modality));
      put(d, DCM_SeriesInstanceUID, series_uid);
      put(d, DCM_SeriesNumber, std::to_string(spec.series_number));
      put(d, DCM_SeriesDate, date);
      put(d, DCM_SeriesTime, time);
      put(d, DCM_SeriesDescription, ascii(spec.series_description));
      // General Equipment and SC Equipment.
      put(d, DCM_Manufacturer, ascii(spec.device.manufacturer));
      put(d, DCM_ManufacturerModelName, ascii(spec.device.model_name));
      put(d, DCM_DeviceSerialNumber, ascii(spec.device.serial_number));
      put(d, DCM_SoftwareVersions, ascii(spec.device.software_versions));
      put(d, DCM_ConversionType, "WSD");
      put(d, DCM_SecondaryCaptureDeviceManufacturer, ascii(spec.device.manufacturer));
      put(d, DCM_SecondaryCaptureDeviceManufacturerModelName, ascii(spec.device.model_name));
      put(d, DCM_SecondaryCaptureDeviceSoftwareVersions, ascii(spec.device.software_versions));
      // General Image and SC Image.
      put(d, DCM_InstanceNumber, std::to_string(spec.first_instance_number + static_cast<int>(i)));
      put(d, DCM_PatientOrientation, ascii(spec.patient_orientation));
      put(d, DCM_ContentDate, date);
      put(d, DCM_ContentTime, time);
      put(d, DCM_ImageType, "DERIVED\\SECONDARY");
      put(d, DCM_BurnedInAnnotation, "YES");
      put(d, DCM_LossyImageCompression, "00");
      put(d, DCM_DateOfSecondaryCapture, date);
      put(d, DCM_TimeOfSecondaryCapture, time);
      const std::string description =
          spec.derivation_descriptions.empty()
              ? "Key image: source slice " + std::to_string(z + 1) + " of " + std::to_string(spec.sources.size()) +
                    " rendered with the segmentation overlay and legend burned in by " + spec.device.model_name +
                    "; not for measurement."
              : spec.derivation_descriptions[i];
      put(d, DCM_DerivationDescription, ascii(description).substr(0, 1024));
      {
        DcmItem* source = nullptr;
        check(d.findOrCreateSequenceItem(DCM_SourceImageSequence, source, 0), "key images: source image sequence");
        put(*source, DCM_ReferencedSOPClassUID, src.sop_class_uid);
        put(*source, DCM_ReferencedSOPInstanceUID, src.sop_instance_uid);
        if (src.frame_number > 0) put(*source, DCM_ReferencedFrameNumber, std::to_string(src.frame_number));
        DcmItem* purpose = nullptr;
        check(source->findOrCreateSequenceItem(DCM_PurposeOfReferenceCodeSequence, purpose, 0),
              "key images: purpose of reference");
        put_code(*purpose, "121322", "DCM", "Source image for image processing operation");  // CID 7202
        put(*source, DCM_SpatialLocationsPreserved, "NO");
      }
      // Common Instance Reference: the source instance, in its series of this study.
      {
        DcmItem* series = nullptr;
        check(d.findOrCreateSequenceItem(DCM_ReferencedSeriesSequence, series, 0), "key images: referenced series");
        put(*series, DCM_SeriesInstanceUID, hdr.series_uid);
        DcmItem* instance = nullptr;
        check(series->findOrCreateSequenceItem(DCM_ReferencedInstanceSequence, instance, 0),
              "key images: referenced instance");
        put(*instance, DCM_ReferencedSOPClassUID, src.sop_class_uid);
        put(*instance, DCM_ReferencedSOPInstanceUID, src.sop_instance_uid);
      }
      // Image Pixel.
      const cv::Mat& img = spec.images[i];
      check(d.putAndInsertUint16(DCM_SamplesPerPixel, 3), "key images: samples per pixel");
      put(d, DCM_PhotometricInterpretation, "RGB");
      check(d.putAndInsertUint16(DCM_PlanarConfiguration, 0), "key images: planar configuration");
      check(d.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(img.rows)), "key images: rows");
      check(d.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(img.cols)), "key images: columns");
      check(d.putAndInsertUint16(DCM_BitsAllocated, 8), "key images: bits allocated");
      check(d.putAndInsertUint16(DCM_BitsStored, 8), "key images: bits stored");
      check(d.putAndInsertUint16(DCM_HighBit, 7), "key images: high bit");
      check(d.putAndInsertUint16(DCM_PixelRepresentation, 0), "key images: pixel representation");
      const std::vector<Uint8> px = rgb_bytes(img);
      check(d.putAndInsertUint8Array(DCM_PixelData, px.data(), static_cast<unsigned long>(px.size())),
            "key images: pixel data");

      out.path = out_dir / (spec.file_prefix + "_" + std::to_string(i + 1) + ".dcm");
      results_detail::atomic_write(out.path, [&](const std::string& tmp) {
        check(file.saveFile(tmp.c_str(), EXS_LittleEndianExplicit), "key images: write");
      });
      written.push_back(std::move(out));
    }
  } catch (...) {
    for (const auto& w : written) {
      std::error_code ec;
      std::filesystem::remove(w.path, ec);
    }
    throw;
  }
  log->debug("key images written: {} SC instances, series {}", written.size(), series_uid);
  return written;
}

}  // namespace dicom
