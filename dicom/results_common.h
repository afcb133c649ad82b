#pragma once
// Helpers shared by seg_builder and sr_builder (internal to dicom/; not for other folders).
#include <filesystem>
#include <functional>
#include <string>
#include <utility>

namespace dicom::results_detail {

// What the builders need from one source instance's header.
struct SourceHeader {
  unsigned short rows = 0, cols = 0;
  std::string sop_class_uid, sop_instance_uid, series_uid, study_uid, frame_of_reference_uid, patient_id, modality;
  std::string patient_orientation;  // e.g. "L\\F"; needed by a SEG of a 2D image
};
// Reads the header of a source file (pixel data is not loaded). Throws DicomError.
SourceHeader read_source_header(const std::filesystem::path& file);

// A Decimal String of at most 16 characters with as much precision as fits.
std::string ds(double v);
// A new UID under the given DCMTK root (SITE_INSTANCE_UID_ROOT, SITE_SERIES_UID_ROOT).
std::string new_uid(const char* root);
// Current date and time as DA (YYYYMMDD) and TM (HHMMSS).
std::pair<std::string, std::string> now_da_tm();
// Calls write(tmp) for a temporary path next to out_file, then renames it to out_file. The
// temporary file is removed if write throws.
void atomic_write(const std::filesystem::path& out_file, const std::function<void(const std::string& tmp)>& write);

}  // namespace dicom::results_detail
