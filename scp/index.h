#pragma once
// The index: instances, studies, analysis jobs, results and the outbox. By default a SQLite (WAL)
// file under the storage root, for one node; with [index] backend = "postgresql" one PostgreSQL
// database that several nodes on one shared storage root use together (a cluster, issue 14). The
// files stay the data: the index can always be rebuilt from the spool (see reconcile in daemon.cpp).
//
// In a cluster every decision that must be taken once is one statement or one transaction here:
// a study completes once (try_complete), a job runs on one node at a time (claim_job, with a lease
// the node renews; an expired lease lets another node take the job over), an outbox row is sent by
// one node at a time (claim_due), and results are recorded only by the node that holds the job's
// lease (record_results).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "scp/index_db.h"
#include "scp/spool.h"


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

// What the HTTP API shows of a study, from its instances' headers (our own results left out).
// Accession number and study date identify a patient's visit: only the API shows them (behind
// its token), never a log line.
struct StudyFacts {
  std::string accession_number, study_date, study_description;
  std::vector<std::string> modalities;  // distinct, sorted
  std::int64_t series = 0;
};

struct JobRow {
  std::int64_t id = 0;
  std::string study_uid;
  int generation = 0;
  std::string state;  // pending, running, done, failed
  std::string error;
  bool force = false;  // re-analysis asked for: every series again, also those whose instances did not change
  std::string taken_from;  // claim_job: the node whose lease had expired (the job was running there)
  std::string owner;       // jobs(), job(): the node that runs or ran it (empty: none yet)
};

// A DICOM object the node produced for a job (SEG, SR, ...), waiting in outbound/.
struct ResultRow {
  std::int64_t id = 0, job_id = 0;
  std::string study_uid;
  int generation = 0;
  std::string kind;  // "SEG", "SR"
  std::string sop_class_uid, sop_instance_uid, series_uid, source_series_uid;
  std::string path;
  int series_number = 0, instance_number = 0;
};

// A series of a study as the rules see it (header values of its first instance, counts of all;
// our own results sent back are not part of it).
struct SeriesEntry {
  std::string series_uid;
  std::vector<std::string> files;
  std::string modality, body_part, series_description, protocol_name, study_description, sop_class_uid, calling_ae;
  std::optional<long> series_number;
  int images = 0;           // instances x frames
  std::string fingerprint;  // of its instances' SOP Instance UIDs and content hashes: same set, same bytes
};

// One series of one analysis job: how its worker process ended.
struct SeriesRunRow {
  std::int64_t id = 0, job_id = 0;
  std::string study_uid, series_uid;
  // running, done, failed (the analysis said why), crashed (signal or limit), skipped (nothing to
  // analyse), ignored (by a rule), unchanged (analysed before with the same instances), interrupted
  std::string state;
  std::string profile;
  int attempts = 0;
  std::string error;
  int volumes = 0;  // volumes analysed with results
  std::int64_t started_ms = 0, ended_ms = 0;
  std::string fingerprint, rule;
  int generation = 0;  // of the job
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

// ---- Retention (scp/retention.h): what a retention run needs to know about a study. ----
struct RetentionStudy {
  std::string study_uid;
  bool complete = false;
  std::int64_t last_instance_ms = 0;
  int generation = 0;                  // latest completed generation
  std::int64_t instances = 0, bytes = 0;
  int jobs_pending = 0, jobs_running = 0;
  std::string latest_job_state;        // of the job for `generation`; empty when there is none
  int outbox_pending = 0;              // outbox rows still pending, over every result of the study
};
// One analysis job (a study generation): its folders are outbound|results|quarantine/<hash>-g<generation>.
struct RetentionJob {
  std::string study_uid;
  int generation = 0;
  std::string state;
  std::int64_t updated_ms = 0;  // when it last changed state (for an ended job: when it ended)
};
// An instance row forgotten by Index::forget_instances.
struct InstanceFile {
  std::string sop_uid, path;
  std::int64_t size = 0, received_ms = 0;
};

// Which outbox rows an administrative action applies to: every criterion that is set must hold.
// Unset: no restriction; set but empty: no row.
struct OutboxSelection {
  std::optional<std::vector<std::string>> states;        // pending, sent, dead
  std::optional<std::vector<std::string>> destinations;  // destination names
  std::optional<std::vector<std::int64_t>> ids;
};

struct OutboxCount {
  std::string destination, state;
  std::int64_t rows = 0;
};

// Where the index lives, and who this node is.
struct IndexSettings {
  std::string backend = "sqlite";          // "sqlite" or "postgresql"
  std::filesystem::path sqlite_file;       // backend sqlite
  std::string dsn;                         // backend postgresql: a libpq connection string or URI
  std::string node = "local";              // this node's name ([node] name): job and outbox owner
};

// A node of the cluster as its heartbeat last said (Index::nodes).
struct NodeRow {
  std::string name;
  std::int64_t started_ms = 0, last_seen_ms = 0;
  bool receive = true;
  std::string info;  // JSON the node wrote with its heartbeat (health, counts)
};

// What try_complete found.
struct Completion {
  std::optional<int> generation;    // set: this call completed the study at this generation
  bool already_complete = false;    // another node (or call) completed it first
  bool unknown = false;             // no such study
  std::int64_t last_instance_ms = 0;  // the cluster's newest instance of the study
};

class Index {
 public:
  // SQLite at db_file, node "local".
  explicit Index(const std::filesystem::path& db_file);
  explicit Index(const IndexSettings& settings);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  // Inserts or replaces the instance, touches its study (reopening it if complete). Returns true
  // when the SOP Instance UID was not known before.
  // An own instance (in.own) is recorded but neither creates an open study nor reopens one.
  bool add_instance(const StoredInstance& in, std::int64_t now_ms);
  // The SOP instance or its series is one of the results we made.
  bool is_own_result(const std::string& sop_uid, const std::string& series_uid);
  void remove_instance(const std::string& sop_uid);
  // Marks the study complete at this generation and queues an analysis job for it.
  void mark_complete(const std::string& study_uid, int generation, std::int64_t now_ms);

