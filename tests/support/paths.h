#pragma once
// Where tests find the checkout, the test data and the daemon binary.
#include <filesystem>
#include <string>

namespace testsupport {
inline std::filesystem::path source_dir() { return PACSNODE_SOURCE_DIR; }
// tests/data/<rel>: real public DICOM files copied byte for byte from public repositories, under
// the same relative paths as in the shared data set they were picked from (provenance, licences
// and file lists in tests/data/README.md). Tests read data from the repository or make it.
inline std::filesystem::path test_data(const std::string& rel = {}) {
  return std::filesystem::path(PACSNODE_TEST_DATA) / rel;
}
inline std::filesystem::path daemon_binary() { return PACSNODE_BINARY; }
// The synthetic CT generator, kept in the repository (tests/scripts/make_ct_phantom.py) so that
// the tests that make phantoms need nothing beside the checkout.
inline std::filesystem::path phantom_script() { return source_dir() / "tests/scripts/make_ct_phantom.py"; }
// The Debian interpreter (has python3-pydicom, numpy, scipy), never a user's pyenv.
inline const char* python() { return "/usr/bin/python3"; }
}  // namespace testsupport
