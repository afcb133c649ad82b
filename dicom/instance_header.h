#pragma once
// What the node needs of a received instance before any pixel is touched: identity, where it
// belongs, and the counts a modality announces.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "dicom/scan.h"

namespace dicom {

struct InstanceHeader {
  std::string sop_class_uid;
  std::string sop_instance_uid;
  std::string study_uid;
  std::string series_uid;
  std::string modality;
  std::string transfer_syntax_uid;
  std::optional<long> acquisition_number;
  std::optional<long> images_in_acquisition;           // (0020,1002)
  std::optional<long> number_of_study_related_instances;  // (0020,1208)
  // What rules, the API and result-loop detection look at (never logged above debug).
  std::string body_part, series_description, protocol_name, study_description, study_date, accession_number;
  std::string manufacturer, manufacturer_model_name;
  std::optional<long> series_number;
  long frames = 1;  // Number of Frames, 1 when absent
};

// Scans the file (dicom/scan.h: structure and limits; DicomError with the scan's reason when it
// fails), then parses it without loading large values. Throws DicomError when the file is not
// DICOM, is truncated, or lacks SOP Class/Instance, Study or Series Instance UID.
InstanceHeader read_instance_header(const std::filesystem::path& file,
                                    const ScanLimits& limits = default_scan_limits());
// The same of a Part 10 file (or a bare data set) in memory: scan_buffer, then DCMTK parses it
// from the buffer.
InstanceHeader read_instance_header(const std::uint8_t* data, std::size_t size,
                                    const ScanLimits& limits = default_scan_limits());

}  // namespace dicom
