#include "scp/index.h"

#include <random>
#include <stdexcept>

#include <fmt/format.h>
#include <sqlite3.h>

namespace scp {
namespace {

class IndexError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw IndexError(fmt::format("index: prepare failed: {}", sqlite3_errmsg(db)));
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt& bind(int i, const std::string& v) { sqlite3_bind_text(s_, i, v.c_str(), -1, SQLITE_TRANSIENT); return *this; }
  Stmt& bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); return *this; }
  Stmt& bind(int i, const std::optional<long>& v) {
    if (v) sqlite3_bind_int64(s_, i, *v); else sqlite3_bind_null(s_, i);
    return *this;
  }
  bool step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw IndexError(fmt::format("index: {}", sqlite3_errmsg(db_)));
  }
  std::string text(int c) { auto* p = sqlite3_column_text(s_, c); return p ? reinterpret_cast<const char*>(p) : ""; }
  std::int64_t integer(int c) { return sqlite3_column_int64(s_, c); }
  std::optional<long> maybe(int c) {
    if (sqlite3_column_type(s_, c) == SQLITE_NULL) return std::nullopt;
    return static_cast<long>(sqlite3_column_int64(s_, c));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

StudyRow study_from(Stmt& s) {
  StudyRow r;
  r.study_uid = s.text(0);
  r.state = s.text(1) == "complete" ? StudyState::complete : StudyState::open;
  r.last_instance_ms = s.integer(2);
  r.generation = static_cast<int>(s.integer(3));
  r.instance_count = s.integer(4);
  return r;
}

constexpr const char* kStudyColumns =
    "SELECT s.study_uid, s.state, s.last_instance_ms, s.generation, "
    "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid) FROM studies s";

// Schema versions, applied in order when the index is opened; PRAGMA user_version records the
// last one applied. Never edit a released step: add one.
const char* const kMigrations[] = {
    // 1: instances, studies, jobs, results, outbox.
    R"(CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
  study_uid TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'open',
  first_instance_ms INTEGER NOT NULL, last_instance_ms INTEGER NOT NULL,
  completed_ms INTEGER, generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS instances (
  sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL REFERENCES studies(study_uid),
  series_uid TEXT NOT NULL, sop_class_uid TEXT NOT NULL, modality TEXT, transfer_syntax TEXT,
  path TEXT NOT NULL, size INTEGER NOT NULL, received_ms INTEGER NOT NULL,
  acquisition_number INTEGER, images_in_acquisition INTEGER, study_related_instances INTEGER);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, study_uid TEXT NOT NULL REFERENCES studies(study_uid),
  generation INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'pending', created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL, error TEXT, UNIQUE(study_uid, generation));
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL REFERENCES jobs(id),
  study_uid TEXT NOT NULL, generation INTEGER NOT NULL, kind TEXT NOT NULL,
  sop_class_uid TEXT NOT NULL, sop_instance_uid TEXT NOT NULL UNIQUE, series_uid TEXT NOT NULL,
  source_series_uid TEXT, path TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, result_id INTEGER NOT NULL REFERENCES results(id),
  destination TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, last_error TEXT,
  UNIQUE(result_id, destination));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(destination, state, next_attempt_ms);)",
    // 2: one row per series and analysis job: what the worker process made of it.
    R"(CREATE TABLE IF NOT EXISTS series_runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL REFERENCES jobs(id),
  study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'running',
  profile TEXT, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, volumes INTEGER NOT NULL DEFAULT 0,
  started_ms INTEGER NOT NULL, ended_ms INTEGER);
CREATE INDEX IF NOT EXISTS series_runs_by_study ON series_runs(study_uid);)",
};

}  // namespace

std::string study_hash(const std::string& key, const std::string& study_uid) {
  return fmt::format("s-{:012x}", fnv1a(key + "\x1f" + study_uid) & 0xffffffffffffULL);
}

