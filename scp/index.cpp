#include "scp/index.h"

#include <algorithm>
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
    "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid AND i.own = 0) FROM studies s";

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
    // 3: what rules and the API read from headers; our own results coming back (own = 1: stored,
    // never analysed, never reopen their study); the content hash of each instance's data set, and
    // per analysed series the fingerprint of its instances (a re-sent, unchanged series is not
    // analysed again); result series numbering, so that a re-analysis supersedes in the same series.
    R"(ALTER TABLE instances ADD COLUMN body_part TEXT;
ALTER TABLE instances ADD COLUMN series_description TEXT;
ALTER TABLE instances ADD COLUMN protocol_name TEXT;
ALTER TABLE instances ADD COLUMN study_description TEXT;
ALTER TABLE instances ADD COLUMN study_date TEXT;
ALTER TABLE instances ADD COLUMN accession_number TEXT;
ALTER TABLE instances ADD COLUMN series_number INTEGER;
ALTER TABLE instances ADD COLUMN frames INTEGER NOT NULL DEFAULT 1;
ALTER TABLE instances ADD COLUMN calling_ae TEXT;
ALTER TABLE instances ADD COLUMN content_hash TEXT;
ALTER TABLE instances ADD COLUMN own INTEGER NOT NULL DEFAULT 0;
ALTER TABLE series_runs ADD COLUMN fingerprint TEXT;
ALTER TABLE series_runs ADD COLUMN rule TEXT;
ALTER TABLE results ADD COLUMN series_number INTEGER;
ALTER TABLE results ADD COLUMN instance_number INTEGER;
CREATE INDEX IF NOT EXISTS results_by_series ON results(series_uid);)",
    // 4 (retention): a study's results and their outbox rows are looked up per study under the
    // index lock while retention re-checks a study before deleting it.
    R"(CREATE INDEX IF NOT EXISTS results_by_study ON results(study_uid, generation);)",
    // 5 (http): a re-analysis asked for by an administrator runs every series again.
    R"(ALTER TABLE jobs ADD COLUMN force INTEGER NOT NULL DEFAULT 0;)",
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
  Stmt(db_, "UPDATE series_runs SET state = ?2, profile = ?3, attempts = ?4, error = ?5, volumes = ?6, ended_ms = ?7, "
            "fingerprint = ?8, rule = ?9 WHERE id = ?1")
      .bind(1, id).bind(2, r.state).bind(3, r.profile).bind(4, static_cast<std::int64_t>(r.attempts)).bind(5, r.error)
      .bind(6, static_cast<std::int64_t>(r.volumes)).bind(7, now_ms).bind(8, r.fingerprint).bind(9, r.rule).step();
}

namespace {
constexpr const char* kSeriesRunColumns =
    "SELECT r.id, r.job_id, r.study_uid, r.series_uid, r.state, r.profile, r.attempts, r.error, r.volumes, r.started_ms, "
    "COALESCE(r.ended_ms, 0), COALESCE(r.fingerprint, ''), COALESCE(r.rule, ''), j.generation "
    "FROM series_runs r JOIN jobs j ON j.id = r.job_id";

SeriesRunRow series_run_from(Stmt& s) {
  return {s.integer(0), s.integer(1), s.text(2), s.text(3), s.text(4), s.text(5), static_cast<int>(s.integer(6)),
          s.text(7), static_cast<int>(s.integer(8)), s.integer(9), s.integer(10), s.text(11), s.text(12),
          static_cast<int>(s.integer(13))};
}
}  // namespace

std::optional<SeriesRunRow> Index::last_series_run(const std::string& study_uid, const std::string& series_uid,
                                                   int before_generation) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, (std::string(kSeriesRunColumns) +
               " WHERE r.study_uid = ?1 AND r.series_uid = ?2 AND j.generation < ?3 AND r.state IN "
               "('done', 'failed', 'crashed', 'unchanged') ORDER BY r.id DESC LIMIT 1").c_str());
  s.bind(1, study_uid).bind(2, series_uid).bind(3, static_cast<std::int64_t>(before_generation));
  if (!s.step()) return std::nullopt;
  return series_run_from(s);
}

