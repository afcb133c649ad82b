#include "analysis/worker.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <iostream>
#include <iterator>
#include <map>
#include <new>
#include <thread>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <fmt/format.h>
#include <opencv2/core.hpp>

#include "analysis/kernels/key_image_render.h"
#include "analysis/kernels/png.h"
#include "analysis/pipeline.h"
#include "analysis/profiles_config.h"
#include "analysis/roi_input.h"
#include "analysis/scan_limits.h"
#include "analysis/results.h"
#include "analysis/stages/stages.h"
#include "config/config.h"
#include "dicom/key_images.h"
#include "dicom/log.h"

namespace fs = std::filesystem;

namespace analysis::worker {
namespace {

// Events go to fd 3, one line each, written whole so that the parent never sees half a line.
class Events {
 public:
  Events() : fd_(::fcntl(3, F_GETFD) != -1 ? 3 : 1) {}
  void emit(const nlohmann::json& e) const { write(e.dump() + "\n"); }

 private:
  void write(const std::string& line) const {
    std::size_t off = 0;
    while (off < line.size()) {
      const ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) std::_Exit(1);  // the parent is gone
      off += static_cast<std::size_t>(n);
    }
  }
  int fd_;
};

nlohmann::json object_json(const dicom::WrittenObject& w, const std::string& kind, int series_number, int instance_number) {
  return {{"kind", kind},
          {"series_number", series_number},
          {"instance_number", instance_number},
          {"path", w.path.string()},
          {"sop_class_uid", w.sop_class_uid},
          {"sop_instance_uid", w.sop_instance_uid},
          {"series_uid", w.series_uid},
          {"study_uid", w.study_uid}};
}

// Test-only fault injection (PACSNODE_WORKER_FAULT): lets the integration tests show that a
// worker that crashes, loops or allocates without bound costs one series and never the node.
void inject_fault() {
  const char* f = std::getenv("PACSNODE_WORKER_FAULT");
  if (!f || !*f) return;
  const std::string fault(f);
  if (fault == "segv") std::raise(SIGSEGV);
  if (fault == "abort") std::abort();
  if (fault == "loop") {
    volatile std::uint64_t x = 0;
    for (;;) x = x + 1;
  }
  if (fault == "sleep") {
    for (;;) ::pause();
  }
  if (fault == "alloc") {
    std::vector<std::unique_ptr<char[]>> hoard;
    for (;;) {
      hoard.emplace_back(new char[64 << 20]);
      std::memset(hoard.back().get(), 1, 64 << 20);
    }
  }
}

bool is_out_of_memory(const cv::Exception& e) { return e.code == cv::Error::StsNoMem; }

// Analyses one volume: the SEG is written on a second thread once the segmentation is there, the
// SR after the later stages, key images if asked; "objects" as soon as they are all on disk, then
// the preview. Returns the summary; its error is set when the volume failed.
// `p` placed for the n-th (0-based) volume of the series.
dicom::SeriesPlacement nth(const dicom::SeriesPlacement& p, int n) {
  dicom::SeriesPlacement out = p;
  out.instance_number = std::max(1, p.instance_number) + n;
  return out;
}

SeriesSummary analyse_volume(const Pipeline& pipeline, const Job& job, SeriesContext& c, const Events& events, int volume) {
  std::optional<dicom::SegSpec> seg_spec;
  std::future<dicom::WrittenObject> seg_written;
  double seg_ms = 0;
  std::string error;
  std::vector<std::string> notes;
  std::filesystem::path seg_file, sr_file;
  try {
    std::string mask_description;
    if (!job.mask.empty()) {
      c.external_mask = roi_mask_for_volume(c.volume, job.mask, job.mask_label, &mask_description);
    } else if (!job.mask_next_to.empty()) {
      const auto found = find_masks_next_to(job.mask_next_to, c.volume.info);
      if (found.empty()) throw std::invalid_argument("no SEG or RTSTRUCT next to the images references this series");
      if (found.size() > 1) {
        std::string names;
        for (const auto& f : found) names += (names.empty() ? "" : ", ") + f.string();
        throw std::invalid_argument(fmt::format("{} SEG/RTSTRUCT files reference this series ({}): give one with --mask",
                                                found.size(), names));
      }
      c.external_mask = roi_mask_for_volume(c.volume, found.front(), job.mask_label, &mask_description);
    }
    if (!mask_description.empty()) notes.push_back("mask: " + mask_description);
    // The daemon's SEG and SR need none of the IBSI features: measure them after the objects are out.
    c.defer_radiomics = job.require_dicom && job.write_dicom && !stages::needs_radiomics_for_findings(*c.profile);
    pipeline.run(c, [&](SeriesContext& sc) {
      if (!job.write_dicom || sc.resampled || sc.segments.empty()) return;  // no SEG possible: said below
      seg_spec = seg_spec_for(sc, job.keep_empty_frames);
      const auto place = nth(job.seg, volume);
      seg_spec->series_uid = place.series_uid;
      if (place.series_number > 0) seg_spec->series_number = place.series_number;
      seg_spec->instance_number = place.instance_number;
      seg_written = std::async(std::launch::async, [&seg_spec, &seg_ms, path = job.out_dir / (sc.key + "_seg.dcm")] {
        const Stopwatch sw;
        auto w = dicom::write_seg(*seg_spec, path);
        seg_ms = sw.ms();
        return w;
      });
    });
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const cv::Exception& e) {
    if (is_out_of_memory(e)) throw std::bad_alloc();
    error = e.what();
  } catch (const std::exception& e) {
    error = e.what();
  }
  // The preview: once the features are there (its legend shows some), beside the SR and key images
  // when no IBSI features wait (they run after the objects, then the preview), else after them.
  // It only reads `c` (the SEG was specified before, its spec renumbered the labels), and keeps
  // out of c.timings and `notes` while the objects are written: its result comes back here.
  const bool preview = error.empty() && !job.preview_dir.empty() && !c.segments.empty();
  const auto run_display = [&c, dir = job.preview_dir]() -> std::string {
    c.out_dir = dir;
    try {
      stages::DisplayStage{}.run(c);
    } catch (const std::exception& e) {
      return fmt::format("no preview: {}", e.what());
    }
    return {};
  };
  std::future<std::string> display_done;
  std::vector<StageTiming> later_timings;  // pushed to c.timings once the display is done
  const bool display_beside = preview && c.radiomics_pending.empty() && (!job.write_dicom || seg_spec);
  if (display_beside) display_done = std::async(std::launch::async, run_display);
  const auto join_display = [&] {
    if (!display_done.valid()) return;
    if (std::string note = display_done.get(); !note.empty()) notes.push_back(std::move(note));
  };
  if (error.empty() && job.write_dicom) {
    try {
      if (!seg_spec) {
        seg_spec_for(c, job.keep_empty_frames);  // throws the reason
        throw std::logic_error("no SEG was started");
      }
      const dicom::WrittenObject seg = seg_written.get();
      const Stopwatch sr_sw;
      const dicom::WrittenObject sr = write_sr_for(c, *seg_spec, seg, job.out_dir, job.replaces, nth(job.sr, volume));
      later_timings.push_back({"seg", seg_ms});
      later_timings.push_back({"sr", sr_sw.ms()});
      const auto sr_place = nth(job.sr, volume);
      nlohmann::json objects = nlohmann::json::array(
          {object_json(seg, "SEG", seg_spec->series_number, seg_spec->instance_number),
           object_json(sr, "SR", sr_place.series_number > 0 ? sr_place.series_number : dicom::SrSpec{}.series_number,
                       sr_place.instance_number)});
      if (job.key_images) {
        auto spec = kernels::key_image_spec(c.volume, c.labels, stages::segment_styles(c), stages::key_image_params(c));
        spec.file_prefix = c.key + "_key";
        spec.series_description =
            labelled_description(c.profile->research_label, fmt::format("pacsnode {} key images", c.profile->name));
        spec.series_uid = job.key.series_uid;
        if (job.key.series_number > 0) spec.series_number = job.key.series_number;
        spec.first_instance_number = std::max(1, job.key.instance_number) + volume * 8;
        int instance = spec.first_instance_number;
        for (const auto& k : dicom::write_key_images(spec, job.out_dir))
          objects.push_back(object_json(k, "KEY", spec.series_number, instance++));
        // The same images as PNG beside the preview, for the status page (a person, not a PACS).
        if (!job.preview_dir.empty())
          for (std::size_t i = 0; i < spec.images.size(); ++i) {
            try {
              kernels::write_png(job.preview_dir / fmt::format("{}_key_{:02}.png", c.key, i + 1), spec.images[i]);
            } catch (const std::exception&) {
              notes.push_back("a key image PNG could not be written");
            }
          }
      }
      events.emit({{"event", "objects"}, {"key", c.key}, {"profile", c.profile->name}, {"objects", objects}});
      seg_file = seg.path;
      sr_file = sr.path;
    } catch (const std::bad_alloc&) {
      if (display_done.valid()) display_done.wait();  // it refers to this context
      throw;
    } catch (const std::exception& e) {
      if (job.require_dicom) error = e.what();
      else notes.push_back(fmt::format("no SEG/SR: {}", e.what()));
    }
  } else if (seg_written.valid()) {
    seg_written.wait();  // it refers to this context
  }
  join_display();
  c.timings.insert(c.timings.end(), later_timings.begin(), later_timings.end());
  if (display_beside && !error.empty() && !c.preview.empty()) {  // as if it had not run: no preview of a failed volume
    std::error_code ec;
    fs::remove(c.preview, ec);
    c.preview.clear();
  }
  if (error.empty() && !c.radiomics_pending.empty()) {  // deferred: the objects are on their way
    const Stopwatch sw;
    try {
      stages::measure_radiomics(c);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      notes.push_back(fmt::format("no IBSI features: {}", e.what()));
    }
    c.timings.push_back({"radiomics", sw.ms()});
  }
  if (preview && !display_beside && error.empty()) {  // last: the objects are on their way
    if (std::string note = run_display(); !note.empty()) notes.push_back(std::move(note));
  }
  SeriesSummary summary = summarize(c);
  summary.error = error;
  summary.seg_file = seg_file;
  summary.sr_file = sr_file;
  summary.notes.insert(summary.notes.end(), notes.begin(), notes.end());
  return summary;
}

int run(const Job& job, const Events& events) {
  auto log = pacsnode::component_logger("worker");
  events.emit({{"event", "started"}, {"pid", ::getpid()}});
  const config::Config cfg = job.config_toml.empty() ? config::load_default() : config::parse(job.config_toml, "job");
  dicom::set_default_scan_limits(scan_limits(cfg));  // every file this worker opens is scanned with them
  keep_freed_memory_for_reuse();
  const Pipeline pipeline(profiles_from(cfg, /*all_builtins=*/true));
  if (!job.profile.empty()) pipeline.select({}, job.profile);  // an unknown name fails before decoding
  if (!job.out_dir.empty()) fs::create_directories(job.out_dir);
  if (!job.preview_dir.empty()) fs::create_directories(job.preview_dir);
  inject_fault();

  StudyContext study = decode_files(job.files);
  for (const auto& r : study.rejected) {
    Json e{{"event", "rejected"}};
    e.update(rejected_event_json(r));
    events.emit(nlohmann::json(e));
  }
  for (const auto& n : study.notes) events.emit({{"event", "note"}, {"text", n}});
  int analysed = 0, failed = 0, unmatched = 0;
  std::map<std::string, int> volumes_of_series;
  bool first = true;
  const std::size_t volumes = study.volumes.size();
  for (auto& volume : study.volumes) {
    SeriesContext c;
    if (first) c.timings = study.timings;  // the decode, once
    first = false;
    c.key = series_key(volume.info, ++volumes_of_series[volume.info.series_uid]);
    c.profile = pipeline.select(volume.info, job.profile);
    if (!c.profile) {
      ++unmatched;
      log->info("series {} ({}): no profile matches", c.key, volume.info.modality);
      continue;
    }
    if (std::find(job.skip_keys.begin(), job.skip_keys.end(), c.key) != job.skip_keys.end()) continue;
    c.volume = std::move(volume);
    std::optional<Profile> tuned;  // the profile with analyze's feature options
    if (!job.feature_options_toml.empty()) {
      tuned = *c.profile;
      apply_feature_config(config::parse_feature_overrides(job.feature_options_toml), tuned->features);
      c.profile = &*tuned;
    }
    events.emit({{"event", "volume"}, {"key", c.key}, {"profile", c.profile->name}});
    SeriesSummary s = analyse_volume(pipeline, job, c, events, volumes_of_series[c.volume.info.series_uid] - 1);
    if (s.error.empty()) {
      ++analysed;
    } else {
      ++failed;
      log->error("series {} ({}) failed: {}", c.key, c.profile->name, s.error);
    }
    events.emit(nlohmann::json{{"event", "series"}, {"summary", nlohmann::json(to_json(s))}});
  }
  events.emit({{"event", "done"}, {"volumes", volumes}, {"analysed", analysed}, {"failed", failed}, {"unmatched", unmatched}});
  return 0;
}

}  // namespace

