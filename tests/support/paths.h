#pragma once
// Where tests find the checkout, the shared public data and the daemon binary.
#include <filesystem>
#include <string>

namespace testsupport {
inline std::filesystem::path source_dir() { return PACSNODE_SOURCE_DIR; }
// ../shared/data/<rel>: real public DICOM data with provenance in MANIFEST.md.
inline std::filesystem::path shared_data(const std::string& rel = {}) {
  return std::filesystem::path(PACSNODE_SHARED_DATA) / rel;
}
inline std::filesystem::path daemon_binary() { return PACSNODE_BINARY; }
// The synthetic CT generator, kept in the repository (a copy of ../shared/tools/make_ct_phantom.py)
// so that the tests that make phantoms need nothing beside the checkout.
inline std::filesystem::path phantom_script() { return source_dir() / "tests/scripts/make_ct_phantom.py"; }
// The Debian interpreter (has python3-pydicom, numpy, scipy), never a user's pyenv.
inline const char* python() { return "/usr/bin/python3"; }
}  // namespace testsupport
