#pragma once
// The one place an OFCondition becomes an exception (STYLE.md: only dicom::check converts).
#include <stdexcept>
#include <string>
#include <string_view>

#include <dcmtk/ofstd/ofcond.h>

namespace dicom {

class DicomError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws DicomError "<what>: <condition text>" when cond is bad.
inline void check(const OFCondition& cond, std::string_view what) {
  if (cond.bad()) throw DicomError(std::string(what) + ": " + cond.text());
}

}  // namespace dicom
