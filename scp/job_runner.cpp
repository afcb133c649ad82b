#include "scp/job_runner.h"

#include <fstream>
#include <set>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "analysis/profiles_config.h"
#include "analysis/results.h"
#include "analysis/rules.h"
#include "analysis/scan_limits.h"
#include "analysis/stage.h"
#include "analysis/worker.h"
#include "dicom/log.h"
#include "scp/study_assembler.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

// What a worker of the daemon gets in its environment beside the daemon's own.
analysis::WorkerEnvironment worker_environment(const config::Config& c) { return {{"PACSNODE_LOG_LEVEL", c.log.level}}; }

// An object a worker says it wrote: accepted only inside the job's outbound folder, as a regular
// file, of a kind we make. The worker handles hostile input, so its word is checked too.
std::optional<ResultRow> result_from_event(const nlohmann::json& o, const JobRow& job, const fs::path& outbound,
                                           const std::string& source_series, std::string& why) {
  const std::string kind = o.value("kind", "");
  if (kind != "SEG" && kind != "SR" && kind != "KEY") {
    why = "unknown object kind";
    return std::nullopt;
  }
  std::error_code ec;
  const fs::path path = fs::weakly_canonical(fs::path(o.value("path", "")), ec);
  if (ec || path.parent_path() != fs::weakly_canonical(outbound, ec) || !fs::is_regular_file(fs::symlink_status(path))) {
    why = "object path outside the job's outbound folder or not a regular file";
    return std::nullopt;
  }
  ResultRow r;
  r.job_id = job.id;
  r.study_uid = job.study_uid;
  r.generation = job.generation;
  r.kind = kind;
  r.sop_class_uid = o.value("sop_class_uid", "");
  r.sop_instance_uid = o.value("sop_instance_uid", "");
  r.series_uid = o.value("series_uid", "");
  r.source_series_uid = source_series;
  r.path = path.string();
  if (r.sop_class_uid.empty() || r.sop_instance_uid.empty() || r.series_uid.empty()) {
    why = "object without SOP class, SOP instance or series UID";
    return std::nullopt;
  }
  return r;
}

// Moves what a failed series or volume left in outbound/ (files named "<key>_..." or, for a whole
// series, "<key>-<n>_..."; not delivered) to the quarantine folder and writes the reason beside
// them as <key>_reason.txt.
void quarantine(const fs::path& outbound, const fs::path& q, const std::string& key, const std::set<std::string>& delivered,
                const std::string& reason) {
  fs::create_directories(q);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(outbound, ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = name.rfind(key + "_", 0) == 0 || name.rfind(key + "-", 0) == 0;
    if (ours && !delivered.count(e.path().string())) fs::rename(e.path(), q / name, ec);
  }
  analysis::write_text_file(q / (key + "_reason.txt"), reason + "\n");
}

// Where the results of a source series go. A series analysed before keeps its result series:
// the new objects supersede the old ones there with the next instance numbers (the SR also lists
// its predecessor). A series analysed for the first time gets new series, numbered from 9001 on
// in pairs (SEG, SR; key images 9501 on) with numbers no other result series of the study uses.
struct Placements {
  dicom::SeriesPlacement seg, sr, key;
};

Placements place(const std::vector<ResultRow>& earlier, const std::string& source_series) {
  Placements p;
  std::set<int> used;
  for (const auto& r : earlier) used.insert(r.series_number);
  bool seen = false;
  for (const auto& r : earlier) {
    if (r.source_series_uid != source_series) continue;
    dicom::SeriesPlacement& q = r.kind == "SEG" ? p.seg : r.kind == "SR" ? p.sr : p.key;
    q.series_uid = r.series_uid;
    q.series_number = r.series_number;
    q.instance_number = std::max(q.instance_number, r.instance_number + 1);
    seen = true;
  }
  if (!seen || p.seg.series_uid.empty() || p.sr.series_uid.empty()) {
    int k = 0;
    while (used.count(9001 + 2 * k) || used.count(9002 + 2 * k) || used.count(9501 + k)) ++k;
    if (p.seg.series_uid.empty()) p.seg = {"", 9001 + 2 * k, 1};
    if (p.sr.series_uid.empty()) p.sr = {"", 9002 + 2 * k, 1};
  }
  if (p.key.series_uid.empty()) {
    int k = 0;
    while (used.count(9501 + k)) ++k;
    p.key = {"", 9501 + k, 1};
  }
  return p;
}

}  // namespace

