#pragma once
// The index a test uses: SQLite under `dir` (the plain registration of a test), or, in the
// `<name>_pg` registration (PACSNODE_TEST_PG_DSN_FILE set, see support/pg.h), a PostgreSQL database
// of its own for that directory, so that reopening the same directory reopens the same index.
#include <filesystem>
#include <memory>
#include <string>

#include "scp/index.h"
#include "support/pg.h"

namespace testsupport {

inline bool testing_postgresql() { return pg_base_dsn().has_value(); }

inline scp::IndexSettings index_settings_for(const std::filesystem::path& dir, const std::string& node = "local") {
  scp::IndexSettings s;
  s.node = node;
  if (testing_postgresql()) {
    s.backend = "postgresql";
    s.dsn = pg_database_for(dir);
  } else {
    s.sqlite_file = dir / "index.sqlite";
  }
  return s;
}

inline std::unique_ptr<scp::Index> open_test_index(const std::filesystem::path& dir, const std::string& node = "local") {
  return std::make_unique<scp::Index>(index_settings_for(dir, node));
}

// The [index] table a daemon under test gets for its storage root (empty for SQLite).
inline std::string index_toml_for(const std::filesystem::path& root) {
  if (!testing_postgresql()) return {};
  return "\n[index]\nbackend = \"postgresql\"\ndsn = \"" + pg_database_for(root) + "\"\nlease_seconds = 6\npoll_seconds = 1\n";
}

}  // namespace testsupport
