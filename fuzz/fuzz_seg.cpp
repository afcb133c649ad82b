// The DICOM SEG reader (evaluate --pred/--ref, and reading other tools' SEGs).
#include <exception>

#include "dicom/seg_reader.h"
#include "fuzz/fuzz_common.h"
#include "fuzz/fuzz_quiet.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemFile file(data, size);
  if (!dicom::looks_like_dicom(file.path())) return 0;
  try {
    const dicom::SegObject seg = dicom::read_seg(file.path());
    for (const auto& f : seg.frames)
      if (f.mask.rows != seg.rows || f.mask.cols != seg.cols || seg.segment(f.segment) == nullptr) __builtin_trap();
  } catch (const std::exception&) {
  }
  return 0;
}
