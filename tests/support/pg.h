#pragma once
// PostgreSQL for tests (issue 14: the index in PostgreSQL). The `<name>_pg` registrations of the
// tests in PACSNODE_PG_TESTS (tests/CMakeLists.txt) run against the cluster that the CTest fixture
// "pg" started (tests/scripts/pg_cluster.sh) and name it in PACSNODE_TEST_PG_DSN_FILE; each test
// takes a database of its own there. PgCluster is for a test that needs a server of its own (to
// stop and restart it).
#include <libpq-fe.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/process.h"

namespace testsupport {

// The fixture cluster's connection string; nullopt when PACSNODE_TEST_PG_DSN_FILE is unset (the
// plain registration of a test: SQLite only).
inline std::optional<std::string> pg_base_dsn() {
  const char* file = std::getenv("PACSNODE_TEST_PG_DSN_FILE");
  if (!file || !*file) return std::nullopt;
  std::ifstream in(file);
  std::string dsn;
  if (!in || !std::getline(in, dsn) || dsn.empty())
    throw std::runtime_error(std::string("PACSNODE_TEST_PG_DSN_FILE=") + file +
                             ": no connection string (did the pg_cluster_start fixture run?)");
  return dsn;
}

namespace pg_detail {

inline std::string quote_value(const std::string& v) {
  std::string q = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') q += '\\';
    q += c;
  }
  return q + "'";
}

// `dsn` with its dbname replaced.
inline std::string with_database(const std::string& dsn, const std::string& db) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (!opts) {
    const std::string m = err ? err : "out of memory";
    PQfreemem(err);
    throw std::runtime_error("invalid connection string: " + m);
  }
  std::string out;
  for (auto* o = opts; o->keyword; ++o) {
    if (std::string(o->keyword) == "dbname" || !o->val) continue;
    out += std::string(o->keyword) + "=" + quote_value(o->val) + " ";
  }
  PQconninfoFree(opts);
  return out + "dbname=" + quote_value(db);
}

// Creates database `db` (a name of [a-z0-9_]) on the server of `base_dsn` unless it exists.
inline void create_database(const std::string& base_dsn, const std::string& db) {
  PGconn* c = PQconnectdb(base_dsn.c_str());
  auto finish = [&] { PQfinish(c); };
  if (PQstatus(c) != CONNECTION_OK) {
    const std::string m = PQerrorMessage(c);
    finish();
    throw std::runtime_error("test PostgreSQL: cannot connect: " + m);
  }
  const char* values[] = {db.c_str()};
  PGresult* r = PQexecParams(c, "SELECT 1 FROM pg_database WHERE datname = $1", 1, nullptr, values, nullptr, nullptr, 0);
  const bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  PQclear(r);
  if (!exists) {
    r = PQexec(c, ("CREATE DATABASE \"" + db + "\"").c_str());
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    // 42P04 duplicate_database, 23505: another process created it at the same moment.
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
                    (state && (std::string(state) == "42P04" || std::string(state) == "23505"));
    const std::string m = PQresultErrorMessage(r);
    PQclear(r);
    if (!ok) {
      finish();
      throw std::runtime_error("test PostgreSQL: CREATE DATABASE " + db + ": " + m);
    }
  }
  finish();
}

inline std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

inline std::string hex16(std::uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = digits[v & 0xf];
  return out;
}

inline std::string base_or_throw() {
  auto base = pg_base_dsn();
  if (!base) throw std::runtime_error("PACSNODE_TEST_PG_DSN_FILE is not set: no test PostgreSQL");
  return *base;
}

}  // namespace pg_detail

// The database of a storage directory: t_<hash of its absolute path>, created if absent, so that a
// daemon reopening the same directory reopens the same database. Its connection string.
inline std::string pg_database_for(const std::filesystem::path& dir) {
  const std::string base = pg_detail::base_or_throw();
  const auto abs = std::filesystem::weakly_canonical(std::filesystem::absolute(dir)).string();
  const std::string db = "t_" + pg_detail::hex16(pg_detail::fnv1a(abs));
  pg_detail::create_database(base, db);
  return pg_detail::with_database(base, db);
}

// A new, empty database; `tag` (letters, digits, '_'; the rest is dropped) helps find it.
inline std::string pg_fresh_database(const std::string& tag) {
  const std::string base = pg_detail::base_or_throw();
  static std::atomic<unsigned> counter{0};
  std::string clean;
  for (char c : tag)
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') clean += c;
    else if (c >= 'A' && c <= 'Z') clean += static_cast<char>(c - 'A' + 'a');
  clean = clean.substr(0, 24);
  std::random_device rd;
  const std::string db = "f_" + clean + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
                         pg_detail::hex16((std::uint64_t{rd()} << 32) | rd()).substr(0, 8);
  pg_detail::create_database(base, db);
  return pg_detail::with_database(base, db);
}

// A PostgreSQL cluster of the test's own in a temporary directory (tests/scripts/pg_cluster.sh):
// started by the constructor, stopped and removed by the destructor.
class PgCluster {
 public:
  PgCluster() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pacsnode-pg-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    dir_ = tmpl;
    try {
      start();
    } catch (...) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      throw;
    }
  }
  ~PgCluster() {
    try {
      stop();
    } catch (...) {
    }
  }
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // host=127.0.0.1 port=... user=postgres dbname=postgres; the port stays the same across restarts.
  const std::string& dsn() const { return dsn_; }
  const std::filesystem::path& dir() const { return dir_; }

  // Stops the server (fast: open sessions are cut) and starts it again on the same port and data.
  void restart() { script("restart"); }
  // Stops the server and keeps its data; start() brings it back on the same port.
  void halt() { script("halt"); }
  void start() {
    script("start");
    std::ifstream in(dir_ / "dsn");
    if (!std::getline(in, dsn_) || dsn_.empty()) throw std::runtime_error("pg_cluster.sh start wrote no dsn in " + dir_.string());
  }
  // Stops the server and removes its directory (also what the destructor does).
  void stop() {
    if (stopped_) return;
    script("stop");
    stopped_ = true;
  }

 private:
  void script(const std::string& command) {
    const auto r = run({std::string(PACSNODE_SOURCE_DIR) + "/tests/scripts/pg_cluster.sh", command, dir_.string()});
    if (r.exit_code != 0)
      throw std::runtime_error("pg_cluster.sh " + command + " " + dir_.string() + " failed (" +
                               std::to_string(r.exit_code) + "): " + r.output);
  }

  std::filesystem::path dir_;
  std::string dsn_;
  bool stopped_ = false;
};

}  // namespace testsupport