Index::Index(const std::filesystem::path& db_file) {
  if (sqlite3_open_v2(db_file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw IndexError(fmt::format("index {}: {}", db_file.string(), msg));
  }
  sqlite3_busy_timeout(db_, 5000);
  // WAL with synchronous=NORMAL: the files are fsync'ed before success, the index can be rebuilt
  // from them, so a commit need not wait for its own fsync.
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec("PRAGMA foreign_keys=ON");
  migrate();
  {
    Stmt s(db_, "SELECT value FROM meta WHERE key = 'log_key'");
    if (s.step()) log_key_ = s.text(0);
  }
  if (log_key_.empty()) {
    std::random_device rd;
    log_key_ = fmt::format("{:08x}{:08x}{:08x}{:08x}", rd(), rd(), rd(), rd());
    Stmt(db_, "INSERT INTO meta(key, value) VALUES('log_key', ?)").bind(1, log_key_).step();
  }
}

Index::~Index() { sqlite3_close_v2(db_); }

void Index::migrate() {
  int version = 0;
  {
    Stmt s(db_, "PRAGMA user_version");
    if (s.step()) version = static_cast<int>(s.integer(0));
  }
  const int latest = static_cast<int>(std::size(kMigrations));
  if (version > latest)
    throw IndexError(fmt::format("index schema version {} is newer than this pacsnode knows ({}): downgrade not supported",
                                 version, latest));
  for (int v = version; v < latest; ++v) {
    exec("BEGIN IMMEDIATE");
    try {
      exec(kMigrations[v]);
      exec(fmt::format("PRAGMA user_version = {}", v + 1).c_str());
      exec("COMMIT");
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }
}

std::int64_t Index::start_series_run(std::int64_t job_id, const std::string& study_uid, const std::string& series_uid,
                                     std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "INSERT INTO series_runs(job_id, study_uid, series_uid, started_ms) VALUES(?,?,?,?)")
      .bind(1, job_id).bind(2, study_uid).bind(3, series_uid).bind(4, now_ms).step();
  return sqlite3_last_insert_rowid(db_);
}

void Index::finish_series_run(std::int64_t id, const SeriesRunRow& r, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "UPDATE series_runs SET state = ?2, profile = ?3, attempts = ?4, error = ?5, volumes = ?6, ended_ms = ?7 WHERE id = ?1")
      .bind(1, id).bind(2, r.state).bind(3, r.profile).bind(4, static_cast<std::int64_t>(r.attempts)).bind(5, r.error)
      .bind(6, static_cast<std::int64_t>(r.volumes)).bind(7, now_ms).step();
}

std::vector<SeriesRunRow> Index::series_runs(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT id, job_id, study_uid, series_uid, state, profile, attempts, error, volumes, started_ms, "
              "COALESCE(ended_ms, 0) FROM series_runs WHERE study_uid = ? ORDER BY id");
  s.bind(1, study_uid);
  std::vector<SeriesRunRow> out;
  while (s.step())
    out.push_back({s.integer(0), s.integer(1), s.text(2), s.text(3), s.text(4), s.text(5), static_cast<int>(s.integer(6)),
                   s.text(7), static_cast<int>(s.integer(8)), s.integer(9), s.integer(10)});
  return out;
}

std::vector<std::pair<std::string, std::vector<std::string>>> Index::series_files(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT series_uid, path FROM instances WHERE study_uid = ? ORDER BY series_uid, path");
  s.bind(1, study_uid);
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  while (s.step()) {
    if (out.empty() || out.back().first != s.text(0)) out.emplace_back(s.text(0), std::vector<std::string>{});
    out.back().second.push_back(s.text(1));
  }
  return out;
}

void Index::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw IndexError("index: " + msg);
  }
}

bool Index::add_instance(const StoredInstance& in, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  const auto& h = in.header;
  exec("BEGIN IMMEDIATE");
  try {
    Stmt(db_, "INSERT INTO studies(study_uid, first_instance_ms, last_instance_ms) VALUES(?1, ?2, ?2) "
              "ON CONFLICT(study_uid) DO UPDATE SET last_instance_ms = MAX(last_instance_ms, ?2), state = 'open'")
        .bind(1, h.study_uid).bind(2, now_ms).step();
    bool known = false;
    {
      Stmt s(db_, "SELECT 1 FROM instances WHERE sop_uid = ?");
      known = s.bind(1, h.sop_instance_uid).step();
    }
    Stmt(db_, "INSERT OR REPLACE INTO instances(sop_uid, study_uid, series_uid, sop_class_uid, modality, transfer_syntax, "
              "path, size, received_ms, acquisition_number, images_in_acquisition, study_related_instances) "
              "VALUES(?,?,?,?,?,?,?,?,?,?,?,?)")
        .bind(1, h.sop_instance_uid).bind(2, h.study_uid).bind(3, h.series_uid).bind(4, h.sop_class_uid)
        .bind(5, h.modality).bind(6, h.transfer_syntax_uid).bind(7, in.path.string())
        .bind(8, static_cast<std::int64_t>(in.size)).bind(9, now_ms).bind(10, h.acquisition_number)
        .bind(11, h.images_in_acquisition).bind(12, h.number_of_study_related_instances).step();
    exec("COMMIT");
    return !known;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void Index::remove_instance(const std::string& sop_uid) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "DELETE FROM instances WHERE sop_uid = ?").bind(1, sop_uid).step();
}

