// Benchmark of the ct-chest profile on a chest-like CT (bench/pipeline.sh makes a 300x512x512
// series with ../shared/tools/make_ct_phantom.py and runs the ITK and SciPy peers next to this).
//
// usage: bench_pipeline [--mode profile|lfl|all] [--mask-out FILE] SERIES_DIR [OUT_DIR]
//
// One mode per process, so that "cold" means a process that has run nothing before:
// --mode profile: the whole profile: decode, preprocess (median 3x3), segment (body, lungs, bone),
//    features (IBSI on lungs and bone), classify, display (PNG preview); then SEG + SR, reported
//    separately; then, for scale, what faulting in a fresh mapping the size of the int16 volume
//    costs here. The peak RSS is the profile's.
// --mode lfl: the peers' steps, like for like: decode, median 3x3, threshold < -400 HU, 3D
//    components (6-connected, as scipy.ndimage.label's default and ITK's ConnectedComponent-
//    ImageFilter with FullyConnected off) with components touching the in-plane border dropped.
//    Twice: "cold" first thing in the process (every block freshly mapped and faulted in, as for a
//    study that arrives while the daemon is idle, or `pacsnode analyze` on one series), then
//    "reused" with the blocks the cold run freed (as for the next of several series in a row).
//    --mask-out writes the cold run's kept mask (raw uint8 0/1, slices in ascending position along
//    the slice normal, rows x columns row-major: the layout of bench/itk_peer), after its timing.
// --mode all: profile, then lfl in the same process (the old behaviour: its "cold" run is not cold
//    in the process sense, only after release_cached_planes()).
// Machine-readable lines start with "@ " (key value); pipeline.sh turns them into ratios.
#include <fmt/format.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <string>

#include "analysis/kernels/preprocess.h"
#include "analysis/kernels/segment.h"
#include "analysis/pipeline.h"
#include "analysis/results.h"
#include "dicom/volume.h"

namespace fs = std::filesystem;
using namespace analysis;

namespace {

double peak_rss_mb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux: kB
}

void emit(const std::string& key, double v) { std::printf("@ %s %.3f\n", key.c_str(), v); }

