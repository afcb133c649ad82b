#include "dicom/results_common.h"

#include <cmath>
#include <cstdio>
#include <string_view>
#include <ctime>
#include <system_error>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "dicom/check.h"
#include "dicom/scan.h"

namespace dicom::results_detail {

SourceHeader read_source_header(const std::filesystem::path& file) {
  DcmFileFormat ff;
  require_scan(file, default_scan_limits(), "read " + file.string());
  // Elements longer than 4 KiB (pixel data) stay on disk.
  check(ff.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, 4096), "read " + file.string());
  DcmDataset& d = *ff.getDataset();
  SourceHeader h;
  auto str = [&](const DcmTagKey& tag) {
    OFString v;
    d.findAndGetOFStringArray(tag, v);
    return std::string(v.c_str());
  };
  d.findAndGetUint16(DCM_Rows, h.rows);
  d.findAndGetUint16(DCM_Columns, h.cols);
  h.sop_class_uid = str(DCM_SOPClassUID);
  h.sop_instance_uid = str(DCM_SOPInstanceUID);
  h.series_uid = str(DCM_SeriesInstanceUID);
  h.study_uid = str(DCM_StudyInstanceUID);
  h.frame_of_reference_uid = str(DCM_FrameOfReferenceUID);
  h.patient_id = str(DCM_PatientID);
  h.modality = str(DCM_Modality);
  h.patient_orientation = str(DCM_PatientOrientation);
  if (h.study_uid.empty() || h.sop_instance_uid.empty())
    throw DicomError("read " + file.string() + ": no Study/SOP Instance UID");
  return h;
}

std::string ds(double v) {
  if (v == 0.0 || !std::isfinite(v)) return "0";
  char buf[64];
  for (int precision = 15; precision > 0; --precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::string_view(buf).size() <= 16) return buf;
  }
  return "0";
}

std::string new_uid(const char* root) {
  char buf[100];
  return dcmGenerateUniqueIdentifier(buf, root);
}

std::pair<std::string, std::string> now_da_tm() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char da[16], tmv[16];
  std::strftime(da, sizeof da, "%Y%m%d", &tm);
  std::strftime(tmv, sizeof tmv, "%H%M%S", &tm);
  return {da, tmv};
}

void atomic_write(const std::filesystem::path& out_file, const std::function<void(const std::string& tmp)>& write) {
  auto tmp = out_file;
  tmp += ".tmp";
  try {
    write(tmp.string());
    std::filesystem::rename(tmp, out_file);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace dicom::results_detail
