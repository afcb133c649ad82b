// Benchmark of SEG writing (dicom::write_seg) on the labels of a real ct-chest analysis.
//
// usage: bench_seg SERIES_DIR [OUT_DIR] [RUNS] [new|reference|both]   (default both; one path for perf)
//
// SERIES_DIR is a CT series, e.g. a 300x512x512 phantom from
//   /usr/bin/python3 ../shared/tools/make_ct_phantom.py DIR --slices 300 --size 512
// The ct-chest profile runs once on it, as bench_pipeline does (decode, Pipeline::run, the
// volume's pixels released), then seg_spec_for() gives the SEG spec that `pacsnode analyze`
// writes (label map, also_labels of the body, codes, sources), and write_seg() writes it RUNS
// times (default 5) to OUT_DIR/write_seg.dcm, alternating with dicom::write_seg_reference (every
// frame through dcmseg, as write_seg did before) to OUT_DIR/write_seg_reference.dcm; best, median
// and worst of each are printed, and the ratio of the bests. The pipeline's own time is not part of
// the measurement.
// SPDLOG_LEVEL=debug shows write_seg's phases (debug log of the "seg" logger).
// Machine-readable lines start with "@ " (key value).
#include <fmt/format.h>
#include <spdlog/cfg/env.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/pipeline.h"
#include "analysis/results.h"
#include "dicom/seg_builder.h"

namespace fs = std::filesystem;
using namespace analysis;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_seg SERIES_DIR [OUT_DIR] [RUNS] [new|reference|both]\n");
    return 2;
  }
  const fs::path series = argv[1];
  const fs::path out = argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path() / "pacsnode-bench-seg";
  const int runs = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
  const std::string which = argc > 4 ? argv[4] : "both";
  if (which != "new" && which != "reference" && which != "both") {
    std::fprintf(stderr, "bench_seg: the fourth argument is new, reference or both\n");
    return 2;
  }
  fs::create_directories(out);
  analysis::keep_freed_memory_for_reuse();  // as the worker and `pacsnode analyze` do
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL=debug: write_seg logs where its time went

  StudyContext study = decode_folder(series);
  if (study.volumes.size() != 1) {
    std::fprintf(stderr, "expected one volume in %s, got %zu\n", series.c_str(), study.volumes.size());
    return 1;
  }
  const Pipeline pipeline;
  SeriesContext c;
  c.volume = std::move(study.volumes[0]);
  c.profile = pipeline.select({}, "ct-chest");
  c.out_dir = out;
  pipeline.run(c);
  c.volume.slices.clear();  // as analyze does: the SEG needs labels, geometry and sources only
  c.volume.slices.shrink_to_fit();
  const dicom::SegSpec spec = seg_spec_for(c);
  std::printf("label map %zu x %d x %d, %zu segments:", spec.label_map.size(), spec.label_map.front().rows,
              spec.label_map.front().cols, spec.segments.size());
  for (const auto& s : spec.segments) std::printf(" '%s'", s.label.c_str());
  std::printf("\n");

  // Both encodings, alternating, so that load from other processes hits neither alone.
  struct Timed {
    const char* name;
    dicom::WrittenObject (*write)(const dicom::SegSpec&, const fs::path&);
    std::vector<double> ms;
    dicom::WrittenObject w;
  };
  Timed paths[] = {{"write_seg", &dicom::write_seg, {}, {}},
                   {"write_seg_reference", &dicom::write_seg_reference, {}, {}}};
  const bool use[] = {which != "reference", which != "new"};
  for (int i = 0; i < runs; ++i)
    for (auto& p : paths) {
      if (!use[&p - paths]) continue;
      const Stopwatch sw;
      p.w = p.write(spec, out / (std::string(p.name) + ".dcm"));
      p.ms.push_back(sw.ms());
      std::printf("  run %d: %-20s %8.1f ms\n", i + 1, p.name, p.ms.back());
    }
  for (auto& p : paths) {
    if (p.ms.empty()) continue;
    auto& ms = p.ms;
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    std::printf("%-20s best %.1f ms, median %.1f ms, worst %.1f ms of %d runs; %d frames, %.1f MiB\n", p.name,
                ms.front(), median, ms.back(), runs, p.w.number_of_frames, fs::file_size(p.w.path) / (1024.0 * 1024.0));
    std::printf("@ %s.best_ms %.3f\n@ %s.median_ms %.3f\n@ %s.worst_ms %.3f\n@ %s.frames %d\n", p.name, ms.front(),
                p.name, median, p.name, ms.back(), p.name, p.w.number_of_frames);
  }
  if (which != "both") return 0;
  std::printf("speed-up (best of each): %.2fx\n@ speedup %.3f\n", paths[1].ms.front() / paths[0].ms.front(),
              paths[1].ms.front() / paths[0].ms.front());
  return 0;
}
