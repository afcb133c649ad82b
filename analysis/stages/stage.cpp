#include "analysis/stage.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <cstdint>
#include <exception>

#include "dicom/log.h"

namespace analysis {
namespace {

double peak_rss_mib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

}  // namespace

void Stage::run(SeriesContext& c) {
  const Stopwatch sw;
  try {
    run_(c);
  } catch (const StageError&) {
    throw;
  } catch (const std::exception& e) {
    c.timings.push_back({std::string(name()), sw.ms()});
    throw StageError(std::string(name()), e.what());
  }
  const double ms = sw.ms();
  c.timings.push_back({std::string(name()), ms});
  pacsnode::component_logger("pipeline")
      ->debug("{} {} {:.1f}ms, process peak RSS {:.0f} MiB", name(), c.key, ms, peak_rss_mib());
}

void StudyStage::run(StudyContext& c) {
  const Stopwatch sw;
  try {
    run_(c);
  } catch (const std::exception& e) {
    c.timings.push_back({std::string(name()), sw.ms()});
    throw StageError(std::string(name()), e.what());
  }
  const double ms = sw.ms();
  c.timings.push_back({std::string(name()), ms});
  pacsnode::component_logger("pipeline")->debug("{} {} {:.1f}ms", name(), c.key, ms);
}

std::string short_hash(std::string_view text) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace analysis
