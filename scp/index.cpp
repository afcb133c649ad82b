#include "scp/index.h"

#include <algorithm>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

#include "scp/index_pg_schema.h"

namespace scp {
namespace {

using IndexError = db::Error;

std::int64_t now_wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A statement of the index's connection. A connection found unusable (db::Unavailable) is marked
// broken; the next call of the index reconnects first (see Index::Lock).
class Stmt {
 public:
  Stmt(Index::Conn& c, const std::string& sql) : c_(c) {
    try {
      s_ = c.db->prepare(sql);
    } catch (const db::Unavailable&) {
      c.broken = true;
      throw;
    }
  }
  Stmt& bind(int i, const std::string& v) { s_->bind_text(i, v); return *this; }
  Stmt& bind(int i, std::int64_t v) { s_->bind_int(i, v); return *this; }
  Stmt& bind(int i, const std::optional<long>& v) {
    if (v) s_->bind_int(i, *v); else s_->bind_null(i);
    return *this;
  }
  bool step() {
    try {
      return s_->step();
    } catch (const db::Unavailable&) {
      c_.broken = true;
      throw;
    }
  }
  std::string text(int c) { return s_->text(c); }
  std::int64_t integer(int c) { return s_->integer(c); }
  std::optional<long> maybe(int c) {
    if (s_->is_null(c)) return std::nullopt;
    return static_cast<long>(s_->integer(c));
  }
  std::int64_t changes() { return s_->changes(); }

 private:
  Index::Conn& c_;
  std::unique_ptr<db::Statement> s_;
};

std::int64_t insert_result(Index::Conn& c, const ResultRow& r, const std::string& volume_key) {
  Stmt s(c, "INSERT INTO results(job_id, study_uid, generation, kind, sop_class_uid, sop_instance_uid, series_uid, "
            "source_series_uid, path, created_ms, series_number, instance_number, volume_key) "
            "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id");
  s.bind(1, r.job_id).bind(2, r.study_uid).bind(3, static_cast<std::int64_t>(r.generation)).bind(4, r.kind)
      .bind(5, r.sop_class_uid).bind(6, r.sop_instance_uid).bind(7, r.series_uid).bind(8, r.source_series_uid)
      .bind(9, r.path).bind(10, now_wall_ms()).bind(11, static_cast<std::int64_t>(r.series_number))
      .bind(12, static_cast<std::int64_t>(r.instance_number)).bind(13, volume_key);
  if (!s.step()) throw IndexError("index: no id for a new result");
  const std::int64_t id = s.integer(0);
  while (s.step()) {
  }
  return id;
}

void enqueue_one(Index::Conn& c, std::int64_t result_id, const std::string& destination, std::int64_t now_ms) {
  Stmt(c, "INSERT INTO outbox(result_id, destination, next_attempt_ms, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?3, ?3) "
          "ON CONFLICT(result_id, destination) DO NOTHING")
      .bind(1, result_id).bind(2, destination).bind(3, now_ms).step();
}

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

// SQLite's schema versions, applied in order when the index is opened; PRAGMA user_version records
// the last one applied. Never edit a released step: add one. PostgreSQL's are in index_pg_schema.h.
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
    // 6 (cluster, issue 14): job leases, outbox claims, result volumes, node heartbeats, named leases.
    R"(ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claim_until_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN volume_key TEXT;
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, started_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
  receive INTEGER NOT NULL DEFAULT 1, info TEXT);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS studies_by_state ON studies(state);)",
};

}  // namespace

std::string study_hash(const std::string& key, const std::string& study_uid) {
  return fmt::format("s-{:012x}", fnv1a(key + "\x1f" + study_uid) & 0xffffffffffffULL);
}

// Holds the index's mutex for one call; reconnects first when the last call found the connection
// unusable (a PostgreSQL restart): that call failed, this one may work again.
class Index::Lock {
 public:
  explicit Lock(Index& index) : guard_(index.mutex_) {
    if (index.conn_.broken) {
      if (!index.conn_.db->reconnect())
        throw db::Unavailable(fmt::format("index {} is unreachable", index.conn_.db->describe()));
      index.conn_.broken = false;
    }
  }

 private:
  std::lock_guard<std::mutex> guard_;
};

void Index::begin() {
  try {
    conn_.db->begin();
  } catch (const db::Unavailable&) {
    conn_.broken = true;
    throw;
  }
}

void Index::commit() {
  try {
    conn_.db->commit();
  } catch (const db::Unavailable&) {
    conn_.broken = true;
    throw;
  }
}

Index::Index(const std::filesystem::path& db_file) : Index(IndexSettings{"sqlite", db_file, {}, "local"}) {}

