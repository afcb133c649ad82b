#pragma once
// Index rows the outbox tests build on: a complete study "1.2" of one CT instance (series "1.2.3",
// SOP Instance "1.2.3.4", stored at `file`, added at 1000 ms, complete at 2000 ms) and its job.
#include <filesystem>

#include "scp/index.h"

namespace testsupport {

inline scp::JobRow complete_study(scp::Index& index, const std::filesystem::path& file) {
  scp::StoredInstance in;
  in.header.study_uid = "1.2";
  in.header.series_uid = "1.2.3";
  in.header.sop_instance_uid = "1.2.3.4";
  in.header.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2";
  in.path = file;
  index.add_instance(in, 1000);
  index.mark_complete("1.2", 1, 2000);
  return index.jobs().at(0);
}

}  // namespace testsupport