  std::optional<StudyRow> study(const std::string& study_uid);
  std::vector<StudyRow> studies(std::optional<StudyState> only = std::nullopt);
  std::vector<InstanceRow> instances_of(const std::string& study_uid);
  // Study UID -> facts, for every study with instances (scp/http_api.h).
  std::map<std::string, StudyFacts> study_facts();
  // sop uid -> path, for reconciling with the spool.
  std::vector<std::pair<std::string, std::string>> instance_paths();
  std::vector<JobRow> jobs(std::optional<std::string> state = std::nullopt);
  std::optional<JobRow> job(std::int64_t id);
  void set_job_state(std::int64_t id, const std::string& state, const std::string& error = {});
  // Queues a forced analysis of a complete study as its next generation (new folders; every series
  // analysed again, also unchanged ones). Returns the generation, or nullopt when the study is
  // unknown or still open (it will be analysed when it completes).
  std::optional<int> queue_reanalysis(const std::string& study_uid, std::int64_t now_ms);
  // Jobs left 'running' by a crash go back to 'pending'; returns how many.
  int requeue_running_jobs();
  // Paths of a study's instance files.
  std::vector<std::string> instance_files(const std::string& study_uid);

  // The study's instance files grouped by series (series in UID order, files in path order).
  std::vector<std::pair<std::string, std::vector<std::string>>> series_files(const std::string& study_uid);
  // The same with what the rules look at and the fingerprint.
  std::vector<SeriesEntry> series_entries(const std::string& study_uid);
  // The latest finished run of a series in a job of an earlier generation than `before_generation`.
  std::optional<SeriesRunRow> last_series_run(const std::string& study_uid, const std::string& series_uid,
                                              int before_generation);
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

  // --- Health (scp/health.h) ---
  // Writes a row (throws when the index cannot be written).
  void health_probe(std::int64_t now_ms);
  struct DestinationTrouble {
    std::string destination;
    int dead_recently = 0;     // dead-lettered since the time asked for
    int pending_retried = 0;   // pending and already failed at least 3 times
    std::int64_t oldest_pending_ms = 0;
    std::string last_error;
  };
  std::vector<DestinationTrouble> destination_trouble(std::int64_t since_ms);
  // States of the latest `n` finished jobs (done/failed), newest first.
  std::vector<std::string> latest_job_states(int n);
  // Series whose worker crashed or hit a limit since `since_ms`.
  int crashed_series_since(std::int64_t since_ms);
  // ---- Retention (scp/retention.cpp): selection and deletion. Each forget_* re-reads the study in
  // its own transaction and goes ahead only if `eligible` still holds; tables that reference
  // studies, jobs or results must be cleared in forget_study too. ----
  std::vector<RetentionStudy> retention_studies();
  std::vector<RetentionJob> retention_jobs();
  // Forgets every instance row of the study. `move_files` gets the rows and runs inside the
  // transaction with the index lock held (no instance of any study is indexed meanwhile); it must
  // take the files out of the spool, and the rows are forgotten only if it returns. If it throws
  // or the commit fails, `undo` gets the rows and must put back what was moved. `eligible` and
  // both callbacks run under the index lock: they must not call the Index. nullopt: the study is
  // no longer eligible (nothing was moved).
  std::optional<std::vector<InstanceFile>> forget_instances(
      const std::string& study_uid, const std::function<bool(const RetentionStudy&)>& eligible,
      const std::function<void(const std::vector<InstanceFile>&)>& move_files,
      const std::function<void(const std::vector<InstanceFile>&)>& undo);
  // Forgets the result and outbox rows of one generation (its outbound folder is being deleted).
  // Returns the result rows forgotten, or nullopt when the study is no longer eligible.
  std::optional<int> forget_outputs(const std::string& study_uid, int generation,
                                    const std::function<bool(const RetentionStudy&)>& eligible);
  // Forgets a study without instances: its outbox, results, series_runs, jobs and study rows.
  bool forget_study(const std::string& study_uid, const std::function<bool(const RetentionStudy&)>& eligible);
  // --- Outbox administration (`pacsnode outbox`, scp/outbox_cli.cpp) ---
  // The selected rows, in id order.
  std::vector<OutboxRow> outbox_select(const OutboxSelection& sel);
  // The selected rows that are pending or dead go back to pending, due now, with attempts reset
  // (a running daemon sends them at its next look at the outbox). Returns how many.
  int outbox_retry(const OutboxSelection& sel, std::int64_t now_ms);
  // Deletes the selected rows. Returns how many.
  int outbox_purge(const OutboxSelection& sel);
  // Rows per destination and state, for every destination the outbox names.
  std::vector<OutboxCount> outbox_counts();