Index::Index(const IndexSettings& settings) : node_(settings.node) {
  if (settings.backend == "postgresql") {
    conn_.db = db::open_postgresql(settings.dsn);
    shared_ = true;
  } else {
    conn_.db = db::open_sqlite(settings.sqlite_file);
  }
  migrate();
  std::random_device rd;
  const std::string fresh = fmt::format("{:08x}{:08x}{:08x}{:08x}", rd(), rd(), rd(), rd());
  // Nodes starting together: the first insert wins, every node reads the same key.
  Stmt(conn_, "INSERT INTO meta(key, value) VALUES('log_key', ?) ON CONFLICT(key) DO NOTHING").bind(1, fresh).step();
  Stmt s(conn_, "SELECT value FROM meta WHERE key = 'log_key'");
  if (s.step()) log_key_ = s.text(0);
  if (log_key_.empty()) throw IndexError("index: no log key");
}

Index::~Index() = default;

std::string Index::describe() const { return conn_.db->describe(); }

void Index::migrate() {
  const bool pg = conn_.db->dialect() == db::Dialect::postgresql;
  const char* const* steps = pg ? db::kPgMigrations : kMigrations;
  const int latest = pg ? static_cast<int>(std::size(db::kPgMigrations)) : static_cast<int>(std::size(kMigrations));
  // Each step in its own transaction; in a cluster the schema lock makes nodes that start together
  // take turns, and each re-reads the version under it.
  for (;;) {
    begin();
    try {
      conn_.db->lock_schema();
      const int version = conn_.db->schema_version();
      if (version > latest)
        throw IndexError(fmt::format("index schema version {} is newer than this pacsnode knows ({}): downgrade not supported",
                                     version, latest));
      if (version == latest) {
        commit();
        return;
      }
      conn_.db->exec(steps[version]);
      conn_.db->set_schema_version(version + 1);
      commit();
    } catch (...) {
      conn_.db->rollback();
      throw;
    }
  }
}

std::int64_t Index::start_series_run(std::int64_t job_id, const std::string& study_uid, const std::string& series_uid,
                                     std::int64_t now_ms) {
  Lock lock(*this);
  Stmt s(conn_, "INSERT INTO series_runs(job_id, study_uid, series_uid, started_ms) VALUES(?,?,?,?) RETURNING id");
  s.bind(1, job_id).bind(2, study_uid).bind(3, series_uid).bind(4, now_ms);
  if (!s.step()) throw IndexError("index: no id for a new series run");
  const std::int64_t id = s.integer(0);
  while (s.step()) {
  }
  return id;
}

void Index::finish_series_run(std::int64_t id, const SeriesRunRow& r, std::int64_t now_ms) {
  Lock lock(*this);
  Stmt(conn_, "UPDATE series_runs SET state = ?2, profile = ?3, attempts = ?4, error = ?5, volumes = ?6, ended_ms = ?7, "
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
  Lock lock(*this);
  Stmt s(conn_, (std::string(kSeriesRunColumns) +
               " WHERE r.study_uid = ?1 AND r.series_uid = ?2 AND j.generation < ?3 AND r.state IN "
               "('done', 'failed', 'crashed', 'unchanged') ORDER BY r.id DESC LIMIT 1").c_str());
  s.bind(1, study_uid).bind(2, series_uid).bind(3, static_cast<std::int64_t>(before_generation));
  if (!s.step()) return std::nullopt;
  return series_run_from(s);
}

std::vector<SeriesEntry> Index::series_entries(const std::string& study_uid) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT series_uid, path, sop_uid, COALESCE(content_hash, ''), modality, body_part, series_description, "
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
  Lock lock(*this);
  Stmt s(conn_, (std::string(kSeriesRunColumns) + " WHERE r.study_uid = ? ORDER BY r.id").c_str());
  s.bind(1, study_uid);
  std::vector<SeriesRunRow> out;
  while (s.step()) out.push_back(series_run_from(s));
  return out;
}

std::vector<std::pair<std::string, std::vector<std::string>>> Index::series_files(const std::string& study_uid) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT series_uid, path FROM instances WHERE study_uid = ? AND own = 0 ORDER BY series_uid, path");
  s.bind(1, study_uid);
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  while (s.step()) {
    if (out.empty() || out.back().first != s.text(0)) out.emplace_back(s.text(0), std::vector<std::string>{});
    out.back().second.push_back(s.text(1));
  }
  return out;
}