void Index::mark_complete(const std::string& study_uid, int generation, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  exec("BEGIN IMMEDIATE");
  try {
    Stmt(db_, "UPDATE studies SET state = 'complete', completed_ms = ?2, generation = ?3 WHERE study_uid = ?1")
        .bind(1, study_uid).bind(2, now_ms).bind(3, static_cast<std::int64_t>(generation)).step();
    Stmt(db_, "INSERT OR IGNORE INTO jobs(study_uid, generation, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?3)")
        .bind(1, study_uid).bind(2, static_cast<std::int64_t>(generation)).bind(3, now_ms).step();
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::optional<StudyRow> Index::study(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, (std::string(kStudyColumns) + " WHERE s.study_uid = ?").c_str());
  s.bind(1, study_uid);
  if (!s.step()) return std::nullopt;
  return study_from(s);
}

std::vector<StudyRow> Index::studies(std::optional<StudyState> only) {
  std::lock_guard lock(mutex_);
  std::string sql = std::string(kStudyColumns);
  if (only) sql += *only == StudyState::open ? " WHERE s.state = 'open'" : " WHERE s.state = 'complete'";
  Stmt s(db_, (sql + " ORDER BY s.first_instance_ms").c_str());
  std::vector<StudyRow> out;
  while (s.step()) out.push_back(study_from(s));
  return out;
}

std::vector<InstanceRow> Index::instances_of(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT sop_uid, study_uid, series_uid, acquisition_number, images_in_acquisition, study_related_instances "
              "FROM instances WHERE study_uid = ?");
  s.bind(1, study_uid);
  std::vector<InstanceRow> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.text(2), s.maybe(3), s.maybe(4), s.maybe(5)});
  return out;
}

std::vector<std::pair<std::string, std::string>> Index::instance_paths() {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT sop_uid, path FROM instances");
  std::vector<std::pair<std::string, std::string>> out;
  while (s.step()) out.emplace_back(s.text(0), s.text(1));
  return out;
}

std::vector<JobRow> Index::jobs(std::optional<std::string> state) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, state ? "SELECT id, study_uid, generation, state, error FROM jobs WHERE state = ? ORDER BY id"
                    : "SELECT id, study_uid, generation, state, error FROM jobs ORDER BY id");
  if (state) s.bind(1, *state);
  std::vector<JobRow> out;
  while (s.step()) out.push_back({s.integer(0), s.text(1), static_cast<int>(s.integer(2)), s.text(3), s.text(4)});
  return out;
}

std::optional<JobRow> Index::job(std::int64_t id) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT id, study_uid, generation, state, error FROM jobs WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return JobRow{s.integer(0), s.text(1), static_cast<int>(s.integer(2)), s.text(3), s.text(4)};
}

void Index::set_job_state(std::int64_t id, const std::string& state, const std::string& error) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "UPDATE jobs SET state = ?2, error = ?3, updated_ms = strftime('%s','now') * 1000 WHERE id = ?1")
      .bind(1, id).bind(2, state).bind(3, error).step();
}

std::vector<std::string> Index::instance_files(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT path FROM instances WHERE study_uid = ? ORDER BY path");
  s.bind(1, study_uid);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::int64_t Index::add_result(const ResultRow& r) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "INSERT INTO results(job_id, study_uid, generation, kind, sop_class_uid, sop_instance_uid, series_uid, "
            "source_series_uid, path, created_ms) VALUES(?,?,?,?,?,?,?,?,?, strftime('%s','now') * 1000)")
      .bind(1, r.job_id).bind(2, r.study_uid).bind(3, static_cast<std::int64_t>(r.generation)).bind(4, r.kind)
      .bind(5, r.sop_class_uid).bind(6, r.sop_instance_uid).bind(7, r.series_uid).bind(8, r.source_series_uid)
      .bind(9, r.path).step();
  return sqlite3_last_insert_rowid(db_);
}

