#include "scp/job_runner.h"

#include <fstream>
#include <future>
#include <map>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "analysis/pipeline.h"
#include "analysis/kernels/key_image_render.h"
#include "analysis/results.h"
#include "analysis/stages/stages.h"
#include "dicom/key_images.h"
#include "dicom/log.h"
#include "dicom/volume.h"
#include "scp/study_assembler.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

// The index row of an object a builder wrote (the builders return its identity).
ResultRow result_for(const dicom::WrittenObject& w, const JobRow& job, const std::string& kind, const std::string& source_series) {
  ResultRow r;
  r.job_id = job.id;
  r.study_uid = job.study_uid;
  r.generation = job.generation;
  r.kind = kind;
  r.sop_class_uid = w.sop_class_uid;
  r.sop_instance_uid = w.sop_instance_uid;
  r.series_uid = w.series_uid;
  r.source_series_uid = source_series;
  r.path = w.path.string();
  return r;
}

}  // namespace

JobRunner::JobRunner(Index& index, fs::path root, std::shared_ptr<const analysis::Pipeline> pipeline, Options opt)
    : index_(index),
      root_(std::move(root)),
      pipeline_(std::move(pipeline)),
      opt_(std::move(opt)),
      pool_(static_cast<std::size_t>(std::max(1, opt_.workers))) {}

JobRunner::~JobRunner() { stop(); }

void JobRunner::start() {
  for (const auto& job : index_.jobs("pending")) enqueue(job);
}

void JobRunner::submit(const std::string& study_uid, int generation) {
  for (const auto& job : index_.jobs("pending"))
    if (job.study_uid == study_uid && job.generation == generation) return enqueue(job);
}

void JobRunner::stop() {
  stopping_ = true;
  pool_.join();
}

void JobRunner::enqueue(const JobRow& job) {
  if (stopping_) return;
  ++queued_;
  boost::asio::post(pool_, [this, job] {
    --queued_;
    if (stopping_) return;  // stays pending for the next start
    auto log = pacsnode::component_logger("jobs");
    ++running_;
    try {
      run(job);
    } catch (const std::exception& e) {
      log->error("job {} for study {}: {}", job.id, study_hash(index_.log_key(), job.study_uid), e.what());
      try {
        index_.set_job_state(job.id, "failed", e.what());
      } catch (...) {
      }
    }
    // Volume and mask blocks stay cached while jobs follow each other; idle, the memory goes back.
    if (--running_ == 0 && queued_ == 0) {
      if (const std::size_t held = dicom::cached_plane_bytes(); held > 0) {
        dicom::release_cached_planes();
        log->info("queue empty: {:.0f} MiB of analysis memory returned to the system", held / 1048576.0);
      }
    }
  });
}

