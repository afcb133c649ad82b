// The header readers every untrusted file meets first: read_instance_header (the receiver, before an
// instance is committed: from memory, as a C-STORE arrives, and from a file, as a spilled one or a
// spool file at start) and read_image_header + screen_header (analysis, before any pixel).
#include <exception>

#include "dicom/decode_header.h"
#include "dicom/instance_header.h"
#include "dicom/series_loader.h"
#include "fuzz/fuzz_common.h"
#include "fuzz/fuzz_quiet.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)dicom::read_instance_header(data, size);
  } catch (const std::exception&) {
  }
  const fuzz::MemFile file(data, size);
  try {
    (void)dicom::read_instance_header(file.path());
  } catch (const std::exception&) {
  }
  try {
    const dicom::ImageHeader h = dicom::read_image_header(file.path());
    (void)dicom::screen_header(h);
  } catch (const std::exception&) {
  }
  return 0;
}