bool Index::add_instance(const StoredInstance& in, std::int64_t now_ms) {
  Lock lock(*this);
  const auto& h = in.header;
  begin();
  try {
    if (in.own) {  // our own result coming back: recorded, but its study is neither created open nor reopened
      Stmt(conn_, "INSERT INTO studies(study_uid, state, first_instance_ms, last_instance_ms, generation) "
                "VALUES(?1, 'complete', ?2, ?2, 0) ON CONFLICT(study_uid) DO NOTHING")
          .bind(1, h.study_uid).bind(2, now_ms).step();
    } else {
      Stmt(conn_, "INSERT INTO studies(study_uid, first_instance_ms, last_instance_ms) VALUES(?1, ?2, ?2) "
                "ON CONFLICT(study_uid) DO UPDATE SET last_instance_ms = CASE WHEN studies.last_instance_ms > ?2 "
                  "THEN studies.last_instance_ms ELSE ?2 END, state = 'open'")
          .bind(1, h.study_uid).bind(2, now_ms).step();
    }
    bool known = false;
    {
      Stmt s(conn_, "SELECT 1 FROM instances WHERE sop_uid = ?");
      known = s.bind(1, h.sop_instance_uid).step();
    }
    Stmt(conn_, "INSERT INTO instances(sop_uid, study_uid, series_uid, sop_class_uid, modality, transfer_syntax, "
              "path, size, received_ms, acquisition_number, images_in_acquisition, study_related_instances, body_part, "
              "series_description, protocol_name, study_description, study_date, accession_number, series_number, frames, "
              "calling_ae, content_hash, own) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
              "ON CONFLICT(sop_uid) DO UPDATE SET study_uid = excluded.study_uid, series_uid = excluded.series_uid, "
              "sop_class_uid = excluded.sop_class_uid, modality = excluded.modality, "
              "transfer_syntax = excluded.transfer_syntax, path = excluded.path, size = excluded.size, "
              "received_ms = excluded.received_ms, acquisition_number = excluded.acquisition_number, "
              "images_in_acquisition = excluded.images_in_acquisition, "
              "study_related_instances = excluded.study_related_instances, body_part = excluded.body_part, "
              "series_description = excluded.series_description, protocol_name = excluded.protocol_name, "
              "study_description = excluded.study_description, study_date = excluded.study_date, "
              "accession_number = excluded.accession_number, series_number = excluded.series_number, "
              "frames = excluded.frames, calling_ae = excluded.calling_ae, content_hash = excluded.content_hash, "
              "own = excluded.own")
        .bind(1, h.sop_instance_uid).bind(2, h.study_uid).bind(3, h.series_uid).bind(4, h.sop_class_uid)
        .bind(5, h.modality).bind(6, h.transfer_syntax_uid).bind(7, in.path.string())
        .bind(8, static_cast<std::int64_t>(in.size)).bind(9, now_ms).bind(10, h.acquisition_number)
        .bind(11, h.images_in_acquisition).bind(12, h.number_of_study_related_instances).bind(13, h.body_part)
        .bind(14, h.series_description).bind(15, h.protocol_name).bind(16, h.study_description).bind(17, h.study_date)
        .bind(18, h.accession_number).bind(19, h.series_number).bind(20, static_cast<std::int64_t>(h.frames))
        .bind(21, in.calling_ae).bind(22, in.content_hash).bind(23, static_cast<std::int64_t>(in.own ? 1 : 0)).step();
    commit();
    return !known;
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

bool Index::is_own_result(const std::string& sop_uid, const std::string& series_uid) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT 1 FROM results WHERE sop_instance_uid = ?1 OR series_uid = ?2 LIMIT 1");
  return s.bind(1, sop_uid).bind(2, series_uid).step();
}

void Index::remove_instance(const std::string& sop_uid) {
  Lock lock(*this);
  Stmt(conn_, "DELETE FROM instances WHERE sop_uid = ?").bind(1, sop_uid).step();
}

void Index::mark_complete(const std::string& study_uid, int generation, std::int64_t now_ms) {
  Lock lock(*this);
  begin();
  try {
    Stmt(conn_, "UPDATE studies SET state = 'complete', completed_ms = ?2, generation = ?3 WHERE study_uid = ?1")
        .bind(1, study_uid).bind(2, now_ms).bind(3, static_cast<std::int64_t>(generation)).step();
    Stmt(conn_, "INSERT INTO jobs(study_uid, generation, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?3) "
              "ON CONFLICT(study_uid, generation) DO NOTHING")
        .bind(1, study_uid).bind(2, static_cast<std::int64_t>(generation)).bind(3, now_ms).step();
    commit();
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

std::optional<int> Index::queue_reanalysis(const std::string& study_uid, std::int64_t now_ms) {
  Lock lock(*this);
  begin();
  try {
    Stmt q(conn_, "SELECT state, generation FROM studies WHERE study_uid = ?");
    q.bind(1, study_uid);
    if (!q.step() || q.text(0) != "complete") {
      conn_.db->rollback();
      return std::nullopt;
    }
    const std::int64_t generation = q.integer(1) + 1;
    Stmt(conn_, "UPDATE studies SET completed_ms = ?2, generation = ?3 WHERE study_uid = ?1")
        .bind(1, study_uid).bind(2, now_ms).bind(3, generation).step();
    Stmt(conn_, "INSERT INTO jobs(study_uid, generation, created_ms, updated_ms, force) VALUES(?1, ?2, ?3, ?3, 1) "
              "ON CONFLICT(study_uid, generation) DO NOTHING")
        .bind(1, study_uid).bind(2, generation).bind(3, now_ms).step();
    commit();
    return static_cast<int>(generation);
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

std::optional<StudyRow> Index::study(const std::string& study_uid) {
  Lock lock(*this);
  Stmt s(conn_, (std::string(kStudyColumns) + " WHERE s.study_uid = ?").c_str());
  s.bind(1, study_uid);
  if (!s.step()) return std::nullopt;
  return study_from(s);
}

std::vector<StudyRow> Index::studies(std::optional<StudyState> only) {
  Lock lock(*this);
  std::string sql = std::string(kStudyColumns);
  if (only) sql += *only == StudyState::open ? " WHERE s.state = 'open'" : " WHERE s.state = 'complete'";
  Stmt s(conn_, (sql + " ORDER BY s.first_instance_ms").c_str());
  std::vector<StudyRow> out;
  while (s.step()) out.push_back(study_from(s));
  return out;
}

std::vector<InstanceRow> Index::instances_of(const std::string& study_uid) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT sop_uid, study_uid, series_uid, acquisition_number, images_in_acquisition, study_related_instances "
              "FROM instances WHERE study_uid = ? AND own = 0");
  s.bind(1, study_uid);
  std::vector<InstanceRow> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.text(2), s.maybe(3), s.maybe(4), s.maybe(5)});
  return out;
}

std::vector<std::pair<std::string, std::string>> Index::instance_paths() {
  Lock lock(*this);
  Stmt s(conn_, "SELECT sop_uid, path FROM instances");
  std::vector<std::pair<std::string, std::string>> out;
  while (s.step()) out.emplace_back(s.text(0), s.text(1));
  return out;
}

std::map<std::string, StudyFacts> Index::study_facts() {
  Lock lock(*this);
  Stmt s(conn_,
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
  Stmt m(conn_, "SELECT DISTINCT study_uid, modality FROM instances WHERE own = 0 AND modality IS NOT NULL ORDER BY study_uid, modality");
  while (m.step()) out[m.text(0)].modalities.push_back(m.text(1));
  return out;
}

std::vector<JobRow> Index::jobs(std::optional<std::string> state) {
  Lock lock(*this);
  Stmt s(conn_, state ? "SELECT id, study_uid, generation, state, error, force, COALESCE(owner, '') FROM jobs WHERE state = ? ORDER BY id"
                    : "SELECT id, study_uid, generation, state, error, force, COALESCE(owner, '') FROM jobs ORDER BY id");
  if (state) s.bind(1, *state);
  std::vector<JobRow> out;
  while (s.step())
    out.push_back({s.integer(0), s.text(1), static_cast<int>(s.integer(2)), s.text(3), s.text(4), s.integer(5) != 0, {}, s.text(6)});
  return out;
}

std::optional<JobRow> Index::job(std::int64_t id) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT id, study_uid, generation, state, error, force, COALESCE(owner, '') FROM jobs WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return JobRow{s.integer(0), s.text(1), static_cast<int>(s.integer(2)), s.text(3), s.text(4), s.integer(5) != 0, {}, s.text(6)};
}

void Index::set_job_state(std::int64_t id, const std::string& state, const std::string& error) {
  Lock lock(*this);
  // A job another node has taken over (this node lost its lease) is that node's to finish.
  Stmt(conn_, "UPDATE jobs SET state = ?2, error = ?3, updated_ms = ?4, "
              "owner = CASE WHEN ?2 = 'running' THEN ?5 ELSE owner END, "
              "lease_until_ms = CASE WHEN ?2 = 'running' THEN lease_until_ms ELSE 0 END "
              "WHERE id = ?1 AND (state != 'running' OR owner IS NULL OR owner = ?5)")
      .bind(1, id).bind(2, state).bind(3, error).bind(4, now_wall_ms()).bind(5, node_).step();
}

std::vector<std::string> Index::instance_files(const std::string& study_uid) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT path FROM instances WHERE study_uid = ? ORDER BY path");
  s.bind(1, study_uid);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::int64_t Index::add_result(const ResultRow& r) {
  Lock lock(*this);
  return insert_result(conn_, r, {});
}

std::vector<ResultRow> Index::results(std::optional<std::string> study_uid) {
  Lock lock(*this);
  const char* cols = "SELECT id, job_id, study_uid, generation, kind, sop_class_uid, sop_instance_uid, series_uid, "
                     "source_series_uid, path, COALESCE(series_number, 0), COALESCE(instance_number, 0) FROM results";
  Stmt s(conn_, study_uid ? (std::string(cols) + " WHERE study_uid = ? ORDER BY id").c_str() : (std::string(cols) + " ORDER BY id").c_str());
  if (study_uid) s.bind(1, *study_uid);
  std::vector<ResultRow> out;
  while (s.step())
    out.push_back({s.integer(0), s.integer(1), s.text(2), static_cast<int>(s.integer(3)), s.text(4), s.text(5), s.text(6),
                   s.text(7), s.text(8), s.text(9), static_cast<int>(s.integer(10)), static_cast<int>(s.integer(11))});
  return out;
}

int Index::requeue_running_jobs() {
  Lock lock(*this);
  // One node: every running job was this node's. A cluster: only this node's own (a restart under
  // the same name); the others' come back when their leases expire.
  Stmt s(conn_, shared_ ? "UPDATE jobs SET state = 'pending', owner = NULL, lease_until_ms = 0 "
                          "WHERE state = 'running' AND owner = ?1"
                        : "UPDATE jobs SET state = 'pending', owner = NULL, lease_until_ms = 0 WHERE state = 'running'");
  if (shared_) s.bind(1, node_);
  s.step();
  return static_cast<int>(s.changes());
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
  Lock lock(*this);
  for (const auto& d : destinations)
    enqueue_one(conn_, r.id, d, now_ms);
}

std::vector<OutboxRow> Index::outbox(std::optional<std::string> state) {
  Lock lock(*this);
  Stmt s(conn_, (std::string(kOutboxColumns) + (state ? " WHERE o.state = ?" : "") + " ORDER BY o.id").c_str());
  if (state) s.bind(1, *state);
  std::vector<OutboxRow> out;
  while (s.step()) out.push_back(outbox_from(s));
  return out;
}

std::vector<OutboxRow> Index::due(const std::string& destination, std::int64_t now_ms, int limit) {
  Lock lock(*this);
  Stmt s(conn_, (std::string(kOutboxColumns) +
               " WHERE o.destination = ?1 AND o.state = 'pending' AND o.next_attempt_ms <= ?2 ORDER BY o.id LIMIT ?3").c_str());
  s.bind(1, destination).bind(2, now_ms).bind(3, static_cast<std::int64_t>(limit));
  std::vector<OutboxRow> out;
  while (s.step()) out.push_back(outbox_from(s));
  return out;
}

void Index::mark_sent(std::int64_t id, std::int64_t now_ms) {
  Lock lock(*this);
  Stmt(conn_, "UPDATE outbox SET state = 'sent', attempts = attempts + 1, updated_ms = ?2, last_error = NULL, "
              "claimed_by = NULL, claim_until_ms = 0 WHERE id = ?1")
      .bind(1, id).bind(2, now_ms).step();
}

void Index::mark_retry(std::int64_t id, std::int64_t next_ms, const std::string& error, std::int64_t now_ms) {
  Lock lock(*this);
  Stmt(conn_, "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3, updated_ms = ?4, "
              "claimed_by = NULL, claim_until_ms = 0 WHERE id = ?1")
      .bind(1, id).bind(2, next_ms).bind(3, error).bind(4, now_ms).step();
}

void Index::mark_dead(std::int64_t id, const std::string& error, std::int64_t now_ms) {
  Lock lock(*this);
  Stmt(conn_, "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2, updated_ms = ?3, "
              "claimed_by = NULL, claim_until_ms = 0 WHERE id = ?1")
      .bind(1, id).bind(2, error).bind(3, now_ms).step();
}

int Index::retry(const std::vector<std::int64_t>& ids, std::int64_t now_ms) {
  Lock lock(*this);
  int n = 0;
  if (ids.empty()) {
    Stmt s(conn_, "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?1, updated_ms = ?1 WHERE state = 'dead'");
    s.bind(1, now_ms).step();
    return static_cast<int>(s.changes());
  }
  for (auto id : ids) {
    Stmt s(conn_, "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?2, updated_ms = ?2 WHERE id = ?1 AND state != 'sent'");
    s.bind(1, id).bind(2, now_ms).step();
    n += static_cast<int>(s.changes());
  }
  return n;
}

void Index::health_probe(std::int64_t now_ms) {
  Lock lock(*this);
  // Per node: in a cluster each node proves that it can write.
  Stmt(conn_, "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .bind(1, "health_probe:" + node_).bind(2, std::to_string(now_ms)).step();
}

std::vector<Index::DestinationTrouble> Index::destination_trouble(std::int64_t since_ms) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT destination, SUM(CASE WHEN state = 'dead' AND updated_ms >= ?1 THEN 1 ELSE 0 END), "
              "SUM(CASE WHEN state = 'pending' AND attempts >= 3 THEN 1 ELSE 0 END), "
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
  Lock lock(*this);
  Stmt s(conn_, "SELECT state FROM jobs WHERE state IN ('done', 'failed') ORDER BY updated_ms DESC, id DESC LIMIT ?");
  s.bind(1, static_cast<std::int64_t>(n));
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

int Index::crashed_series_since(std::int64_t since_ms) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT COUNT(*) FROM series_runs WHERE state = 'crashed' AND ended_ms >= ?");
  s.bind(1, since_ms);
  return s.step() ? static_cast<int>(s.integer(0)) : 0;
}

int Index::purge(const std::string& state) {
  Lock lock(*this);
  Stmt s(conn_, "DELETE FROM outbox WHERE state = ?");
  s.bind(1, state).step();
  return static_cast<int>(s.changes());
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
  Lock lock(*this);
  Stmt s(conn_, (std::string(kRetentionColumns) + " ORDER BY s.last_instance_ms").c_str());
  std::vector<RetentionStudy> out;
  while (s.step()) out.push_back(retention_from(s));
  return out;
}

std::vector<RetentionJob> Index::retention_jobs() {
  Lock lock(*this);
  Stmt s(conn_, "SELECT study_uid, generation, state, updated_ms FROM jobs ORDER BY id");
  std::vector<RetentionJob> out;
  while (s.step()) out.push_back({s.text(0), static_cast<int>(s.integer(1)), s.text(2), s.integer(3)});
  return out;
}

std::optional<RetentionStudy> Index::retention_study_locked(const std::string& study_uid) {
  Stmt s(conn_, (std::string(kRetentionColumns) + " WHERE s.study_uid = ?").c_str());
  s.bind(1, study_uid);
  if (!s.step()) return std::nullopt;
  return retention_from(s);
}

std::optional<std::vector<InstanceFile>> Index::forget_instances(
    const std::string& study_uid, const std::function<bool(const RetentionStudy&)>& eligible,
    const std::function<void(const std::vector<InstanceFile>&)>& move_files,
    const std::function<void(const std::vector<InstanceFile>&)>& undo) {
  Lock lock(*this);
  begin();
  std::vector<InstanceFile> rows;
  bool moved = false;
  try {
    const auto study = retention_study_locked(study_uid);
    if (!study || !eligible(*study)) {
      conn_.db->rollback();
      return std::nullopt;
    }
    {
      Stmt s(conn_, "SELECT sop_uid, path, size, received_ms FROM instances WHERE study_uid = ? ORDER BY path");
      s.bind(1, study_uid);
      while (s.step()) rows.push_back({s.text(0), s.text(1), s.integer(2), s.integer(3)});
    }
    Stmt(conn_, "DELETE FROM instances WHERE study_uid = ?").bind(1, study_uid).step();
    moved = true;  // from here on, whatever move_files did is undone if the rows stay
    move_files(rows);
    commit();
    return rows;
  } catch (...) {
    conn_.db->rollback();
    if (moved) undo(rows);
    throw;
  }
}

std::optional<int> Index::forget_outputs(const std::string& study_uid, int generation,
                                         const std::function<bool(const RetentionStudy&)>& eligible) {
  Lock lock(*this);
  begin();
  try {
    const auto study = retention_study_locked(study_uid);
    if (!study || !eligible(*study)) {
      conn_.db->rollback();
      return std::nullopt;
    }
    const auto gen = static_cast<std::int64_t>(generation);
    Stmt(conn_, "DELETE FROM outbox WHERE result_id IN (SELECT id FROM results WHERE study_uid = ?1 AND generation = ?2)")
        .bind(1, study_uid).bind(2, gen).step();
    Stmt del(conn_, "DELETE FROM results WHERE study_uid = ?1 AND generation = ?2");
    del.bind(1, study_uid).bind(2, gen).step();
    const int n = static_cast<int>(del.changes());
    commit();
    return n;
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

bool Index::forget_study(const std::string& study_uid, const std::function<bool(const RetentionStudy&)>& eligible) {
  Lock lock(*this);
  begin();
  try {
    const auto study = retention_study_locked(study_uid);
    if (!study || study->instances > 0 || !eligible(*study)) {
      conn_.db->rollback();
      return false;
    }
    // Children first: the foreign keys are enforced.
    for (const char* sql : {"DELETE FROM outbox WHERE result_id IN (SELECT id FROM results WHERE study_uid = ?1)",
                            "DELETE FROM results WHERE study_uid = ?1",
                            "DELETE FROM series_runs WHERE study_uid = ?1 OR job_id IN (SELECT id FROM jobs WHERE study_uid = ?1)",
                            "DELETE FROM jobs WHERE study_uid = ?1", "DELETE FROM studies WHERE study_uid = ?1"})
      Stmt(conn_, sql).bind(1, study_uid).step();
    commit();
    return true;
  } catch (...) {
    conn_.db->rollback();
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
  std::string sql = " WHERE 1 = 1";
  std::vector<std::string> texts;
  std::vector<std::int64_t> numbers;  // bound after the texts
};

Where where_of(const OutboxSelection& sel, const std::string& prefix) {
  Where w;
  const auto in = [&](const std::string& column, std::size_t n) {
    if (n == 0) {
      w.sql += " AND 1 = 0";
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
  Lock lock(*this);
  const Where w = where_of(sel, "o.");
  Stmt s(conn_, (std::string(kOutboxColumns) + w.sql + " ORDER BY o.id").c_str());
  bind_where(s, w, 1);
  std::vector<OutboxRow> out;
  while (s.step()) out.push_back(outbox_from(s));
  return out;
}

int Index::outbox_retry(const OutboxSelection& sel, std::int64_t now_ms) {
  Lock lock(*this);
  const Where w = where_of(sel, "");
  Stmt s(conn_, ("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?1, updated_ms = ?1" + w.sql +
               " AND state IN ('pending', 'dead')").c_str());
  s.bind(1, now_ms);
  bind_where(s, w, 2);
  s.step();
  return static_cast<int>(s.changes());
}

int Index::outbox_purge(const OutboxSelection& sel) {
  Lock lock(*this);
  const Where w = where_of(sel, "");
  Stmt s(conn_, ("DELETE FROM outbox" + w.sql).c_str());
  bind_where(s, w, 1);
  s.step();
  return static_cast<int>(s.changes());
}

std::vector<OutboxCount> Index::outbox_counts() {
  Lock lock(*this);
  Stmt s(conn_, "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state ORDER BY destination, state");
  std::vector<OutboxCount> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.integer(2)});
  return out;
}

// --- Cluster (issue 14) --------------------------------------------------------------------------

Completion Index::try_complete(const std::string& study_uid, std::int64_t now_ms, std::int64_t min_quiet_ms) {
  Lock lock(*this);
  begin();
  try {
    Completion c;
    {
      // PostgreSQL: a second node running this at the same moment waits for the row, then finds
      // the study complete and changes nothing.
      Stmt s(conn_, "UPDATE studies SET state = 'complete', completed_ms = ?2, generation = generation + 1 "
                    "WHERE study_uid = ?1 AND state = 'open' AND last_instance_ms <= ?3 RETURNING generation, last_instance_ms");
      s.bind(1, study_uid).bind(2, now_ms).bind(3, now_ms - min_quiet_ms);
      if (s.step()) {
        c.generation = static_cast<int>(s.integer(0));
        c.last_instance_ms = s.integer(1);
      }
      while (s.step()) {
      }
    }
    if (c.generation) {
      Stmt(conn_, "INSERT INTO jobs(study_uid, generation, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?3) "
                  "ON CONFLICT(study_uid, generation) DO NOTHING")
          .bind(1, study_uid).bind(2, static_cast<std::int64_t>(*c.generation)).bind(3, now_ms).step();
    } else {
      Stmt s(conn_, "SELECT state, last_instance_ms FROM studies WHERE study_uid = ?");
      s.bind(1, study_uid);
      if (!s.step()) c.unknown = true;
      else {
        c.already_complete = s.text(0) == "complete";
        c.last_instance_ms = s.integer(1);
      }
    }
    commit();
    return c;
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

std::optional<JobRow> Index::claim_job(std::int64_t now_ms, std::int64_t lease_ms) {
  Lock lock(*this);
  const bool pg = conn_.db->dialect() == db::Dialect::postgresql;
  begin();
  try {
    std::optional<JobRow> job;
    std::string previous_state;
    {
      Stmt pick(conn_, std::string("SELECT id, state, COALESCE(owner, '') FROM jobs "
                                   "WHERE state = 'pending' OR (state = 'running' AND lease_until_ms < ?1) ORDER BY id LIMIT 1") +
                           (pg ? " FOR UPDATE SKIP LOCKED" : ""));
      pick.bind(1, now_ms);
      if (!pick.step()) {
        commit();
        return std::nullopt;
      }
      job = JobRow{};
      job->id = pick.integer(0);
      previous_state = pick.text(1);
      if (previous_state == "running") job->taken_from = pick.text(2);
      while (pick.step()) {
      }
    }
    Stmt s(conn_, "UPDATE jobs SET state = 'running', owner = ?2, lease_until_ms = ?3, updated_ms = ?4 WHERE id = ?1 "
                  "RETURNING study_uid, generation, error, force");
    s.bind(1, job->id).bind(2, node_).bind(3, now_ms + lease_ms).bind(4, now_ms);
    if (!s.step()) throw IndexError("index: the claimed job vanished");
    job->study_uid = s.text(0);
    job->generation = static_cast<int>(s.integer(1));
    job->state = "running";
    job->error = s.text(2);
    job->force = s.integer(3) != 0;
    while (s.step()) {
    }
    if (previous_state == "running") {
      // What the node that died was doing on a series: interrupted, it runs again here.
      Stmt(conn_, "UPDATE series_runs SET state = 'interrupted', error = ?2, ended_ms = ?3 WHERE job_id = ?1 AND state = 'running'")
          .bind(1, job->id).bind(2, fmt::format("node '{}' lost its lease; node '{}' took the job over", job->taken_from, node_))
          .bind(3, now_ms).step();
    }
    commit();
    return job;
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

bool Index::renew_job_lease(std::int64_t job_id, std::int64_t now_ms, std::int64_t lease_ms) {
  Lock lock(*this);
  Stmt s(conn_, "UPDATE jobs SET lease_until_ms = ?3 WHERE id = ?1 AND owner = ?2 AND state = 'running'");
  s.bind(1, job_id).bind(2, node_).bind(3, now_ms + lease_ms).step();
  return s.changes() == 1;
}

bool Index::record_results(std::int64_t job_id, std::vector<ResultRow>& rows, const std::string& volume_key,
                           const std::vector<std::string>& destinations, std::int64_t now_ms, std::int64_t lease_ms) {
  Lock lock(*this);
  begin();
  try {
    {
      // The fence: only the lease holder records, and the row lock keeps a taker-over out until commit.
      Stmt fence(conn_, "UPDATE jobs SET lease_until_ms = CASE WHEN lease_until_ms > ?3 THEN lease_until_ms ELSE ?3 END "
                        "WHERE id = ?1 AND owner = ?2 AND state = 'running'");
      fence.bind(1, job_id).bind(2, node_).bind(3, now_ms + lease_ms).step();
      if (fence.changes() != 1) {
        conn_.db->rollback();
        return false;
      }
    }
    for (auto& r : rows) {
      r.id = insert_result(conn_, r, volume_key);
      for (const auto& d : destinations) enqueue_one(conn_, r.id, d, now_ms);
    }
    commit();
    return true;
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

std::vector<std::string> Index::delivered_volumes(std::int64_t job_id, const std::string& source_series_uid) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT DISTINCT volume_key FROM results WHERE job_id = ?1 AND source_series_uid = ?2 "
                "AND volume_key IS NOT NULL AND volume_key != '' ORDER BY volume_key");
  s.bind(1, job_id).bind(2, source_series_uid);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::vector<SeriesRunRow> Index::finished_series_runs(std::int64_t job_id) {
  Lock lock(*this);
  Stmt s(conn_, std::string(kSeriesRunColumns) + " WHERE r.job_id = ? AND r.state NOT IN ('running', 'interrupted') ORDER BY r.id");
  s.bind(1, job_id);
  std::vector<SeriesRunRow> out;
  while (s.step()) out.push_back(series_run_from(s));
  return out;
}

std::vector<OutboxRow> Index::claim_due(const std::string& destination, std::int64_t now_ms, int limit, std::int64_t lease_ms) {
  Lock lock(*this);
  const bool pg = conn_.db->dialect() == db::Dialect::postgresql;
  begin();
  try {
    std::vector<std::int64_t> ids;
    {
      Stmt s(conn_, std::string("UPDATE outbox SET claimed_by = ?2, claim_until_ms = ?4 WHERE id IN ("
                                "SELECT id FROM outbox WHERE destination = ?1 AND state = 'pending' AND next_attempt_ms <= ?3 "
                                "AND claim_until_ms < ?3 ORDER BY id LIMIT ?5") +
                        (pg ? " FOR UPDATE SKIP LOCKED" : "") + ") RETURNING id");
      s.bind(1, destination).bind(2, node_).bind(3, now_ms).bind(4, now_ms + lease_ms).bind(5, static_cast<std::int64_t>(limit));
      while (s.step()) ids.push_back(s.integer(0));
    }
    std::vector<OutboxRow> out;
    if (!ids.empty()) {
      std::string in = "?1";
      for (std::size_t i = 1; i < ids.size(); ++i) in += fmt::format(",?{}", i + 1);
      Stmt s(conn_, std::string(kOutboxColumns) + " WHERE o.id IN (" + in + ") ORDER BY o.id");
      for (std::size_t i = 0; i < ids.size(); ++i) s.bind(static_cast<int>(i + 1), ids[i]);
      while (s.step()) out.push_back(outbox_from(s));
    }
    commit();
    return out;
  } catch (...) {
    conn_.db->rollback();
    throw;
  }
}

bool Index::hold_lease(const std::string& name, std::int64_t now_ms, std::int64_t lease_ms) {
  Lock lock(*this);
  Stmt s(conn_, "INSERT INTO leases(name, owner, until_ms) VALUES(?1, ?2, ?3) ON CONFLICT(name) DO UPDATE "
                "SET owner = excluded.owner, until_ms = excluded.until_ms WHERE leases.owner = excluded.owner OR leases.until_ms < ?4");
  s.bind(1, name).bind(2, node_).bind(3, now_ms + lease_ms).bind(4, now_ms).step();
  return s.changes() == 1;
}

void Index::heartbeat(std::int64_t started_ms, std::int64_t now_ms, bool receive, const std::string& info_json) {
  Lock lock(*this);
  Stmt(conn_, "INSERT INTO nodes(name, started_ms, last_seen_ms, receive, info) VALUES(?1, ?2, ?3, ?4, ?5) "
              "ON CONFLICT(name) DO UPDATE SET started_ms = excluded.started_ms, last_seen_ms = excluded.last_seen_ms, "
              "receive = excluded.receive, info = excluded.info")
      .bind(1, node_).bind(2, started_ms).bind(3, now_ms).bind(4, static_cast<std::int64_t>(receive ? 1 : 0)).bind(5, info_json)
      .step();
}

std::vector<NodeRow> Index::nodes() {
  Lock lock(*this);
  Stmt s(conn_, "SELECT name, started_ms, last_seen_ms, receive, COALESCE(info, '') FROM nodes ORDER BY name");
  std::vector<NodeRow> out;
  while (s.step()) out.push_back({s.text(0), s.integer(1), s.integer(2), s.integer(3) != 0, s.text(4)});
  return out;
}

std::int64_t Index::count_jobs(const std::string& state) {
  Lock lock(*this);
  Stmt s(conn_, "SELECT COUNT(*) FROM jobs WHERE state = ?");
  s.bind(1, state);
  return s.step() ? s.integer(0) : 0;
}

}  // namespace scp