std::vector<SeriesEntry> Index::series_entries(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT series_uid, path, sop_uid, COALESCE(content_hash, ''), modality, body_part, series_description, "
              "protocol_name, study_description, sop_class_uid, calling_ae, series_number, frames "
              "FROM instances WHERE study_uid = ? AND own = 0 ORDER BY series_uid, sop_uid");
  s.bind(1, study_uid);
  std::vector<SeriesEntry> out;
  std::string fingerprint_text;
  auto finish = [&] {
    if (!out.empty()) out.back().fingerprint = fmt::format("{:016x}", fnv1a(fingerprint_text));
    fingerprint_text.clear();
  };
  while (s.step()) {
    if (out.empty() || out.back().series_uid != s.text(0)) {
      finish();
      SeriesEntry e;
      e.series_uid = s.text(0);
      e.modality = s.text(4);
      e.body_part = s.text(5);
      e.series_description = s.text(6);
      e.protocol_name = s.text(7);
      e.study_description = s.text(8);
      e.sop_class_uid = s.text(9);
      e.calling_ae = s.text(10);
      e.series_number = s.maybe(11);
      out.push_back(std::move(e));
    }
    auto& e = out.back();
    e.files.push_back(s.text(1));
    e.images += static_cast<int>(std::max<std::int64_t>(1, s.integer(12)));
    // A file without a content hash (the hash failed) makes the series count as changed.
    const std::string hash = s.text(3).empty() ? fmt::format("unhashed-{}", s.text(1)) : s.text(3);
    fingerprint_text += s.text(2) + "=" + hash + ";";
  }
  finish();
  for (auto& e : out) std::sort(e.files.begin(), e.files.end());
  return out;
}

std::vector<SeriesRunRow> Index::series_runs(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, (std::string(kSeriesRunColumns) + " WHERE r.study_uid = ? ORDER BY r.id").c_str());
  s.bind(1, study_uid);
  std::vector<SeriesRunRow> out;
  while (s.step()) out.push_back(series_run_from(s));
  return out;
}