  // ---- Cluster (issue 14): what several nodes decide together. Each works the same on SQLite
  // (one node) so that the daemon has one code path. ----
  // Completes the open study if its newest instance, cluster-wide, is at least `min_quiet_ms` old,
  // as the next generation, and queues its analysis job; in one statement, so one caller wins.
  Completion try_complete(const std::string& study_uid, std::int64_t now_ms, std::int64_t min_quiet_ms);
  // Takes the oldest job that is pending, or running under an expired lease (its node died), for
  // this node until now + lease_ms. PostgreSQL: FOR UPDATE SKIP LOCKED, so nodes never wait on each other.
  std::optional<JobRow> claim_job(std::int64_t now_ms, std::int64_t lease_ms);
  // Extends this node's lease of a running job; false when it no longer holds it.
  bool renew_job_lease(std::int64_t job_id, std::int64_t now_ms, std::int64_t lease_ms);
  // Records the results of one volume of a job and queues them for the destinations, in one
  // transaction, only while this node holds the job's lease (which it extends). Sets each row's
  // id. False (nothing recorded) when the lease was lost: another node runs the job now.
  bool record_results(std::int64_t job_id, std::vector<ResultRow>& rows, const std::string& volume_key,
                      const std::vector<std::string>& destinations, std::int64_t now_ms, std::int64_t lease_ms);
  // Volume keys with results recorded in this job for this source series (a job taken over skips them).
  std::vector<std::string> delivered_volumes(std::int64_t job_id, const std::string& source_series_uid);
  // Series of this job whose run ended (not running or interrupted): a job taken over skips them.
  std::vector<SeriesRunRow> finished_series_runs(std::int64_t job_id);
  // Due outbox rows of a destination that no other node holds, claimed for this node until
  // now + lease_ms (mark_sent/retry/dead release them).
  std::vector<OutboxRow> claim_due(const std::string& destination, std::int64_t now_ms, int limit, std::int64_t lease_ms);
  // A named lease (e.g. "retention"): true when this node holds it until now + lease_ms.
  bool hold_lease(const std::string& name, std::int64_t now_ms, std::int64_t lease_ms);
  // This node's heartbeat, and every node's last one.
  void heartbeat(std::int64_t started_ms, std::int64_t now_ms, bool receive, const std::string& info_json);
  std::vector<NodeRow> nodes();
  // Counts for status and metrics without reading every row.
  std::int64_t count_jobs(const std::string& state);

  // Per-installation key for the keyed hash of Study Instance UIDs that logs show.
  const std::string& log_key() const { return log_key_; }
  const std::string& node() const { return node_; }
  // Several nodes share this index (PostgreSQL).
  bool shared() const { return shared_; }
  // The database, for messages: a file, or host:port/database.
  std::string describe() const;

  // The connection and whether it needs reconnecting (used by the statements in index.cpp).
  struct Conn {
    std::unique_ptr<db::Connection> db;
    bool broken = false;
  };

 private:
  class Lock;
  void open();
  void begin();
  void commit();
  void migrate();  // applies the schema versions this index lacks
  std::optional<RetentionStudy> retention_study_locked(const std::string& study_uid);
  std::mutex mutex_;
  Conn conn_;
  std::string log_key_;
  std::string node_;
  bool shared_ = false;
};

// Our own result (SEG, SR, key image) sent back to us: its SOP instance or series is in the index's
// results, or it says it was made by pacsnode (Manufacturer and Manufacturer's Model Name), which
// still holds when the index was rebuilt.
bool is_own_result(Index& index, const dicom::InstanceHeader& h);

// "s-" + 12 hex digits: a keyed hash of a Study Instance UID, safe for info logs.
std::string study_hash(const std::string& key, const std::string& study_uid);

}  // namespace scp