// The peer's steps on our side, each timed; keys "<prefix>.decode_ms" etc.
// Raw uint8 0/1 mask, slices in ascending position along the slice normal (bench/itk_peer's layout).
void write_mask(const Mask& mask, const dicom::Volume& v, const fs::path& path) {
  const auto along = [&](const dicom::Vec3& p) {
    return p[0] * v.geom.normal[0] + p[1] * v.geom.normal[1] + p[2] * v.geom.normal[2];
  };
  const bool ascending = v.sources.empty() || along(v.sources.back().position) >= along(v.sources.front().position);
  std::ofstream out(path, std::ios::binary);
  cv::Mat row01;
  for (std::size_t k = 0; k < mask.size(); ++k) {
    const cv::Mat& s = mask[ascending ? k : mask.size() - 1 - k];
    cv::min(s, 1, row01);  // 0/1 (select_components writes 1; be explicit)
    for (int r = 0; r < row01.rows; ++r) out.write(row01.ptr<char>(r), row01.cols);
  }
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

void like_for_like(const fs::path& series, const std::string& prefix, const char* what,
                   const fs::path& mask_out = {}) {
  std::printf("\npeer's steps (ours), %s:\n", what);
  Stopwatch sw;
  StudyContext study = decode_folder(series);
  const double decode_ms = sw.ms();
  auto& slices = study.volumes.at(0).slices;
  sw = Stopwatch();
  kernels::median_filter(slices, 3);
  const double median_ms = sw.ms();
  sw = Stopwatch();
  Mask air = kernels::threshold(slices, {-1e30, -400.5});  // < -400 on integer HU
  const double threshold_ms = sw.ms();
  sw = Stopwatch();
  const auto comps = kernels::label_components(air, kernels::Connectivity::c6);
  std::vector<bool> keep(comps.count());
  for (std::size_t i = 0; i < comps.count(); ++i) keep[i] = !comps.components[i].touches_inplane_border;
  kernels::select_components(air, comps, keep);
  const double components_ms = sw.ms();
  const auto kept = kernels::count_nonzero(air);
  const double lung_ml = kept * study.volumes[0].voxel_volume_mm3() / 1000.0;
  std::printf(
      "  decode %.1f ms, median %.1f ms, threshold %.1f ms, components+border drop %.1f ms "
      "(%zu components, %zu voxels = %.1f ml kept)\n",
      decode_ms, median_ms, threshold_ms, components_ms, comps.count(), kept, lung_ml);
  emit(prefix + ".decode_ms", decode_ms);
  emit(prefix + ".median_ms", median_ms);
  emit(prefix + ".threshold_ms", threshold_ms);
  emit(prefix + ".components_ms", components_ms);
  emit(prefix + ".segment_ms", threshold_ms + components_ms);
  emit(prefix + ".total_ms", decode_ms + median_ms + threshold_ms + components_ms);
  emit(prefix + ".lung_ml", lung_ml);
  emit(prefix + ".components", static_cast<double>(comps.count()));
  emit(prefix + ".kept_voxels", static_cast<double>(kept));
  if (!mask_out.empty()) write_mask(air, study.volumes[0], mask_out);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ct-chest profile and like-for-like steps on one CT series (bench/pipeline.sh)"};
  std::string mode = "all";
  fs::path series, out = fs::temp_directory_path() / "pacsnode-bench-pipeline", mask_out;
  app.add_option("--mode", mode, "profile: whole profile + SEG/SR; lfl: like-for-like, cold then reused; all: both")
      ->check(CLI::IsMember({"profile", "lfl", "all"}))
      ->capture_default_str();
  app.add_option("--mask-out", mask_out, "lfl: write the cold run's kept mask here (raw uint8, bench/itk_peer layout)");
  app.add_option("SERIES_DIR", series, "folder of one CT series")->required()->check(CLI::ExistingDirectory);
  app.add_option("OUT_DIR", out, "where SEG, SR and preview go")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  fs::create_directories(out);
  analysis::keep_freed_memory_for_reuse();  // as the worker and `pacsnode analyze` do

  std::printf("OpenCV threads: %d, CPUs: %d\n", cv::getNumThreads(), cv::getNumberOfCPUs());
  if (mode == "lfl") {  // first thing in this process: cold is cold
    like_for_like(series, "lfl_cold", "cold: first run in a fresh process", mask_out);
    like_for_like(series, "lfl", "reused: blocks freed by the cold run");
    return 0;
  }

  // ---- 1. whole ct-chest profile
  double volume_mb = 0;
  {
    const Stopwatch total;
    StudyContext study = decode_folder(series);
    if (study.volumes.size() != 1) {
      std::fprintf(stderr, "expected one volume in %s, got %zu\n", series.c_str(), study.volumes.size());
      return 1;
    }
    const Pipeline pipeline;
    const Profile* profile = pipeline.select({}, "ct-chest");
    SeriesContext c;
    c.volume = std::move(study.volumes[0]);
    c.profile = profile;
    c.out_dir = out;
    const auto& v = c.volume;
    volume_mb = static_cast<double>(v.depth()) * v.rows() * v.cols() * 2 / (1024.0 * 1024.0);
    std::printf("volume: %d x %d x %d, type %s, int16 size %.1f MiB\n", v.depth(), v.rows(), v.cols(),
                v.slices.front().type() == CV_16S ? "CV_16S" : "other", volume_mb);
    pipeline.run(c);
    const double total_ms = total.ms();
    const double rss = peak_rss_mb();
    std::printf("\nct-chest profile (ours):\n");
    const double decode_ms = study.timings.front().ms;
    std::printf("  %-12s %9.1f ms\n", "decode", decode_ms);
    emit("profile.decode_ms", decode_ms);
    for (const auto& t : c.timings) {
      std::printf("  %-12s %9.1f ms\n", t.stage.c_str(), t.ms);
      emit("profile." + t.stage + "_ms", t.ms);
    }
    std::printf("  %-12s %9.1f ms\n", "total", total_ms);
    emit("profile.total_ms", total_ms);
    for (const auto& s : c.segments) {
      const auto get = [&](const char* k) {
        const auto it = s.features.find(k);
        return it == s.features.end() ? 0.0 : it->second;
      };
      std::printf("  segment %-10s %9.1f ml  mean %7.1f HU  LAA-950 %5.2f %%\n", s.name.c_str(), get("volume_ml"),
                  get("mean_hu"), get("laa950_percent"));
    }
    std::printf("  peak RSS %.1f MiB = %.2f x the int16 volume (target <= 3.00)\n", rss, rss / volume_mb);
    emit("profile.peak_rss_mb", rss);
    emit("volume_int16_mb", volume_mb);

    c.volume.slices.clear();  // as analyze does: the SEG needs labels, geometry and sources only
    c.volume.slices.shrink_to_fit();
    const Stopwatch segsr;
    const auto files = write_seg_and_sr(c, out);
    const double segsr_ms = segsr.ms();
    std::printf("  SEG + SR     %9.1f ms (%s, %s), peak RSS after %.1f MiB = %.2f x\n", segsr_ms,
                files.seg.filename().c_str(), files.sr.filename().c_str(), peak_rss_mb(), peak_rss_mb() / volume_mb);
    emit("seg_sr_ms", segsr_ms);
    emit("peak_rss_after_seg_sr_mb", peak_rss_mb());
  }

  // ---- 2. page-fault cost of a fresh mapping of the volume's size, on both threads
  {
    const Stopwatch sw;
    cv::Mat fresh(static_cast<int>(volume_mb * 8), 128 * 1024, CV_8U);  // volume_mb MiB, not yet touched
    cv::parallel_for_(cv::Range(0, fresh.rows), [&](const cv::Range& r) {
      for (int i = r.start; i < r.end; ++i)
        for (int c = 0; c < fresh.cols; c += 4096) fresh.at<uchar>(i, c) = 1;
    });
    std::printf("\nfaulting in %.0f MiB of fresh memory (2 threads): %.1f ms\n", volume_mb, sw.ms());
    emit("fault_volume_ms", sw.ms());
  }

  // ---- 3. (--mode all) the peers' steps after the profile: cold memory, then reused blocks
  if (mode == "all") {
    dicom::release_cached_planes();
    like_for_like(series, "lfl_cold", "cold memory: every block freshly mapped (after the profile)", mask_out);
    like_for_like(series, "lfl", "reused: blocks freed by the cold run");
  }
  return 0;
}