JobRunner::JobRunner(Index& index, fs::path root, const config::LiveConfig& config, Options opt)
    : index_(index),
      root_(std::move(root)),
      config_(config),
      opt_(std::move(opt)),
      pool_(static_cast<std::size_t>(std::max(1, opt_.workers))) {
  if (opt_.executable.empty()) opt_.executable = analysis::self_executable();
}

JobRunner::~JobRunner() { stop(); }

void JobRunner::start() {
  const auto cfg = config_.get();
  if (cfg->analysis.prestart_worker) {
    // The first study's worker starts now, not when the study is complete.
    spare_.set_enabled(true);
    spare_.prepare(opt_.executable, analysis::worker_limits(*cfg), worker_environment(*cfg));
  }
  for (int i = 0; i < std::max(1, opt_.workers); ++i) boost::asio::post(pool_, [this] { loop(); });
  keeper_ = std::thread([this] { keep_leases(); });
}

void JobRunner::submit(const std::string&, int) { wake(); }

void JobRunner::wake() {
  {
    std::lock_guard lock(mutex_);
    ++wake_;
  }
  cv_.notify_all();
}

void JobRunner::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto* a : active_) a->cancel = true;
  }
  cv_.notify_all();
  pool_.join();
  if (keeper_.joinable()) keeper_.join();
  spare_.clear();
}

// One of `workers` loops: take the oldest claimable job, run it, repeat; when there is none, wait
// for a completion here (submit) or the next look at the index (poll_seconds).
void JobRunner::loop() {
  auto log = pacsnode::component_logger("jobs");
  while (!stopping_) {
    const auto cfg = config_.get();
    const auto lease_ms = std::int64_t(cfg->index.lease_seconds) * 1000;
    std::uint64_t seen;
    {
      std::lock_guard lock(mutex_);
      seen = wake_;
    }
    std::optional<JobRow> job;
    try {
      job = index_.claim_job(wall_ms(), lease_ms);
      queued_ = static_cast<std::size_t>(std::max<std::int64_t>(0, index_.count_jobs("pending")));
    } catch (const std::exception& e) {
      log->error("cannot take a job from the index: {}", e.what());
    }
    if (!job) {
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, std::chrono::seconds(cfg->index.poll_seconds), [&] { return stopping_ || wake_ != seen; });
      continue;
    }
    if (!job->taken_from.empty())
      log->warn("study {}: job {} taken over from node '{}', whose lease expired", study_hash(index_.log_key(), job->study_uid),
                job->id, job->taken_from);
    Active active;
    active.id = job->id;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) active.cancel = true;
      active_.push_back(&active);
    }
    ++running_;
    try {
      run(*job, active);
    } catch (const std::exception& e) {
      log->error("job {} for study {}: {}", job->id, study_hash(index_.log_key(), job->study_uid), e.what());
      try {
        index_.set_job_state(job->id, "failed", e.what());
      } catch (...) {
      }
    }
    --running_;
    {
      std::lock_guard lock(mutex_);
      active_.erase(std::find(active_.begin(), active_.end(), &active));
    }
  }
}

// Renews the leases of the jobs running here every third of the lease; a job whose lease is gone
// (this node was cut off long enough for another node to take it over) is cancelled.
void JobRunner::keep_leases() {
  auto log = pacsnode::component_logger("jobs");
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    const auto cfg = config_.get();
    const auto lease_ms = std::int64_t(cfg->index.lease_seconds) * 1000;
    cv_.wait_for(lock, std::chrono::milliseconds(lease_ms / 3), [&] { return stopping_.load(); });
    if (stopping_) break;
    const std::vector<Active*> active = active_;
    for (auto* a : active) {
      try {
        if (!index_.renew_job_lease(a->id, wall_ms(), lease_ms)) {
          log->error("job {}: this node lost its lease (another node runs the job now); stopping it here", a->id);
          a->lost = true;
          a->cancel = true;
        }
      } catch (const std::exception& e) {
        // The index is unreachable: keep going; the lease holds until it expires.
        log->warn("job {}: cannot renew its lease: {}", a->id, e.what());
      }
    }
  }
}

