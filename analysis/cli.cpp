#include "analysis/cli.h"

#include <sys/ioctl.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "analysis/kernels/classify.h"
#include "analysis/kernels/evaluate.h"
#include "analysis/kernels/nifti.h"
#include "analysis/pipeline.h"
#include "analysis/results.h"
#include "analysis/profiles_config.h"
#include "analysis/scan_limits.h"
#include "analysis/seg_masks.h"
#include "analysis/worker.h"
#include "analysis/worker_client.h"
#include "config/config.h"
#include "dicom/log.h"
#include "dicom/seg_reader.h"
#include "analysis/analyze_report.h"

namespace fs = std::filesystem;

namespace analysis {
namespace {

struct AnalyzeOptions {
  fs::path input, out;
  std::string profile;
  bool no_dicom = false, keep_empty_frames = false, quiet = false;
  fs::path config;  // empty: the embedded default
  // IBSI feature options (the ibsi_* keys of a [[profile]] table) and an external mask.
  std::string ibsi_preset, texture, interpolation, discretisation, mask;
  std::vector<std::string> families;
  double spacing = 0, bin_width = 0;
  int bins = 0, label = 0;
  std::vector<double> reseg;
  bool reseg_outliers = false;
  const CLI::Option* label_given = nullptr;
};

// analyze's feature options as the TOML keys of a [[profile]] table (config::parse_feature_overrides
// checks them here, before any worker starts, and again in each worker).
std::string feature_options_toml(const AnalyzeOptions& o) {
  std::string t;
  const auto str = [&](const char* k, const std::string& v) {
    if (!v.empty()) t += fmt::format("{} = \"{}\"\n", k, v);
  };
  str("ibsi_preset", o.ibsi_preset);
  str("ibsi_texture", o.texture);
  str("ibsi_interpolation", o.interpolation);
  str("ibsi_discretisation", o.discretisation);
  if (!o.families.empty()) {
    std::string list;
    for (const auto& f : o.families) list += fmt::format("{}\"{}\"", list.empty() ? "" : ", ", f);
    t += fmt::format("ibsi_families = [{}]\n", list);
  }
  if (o.spacing > 0) t += fmt::format("ibsi_spacing_mm = {}\n", o.spacing);
  if (o.bin_width > 0) t += fmt::format("ibsi_bin_width = {}\n", o.bin_width);
  if (o.bins > 0) t += fmt::format("ibsi_bins = {}\n", o.bins);
  if (!o.reseg.empty()) t += fmt::format("ibsi_reseg_range = [{}, {}]\n", o.reseg.at(0), o.reseg.at(1));
  if (o.reseg_outliers) t += "ibsi_reseg_outliers = true\n";
  return t;
}

struct EvaluateOptions {
  fs::path pred, ref;
  int label = 0, pred_label = 0, ref_label = 0;
  const CLI::Option *label_given = nullptr, *pred_label_given = nullptr, *ref_label_given = nullptr;
};

struct TrainOptions {
  fs::path features, model;
  std::string labels, positive, label_column = "label", ignore;
  int folds = 5;
  int trees = 0;
  std::uint64_t seed = 0;
  const CLI::Option *trees_given = nullptr, *seed_given = nullptr, *ignore_given = nullptr;
};

// The config `analyze` runs with: `config_file`, else the embedded default. Its [limits] and
// storage.max_instance_mb become the structural scan's limits for every file this process reads
// (the workers get the same config with their job).
config::Config analyze_config(const fs::path& config_file) {
  try {
    config::Config cfg = !config_file.empty() ? config::load_file(config_file) : config::load_default();
    dicom::set_default_scan_limits(scan_limits(cfg));
    return cfg;
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "pacsnode analyze: invalid configuration: %s\n", e.what());
    throw cli::Exit{2};
  }
}

std::string join_timings(const std::vector<StageTiming>& t) {
  std::string s;
  for (const auto& x : t) s += fmt::format("{}{} {:.0f}", s.empty() ? "" : ", ", x.stage, x.ms);
  return s + " ms";
}

int analyze(const AnalyzeOptions& o) {
  const fs::path& input = o.input;
  const fs::path& out = o.out;
  const std::string& forced = o.profile;
  const bool write_dicom = !o.no_dicom && o.mask.empty();  // a given mask is not our segmentation: no SEG/SR
  const bool keep_empty_frames = o.keep_empty_frames;
  if (!fs::exists(input)) {
    std::fprintf(stderr, "pacsnode analyze: %s does not exist\n", input.c_str());
    return 1;
  }
  const config::Config cfg = analyze_config(o.config);
  const std::string feature_options = feature_options_toml(o);
  try {
    FeatureParams check;
    apply_feature_config(config::parse_feature_overrides(feature_options), check);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pacsnode analyze: invalid feature options: %s\n", e.what());
    return 2;
  }
  keep_freed_memory_for_reuse();
  const Pipeline pipeline(profiles_from(cfg, /*all_builtins=*/true));
  if (!forced.empty()) pipeline.select({}, forced);  // unknown name: fail before decoding
  fs::create_directories(out);
  const bool tty = ::isatty(2);
  const WorkerLimits limits = worker_limits(cfg);
  const fs::path self = self_executable();
  // The next series' worker starts (loads its libraries) while this one works; none after the last.
  // The first one starts now, while the files are listed and their headers grouped into series.
  WorkerSpare spare(cfg.analysis.prestart_worker);
  spare.prepare(self, limits, {});

  // One series at a time, each decoded and analysed in a worker process: a decoder that crashes on
  // a broken file costs that series, not the run.
  const std::vector<fs::path> files = fs::is_directory(input) ? files_below(input) : std::vector<fs::path>{input};
  const auto batches = series_batches(files);
  winsize ws{};
  const int width = ::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
  AnalyzeProgress progress(tty && !o.quiet, batches.size(), files.size(), stderr, width);
  std::vector<dicom::Rejected> rejected;
  std::vector<SeriesSummary> done;
  int analysed = 0, failed = 0, unmatched = 0;
  std::size_t decoded = 0;
  for (std::size_t bi = 0; bi < batches.size(); ++bi) {
    const bool last = bi + 1 == batches.size();
    progress.begin_series(batches[bi].front().parent_path().filename().string(), batches[bi].size());
    worker::Job job;
    job.files = batches[bi];
    job.config_toml = cfg.source_text;
    job.profile = forced;
    job.out_dir = out;
    job.preview_dir = out;
    job.write_dicom = write_dicom;
    job.keep_empty_frames = keep_empty_frames;
    job.feature_options_toml = feature_options;
    if (o.mask == "next-to") job.mask_next_to = fs::is_directory(input) ? input : input.parent_path();
    else if (!o.mask.empty()) job.mask = fs::absolute(o.mask);
    if (o.label_given->count() > 0) job.mask_label = o.label;
    std::optional<std::pair<std::string, std::string>> in_flight;  // key, profile of the volume being analysed
    WorkerExit exit;
    for (int attempt = 1; attempt <= 2; ++attempt) {
      StartedWorker started = spare.take(self, limits, {}, /*start_next=*/!last);  // no spare after the last
      exit = run_worker(std::move(started), worker::to_json(job), limits, [&](const nlohmann::json& e) {
        const std::string kind = e.value("event", "");
        if (kind == "rejected") {
          const auto r = rejected_from_json(e);
          progress.line(fmt::format("skipped {}: {}{}", r.path, r.reason,
                                    r.files.size() > 1 ? fmt::format(" ({} files)", r.files.size()) : std::string()));
          if (attempt == 1) rejected.push_back(r);
        } else if (kind == "note") {
          if (attempt == 1) progress.line("note: " + e.value("text", ""));
        } else if (kind == "volume") {
          in_flight = std::make_pair(e.value("key", ""), e.value("profile", ""));
        } else if (kind == "series") {
          SeriesSummary s = summary_from_json(e.at("summary"));
          in_flight.reset();
          job.skip_keys.push_back(s.key);
          if (s.error.empty()) ++analysed;
          else {
            ++failed;
            progress.line(fmt::format("series {} failed: {}", s.key, s.error));
          }
          for (const auto& n : s.notes)
            if (n.rfind("no SEG/SR", 0) == 0) progress.line(fmt::format("series {}: {}", s.key, n));
          pacsnode::component_logger("pipeline")->debug("series {}: {}", s.key, join_timings(s.timings));
          done.push_back(std::move(s));
        } else if (kind == "done") {
          unmatched += e.value("unmatched", 0);
          decoded += e.value("volumes", std::size_t{0});
        }
      });
      if (exit.ok() || !exit.retryable()) break;
      progress.line(fmt::format("{}: analysis {} ({}){}", job.files.front().string(), to_string(exit.kind), exit.reason,
                                attempt == 1 ? "; trying once more" : ""));
      if (attempt == 1) in_flight.reset();
    }
    if (exit.ok()) {
      progress.end_series();
      continue;
    }
    // What the worker could not finish: the volume it was on fails with the reason; if it had not
    // got that far, the batch's files are listed as rejected.
    const std::string why = fmt::format("analysis {}: {}", to_string(exit.kind), exit.reason);
    if (in_flight) {
      SeriesSummary s;
      s.key = in_flight->first;
      s.profile = in_flight->second;
      s.error = why;
      ++failed;
      progress.line(fmt::format("series {} failed: {}", s.key, why));
      done.push_back(std::move(s));
    } else if (job.skip_keys.empty()) {
      dicom::Rejected r{job.files.front().string(), why, {}};
      for (const auto& f : job.files) r.files.push_back(f.string());
      progress.line(fmt::format("skipped {}: {}{}", r.path, why,
                                r.files.size() > 1 ? fmt::format(" ({} files)", r.files.size()) : std::string()));
      rejected.push_back(std::move(r));
    }
    progress.end_series();
  }
  progress.finish();
  write_text_file(out / "features.json", features_json(done, rejected));
  write_text_file(out / "features.csv", features_csv(done));
  write_text_file(out / "feature_catalogue.csv", feature_catalogue_csv(done));
  if (tty && !o.quiet) std::fputs(summary_table(done, out, rejected.size(), write_dicom).c_str(), stderr);
  if (analysed == 0) {
    std::fprintf(stderr,
                 "pacsnode analyze: no series analysed in %s (%zu volumes decoded, %d failed, %d without a "
                 "matching profile; %zu inputs rejected)\n",
                 input.c_str(), decoded, failed, unmatched, rejected.size());
    return 1;
  }
  pacsnode::component_logger("pipeline")
      ->info("analyze: {} series analysed, {} failed, {} rejected inputs", analysed, failed, rejected.size());
  return 0;
}

Mask select_label(const kernels::NiftiImage& img, std::optional<int> label) {
  Mask m = kernels::make_mask(static_cast<int>(img.slices.size()), img.slices.front().rows, img.slices.front().cols);
  for (std::size_t z = 0; z < m.size(); ++z) {
    cv::Mat src;
    img.slices[z].convertTo(src, CV_32F);
    if (label)
      cv::compare(src, static_cast<double>(*label), m[z], cv::CMP_EQ);
    else
      cv::compare(src, 0.0, m[z], cv::CMP_NE);
  }
  kernels::binarise(m);
  return m;
}

bool is_nifti(const fs::path& p) {
  const std::string n = p.filename().string();
  return n.size() > 4 && (n.ends_with(".nii") || n.ends_with(".nii.gz"));
}

// JSON string contents (without the quotes).
std::string jstr(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      o += '\\', o += static_cast<char>(c);
    else if (c < 0x20)
      o += fmt::format("\\u{:04x}", c);
    else
      o += static_cast<char>(c);
  }
  return o;
}

