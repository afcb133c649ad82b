#pragma once
// Call fuzz::quiet() once from LLVMFuzzerInitialize: no spdlog or DCMTK log output (a harness that
// logs every rejected input runs many times slower).
#include <dcmtk/oflog/oflog.h>
#include <spdlog/spdlog.h>

namespace fuzz {

inline void quiet() {
  spdlog::set_level(spdlog::level::off);
  OFLog::configure(OFLogger::OFF_LOG_LEVEL);
}

}  // namespace fuzz
