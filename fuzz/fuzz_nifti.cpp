// The NIfTI-1 reader (.nii and .nii.gz; evaluate --ref, IBSI phantoms).
#include <exception>

#include "analysis/kernels/nifti.h"
#include "fuzz/fuzz_common.h"
#include "fuzz/fuzz_quiet.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemFile file(data, size);
  try {
    analysis::Spacing spacing;
    const auto mask = analysis::kernels::read_nifti_mask(file.path(), &spacing);
    if (mask.empty() || !(spacing.row > 0 && spacing.col > 0 && spacing.slice > 0)) __builtin_trap();
  } catch (const std::exception&) {
  }
  return 0;
}