nlohmann::json to_json(const Job& job) {
  nlohmann::json j{{"profile", job.profile},
                   {"config_toml", job.config_toml},
                   {"out_dir", job.out_dir.string()},
                   {"preview_dir", job.preview_dir.string()},
                   {"write_dicom", job.write_dicom},
                   {"keep_empty_frames", job.keep_empty_frames},
                   {"key_images", job.key_images},
                   {"require_dicom", job.require_dicom},
                   {"skip_keys", job.skip_keys},
                   {"feature_options_toml", job.feature_options_toml},
                   {"mask", job.mask.string()},
                   {"mask_next_to", job.mask_next_to.string()}};
  if (job.mask_label) j["mask_label"] = *job.mask_label;
  for (const auto& [name, p] : {std::pair<const char*, const dicom::SeriesPlacement*>{"seg", &job.seg}, {"sr", &job.sr}, {"key", &job.key}})
    j["placement"][name] = {{"series_uid", p->series_uid}, {"series_number", p->series_number}, {"instance_number", p->instance_number}};
  j["files"] = nlohmann::json::array();
  for (const auto& f : job.files) j["files"].push_back(f.string());
  if (job.replaces)
    j["replaces"] = {{"sop_class_uid", job.replaces->sop_class_uid},
                     {"sop_instance_uid", job.replaces->sop_instance_uid},
                     {"series_uid", job.replaces->series_uid},
                     {"study_uid", job.replaces->study_uid}};
  return j;
}