std::vector<ResultRow> Index::results(std::optional<std::string> study_uid) {
  std::lock_guard lock(mutex_);
  const char* cols = "SELECT id, job_id, study_uid, generation, kind, sop_class_uid, sop_instance_uid, series_uid, "
                     "source_series_uid, path FROM results";
  Stmt s(db_, study_uid ? (std::string(cols) + " WHERE study_uid = ? ORDER BY id").c_str() : (std::string(cols) + " ORDER BY id").c_str());
  if (study_uid) s.bind(1, *study_uid);
  std::vector<ResultRow> out;
  while (s.step())
    out.push_back({s.integer(0), s.integer(1), s.text(2), static_cast<int>(s.integer(3)), s.text(4), s.text(5), s.text(6),
                   s.text(7), s.text(8), s.text(9)});
  return out;
}

int Index::requeue_running_jobs() {
  std::lock_guard lock(mutex_);
  Stmt(db_, "UPDATE jobs SET state = 'pending' WHERE state = 'running'").step();
  return sqlite3_changes(db_);
}

namespace {
constexpr const char* kOutboxColumns =
    "SELECT o.id, o.result_id, o.destination, r.path, r.sop_class_uid, r.sop_instance_uid, r.study_uid, r.kind, "
    "o.state, o.attempts, o.next_attempt_ms, o.created_ms, o.updated_ms, o.last_error "
    "FROM outbox o JOIN results r ON r.id = o.result_id";

OutboxRow outbox_from(Stmt& s) {
  OutboxRow o;
  o.id = s.integer(0);
  o.result_id = s.integer(1);
  o.destination = s.text(2);
  o.path = s.text(3);
  o.sop_class_uid = s.text(4);
  o.sop_instance_uid = s.text(5);
  o.study_uid = s.text(6);
  o.kind = s.text(7);
  o.state = s.text(8);
  o.attempts = static_cast<int>(s.integer(9));
  o.next_attempt_ms = s.integer(10);
  o.created_ms = s.integer(11);
  o.updated_ms = s.integer(12);
  o.last_error = s.text(13);
  return o;
}
}  // namespace

void Index::enqueue(const ResultRow& r, const std::vector<std::string>& destinations, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  for (const auto& d : destinations)
    Stmt(db_, "INSERT OR IGNORE INTO outbox(result_id, destination, next_attempt_ms, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?3, ?3)")
        .bind(1, r.id).bind(2, d).bind(3, now_ms).step();
}

std::vector<OutboxRow> Index::outbox(std::optional<std::string> state) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, (std::string(kOutboxColumns) + (state ? " WHERE o.state = ?" : "") + " ORDER BY o.id").c_str());
  if (state) s.bind(1, *state);
  std::vector<OutboxRow> out;
  while (s.step()) out.push_back(outbox_from(s));
  return out;
}

std::vector<OutboxRow> Index::due(const std::string& destination, std::int64_t now_ms, int limit) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, (std::string(kOutboxColumns) +
               " WHERE o.destination = ?1 AND o.state = 'pending' AND o.next_attempt_ms <= ?2 ORDER BY o.id LIMIT ?3").c_str());
  s.bind(1, destination).bind(2, now_ms).bind(3, static_cast<std::int64_t>(limit));
  std::vector<OutboxRow> out;
  while (s.step()) out.push_back(outbox_from(s));
  return out;
}

void Index::mark_sent(std::int64_t id, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "UPDATE outbox SET state = 'sent', attempts = attempts + 1, updated_ms = ?2, last_error = NULL WHERE id = ?1")
      .bind(1, id).bind(2, now_ms).step();
}

void Index::mark_retry(std::int64_t id, std::int64_t next_ms, const std::string& error, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3, updated_ms = ?4 WHERE id = ?1")
      .bind(1, id).bind(2, next_ms).bind(3, error).bind(4, now_ms).step();
}

void Index::mark_dead(std::int64_t id, const std::string& error, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2, updated_ms = ?3 WHERE id = ?1")
      .bind(1, id).bind(2, error).bind(3, now_ms).step();
}

int Index::retry(const std::vector<std::int64_t>& ids, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  int n = 0;
  if (ids.empty()) {
    Stmt(db_, "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?1, updated_ms = ?1 WHERE state = 'dead'")
        .bind(1, now_ms).step();
    return sqlite3_changes(db_);
  }
  for (auto id : ids) {
    Stmt(db_, "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?2, updated_ms = ?2 WHERE id = ?1 AND state != 'sent'")
        .bind(1, id).bind(2, now_ms).step();
    n += sqlite3_changes(db_);
  }
  return n;
}

int Index::purge(const std::string& state) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "DELETE FROM outbox WHERE state = ?").bind(1, state).step();
  return sqlite3_changes(db_);
}

}  // namespace scp
