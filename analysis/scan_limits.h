#pragma once
// The structural scan's limits (dicom/scan.h) from the config: [limits] and storage.max_instance_mb.
#include "config/config.h"
#include "dicom/scan.h"

namespace analysis {

inline dicom::ScanLimits scan_limits(const config::Config& c) {
  dicom::ScanLimits l;
  l.max_depth = c.limits.max_depth;
  l.max_elements = c.limits.max_elements;
  l.max_file_bytes = c.storage.max_instance_mb << 20;
  l.max_pixel_bytes = c.limits.max_pixel_mb << 20;
  l.max_inflated_bytes = c.limits.max_inflated_mb << 20;
  return l;
}

}  // namespace analysis
