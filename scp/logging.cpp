#include "scp/logging.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

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

void exit_now(int code) {
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->flush(); });
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  std::exit(code);
#else
  ::_exit(code);
#endif
}

}  // namespace scp
