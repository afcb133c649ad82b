#pragma once
// The one place an OFCondition becomes an exception (STYLE.md: only dicom::check converts).
#include <string>
#include <string_view>

#include <dcmtk/ofstd/ofcond.h>

#include "dicom/error.h"

namespace dicom {

// Throws DicomError "<what>: <condition text>" when cond is bad.
inline void check(const OFCondition& cond, std::string_view what) {
  if (cond.bad()) throw DicomError(std::string(what) + ": " + cond.text());
}

}  // namespace dicom
