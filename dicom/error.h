#pragma once
// The exception of the dicom/ library, without DCMTK: code that only scans bytes (dicom/scan.h)
// throws it too.
#include <stdexcept>

namespace dicom {

class DicomError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace dicom
