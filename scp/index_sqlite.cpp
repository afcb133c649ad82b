// The SQLite connection of the index (scp/index_db.h): the embedded default, one node.
#include <sqlite3.h>

#include <fmt/format.h>

#include "scp/index_db.h"

namespace scp::db {
namespace {

class SqliteStatement final : public Statement {
 public:
  SqliteStatement(sqlite3* db, const std::string& sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s_, nullptr) != SQLITE_OK)
      throw Error(fmt::format("index: prepare failed: {}", sqlite3_errmsg(db)));
  }
  ~SqliteStatement() override { sqlite3_finalize(s_); }
  void bind_text(int i, const std::string& v) override { sqlite3_bind_text(s_, i, v.c_str(), -1, SQLITE_TRANSIENT); }
  void bind_int(int i, std::int64_t v) override { sqlite3_bind_int64(s_, i, v); }
  void bind_null(int i) override { sqlite3_bind_null(s_, i); }
  bool step() override {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) {
      changes_ = sqlite3_changes(db_);
      return false;
    }
    throw Error(fmt::format("index: {}", sqlite3_errmsg(db_)));
  }
  std::string text(int c) override {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? reinterpret_cast<const char*>(p) : "";
  }
  std::int64_t integer(int c) override { return sqlite3_column_int64(s_, c); }
  bool is_null(int c) override { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  std::int64_t changes() override { return changes_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  std::int64_t changes_ = 0;
};

class SqliteConnection final : public Connection {
 public:
  explicit SqliteConnection(const std::filesystem::path& file) : file_(file) {
    if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
        SQLITE_OK) {
      const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw Error(fmt::format("index {}: {}", file.string(), msg));
    }
    sqlite3_busy_timeout(db_, 5000);
    // WAL with synchronous=NORMAL: the files are fsync'ed before success, the index can be rebuilt
    // from them, so a commit need not wait for its own fsync.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
  }
  ~SqliteConnection() override { sqlite3_close_v2(db_); }

  Dialect dialect() const override { return Dialect::sqlite; }
  std::unique_ptr<Statement> prepare(const std::string& sql) override { return std::make_unique<SqliteStatement>(db_, sql); }
  void exec(const std::string& sql) override {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      const std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      throw Error("index: " + msg);
    }
  }
  void begin() override { exec("BEGIN IMMEDIATE"); }
  void commit() override { exec("COMMIT"); }
  void rollback() noexcept override { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  bool reconnect() noexcept override { return true; }  // a file does not go away
  int schema_version() override {
    SqliteStatement s(db_, "PRAGMA user_version");
    return s.step() ? static_cast<int>(s.integer(0)) : 0;
  }
  void set_schema_version(int v) override { exec(fmt::format("PRAGMA user_version = {}", v)); }
  void lock_schema() override {}  // BEGIN IMMEDIATE holds the write lock already
  std::string describe() const override { return file_.string(); }

 private:
  std::filesystem::path file_;
  sqlite3* db_ = nullptr;
};

}  // namespace

std::unique_ptr<Connection> open_sqlite(const std::filesystem::path& file) { return std::make_unique<SqliteConnection>(file); }

}  // namespace scp::db