JobOutcome JobRunner::run(const JobRow& job) {
  Active active;
  active.id = job.id;
  if (stopping_) active.cancel = true;
  return run(job, active);
}

JobOutcome JobRunner::run(const JobRow& job, Active& active) {
  auto log = pacsnode::component_logger("jobs");
  const std::string study = study_hash(index_.log_key(), job.study_uid);
  const std::string tag = fmt::format("{}-g{}", study, job.generation);
  const auto started = std::chrono::steady_clock::now();
  index_.set_job_state(job.id, "running");

  const fs::path outbound = root_ / "outbound" / tag;
  const fs::path results = root_ / "results" / tag;
  const fs::path quarantined = root_ / "quarantine" / tag;
  fs::create_directories(outbound);
  JobOutcome out;
  std::vector<analysis::SeriesSummary> summaries;
  std::vector<dicom::Rejected> rejected;
  const std::vector<ResultRow> earlier = index_.results(job.study_uid);

  const std::shared_ptr<const config::Config> cfg = config_.get();  // one config for the whole job
  const auto profiles = analysis::profiles_from(*cfg);
  const analysis::WorkerLimits limits = analysis::worker_limits(*cfg);
  const analysis::WorkerEnvironment worker_env = worker_environment(*cfg);
  spare_.set_enabled(cfg->analysis.prestart_worker);
  std::vector<std::string> all_destinations;
  for (const auto& d : cfg->destinations) all_destinations.push_back(d.name);
  const std::int64_t lease_ms = std::int64_t(cfg->index.lease_seconds) * 1000;
  // A job that ran before (taken over from a node that died, or interrupted by a shutdown) does
  // not analyse again what it finished then: those series' objects are recorded and queued.
  std::set<std::string> finished;
  for (const auto& r : index_.finished_series_runs(job.id)) finished.insert(r.series_uid);
  // Interrupted here: a shutdown puts the job back to pending; a lost lease leaves it to the node
  // that holds it now.
  auto interrupted = [&] {
    if (active.lost) {
      log->warn("study {}: job {} stopped here: another node holds its lease", study, job.id);
      return;
    }
    index_.set_job_state(job.id, "pending");
    log->info("study {}: analysis interrupted by shutdown; it runs again at the next start", study);
  };

  for (const auto& entry : index_.series_entries(job.study_uid)) {
    if (active.cancel) {
      interrupted();
      return out;
    }
    if (finished.count(entry.series_uid)) {
      log->info("study {}: series {} was finished by an earlier run of this job", study, analysis::short_hash(entry.series_uid));
      continue;
    }
    const std::string& series_uid = entry.series_uid;
    const auto& files = entry.files;
    const std::string series = analysis::short_hash(series_uid);
    SeriesRunRow row;
    row.fingerprint = entry.fingerprint;

    // The rules decide from the headers whether and how the series is analysed.
    const analysis::RuleDecision decision = analysis::decide(
        *cfg, profiles,
        {entry.modality, entry.body_part, entry.series_description, entry.protocol_name, entry.study_description,
         entry.sop_class_uid, entry.calling_ae, entry.images});
    row.rule = decision.rule;
    row.profile = decision.profile;
    if (!decision.analyse) {
      const std::int64_t id = index_.start_series_run(job.id, job.study_uid, series_uid, wall_ms());
      row.state = "ignored";
      row.error = decision.why;
      index_.finish_series_run(id, row, wall_ms());
      ++out.series_ignored;
      log->info("study {}: series {} ({}, {} image(s)) not analysed: {}", study, series, entry.modality, entry.images,
                decision.why);
      continue;
    }
    // The same instances, byte for byte, analysed before with the same profile: nothing new to say.
    if (const auto last = index_.last_series_run(job.study_uid, series_uid, job.generation);
        !job.force && last && last->fingerprint == entry.fingerprint && last->profile == decision.profile) {
      const std::int64_t id = index_.start_series_run(job.id, job.study_uid, series_uid, wall_ms());
      row.state = "unchanged";
      row.error = fmt::format("instances unchanged since generation {} ({}): no new objects", last->generation,
                              last->state == "unchanged" ? "unchanged" : last->state);
      index_.finish_series_run(id, row, wall_ms());
      ++out.series_unchanged;
      log->info("study {}: series {} {}", study, series, row.error);
      continue;
    }

    analysis::worker::Job wj;
    wj.files.assign(files.begin(), files.end());
    wj.profile = decision.profile;
    wj.config_toml = cfg->source_text;
    wj.out_dir = outbound;
    wj.preview_dir = results;
    wj.keep_empty_frames = cfg->analysis.keep_empty_frames;
    wj.key_images = cfg->analysis.key_images;
    wj.require_dicom = true;
    // The latest SR an earlier generation wrote for this series is the one this report replaces.
    for (const auto& r : earlier)
      if (r.kind == "SR" && r.source_series_uid == series_uid && r.generation < job.generation)
        wj.replaces = dicom::DocumentRef{r.sop_class_uid, r.sop_instance_uid, r.series_uid, r.study_uid};
    const Placements placement = place(earlier, series_uid);
    wj.seg = placement.seg;
    wj.sr = placement.sr;
    wj.key = placement.key;
    // Volumes whose objects an earlier run of this job recorded (a job taken over): not again.
    for (auto& k : index_.delivered_volumes(job.id, series_uid)) wj.skip_keys.push_back(std::move(k));

    const std::int64_t run_id = index_.start_series_run(job.id, job.study_uid, series_uid, wall_ms());
    std::string in_flight;  // key of the volume the worker is on
    std::set<std::string> delivered;
    int volumes_failed = 0;
    std::vector<std::string> rejections;
    auto on_event = [&](const nlohmann::json& e) {
      const std::string kind = e.value("event", "");
      if (kind == "volume") {
        in_flight = e.value("key", "");
      } else if (kind == "objects") {
        const std::string profile = e.value("profile", "");
        std::vector<ResultRow> rows;
        for (const auto& o : e.value("objects", nlohmann::json::array())) {
          std::string why;
          if (auto r = result_from_event(o, job, outbound, series_uid, why)) {
            r->series_number = o.value("series_number", 0);
            r->instance_number = o.value("instance_number", 0);
            rows.push_back(std::move(*r));
          }
          else log->error("study {}: series {}: worker reported an object that is not accepted: {}", study, series, why);
        }
        const std::vector<std::string>* destinations = &all_destinations;
        for (const auto& p : cfg->profiles)
          if (p.name == profile && p.destinations) destinations = &*p.destinations;
        // Recorded and queued together, only while this node holds the job's lease.
        if (!index_.record_results(job.id, rows, e.value("key", ""), *destinations, wall_ms(), lease_ms)) {
          log->error("study {}: series {}: lease lost; the objects made here are not recorded (the node that holds the "
                     "job now makes its own)", study, series);
          active.lost = true;
          active.cancel = true;
          return;
        }
        for (auto& r : rows) {
          delivered.insert(r.path);
          out.results.push_back(r);
        }
        if (!rows.empty() && !destinations->empty() && opt_.on_queued) opt_.on_queued();
        wj.skip_keys.push_back(e.value("key", ""));
      } else if (kind == "series") {
        analysis::SeriesSummary s = analysis::summary_from_json(e.at("summary"));
        in_flight.clear();
        std::string timings;
        for (const auto& t : s.timings) {
          timings += fmt::format("{}{} {:.0f} ms", timings.empty() ? "" : ", ", t.stage, t.ms);
          if (opt_.metrics) opt_.metrics->stage_seconds.observe(t.stage, t.ms / 1000.0);
        }
        if (s.error.empty()) {
          ++row.volumes;
          log->info("study {}: series {} ({}): {}", study, s.key, s.profile, timings);
        } else {
          ++volumes_failed;
          // Nothing that failed its checks may leave: what was written goes to quarantine with the reason.
          quarantine(outbound, quarantined, s.key, delivered, s.error);
          log->error("study {}: series {} ({}) failed: {}; quarantined in {}", study, s.key, s.profile, s.error,
                     quarantined.string());
        }
        summaries.push_back(std::move(s));
      } else if (kind == "rejected") {
        auto r = analysis::rejected_from_json(e);
        log->warn("study {}: series {}: input not analysed: {}", study, series, r.reason);
        log->debug("study {}: not analysed: {}", study, r.path);  // file names are SOP Instance UIDs: debug only
        rejections.push_back(r.reason);
        rejected.push_back(std::move(r));
      }
    };

    analysis::WorkerExit exit;
    for (row.attempts = 1; row.attempts <= 2; ++row.attempts) {
      exit = analysis::run_worker(spare_.take(opt_.executable, limits, worker_env), analysis::worker::to_json(wj), limits,
                                  on_event, &active.cancel);
      if (!exit.ok() && exit.kind != analysis::WorkerExit::Kind::cancelled && opt_.metrics)
        opt_.metrics->worker_failures.add({std::string(analysis::to_string(exit.kind)), analysis::signal_abbrev(exit.signal)});
      if (exit.ok() || !exit.retryable()) break;
      ++crashes_;
      log->error("study {}: series {}: analysis worker {} ({}) after {:.1f} s{}", study, in_flight.empty() ? series : in_flight,
                 analysis::to_string(exit.kind), exit.reason, exit.seconds,
                 row.attempts == 1 ? "; trying once more" : "; giving up");
      if (row.attempts == 2) break;
      in_flight.clear();
    }
    row.attempts = std::min(row.attempts, 2);
    if (exit.kind == analysis::WorkerExit::Kind::cancelled || active.lost) {
      row.state = "interrupted";
      row.error = active.lost ? "lease lost to another node" : exit.reason;
      index_.finish_series_run(run_id, row, wall_ms());
      interrupted();
      return out;
    }
    if (!exit.ok()) {
      // The series goes to quarantine with how its worker ended; the job goes on.
      const std::string key = in_flight.empty() ? series : in_flight;
      row.state = exit.retryable() ? "crashed" : "failed";
      row.error = fmt::format("analysis worker {}: {}", analysis::to_string(exit.kind), exit.reason);
      quarantine(outbound, quarantined, key, delivered,
                 fmt::format("{} ({} attempt(s), {} file(s) of the series)", row.error, row.attempts, files.size()));
      log->error("study {}: series {} quarantined in {}: {}", study, key, quarantined.string(), row.error);
      if (exit.retryable()) ++out.series_crashed;
      else ++out.series_failed;
    } else if (volumes_failed > 0) {
      row.state = "failed";
      row.error = fmt::format("{} volume(s) failed", volumes_failed);
      ++out.series_failed;
    } else if (row.volumes > 0) {
      row.state = "done";
      ++out.series_analysed;
    } else {
      row.state = "skipped";
      row.error = rejections.empty() ? "no profile matches the series" : rejections.front();
      ++out.series_skipped;
      log->info("study {}: series {} skipped: {}", study, series, row.error);
    }
    index_.finish_series_run(run_id, row, wall_ms());
  }
  if (!summaries.empty()) {
    fs::create_directories(results);
    analysis::write_text_file(results / "features.json", analysis::features_json(summaries, rejected));
    analysis::write_text_file(results / "features.csv", analysis::features_csv(summaries));
    analysis::write_text_file(results / "feature_catalogue.csv", analysis::feature_catalogue_csv(summaries));
  }
  const int failed = out.series_failed + out.series_crashed;
  const bool job_failed = failed > 0 && out.series_analysed == 0;
  index_.set_job_state(job.id, job_failed ? "failed" : "done",
                       failed ? fmt::format("{} series failed or crashed", failed) : std::string());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (opt_.metrics) opt_.metrics->job_seconds.observe(secs);
  log->info("study {} generation {} analysed in {:.1f} s: {} series with results, {} unchanged, {} not analysed by the "
            "rules, {} skipped, {} failed, {} crashed; {} object(s) in {}",
            study, job.generation, secs, out.series_analysed, out.series_unchanged, out.series_ignored, out.series_skipped,
            out.series_failed, out.series_crashed, out.results.size(), outbound.string());
  return out;
}

}  // namespace scp