std::vector<std::pair<std::string, std::vector<std::string>>> Index::series_files(const std::string& study_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT series_uid, path FROM instances WHERE study_uid = ? AND own = 0 ORDER BY series_uid, path");
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
    if (in.own) {  // our own result coming back: recorded, but its study is neither created open nor reopened
      Stmt(db_, "INSERT OR IGNORE INTO studies(study_uid, state, first_instance_ms, last_instance_ms, generation) "
                "VALUES(?1, 'complete', ?2, ?2, 0)")
          .bind(1, h.study_uid).bind(2, now_ms).step();
    } else {
      Stmt(db_, "INSERT INTO studies(study_uid, first_instance_ms, last_instance_ms) VALUES(?1, ?2, ?2) "
                "ON CONFLICT(study_uid) DO UPDATE SET last_instance_ms = MAX(last_instance_ms, ?2), state = 'open'")
          .bind(1, h.study_uid).bind(2, now_ms).step();
    }
    bool known = false;
    {
      Stmt s(db_, "SELECT 1 FROM instances WHERE sop_uid = ?");
      known = s.bind(1, h.sop_instance_uid).step();
    }
    Stmt(db_, "INSERT OR REPLACE INTO instances(sop_uid, study_uid, series_uid, sop_class_uid, modality, transfer_syntax, "
              "path, size, received_ms, acquisition_number, images_in_acquisition, study_related_instances, body_part, "
              "series_description, protocol_name, study_description, study_date, accession_number, series_number, frames, "
              "calling_ae, content_hash, own) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
        .bind(1, h.sop_instance_uid).bind(2, h.study_uid).bind(3, h.series_uid).bind(4, h.sop_class_uid)
        .bind(5, h.modality).bind(6, h.transfer_syntax_uid).bind(7, in.path.string())
        .bind(8, static_cast<std::int64_t>(in.size)).bind(9, now_ms).bind(10, h.acquisition_number)
        .bind(11, h.images_in_acquisition).bind(12, h.number_of_study_related_instances).bind(13, h.body_part)
        .bind(14, h.series_description).bind(15, h.protocol_name).bind(16, h.study_description).bind(17, h.study_date)
        .bind(18, h.accession_number).bind(19, h.series_number).bind(20, static_cast<std::int64_t>(h.frames))
        .bind(21, in.calling_ae).bind(22, in.content_hash).bind(23, static_cast<std::int64_t>(in.own ? 1 : 0)).step();
    exec("COMMIT");
    return !known;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

bool Index::is_own_result(const std::string& sop_uid, const std::string& series_uid) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT 1 FROM results WHERE sop_instance_uid = ?1 OR series_uid = ?2 LIMIT 1");
  return s.bind(1, sop_uid).bind(2, series_uid).step();
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

std::optional<int> Index::queue_reanalysis(const std::string& study_uid, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  exec("BEGIN IMMEDIATE");
  try {
    Stmt q(db_, "SELECT state, generation FROM studies WHERE study_uid = ?");
    q.bind(1, study_uid);
    if (!q.step() || q.text(0) != "complete") {
      exec("ROLLBACK");
      return std::nullopt;
    }
    const std::int64_t generation = q.integer(1) + 1;
    Stmt(db_, "UPDATE studies SET completed_ms = ?2, generation = ?3 WHERE study_uid = ?1")
        .bind(1, study_uid).bind(2, now_ms).bind(3, generation).step();
    Stmt(db_, "INSERT OR IGNORE INTO jobs(study_uid, generation, created_ms, updated_ms, force) VALUES(?1, ?2, ?3, ?3, 1)")
        .bind(1, study_uid).bind(2, generation).bind(3, now_ms).step();
    exec("COMMIT");
    return static_cast<int>(generation);
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
              "FROM instances WHERE study_uid = ? AND own = 0");
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

std::map<std::string, StudyFacts> Index::study_facts() {
  std::lock_guard lock(mutex_);
  Stmt s(db_,
         "SELECT study_uid, MAX(COALESCE(accession_number, '')), MAX(COALESCE(study_date, '')), "
         "MAX(COALESCE(study_description, '')), COUNT(DISTINCT series_uid) FROM instances WHERE own = 0 GROUP BY study_uid");
  std::map<std::string, StudyFacts> out;
  while (s.step()) {
    auto& f = out[s.text(0)];
    f.accession_number = s.text(1);
    f.study_date = s.text(2);
    f.study_description = s.text(3);
    f.series = s.integer(4);
  }
  Stmt m(db_, "SELECT DISTINCT study_uid, modality FROM instances WHERE own = 0 AND modality IS NOT NULL ORDER BY study_uid, modality");
  while (m.step()) out[m.text(0)].modalities.push_back(m.text(1));
  return out;
}

std::vector<JobRow> Index::jobs(std::optional<std::string> state) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, state ? "SELECT id, study_uid, generation, state, error, force FROM jobs WHERE state = ? ORDER BY id"
                    : "SELECT id, study_uid, generation, state, error, force FROM jobs ORDER BY id");
  if (state) s.bind(1, *state);
  std::vector<JobRow> out;
  while (s.step())
    out.push_back({s.integer(0), s.text(1), static_cast<int>(s.integer(2)), s.text(3), s.text(4), s.integer(5) != 0});
  return out;
}

std::optional<JobRow> Index::job(std::int64_t id) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT id, study_uid, generation, state, error, force FROM jobs WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return JobRow{s.integer(0), s.text(1), static_cast<int>(s.integer(2)), s.text(3), s.text(4), s.integer(5) != 0};
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
            "source_series_uid, path, created_ms, series_number, instance_number) "
            "VALUES(?,?,?,?,?,?,?,?,?, strftime('%s','now') * 1000, ?, ?)")
      .bind(1, r.job_id).bind(2, r.study_uid).bind(3, static_cast<std::int64_t>(r.generation)).bind(4, r.kind)
      .bind(5, r.sop_class_uid).bind(6, r.sop_instance_uid).bind(7, r.series_uid).bind(8, r.source_series_uid)
      .bind(9, r.path).bind(10, static_cast<std::int64_t>(r.series_number)).bind(11, static_cast<std::int64_t>(r.instance_number)).step();
  return sqlite3_last_insert_rowid(db_);
}

