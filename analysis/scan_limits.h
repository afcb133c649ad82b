#pragma once
// Limits from the config: the structural scan's (dicom/scan.h: [limits] and
// storage.max_instance_mb) and the analysis worker's (analysis/worker_client.h: analysis.worker_*).
#include "analysis/worker_client.h"
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

inline WorkerLimits worker_limits(const config::Config& c) {
  return {static_cast<std::uint64_t>(c.analysis.worker_memory_mb), c.analysis.worker_cpu_seconds,
          c.analysis.worker_timeout_seconds};
}

}  // namespace analysis