std::string num(double v) { return std::isfinite(v) ? fmt::format("{}", v) : std::string("null"); }

// One evaluate input: a NIfTI mask/label map or a DICOM SEG.
struct EvalInput {
  fs::path path;
  bool seg = false;
  std::optional<kernels::NiftiImage> nifti;
  std::optional<dicom::SegObject> dicom_seg;
  std::string name() const { return path.filename().string(); }
};

// DICOM (preamble + "DICM", or a bare dataset of the SEG SOP class) is read as SEG; .nii/.nii.gz
// as NIfTI. Throws with the reason when the file is neither.
EvalInput load_eval_input(const fs::path& p) {
  EvalInput in;
  in.path = p;
  if (dicom::has_dicom_preamble(p) || (!is_nifti(p) && dicom::looks_like_dicom(p))) {
    in.seg = true;
    in.dicom_seg = dicom::read_seg(p);
  } else if (is_nifti(p)) {
    in.nifti = kernels::read_nifti(p);
  } else {
    throw std::runtime_error(p.string() +
                             ": neither a NIfTI mask (.nii, .nii.gz) nor a DICOM file the SEG reader accepts (no "
                             "128-byte preamble + \"DICM\", no Segmentation Storage SOP class)");
  }
  return in;
}

std::string shape_of(const std::vector<cv::Mat>& m) {
  return fmt::format("{}x{}x{}", m.size(), m.front().rows, m.front().cols);
}