std::vector<ResultRow> Index::results(std::optional<std::string> study_uid) {
  std::lock_guard lock(mutex_);
  const char* cols = "SELECT id, job_id, study_uid, generation, kind, sop_class_uid, sop_instance_uid, series_uid, "
                     "source_series_uid, path, COALESCE(series_number, 0), COALESCE(instance_number, 0) FROM results";
  Stmt s(db_, study_uid ? (std::string(cols) + " WHERE study_uid = ? ORDER BY id").c_str() : (std::string(cols) + " ORDER BY id").c_str());
  if (study_uid) s.bind(1, *study_uid);
  std::vector<ResultRow> out;
  while (s.step())
    out.push_back({s.integer(0), s.integer(1), s.text(2), static_cast<int>(s.integer(3)), s.text(4), s.text(5), s.text(6),
                   s.text(7), s.text(8), s.text(9), static_cast<int>(s.integer(10)), static_cast<int>(s.integer(11))});
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

void Index::health_probe(std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES('health_probe', ?)").bind(1, std::to_string(now_ms)).step();
}

std::vector<Index::DestinationTrouble> Index::destination_trouble(std::int64_t since_ms) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT destination, SUM(state = 'dead' AND updated_ms >= ?1), SUM(state = 'pending' AND attempts >= 3), "
              "MIN(CASE WHEN state = 'pending' AND attempts >= 3 THEN created_ms END), "
              "(SELECT last_error FROM outbox o2 WHERE o2.destination = o.destination AND o2.last_error IS NOT NULL "
              " ORDER BY o2.updated_ms DESC LIMIT 1) "
              "FROM outbox o GROUP BY destination");
  s.bind(1, since_ms);
  std::vector<DestinationTrouble> out;
  while (s.step()) {
    DestinationTrouble t{s.text(0), static_cast<int>(s.integer(1)), static_cast<int>(s.integer(2)), s.integer(3), s.text(4)};
    if (t.dead_recently > 0 || t.pending_retried > 0) out.push_back(std::move(t));
  }
  return out;
}

std::vector<std::string> Index::latest_job_states(int n) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT state FROM jobs WHERE state IN ('done', 'failed') ORDER BY updated_ms DESC, id DESC LIMIT ?");
  s.bind(1, static_cast<std::int64_t>(n));
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

int Index::crashed_series_since(std::int64_t since_ms) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT COUNT(*) FROM series_runs WHERE state = 'crashed' AND ended_ms >= ?");
  s.bind(1, since_ms);
  return s.step() ? static_cast<int>(s.integer(0)) : 0;
}

int Index::purge(const std::string& state) {
  std::lock_guard lock(mutex_);
  Stmt(db_, "DELETE FROM outbox WHERE state = ?").bind(1, state).step();
  return sqlite3_changes(db_);
}

// ---- Retention (scp/retention.cpp): selection and deletion ---------------------------------------

