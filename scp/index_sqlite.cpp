// The SQLite connection of the index (scp/index_db.h): the embedded default, one node.
#include <sqlite3.h>

#include <mutex>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "scp/index_db.h"

namespace scp::db {
namespace {

// Prepared statements kept by their SQL text: the index runs the same few dozen statements over
// and over (three for every instance received), and parsing them again each time was a good
// part of what a stored instance cost.
class StatementCache {
 public:
  explicit StatementCache(sqlite3* db) : db_(db) {}
  ~StatementCache() {
    for (auto& [sql, idle] : idle_)
      for (sqlite3_stmt* s : idle) sqlite3_finalize(s);
  }
  sqlite3_stmt* take(const std::string& sql) {
    {
      std::lock_guard lock(mutex_);
      auto it = idle_.find(sql);
      if (it != idle_.end() && !it->second.empty()) {
        sqlite3_stmt* s = it->second.back();
        it->second.pop_back();
        return s;
      }
    }
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
      sqlite3_finalize(s);
      throw Error(fmt::format("index: prepare failed: {}", sqlite3_errmsg(db_)));
    }
    return s;
  }
  // Back for the next use, reset and unbound (one idle copy per text; a second one in use at the
  // same time, by a nested query, is finalized).
  void give_back(const std::string& sql, sqlite3_stmt* s) noexcept {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    try {
      std::lock_guard lock(mutex_);
      auto& idle = idle_[sql];
      if (idle.empty()) {
        idle.push_back(s);
        return;
      }
    } catch (...) {
    }
    sqlite3_finalize(s);
  }

 private:
  sqlite3* db_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::vector<sqlite3_stmt*>> idle_;
};

class SqliteStatement final : public Statement {
 public:
  SqliteStatement(sqlite3* db, StatementCache& cache, const std::string& sql) : db_(db), cache_(&cache), sql_(sql) {
    s_ = cache.take(sql);
  }
  SqliteStatement(sqlite3* db, const std::string& sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s_, nullptr) != SQLITE_OK) {
      sqlite3_finalize(s_);
      throw Error(fmt::format("index: prepare failed: {}", sqlite3_errmsg(db)));
    }
  }
  ~SqliteStatement() override {
    if (cache_) cache_->give_back(sql_, s_);
    else sqlite3_finalize(s_);
  }
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
  StatementCache* cache_ = nullptr;  // where s_ goes back to; none: finalized
  std::string sql_;
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
  ~SqliteConnection() override {
    cache_.reset();  // its statements first
    sqlite3_close_v2(db_);
  }

  Dialect dialect() const override { return Dialect::sqlite; }
  std::unique_ptr<Statement> prepare(const std::string& sql) override {
    if (!cache_) cache_ = std::make_unique<StatementCache>(db_);
    return std::make_unique<SqliteStatement>(db_, *cache_, sql);
  }
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
  std::unique_ptr<StatementCache> cache_;
};

}  // namespace

std::unique_ptr<Connection> open_sqlite(const std::filesystem::path& file) { return std::make_unique<SqliteConnection>(file); }

}  // namespace scp::db
