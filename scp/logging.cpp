#include "scp/logging.h"

#include <cstdlib>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

namespace scp {

void setup_logging(const std::string& level) {
  std::shared_ptr<spdlog::sinks::sink> sink;
  if (std::getenv("JOURNAL_STREAM")) {
    sink = std::make_shared<spdlog::sinks::systemd_sink_mt>();
    sink->set_pattern("[%n] %v");
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    sink->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%n] %v");
  }
  auto logger = std::make_shared<spdlog::logger>("pacsnode", sink);
  logger->set_level(spdlog::level::from_str(level));
  spdlog::drop_all();
  spdlog::set_default_logger(logger);
  spdlog::flush_on(spdlog::level::warn);
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  // dcmiod/dcmfg/dcmseg warn on every SEG they write (e.g. that dimension consistency is checked
  // later, or an absent type 2 attribute); our own checks and the validators in the tests cover
  // that, so only their errors reach the log.
  for (const char* name : {"dcmtk.dcmiod", "dcmtk.dcmfg", "dcmtk.dcmseg"})
    OFLog::getLogger(name).setLogLevel(OFLogger::ERROR_LOG_LEVEL);
}

}  // namespace scp