Job job_from_json(const nlohmann::json& j) {
  Job job;
  for (const auto& f : j.at("files")) job.files.emplace_back(f.get<std::string>());
  job.profile = j.value("profile", "");
  job.config_toml = j.value("config_toml", "");
  job.out_dir = j.value("out_dir", "");
  job.preview_dir = j.value("preview_dir", "");
  job.write_dicom = j.value("write_dicom", true);
  job.keep_empty_frames = j.value("keep_empty_frames", false);
  job.key_images = j.value("key_images", false);
  job.require_dicom = j.value("require_dicom", false);
  job.skip_keys = j.value("skip_keys", std::vector<std::string>{});
  job.feature_options_toml = j.value("feature_options_toml", "");
  job.mask = j.value("mask", "");
  job.mask_next_to = j.value("mask_next_to", "");
  if (const auto it = j.find("mask_label"); it != j.end() && it->is_number_integer()) job.mask_label = it->get<int>();
  if (const auto it = j.find("placement"); it != j.end() && it->is_object())
    for (auto [name, p] : {std::pair<const char*, dicom::SeriesPlacement*>{"seg", &job.seg}, {"sr", &job.sr}, {"key", &job.key}})
      if (const auto q = it->find(name); q != it->end() && q->is_object())
        *p = {q->value("series_uid", ""), q->value("series_number", 0), q->value("instance_number", 0)};
  if (const auto it = j.find("replaces"); it != j.end() && it->is_object())
    job.replaces = dicom::DocumentRef{it->at("sop_class_uid").get<std::string>(),
                                      it->at("sop_instance_uid").get<std::string>(),
                                      it->at("series_uid").get<std::string>(), it->at("study_uid").get<std::string>()};
  return job;
}

int worker_main(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::fputs(
        "usage: pacsnode worker < JOB.json\n"
        "  Internal: analyses one series in a child process of the daemon or of `pacsnode analyze`.\n"
        "  Reads the job (JSON) on stdin, writes events (JSON lines) to fd 3, or stdout if fd 3 is closed.\n",
        args.front() == "--help" ? stdout : stderr);
    return args.front() == "--help" ? 0 : 2;
  }
  const Events events;
  // What every job needs, done before the job is read: a worker started ahead (WorkerSpare) does
  // it while it waits. DCMTK's data dictionary is otherwise loaded at the first data set.
  (void)dcmDataDict.isDictionaryLoaded();
  try {
    const std::string text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    return run(job_from_json(nlohmann::json::parse(text)), events);
  } catch (const std::bad_alloc&) {
    // The address space limit: release what we can and say so; the parent records the limit.
    events.emit({{"event", "fatal"}, {"reason", "out of memory"}, {"limit", "memory"}});
    return kExitMemoryLimit;
  } catch (const std::exception& e) {
    events.emit({{"event", "fatal"}, {"reason", e.what()}, {"limit", ""}});
    return 1;
  }
}

}  // namespace analysis::worker