int evaluate(const EvaluateOptions& o) {
  const fs::path &pred = o.pred, &ref = o.ref;
  for (const auto& p : {pred, ref}) {
    if (!fs::exists(p)) {
      std::fprintf(stderr, "pacsnode evaluate: %s does not exist\n", p.c_str());
      return 1;
    }
  }
  std::optional<int> pl, rl;
  if (o.label_given->count()) pl = rl = o.label;
  if (o.pred_label_given->count()) pl = o.pred_label;
  if (o.ref_label_given->count()) rl = o.ref_label;
  const EvalInput pin = load_eval_input(pred), rin = load_eval_input(ref);

  Mask pmask, rmask;
  Spacing pspacing, rspacing;
  if (pin.seg && rin.seg) {
    auto g = seg_masks_on_common_grid({{&*pin.dicom_seg, pl, pin.name()}, {&*rin.dicom_seg, rl, rin.name()}});
    for (const auto& w : g.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    pmask = std::move(g.masks[0]);
    rmask = std::move(g.masks[1]);
    pspacing = rspacing = g.spacing;
  } else {
    // Each side on its own grid; a SEG alone spans its frames (gaps filled).
    const auto load = [](const EvalInput& in, std::optional<int> label, Mask& m, Spacing& sp) {
      if (in.seg) {
        auto g = seg_masks_on_common_grid({{&*in.dicom_seg, label, in.name()}});
        for (const auto& w : g.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
        m = std::move(g.masks[0]);
        sp = g.spacing;
      } else {
        m = select_label(*in.nifti, label);
        sp = in.nifti->spacing;
      }
    };
    load(pin, pl, pmask, pspacing);
    load(rin, rl, rmask, rspacing);
    if (pmask.size() != rmask.size() || pmask.front().size() != rmask.front().size()) {
      if (pin.seg != rin.seg)
        std::fprintf(stderr,
                     "pacsnode evaluate: a SEG can only be compared with a NIfTI mask on the same voxel grid: %s is "
                     "%s (slices x rows x cols; a SEG spans its first to last frame), %s is %s\n",
                     pred.c_str(), shape_of(pmask).c_str(), ref.c_str(), shape_of(rmask).c_str());
      else
        std::fprintf(stderr, "pacsnode evaluate: shapes differ: %s is %s, %s is %s\n", pred.c_str(),
                     shape_of(pmask).c_str(), ref.c_str(), shape_of(rmask).c_str());
      return 1;
    }
  }
  const auto close = [](double x, double y) { return std::abs(x - y) <= 1e-3 * std::max(std::abs(x), std::abs(y)); };
  if (!close(pspacing.col, rspacing.col) || !close(pspacing.row, rspacing.row) ||
      !close(pspacing.slice, rspacing.slice))
    std::fprintf(stderr, "warning: voxel spacings differ; the reference's is used\n");
  const auto m = kernels::overlap_metrics(rmask, pmask, rspacing);
  std::printf(
      "{\n  \"pred\": \"%s\",\n  \"ref\": \"%s\",\n  \"spacing_mm\": [%s, %s, %s],\n  \"dice\": %s,\n  \"jaccard\": "
      "%s,\n"
      "  \"reference_voxels\": %lld,\n  \"test_voxels\": %lld,\n  \"intersection_voxels\": %lld,\n"
      "  \"reference_volume_mm3\": %s,\n  \"test_volume_mm3\": %s,\n  \"volume_difference_mm3\": %s,\n"
      "  \"relative_volume_difference\": %s,\n  \"hausdorff_mm\": %s,\n  \"hausdorff95_mm\": %s,\n"
      "  \"mean_surface_distance_mm\": %s\n}\n",
      jstr(pred.filename().string()).c_str(), jstr(ref.filename().string()).c_str(), num(rspacing.slice).c_str(),
      num(rspacing.row).c_str(), num(rspacing.col).c_str(), num(m.dice).c_str(), num(m.jaccard).c_str(),
      static_cast<long long>(m.reference_voxels), static_cast<long long>(m.test_voxels),
      static_cast<long long>(m.intersection_voxels), num(m.reference_volume_mm3).c_str(),
      num(m.test_volume_mm3).c_str(), num(m.volume_difference_mm3).c_str(), num(m.relative_volume_difference).c_str(),
      num(m.hausdorff_mm).c_str(), num(m.hausdorff95_mm).c_str(), num(m.mean_surface_distance_mm).c_str());
  return 0;
}

std::string metrics_json(const kernels::BinaryMetrics& m) {
  return fmt::format(
      "{{\"n\": {}, \"accuracy\": {}, \"sensitivity\": {}, \"specificity\": {}, \"roc_auc\": {}, \"threshold\": {}, "
      "\"tp\": {}, \"fp\": {}, \"tn\": {}, \"fn\": {}}}",
      m.counts.total(), num(m.accuracy), num(m.sensitivity), num(m.specificity), num(m.roc_auc), num(m.threshold),
      m.counts.true_positive, m.counts.false_positive, m.counts.true_negative, m.counts.false_negative);
}

int train(const TrainOptions& o) {
  const fs::path& features = o.features;
  const std::string& labels = o.labels;
  const fs::path& model = o.model;
  const int folds = o.folds;
  kernels::LabelSource src;
  // A path to an existing file is a labels file; anything else names a column of the features CSV.
  if (fs::is_regular_file(labels)) {
    src.file = labels;
    src.column = o.label_column;
  } else {
    src.column = labels;
  }
  kernels::TrainParams params;
  params.positive_label = o.positive;
  params.ignore_columns = {"segment_label", "series", "series_uid"};  // ids in analyze's features.csv
  if (o.ignore_given->count()) {
    params.ignore_columns.clear();
    std::string cur;
    for (char ch : o.ignore + ",") {
      if (ch == ',') {
        if (!cur.empty()) params.ignore_columns.push_back(cur);
        cur.clear();
      } else {
        cur += ch;
      }
    }
  }
  if (o.trees_given->count()) params.forest.n_trees = o.trees;
  if (o.seed_given->count()) params.seed = o.seed;
  if (!model.parent_path().empty()) fs::create_directories(model.parent_path());
  const auto r = kernels::train_random_forest(features, src, folds, params, model);
  std::fprintf(stderr, "%s\n", kernels::to_string(r).c_str());
  std::string per_fold;
  for (std::size_t i = 0; i < r.per_fold.size(); ++i) per_fold += (i ? ", " : "") + metrics_json(r.per_fold[i]);
  std::string names;
  for (std::size_t i = 0; i < r.feature_names.size(); ++i)
    names += fmt::format("{}\"{}\"", i ? ", " : "", jstr(r.feature_names[i]));
  std::printf(
      "{\n  \"model\": \"%s\",\n  \"positive_label\": \"%s\",\n  \"negative_label\": \"%s\",\n  \"samples\": %zu,\n"
      "  \"positives\": %zu,\n  \"folds\": %d,\n  \"features\": [%s],\n  \"cross_validated\": %s,\n"
      "  \"per_fold\": [%s]\n}\n",
      jstr(r.model_path.string()).c_str(), jstr(r.positive_label).c_str(), jstr(r.negative_label).c_str(), r.n_samples,
      r.n_positive, r.folds, names.c_str(), metrics_json(r.cross_validated).c_str(), per_fold.c_str());
  return 0;
}

// The offline commands print their results on stdout; log lines (spdlog's stock default logger
// writes to stdout) are moved to stderr so that stdout stays parseable. A daemon-configured
// logger (journald, stderr) is left alone.
void logs_to_stderr() {
  std::shared_ptr<spdlog::sinks::sink> err;
  auto fix = [&](const std::shared_ptr<spdlog::logger>& l) {
    if (!l) return;
    for (auto& s : l->sinks()) {
      const bool to_stdout = dynamic_cast<spdlog::sinks::ansicolor_stdout_sink_mt*>(s.get()) ||
                             dynamic_cast<spdlog::sinks::ansicolor_stdout_sink_st*>(s.get()) ||
                             dynamic_cast<spdlog::sinks::stdout_sink_mt*>(s.get()) ||
                             dynamic_cast<spdlog::sinks::stdout_sink_st*>(s.get());
      if (!to_stdout) continue;
      if (!err) {
        err = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
        err->set_level(s->level());
      }
      s = err;
    }
  };
  fix(spdlog::default_logger());
  spdlog::apply_all(fix);
}

// The action of an offline command: results on stdout, log lines moved to stderr.
template <typename Options>
cli::Action offline(std::shared_ptr<Options> o, int (*run)(const Options&)) {
  return [o, run] {
    logs_to_stderr();
    return run(*o);
  };
}

cli::Action setup_analyze(CLI::App& app) {
  auto o = std::make_shared<AnalyzeOptions>();
  app.add_option("INPUT", o->input, "folder of DICOM files (any layout) or one file")->required()->type_name("");
  app.add_option("--out", o->out,
                 "output folder: features.json, features.csv, <series>_preview.png, <series>_seg.dcm and "
                 "<series>_sr.dcm")
      ->required()
      ->type_name("DIR");
  app.add_option("--profile", o->profile, "force a profile (built in: ct-chest, generic); default: matched per series")
      ->type_name("NAME");
  app.add_flag("--no-dicom", o->no_dicom, "do not write SEG and SR");
  app.add_flag("--keep-empty-frames", o->keep_empty_frames, "write every SEG frame, also those whose mask is empty");
  app.add_flag("-q,--quiet", o->quiet, "no progress line and no summary table (errors and skipped inputs only)");
  app.add_option("--mask", o->mask,
                 "the region to measure instead of the profile's segmentation: a NIfTI-1 file on the series' grid, a "
                 "DICOM SEG or RTSTRUCT; or \"next-to\": the SEG or RTSTRUCT in INPUT that references the series. No "
                 "SEG/SR is written then")
      ->type_name("FILE|next-to");
  o->label_given = app.add_option("--label", o->label, "with --mask: label value (NIfTI), segment number (SEG) or ROI "
                                                       "number (RTSTRUCT); default: any non-zero / the only ROI")
                       ->type_name("N");
  app.add_option("--ibsi-config", o->ibsi_preset,
                 "IBSI CT phantom configuration A..E (interpolation, re-segmentation, discretisation, texture "
                 "dimension, IVH); the options below override parts of it")
      ->check(CLI::IsMember({"A", "B", "C", "D", "E", "a", "b", "c", "d", "e"}))
      ->type_name("A..E");
  app.add_option("--families", o->families,
                 "feature families (default: all): morphology, local_intensity, statistics, histogram, ivh, glcm, "
                 "glrlm, glszm, gldzm, ngtdm, ngldm")
      ->delimiter(',')
      ->type_name("LIST");
  app.add_option("--texture", o->texture, "texture aggregations: 3d (default), 2d (2D and 2.5D) or all")
      ->check(CLI::IsMember({"3d", "2d", "all"}))
      ->type_name("3d|2d|all");
  app.add_option("--spacing", o->spacing, "interpolate to this voxel size in mm before the features (in-plane only "
                                          "with --texture 2d); default: the original grid")
      ->check(CLI::PositiveNumber)
      ->type_name("MM");
  app.add_option("--interpolation", o->interpolation, "image interpolation with --spacing: linear (default), cubic, nearest")
      ->check(CLI::IsMember({"linear", "cubic", "nearest"}))
      ->type_name("METHOD");
  app.add_option("--reseg", o->reseg, "re-segmentation range MIN,MAX (also the fixed bin size's lower bound)")
      ->delimiter(',')
      ->expected(2)
      ->type_name("MIN,MAX");
  app.add_flag("--reseg-outliers", o->reseg_outliers, "re-segmentation: drop voxels beyond mean +- 3 SD");
  app.add_option("--discretisation", o->discretisation, "fbs (fixed bin size, default) or fbn (fixed bin number)")
      ->check(CLI::IsMember({"fbs", "fbn"}))
      ->type_name("fbs|fbn");
  app.add_option("--bin-width", o->bin_width, "fixed bin size (default 25; HU for CT)")->check(CLI::PositiveNumber)->type_name("W");
  app.add_option("--bins", o->bins, "fixed bin number (default 32)")->check(CLI::Range(2, 4096))->type_name("N");
  app.add_option("--config", o->config,
                 "the node's config file: profiles, worker limits and input limits ([limits], storage.max_instance_mb; a "
                 "file beyond them, or malformed, is listed as skipped with the reason); default: the embedded config")
      ->type_name("FILE");
  app.footer("Every series is decoded and analysed in a `pacsnode worker` child process; files that cannot be used\n"
             "are listed on stderr with the reason. On a terminal a progress line and, at the end, a table of the\n"
             "series are shown too. Exit 0 when at least one series was analysed.");
  return offline(o, analyze);
}

cli::Action setup_evaluate(CLI::App& app) {
  auto o = std::make_shared<EvaluateOptions>();
  app.add_option("--pred", o->pred, "the mask under test: NIfTI-1 (.nii, .nii.gz) or DICOM SEG")->required()->type_name("A");
  app.add_option("--ref", o->ref, "the reference mask (its voxel spacing is used)")->required()->type_name("B");
  o->label_given = app.add_option("--label", o->label, "compare label N of both (SEG: segment number N); default: "
                                                       "every non-zero voxel")->type_name("N");
  o->pred_label_given = app.add_option("--pred-label", o->pred_label, "label N of A only")->type_name("N");
  o->ref_label_given = app.add_option("--ref-label", o->ref_label, "label N of B only")->type_name("N");
  app.footer("SEGs may be BINARY or FRACTIONAL (thresholded at 0.5). Two SEGs are put on one grid in patient space\n"
             "(same orientation and pixel spacing; slices are the union of both SEGs' frame positions). A SEG and a\n"
             "NIfTI mask must have the same voxel grid. Prints Dice, Jaccard, volumes, Hausdorff, HD95, ASSD as JSON.");
  return offline(o, evaluate);
}

cli::Action setup_train(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  app.add_option("--features", o->features, "features CSV (e.g. analyze's features.csv)")->required()->type_name("CSV");
  app.add_option("--labels", o->labels,
                 "a column of CSV, or a CSV file whose --label-column gives each row's label")
      ->required()
      ->type_name("COLUMN_OR_FILE");
  app.add_option("--out", o->model, "model file (.yml, .yml.gz, .xml, .json)")->required()->type_name("MODEL");
  app.add_option("--folds", o->folds, "cross-validation folds")->capture_default_str()->check(CLI::Range(2, 1000))->type_name("K");
  app.add_option("--positive", o->positive, "the positive label (default: the larger of two numeric labels)")
      ->type_name("LABEL");
  app.add_option("--label-column", o->label_column, "label column of a labels file")->capture_default_str()->type_name("NAME");
  o->ignore_given = app.add_option("--ignore", o->ignore,
                                   "columns that are never features (default: segment_label,series,series_uid)")
                        ->type_name("COL,...");
  o->trees_given = app.add_option("--trees", o->trees, "trees in the forest")->check(CLI::PositiveNumber)->type_name("N");
  o->seed_given = app.add_option("--seed", o->seed, "random seed")->type_name("S");
  app.footer("Stratified k-fold cross-validated random forest (OpenCV RTrees): the metrics as text on stderr and as\n"
             "JSON on stdout; the model is trained on all rows.");
  return offline(o, train);
}

}  // namespace

cli::Command analyze_command() {
  return {"analyze", "analyse DICOM files for research: features, previews, SEG and SR per series",
          setup_analyze};
}
cli::Command evaluate_command() {
  return {"evaluate", "overlap metrics of two masks (DICOM SEG or NIfTI) as JSON", setup_evaluate};
}
cli::Command train_command() {
  return {"train", "random forest with stratified k-fold cross-validation on a features CSV", setup_train};
}

int analyze_main(const std::vector<std::string>& args) { return cli::run_one("pacsnode", analyze_command(), args); }
int evaluate_main(const std::vector<std::string>& args) { return cli::run_one("pacsnode", evaluate_command(), args); }
int train_main(const std::vector<std::string>& args) { return cli::run_one("pacsnode", train_command(), args); }

}  // namespace analysis