namespace {
constexpr const char* kRetentionColumns =
    "SELECT s.study_uid, s.state, s.last_instance_ms, s.generation, "
    "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid), "
    "(SELECT COALESCE(SUM(i.size), 0) FROM instances i WHERE i.study_uid = s.study_uid), "
    "(SELECT COUNT(*) FROM jobs j WHERE j.study_uid = s.study_uid AND j.state = 'pending'), "
    "(SELECT COUNT(*) FROM jobs j WHERE j.study_uid = s.study_uid AND j.state = 'running'), "
    "(SELECT j.state FROM jobs j WHERE j.study_uid = s.study_uid AND j.generation = s.generation), "
    "(SELECT COUNT(*) FROM outbox o JOIN results r ON r.id = o.result_id "
    "  WHERE r.study_uid = s.study_uid AND o.state = 'pending') "
    "FROM studies s";

RetentionStudy retention_from(Stmt& s) {
  RetentionStudy r;
  r.study_uid = s.text(0);
  r.complete = s.text(1) == "complete";
  r.last_instance_ms = s.integer(2);
  r.generation = static_cast<int>(s.integer(3));
  r.instances = s.integer(4);
  r.bytes = s.integer(5);
  r.jobs_pending = static_cast<int>(s.integer(6));
  r.jobs_running = static_cast<int>(s.integer(7));
  r.latest_job_state = s.text(8);
  r.outbox_pending = static_cast<int>(s.integer(9));
  return r;
}
}  // namespace

std::vector<RetentionStudy> Index::retention_studies() {
  std::lock_guard lock(mutex_);
  Stmt s(db_, (std::string(kRetentionColumns) + " ORDER BY s.last_instance_ms").c_str());
  std::vector<RetentionStudy> out;
  while (s.step()) out.push_back(retention_from(s));
  return out;
}

std::vector<RetentionJob> Index::retention_jobs() {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT study_uid, generation, state, updated_ms FROM jobs ORDER BY id");
  std::vector<RetentionJob> out;
  while (s.step()) out.push_back({s.text(0), static_cast<int>(s.integer(1)), s.text(2), s.integer(3)});
  return out;
}

std::optional<RetentionStudy> Index::retention_study_locked(const std::string& study_uid) {
  Stmt s(db_, (std::string(kRetentionColumns) + " WHERE s.study_uid = ?").c_str());
  s.bind(1, study_uid);
  if (!s.step()) return std::nullopt;
  return retention_from(s);
}

std::optional<std::vector<InstanceFile>> Index::forget_instances(
    const std::string& study_uid, const std::function<bool(const RetentionStudy&)>& eligible,
    const std::function<void(const std::vector<InstanceFile>&)>& move_files,
    const std::function<void(const std::vector<InstanceFile>&)>& undo) {
  std::lock_guard lock(mutex_);
  exec("BEGIN IMMEDIATE");
  std::vector<InstanceFile> rows;
  bool moved = false;
  try {
    const auto study = retention_study_locked(study_uid);
    if (!study || !eligible(*study)) {
      exec("ROLLBACK");
      return std::nullopt;
    }
    {
      Stmt s(db_, "SELECT sop_uid, path, size, received_ms FROM instances WHERE study_uid = ? ORDER BY path");
      s.bind(1, study_uid);
      while (s.step()) rows.push_back({s.text(0), s.text(1), s.integer(2), s.integer(3)});
    }
    Stmt(db_, "DELETE FROM instances WHERE study_uid = ?").bind(1, study_uid).step();
    moved = true;  // from here on, whatever move_files did is undone if the rows stay
    move_files(rows);
    exec("COMMIT");
    return rows;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    if (moved) undo(rows);
    throw;
  }
}

