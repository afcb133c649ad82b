#pragma once
// One spdlog logger per component ("scp", "spool", "decode", ...), sharing the default logger's
// sinks and level, so that the daemon's choice of sink (stderr or journald) reaches all of them.
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace pacsnode {

inline std::shared_ptr<spdlog::logger> component_logger(const std::string& name) {
  if (auto existing = spdlog::get(name)) return existing;
  auto base = spdlog::default_logger();
  auto log = std::make_shared<spdlog::logger>(name, base->sinks().begin(), base->sinks().end());
  log->set_level(base->level());
  try {
    spdlog::register_logger(log);
  } catch (const spdlog::spdlog_ex&) {  // another thread registered it first
    if (auto existing = spdlog::get(name)) return existing;
  }
  return log;
}

}  // namespace pacsnode
