#pragma once
#include <string>

namespace scp {
// Default logger to journald when systemd started us (JOURNAL_STREAM), else to stderr; DCMTK's
// own logging stays at WARN (its TRACE level dumps data sets).
void setup_logging(const std::string& level);
}  // namespace scp
