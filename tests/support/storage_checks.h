#pragma once
// Checks on what the daemon stored, shared by the storage integration tests.
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "scp/index.h"
#include "support/daemon_fixture.h"
#include "support/test_index.h"

namespace testsupport {

// compare_datasets.py: every sent instance stored unchanged and readable to the end.
inline RunResult compare_stored(const std::filesystem::path& incoming, const std::vector<std::string>& sent) {
  std::vector<std::string> argv{python(), (source_dir() / "tests/scripts/compare_datasets.py").string(), incoming.string()};
  argv.insert(argv.end(), sent.begin(), sent.end());
  return run(argv);
}

// Files storescu -v reported as acknowledged with success ("Sending file: X" ... "Received Store
// Response (Success)").
inline std::vector<std::string> acknowledged_files(const std::string& storescu_output) {
  std::vector<std::string> acked;
  std::string current;
  std::istringstream in(storescu_output);
  for (std::string line; std::getline(in, line);) {
    if (auto p = line.find("Sending file: "); p != std::string::npos) current = line.substr(p + 14);
    else if (line.find("Received Store Response (Success)") != std::string::npos && !current.empty()) {
      acked.push_back(current);
      current.clear();
    }
  }
  return acked;
}

inline std::size_t count_lines(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

inline std::size_t completed_jobs(const std::filesystem::path& root) {
  scp::Index index(index_settings_for(root));
  return index.jobs().size();
}

}  // namespace testsupport
