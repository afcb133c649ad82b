#pragma once
// `pacsnode explain FILE_OR_FOLDER`: which rule and profile each series would get, and why,
// from the headers alone (after the structural scan; no pixel is decoded, nothing is analysed).
#include <filesystem>
#include <iosfwd>
#include <string>

#include "cli/command.h"
#include "config/config.h"

namespace scp {

struct ExplainOptions {
  std::string calling_ae;  // as if sent by this AE title (rules with calling_ae); empty: unknown
};

// Prints one block per series to `out`, and files that are not DICOM (or fail the scan) with
// their reason to `err`. Returns the number of series.
std::size_t explain(const std::filesystem::path& input, const config::Config& cfg, const ExplainOptions& opt,
                    std::ostream& out, std::ostream& err);

// `pacsnode explain FILE_OR_FOLDER [--config FILE] [--calling-ae AE]`: exit 0 when at least one
// series was found, 1 when none, 2 for an invalid config.
cli::Command explain_command();

}  // namespace scp
