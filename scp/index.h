#pragma once
// The SQLite (WAL) index under the storage root: instances, studies and analysis jobs. The files
// stay the data: the index can always be rebuilt from the spool (see reconcile in daemon.cpp).
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "scp/spool.h"

struct sqlite3;

namespace scp {

enum class StudyState { open, complete };

struct InstanceRow {
  std::string sop_uid, study_uid, series_uid;
  std::optional<long> acquisition_number, images_in_acquisition, number_of_study_related_instances;
};

struct StudyRow {
  std::string study_uid;
  StudyState state = StudyState::open;
  std::int64_t last_instance_ms = 0;  // wall clock, ms since the epoch
  int generation = 0;                 // how often the study completed (reopened studies count up)
  std::int64_t instance_count = 0;
};

struct JobRow {
  std::int64_t id = 0;
  std::string study_uid;
  int generation = 0;
  std::string state;  // pending, running, done, failed
  std::string error;
};

// A DICOM object the node produced for a job (SEG, SR, ...), waiting in outbound/.
struct ResultRow {
  std::int64_t id = 0, job_id = 0;
  std::string study_uid;
  int generation = 0;
  std::string kind;  // "SEG", "SR"
  std::string sop_class_uid, sop_instance_uid, series_uid, source_series_uid;
  std::string path;
};

// One series of one analysis job: how its worker process ended.
struct SeriesRunRow {
  std::int64_t id = 0, job_id = 0;
  std::string study_uid, series_uid;
  std::string state;  // running, done, failed (the analysis said why), crashed (signal or limit), skipped
  std::string profile;
  int attempts = 0;
  std::string error;
  int volumes = 0;  // volumes analysed with results
  std::int64_t started_ms = 0, ended_ms = 0;
};

// One object for one destination: pending until a success status, then sent; dead after a
// permanent failure or too many attempts (the dead-letter area, see `pacsnode outbox`).
struct OutboxRow {
  std::int64_t id = 0, result_id = 0;
  std::string destination, path, sop_class_uid, sop_instance_uid, study_uid, kind;
  std::string state;  // pending, sent, dead
  int attempts = 0;
  std::int64_t next_attempt_ms = 0, created_ms = 0, updated_ms = 0;
  std::string last_error;
};

class Index {
 public:
  explicit Index(const std::filesystem::path& db_file);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  // Inserts or replaces the instance, touches its study (reopening it if complete). Returns true
  // when the SOP Instance UID was not known before.
  bool add_instance(const StoredInstance& in, std::int64_t now_ms);
  void remove_instance(const std::string& sop_uid);
  // Marks the study complete at this generation and queues an analysis job for it.
  void mark_complete(const std::string& study_uid, int generation, std::int64_t now_ms);

  std::optional<StudyRow> study(const std::string& study_uid);
  std::vector<StudyRow> studies(std::optional<StudyState> only = std::nullopt);
  std::vector<InstanceRow> instances_of(const std::string& study_uid);
  // sop uid -> path, for reconciling with the spool.
  std::vector<std::pair<std::string, std::string>> instance_paths();
  std::vector<JobRow> jobs(std::optional<std::string> state = std::nullopt);
  std::optional<JobRow> job(std::int64_t id);
  void set_job_state(std::int64_t id, const std::string& state, const std::string& error = {});
  // Jobs left 'running' by a crash go back to 'pending'; returns how many.
  int requeue_running_jobs();
  // Paths of a study's instance files.
  std::vector<std::string> instance_files(const std::string& study_uid);

  // The study's instance files grouped by series (series in UID order, files in path order).
  std::vector<std::pair<std::string, std::vector<std::string>>> series_files(const std::string& study_uid);
  std::int64_t start_series_run(std::int64_t job_id, const std::string& study_uid, const std::string& series_uid,
                                std::int64_t now_ms);
  void finish_series_run(std::int64_t id, const SeriesRunRow& r, std::int64_t now_ms);
  std::vector<SeriesRunRow> series_runs(const std::string& study_uid);

  std::int64_t add_result(const ResultRow& r);
  std::vector<ResultRow> results(std::optional<std::string> study_uid = std::nullopt);

  // Outbound queue.
  void enqueue(const ResultRow& r, const std::vector<std::string>& destinations, std::int64_t now_ms);
  std::vector<OutboxRow> outbox(std::optional<std::string> state = std::nullopt);
  std::vector<OutboxRow> due(const std::string& destination, std::int64_t now_ms, int limit);
  void mark_sent(std::int64_t id, std::int64_t now_ms);
  void mark_retry(std::int64_t id, std::int64_t next_ms, const std::string& error, std::int64_t now_ms);
  void mark_dead(std::int64_t id, const std::string& error, std::int64_t now_ms);
  // Back to pending with attempts reset: every dead row, or the given ids. Returns how many.
  int retry(const std::vector<std::int64_t>& ids, std::int64_t now_ms);
  // Deletes rows in `state` (sent or dead). Returns how many.
  int purge(const std::string& state);

  // Per-installation key for the keyed hash of Study Instance UIDs that logs show.
  const std::string& log_key() const { return log_key_; }

 private:
  void exec(const char* sql);
  void migrate();  // applies the schema versions this index lacks
  std::mutex mutex_;
  sqlite3* db_ = nullptr;
  std::string log_key_;
};

// "s-" + 12 hex digits: a keyed hash of a Study Instance UID, safe for info logs.
std::string study_hash(const std::string& key, const std::string& study_uid);

}  // namespace scp
