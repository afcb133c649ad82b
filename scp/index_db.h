#pragma once
// The SQL connection under the index (scp/index.h): SQLite, the embedded default for one node, or
// PostgreSQL, one database for a cluster of nodes. The index writes each query once, in what both
// accept: ?N or ? placeholders, INSERT ... ON CONFLICT, RETURNING, CASE instead of the two-argument
// MAX, no boolean arithmetic. Where they differ (row locks with SKIP LOCKED, the schema's DDL) it
// asks dialect().
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

namespace scp::db {

enum class Dialect { sqlite, postgresql };

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The database cannot be reached now (server restarting, connection lost). What was in flight is
// rolled back; after reconnect() returns true the caller may try again.
class Unavailable : public Error {
 public:
  using Error::Error;
};
// The database gave up on a transaction that may succeed when run again (PostgreSQL SQLSTATE 40001
// serialization failure, 40P01 deadlock). It is rolled back.
class Retry : public Error {
 public:
  using Error::Error;
};

// One statement. Parameters are numbered from 1: "?N" is parameter N, a bare "?" the next number
// after the highest used so far (as SQLite numbers them). Unbound parameters are NULL.
class Statement {
 public:
  virtual ~Statement() = default;
  virtual void bind_text(int i, const std::string& v) = 0;
  virtual void bind_int(int i, std::int64_t v) = 0;
  virtual void bind_null(int i) = 0;
  // The next result row; false after the last one. The first call runs the statement.
  virtual bool step() = 0;
  virtual std::string text(int column) = 0;       // NULL gives ""
  virtual std::int64_t integer(int column) = 0;   // NULL gives 0
  virtual bool is_null(int column) = 0;
  // Rows the statement inserted, updated or deleted; after step() returned false.
  virtual std::int64_t changes() = 0;
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual Dialect dialect() const = 0;
  virtual std::unique_ptr<Statement> prepare(const std::string& sql) = 0;
  // One or more statements without parameters or rows (DDL, PRAGMA, SET).
  virtual void exec(const std::string& sql) = 0;
  // SQLite: BEGIN IMMEDIATE (the write lock at once); PostgreSQL: BEGIN (READ COMMITTED).
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
  // After Unavailable: tries to connect again; true when the connection works.
  virtual bool reconnect() noexcept = 0;
  // The schema version applied (0 for a new database), and recording a new one inside the
  // migration's transaction. lock_schema() (in that transaction, before reading the version)
  // keeps other nodes starting at the same moment out until it commits.
  virtual int schema_version() = 0;
  virtual void set_schema_version(int v) = 0;
  virtual void lock_schema() = 0;
  // For messages: the file, or host:port/database (never the password).
  virtual std::string describe() const = 0;
};

std::unique_ptr<Connection> open_sqlite(const std::filesystem::path& file);
// A libpq connection string ("host=... port=... dbname=... user=...") or URI. Throws Unavailable
// when the server cannot be reached, Error for anything else.
std::unique_ptr<Connection> open_postgresql(const std::string& dsn);

}  // namespace scp::db
