// Benchmark of the IBSI 1 feature families (analysis/kernels/ibsi/) on one region of interest.
//
// usage: bench_radiomics IMAGE.nii.gz MASK.nii.gz [--texture 3d|2d|all] [--bin-width W]
//                        [--reseg MIN,MAX] [--runs N] [--json OUT] [--threads N] [--families a,b,...]
//
// The image and the mask (non-zero = ROI) are NIfTI-1 files on one grid (bench/radiomics.sh
// writes a 300x512x512 chest phantom and its lungs). Steps: prepare_roi (original grid, no
// re-segmentation unless --reseg: the ROI's bounding box plus the local intensity margin),
// discretise (fixed bin size W, default 25, from the re-segmentation's MIN, else the ROI minimum),
// then every family. The first run is the
// "cold" one (fresh process: first touch of every buffer); then RUNS - 1 more (default 3 in all);
// per family the best of the runs is printed as well; cpu_* lines: the process CPU time of a step. Machine-readable lines start with "@ ".
// --families limits the run to some families (names as `pacsnode analyze --families`; for profiling one).
// --json writes the features of the last run (tag -> value), for comparison with the Python peer.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core/utility.hpp>

#include "analysis/kernels/ibsi/processing.h"
#include "analysis/kernels/ibsi/radiomics.h"
#include "analysis/kernels/nifti.h"
#include "analysis/pipeline.h"

namespace ib = analysis::kernels::ibsi;
using Clock = std::chrono::steady_clock;

// CPU time of the process (all threads), s: less disturbed than wall time on a shared machine.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_radiomics IMAGE.nii.gz MASK.nii.gz [--texture 3d|2d|all] [--bin-width W] "
                         "[--reseg MIN,MAX] [--runs N] [--json OUT] [--threads N] [--families a,b,...]\n");
    return 2;
  }
  std::string texture = "3d", json_out;
  double bin_width = 25;
  std::optional<double> reseg_min, reseg_max;
  int runs = 3;
  std::vector<ib::Family> families;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--texture") texture = v;
    else if (k == "--bin-width") bin_width = std::stod(v);
    else if (k == "--reseg" && v.find(',') != std::string::npos) {
      reseg_min = std::stod(v.substr(0, v.find(',')));
      reseg_max = std::stod(v.substr(v.find(',') + 1));
    }
    else if (k == "--runs") runs = std::max(1, std::stoi(v));
    else if (k == "--json") json_out = v;
    else if (k == "--threads") cv::setNumThreads(std::stoi(v));
    else if (k == "--families") {
      for (std::size_t a = 0; a <= v.size();) {
        const std::size_t b = std::min(v.find(',', a), v.size());
        families.push_back(ib::parse_family(std::string_view(v).substr(a, b - a)));
        a = b + 1;
      }
    }
    else {
      std::fprintf(stderr, "bench_radiomics: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  analysis::keep_freed_memory_for_reuse();  // as the worker and `pacsnode analyze` do
  const auto image = analysis::kernels::read_nifti(argv[1]);
  const auto mask = analysis::kernels::read_nifti_mask(argv[2]);
  ib::ProcessingSettings proc;
  proc.discretisation.method = ib::Discretisation::Method::fixed_bin_size;
  proc.discretisation.bin_width = bin_width;
  proc.discretisation.lower_bound = reseg_min;
  proc.resegmentation.min = reseg_min;
  proc.resegmentation.max = reseg_max;
  proc.image_diagnostics = false;
  ib::FeatureSettings fs;
  fs.scope = {texture != "3d", texture != "2d"};
  if (!families.empty()) fs.families = families;
  fs.ivh = ib::ivh_options_for({}, proc.resegmentation);  // integer HU, step 1, over the range
  std::size_t roi_voxels = 0;
  for (const auto& m : mask) roi_voxels += static_cast<std::size_t>(cv::countNonZero(m));
  std::printf("image %dx%dx%zu, ROI %zu voxels, texture %s, FBS %g, %d threads\n", image.slices.front().cols,
              image.slices.front().rows, image.slices.size(), roi_voxels, texture.c_str(), bin_width, cv::getNumThreads());
  std::printf("@ roi_voxels %zu\n", roi_voxels);

  std::map<std::string, std::vector<double>> times;  // step -> seconds per run
  ib::Features last;
  for (int run = 0; run < runs; ++run) {
    const double c0 = cpu_seconds();
    const auto t0 = Clock::now();
    const ib::RoiImage roi = ib::prepare_roi(image.slices, mask, image.spacing, proc);
    const auto t1 = Clock::now();
    const double c1 = cpu_seconds();
    const ib::Levels levels = ib::discretise(roi, proc.discretisation);
    const auto t2 = Clock::now();
    const double c2 = cpu_seconds();
    std::vector<ib::FamilyTime> ft;
    last = ib::compute_features(roi, levels, fs, &ft);
    const auto t3 = Clock::now();
    const double c3 = cpu_seconds();
    times["cpu_prepare"].push_back(c1 - c0);
    times["cpu_discretise"].push_back(c2 - c1);
    times["cpu_features"].push_back(c3 - c2);
    times["prepare"].push_back(std::chrono::duration<double>(t1 - t0).count());
    times["discretise"].push_back(std::chrono::duration<double>(t2 - t1).count());
    for (const auto& f : ft) times[f.step].push_back(f.seconds);
    times["total"].push_back(std::chrono::duration<double>(t3 - t0).count());
    if (run == 0) std::printf("ng %d, %zu features\n", levels.ng, last.size());
  }
  std::printf("%-16s %10s %10s\n", "step", "cold s", "best s");
  for (const auto& [step, t] : times) {
    const double best = *std::min_element(t.begin(), t.end());
    std::printf("%-16s %10.3f %10.3f\n", step.c_str(), t.front(), best);
    std::printf("@ %s_cold %.4f\n@ %s_best %.4f\n", step.c_str(), t.front(), step.c_str(), best);
  }
  if (!json_out.empty()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& f : last) j[f.tag] = f.value;
    std::ofstream(json_out) << j.dump(1) << "\n";
  }
  return 0;
}