std::optional<int> Index::forget_outputs(const std::string& study_uid, int generation,
                                         const std::function<bool(const RetentionStudy&)>& eligible) {
  std::lock_guard lock(mutex_);
  exec("BEGIN IMMEDIATE");
  try {
    const auto study = retention_study_locked(study_uid);
    if (!study || !eligible(*study)) {
      exec("ROLLBACK");
      return std::nullopt;
    }
    const auto gen = static_cast<std::int64_t>(generation);
    Stmt(db_, "DELETE FROM outbox WHERE result_id IN (SELECT id FROM results WHERE study_uid = ?1 AND generation = ?2)")
        .bind(1, study_uid).bind(2, gen).step();
    Stmt(db_, "DELETE FROM results WHERE study_uid = ?1 AND generation = ?2").bind(1, study_uid).bind(2, gen).step();
    const int n = sqlite3_changes(db_);
    exec("COMMIT");
    return n;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

bool Index::forget_study(const std::string& study_uid, const std::function<bool(const RetentionStudy&)>& eligible) {
  std::lock_guard lock(mutex_);
  exec("BEGIN IMMEDIATE");
  try {
    const auto study = retention_study_locked(study_uid);
    if (!study || study->instances > 0 || !eligible(*study)) {
      exec("ROLLBACK");
      return false;
    }
    // Children first: the foreign keys are enforced.
    for (const char* sql : {"DELETE FROM outbox WHERE result_id IN (SELECT id FROM results WHERE study_uid = ?1)",
                            "DELETE FROM results WHERE study_uid = ?1",
                            "DELETE FROM series_runs WHERE study_uid = ?1 OR job_id IN (SELECT id FROM jobs WHERE study_uid = ?1)",
                            "DELETE FROM jobs WHERE study_uid = ?1", "DELETE FROM studies WHERE study_uid = ?1"})
      Stmt(db_, sql).bind(1, study_uid).step();
    exec("COMMIT");
    return true;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

}  // namespace scp

namespace scp {

bool is_own_result(Index& index, const dicom::InstanceHeader& h) {
  if (h.manufacturer == "pacsnode" && h.manufacturer_model_name == "pacsnode") return true;
  return index.is_own_result(h.sop_instance_uid, h.series_uid);
}

// --- Outbox administration (`pacsnode outbox`) ------------------------------------------------

namespace {

// " AND <col> IN (?,...)" per criterion that is set, with the values to bind in order.
struct Where {
  std::string sql = " WHERE 1";
  std::vector<std::string> texts;
  std::vector<std::int64_t> numbers;  // bound after the texts
};

Where where_of(const OutboxSelection& sel, const std::string& prefix) {
  Where w;
  const auto in = [&](const std::string& column, std::size_t n) {
    if (n == 0) {
      w.sql += " AND 0";
      return;
    }
    w.sql += " AND " + prefix + column + " IN (?";
    for (std::size_t i = 1; i < n; ++i) w.sql += ",?";
    w.sql += ")";
  };
  if (sel.states) {
    in("state", sel.states->size());
    w.texts.insert(w.texts.end(), sel.states->begin(), sel.states->end());
  }
  if (sel.destinations) {
    in("destination", sel.destinations->size());
    w.texts.insert(w.texts.end(), sel.destinations->begin(), sel.destinations->end());
  }
  if (sel.ids) {
    in("id", sel.ids->size());
    w.numbers = *sel.ids;
  }
  return w;
}

void bind_where(Stmt& s, const Where& w, int first) {
  int i = first;
  for (const auto& t : w.texts) s.bind(i++, t);
  for (auto n : w.numbers) s.bind(i++, n);
}

}  // namespace

std::vector<OutboxRow> Index::outbox_select(const OutboxSelection& sel) {
  std::lock_guard lock(mutex_);
  const Where w = where_of(sel, "o.");
  Stmt s(db_, (std::string(kOutboxColumns) + w.sql + " ORDER BY o.id").c_str());
  bind_where(s, w, 1);
  std::vector<OutboxRow> out;
  while (s.step()) out.push_back(outbox_from(s));
  return out;
}

int Index::outbox_retry(const OutboxSelection& sel, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  const Where w = where_of(sel, "");
  Stmt s(db_, ("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?1, updated_ms = ?1" + w.sql +
               " AND state IN ('pending', 'dead')").c_str());
  s.bind(1, now_ms);
  bind_where(s, w, 2);
  s.step();
  return sqlite3_changes(db_);
}

int Index::outbox_purge(const OutboxSelection& sel) {
  std::lock_guard lock(mutex_);
  const Where w = where_of(sel, "");
  Stmt s(db_, ("DELETE FROM outbox" + w.sql).c_str());
  bind_where(s, w, 1);
  s.step();
  return sqlite3_changes(db_);
}

std::vector<OutboxCount> Index::outbox_counts() {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state ORDER BY destination, state");
  std::vector<OutboxCount> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.integer(2)});
  return out;
}

}  // namespace scp