JobOutcome JobRunner::run(const JobRow& job) {
  auto log = pacsnode::component_logger("jobs");
  const std::string study = study_hash(index_.log_key(), job.study_uid);
  const std::string tag = fmt::format("{}-g{}", study, job.generation);
  const auto started = std::chrono::steady_clock::now();
  index_.set_job_state(job.id, "running");

  std::vector<fs::path> files;
  for (const auto& f : index_.instance_files(job.study_uid)) files.emplace_back(f);
  analysis::StudyContext study_ctx = analysis::decode_files(files);
  for (const auto& r : study_ctx.rejected) {  // file names are SOP Instance UIDs: debug only
    log->warn("study {}: input not analysed: {}", study, r.reason);
    log->debug("study {}: not analysed: {}", study, r.path);
  }

  const fs::path outbound = root_ / "outbound" / tag;
  const fs::path results = root_ / "results" / tag;
  JobOutcome out;
  std::vector<analysis::SeriesSummary> summaries;
  std::map<std::string, int> volumes_of_series;  // a series split into volumes gets keys -2, -3, ...
  // Records a series' objects and queues them for its profile's destinations at once, so that
  // sending starts while the rest of the study (previews, other series) is still being done.
  auto publish = [&](std::vector<ResultRow> rows, const std::string& profile_name) {
    const auto own = opt_.profile_destinations.find(profile_name);
    const auto& destinations = own != opt_.profile_destinations.end() ? own->second : opt_.destinations;
    for (auto& r : rows) {
      r.id = index_.add_result(r);
      index_.enqueue(r, destinations, wall_ms());
      out.results.push_back(r);
    }
    if (!rows.empty() && !destinations.empty() && opt_.on_queued) opt_.on_queued();
  };
  for (auto& volume : study_ctx.volumes) {
    if (stopping_) {
      index_.set_job_state(job.id, "pending");
      log->info("study {}: analysis interrupted by shutdown; it runs again at the next start", study);
      return out;
    }
    const analysis::Profile* profile = pipeline_->select(volume.info);
    if (!profile) {
      ++out.series_skipped;
      log->info("study {}: a {} series matches no profile; skipped", study, volume.info.modality);
      continue;
    }
    analysis::SeriesContext c;
    c.key = analysis::series_key(volume.info, ++volumes_of_series[volume.info.series_uid]);
    c.profile = profile;
    c.volume = std::move(volume);  // c.out_dir stays empty: the preview is drawn after the objects are queued
    fs::create_directories(results);
    const std::string source_series = c.volume.info.series_uid;
    try {
      fs::create_directories(outbound);
      // The latest SR an earlier generation wrote for this series is the one this report replaces.
      std::optional<dicom::DocumentRef> replaces;
      for (const auto& r : index_.results(job.study_uid))
        if (r.kind == "SR" && r.source_series_uid == source_series && r.generation < job.generation)
          replaces = dicom::DocumentRef{r.sop_class_uid, r.sop_instance_uid, r.series_uid, r.study_uid};
      // The SEG needs only the segmentation: it is written on another thread while the features
      // and classification run; the SR, which reports those, follows.
      std::optional<dicom::SegSpec> seg_spec;
      double seg_ms = 0;
      std::future<dicom::WrittenObject> seg_written;
      pipeline_->run(c, [&](analysis::SeriesContext& sc) {
        if (sc.resampled || sc.segments.empty()) return;  // no SEG possible: said below, after the analysis
        seg_spec = analysis::seg_spec_for(sc, opt_.keep_empty_frames);
        seg_written = std::async(std::launch::async, [&seg_spec, &seg_ms, path = outbound / (sc.key + "_seg.dcm")] {
          const analysis::Stopwatch sw;
          auto w = dicom::write_seg(*seg_spec, path);
          seg_ms = sw.ms();
          return w;
        });
      });
      if (!seg_spec) {
        analysis::seg_spec_for(c, opt_.keep_empty_frames);  // throws the reason
        throw std::logic_error("no SEG was started");
      }
      const dicom::WrittenObject seg = seg_written.get();
      const analysis::Stopwatch sr_sw;
      const dicom::WrittenObject sr = analysis::write_sr_for(c, *seg_spec, seg, outbound, replaces);
      std::string timings;
      for (const auto& t : study_ctx.timings) timings += fmt::format("{} {:.0f} ms, ", t.stage, t.ms);
      for (const auto& t : c.timings) timings += fmt::format("{} {:.0f} ms, ", t.stage, t.ms);
      log->info("study {}: series {} ({}): {}SEG {:.0f} ms (beside the later stages), SR {:.0f} ms", study, c.key,
                profile->name, timings, seg_ms, sr_sw.ms());
      std::vector<ResultRow> rows{result_for(seg, job, "SEG", source_series), result_for(sr, job, "SR", source_series)};
      if (opt_.key_images) {
        std::vector<analysis::kernels::SegmentStyle> styles;
        for (const auto& s : c.segments) styles.push_back({static_cast<std::uint8_t>(s.label), s.name, s.colour});
        auto spec = analysis::kernels::key_image_spec(c.volume, c.labels, styles, {});
        spec.file_prefix = c.key + "_key";
        for (const auto& k : dicom::write_key_images(spec, outbound)) rows.push_back(result_for(k, job, "KEY", source_series));
      }
      publish(std::move(rows), profile->name);
      ++out.series_analysed;
    } catch (const std::exception& e) {
      // Nothing that failed its checks may leave: what was written goes to quarantine with the reason.
      ++out.series_failed;
      const fs::path q = root_ / "quarantine" / tag;
      fs::create_directories(q);
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(outbound, ec))
        if (e.path().filename().string().rfind(c.key + "_", 0) == 0) fs::rename(e.path(), q / e.path().filename(), ec);
      std::ofstream(q / (c.key + "_reason.txt")) << e.what() << "\n";
      log->error("study {}: series {} ({}) failed: {}; quarantined in {}", study, c.key, profile->name, e.what(), q.string());
    }
    if (!c.segments.empty()) {  // the preview comes last: its objects are already on their way
      c.out_dir = results;
      try {
        analysis::stages::DisplayStage{}.run(c);
      } catch (const std::exception& e) {
        log->warn("study {}: series {}: no preview: {}", study, c.key, e.what());
      }
    }
    summaries.push_back(analysis::summarize(c));
  }
  if (!summaries.empty()) {
    analysis::write_text_file(results / "features.json", analysis::features_json(summaries, study_ctx.rejected));
    analysis::write_text_file(results / "features.csv", analysis::features_csv(summaries));
  }
  const bool failed = out.series_failed > 0 && out.series_analysed == 0;
  index_.set_job_state(job.id, failed ? "failed" : "done", failed ? "every analysed series failed" : "");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  log->info("study {} generation {} analysed in {:.1f} s: {} series with results, {} skipped, {} failed; {} object(s) in {}",
            study, job.generation, secs, out.series_analysed, out.series_skipped, out.series_failed, out.results.size(),
            outbound.string());
  return out;
}

}  // namespace scp
