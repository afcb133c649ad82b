// The features CSV reader of `pacsnode train` (read_training_table: RFC 4180 subset, numeric columns,
// labels in a column of the same file).
#include <exception>
#include <string>
#include <vector>

#include "analysis/kernels/classify.h"
#include "fuzz/fuzz_common.h"
#include "fuzz/fuzz_quiet.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemFile file(data, size);
  const std::vector<std::string> ignore = {"segment_label", "series", "series_uid"};  // as `pacsnode train`
  analysis::kernels::LabelSource labels;
  labels.column = "label";
  try {
    const auto t = analysis::kernels::read_training_table(file.path(), labels, ignore);
    if (t.samples.rows != static_cast<int>(t.labels.size()) ||
        t.samples.cols != static_cast<int>(t.feature_names.size()))
      __builtin_trap();
  } catch (const std::exception&) {
  }
  return 0;
}
