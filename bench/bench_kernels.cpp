// Per-slice kernels against their practical floor (issue 17).
//
// usage: bench_kernels SERIES_DIR [REPS [ONLY]]   (ONLY: run the kernels whose name contains it)
//
// SERIES_DIR: a CT series, e.g. the 300x512x512 one of
//   /usr/bin/python3 ../shared/tools/make_ct_phantom.py DIR --slices 300 --size 512
// loaded with decode_folder (as bench_pipeline does), so the volume is int16 HU with the header's
// spacing. For every kernel: "ours" is the analysis::kernels call the pipeline makes; "floor" is
// OpenCV's own kernel over the same volume, slices on all OpenCV threads (cv::parallel_for_ over
// slices, preallocated outputs, no extra passes). Times are the best of REPS (default 7); in-place
// kernels get a fresh copy of their input before each run, outside the timing. The single-thread
// columns are the same with cv::setNumThreads(1), for reference.
// Machine-readable lines start with "@ " (kernel ours_ms floor_ms ratio).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <thread>

#include "analysis/kernels/preprocess.h"
#include "analysis/kernels/segment.h"
#include "analysis/pipeline.h"
#include "analysis/profile.h"
#include "analysis/stages/recipes.h"
#include "dicom/volume.h"

namespace fs = std::filesystem;
namespace k = analysis::kernels;
using analysis::Stopwatch;
using analysis::LabelVolume;
using analysis::Mask;

namespace {

using Stack = std::vector<cv::Mat>;

// A contiguous stack shaped like `like` (as decode and the kernels allocate).
Stack make_stack(const Stack& like, int type) {
  const int depth = static_cast<int>(like.size()), rows = like.front().rows, cols = like.front().cols;
  const cv::Mat block = dicom::allocate_planes(depth, rows, cols, type, true);
  Stack out(like.size());
  for (int z = 0; z < depth; ++z) out[static_cast<std::size_t>(z)] = block.rowRange(z * rows, (z + 1) * rows);
  return out;
}

void copy_stack(const Stack& from, Stack& to) {
  cv::parallel_for_(cv::Range(0, static_cast<int>(from.size())), [&](const cv::Range& r) {
    for (int z = r.start; z < r.end; ++z) from[static_cast<std::size_t>(z)].copyTo(to[static_cast<std::size_t>(z)]);
  });
}

void slices(const Stack& s, const std::function<void(std::size_t)>& f) {
  cv::parallel_for_(cv::Range(0, static_cast<int>(s.size())), [&](const cv::Range& r) {
    for (int z = r.start; z < r.end; ++z) f(static_cast<std::size_t>(z));
  });
}

// Best of `reps` runs of `run`, each after an untimed `prepare`.
double best_of(int reps, const std::function<void()>& prepare, const std::function<void()>& run) {
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < reps; ++i) {
    prepare();
    const Stopwatch sw;
    run();
    best = std::min(best, sw.ms());
  }
  return best;
}

struct Case {
  std::string name;
  std::function<void()> prepare_ours, ours, floor;
};

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string s;
  std::getline(f, s);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_kernels SERIES_DIR [REPS [ONLY]]\n");
    return 2;
  }
  const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 7;
  const std::string only = argc > 3 ? argv[3] : "";
  analysis::keep_freed_memory_for_reuse();  // as the worker does
  analysis::StudyContext study = analysis::decode_folder(argv[1]);
  if (study.volumes.size() != 1) {
    std::fprintf(stderr, "expected one volume in %s, got %zu\n", argv[1], study.volumes.size());
    return 1;
  }
  const auto& vol = study.volumes.front();
  const Stack& hu = vol.slices;
  const analysis::Spacing sp = analysis::spacing_of(vol.geom);
  const int threads = cv::getNumThreads();
  std::printf("volume %d x %d x %d %s, spacing %.3f x %.3f x %.3f mm (decode_folder of %s)\n", vol.depth(),
              vol.rows(), vol.cols(), hu.front().type() == CV_16S ? "CV_16S" : "other", sp.col, sp.row, sp.slice,
              argv[1]);
  std::printf("nproc %u, OpenCV threads %d, loadavg %s, best of %d\n", std::thread::hardware_concurrency(), threads,
              loadavg().c_str(), reps);

  Stack work = make_stack(hu, CV_16S), out16 = make_stack(hu, CV_16S), res_out;
  const Mask body = k::threshold(hu, k::hu::body);  // the body with its lungs as holes
  Mask mwork = make_stack(hu, CV_8U), mout = make_stack(hu, CV_8U), mtmp = make_stack(hu, CV_8U);
  const auto reset16 = [&] { copy_stack(hu, work); };
  const auto reset_mask = [&] { copy_stack(body, mwork); };
  const auto none = [] {};

  std::vector<Case> cases;
  for (int ks : {3, 5}) {
    cases.push_back({fmt::format("median{}x{}", ks, ks), reset16, [&, ks] { k::median_filter(work, ks); },
                     [&, ks] { slices(hu, [&](std::size_t z) { cv::medianBlur(hu[z], out16[z], ks); }); }});
  }
  const auto breaks = analysis::recipes::chest_level_breaks(analysis::ChestParams{});
  LabelVolume levels;
  cases.push_back({"level_map+median3", none, [&] { levels = k::level_map(hu, breaks, 3); },
                   [&] { slices(hu, [&](std::size_t z) { cv::medianBlur(hu[z], out16[z], 3); }); }});
  {
    const double sigma = 1.0;  // mm
    const double sx = sigma / sp.col, sy = sigma / sp.row;
    const cv::Size ksz(2 * static_cast<int>(std::ceil(3 * sx)) + 1, 2 * static_cast<int>(std::ceil(3 * sy)) + 1);
    cases.push_back({"gaussian1mm", reset16, [&, sigma] { k::gaussian_filter(work, sp, sigma); }, [&, sx, sy, ksz] {
                       slices(hu, [&](std::size_t z) {
                         cv::GaussianBlur(hu[z], out16[z], ksz, sx, sy, cv::BORDER_REFLECT_101);
                       });
                     }});
  }
  {
    const double target = 1.0;  // mm
    const int nc = std::max(1, static_cast<int>(std::lround(vol.cols() * sp.col / target)));
    const int nr = std::max(1, static_cast<int>(std::lround(vol.rows() * sp.row / target)));
    {
      const cv::Mat block = dicom::allocate_planes(vol.depth(), nr, nc, CV_16S, true);
      for (int z = 0; z < vol.depth(); ++z) res_out.push_back(block.rowRange(z * nr, (z + 1) * nr));
    }
    cases.push_back({"resample1mm", reset16,
                     [&, target] {
                       analysis::Spacing s = sp;
                       k::resample_inplane(work, s, target, target);
                     },
                     [&, nr, nc] {
                       slices(hu, [&](std::size_t z) {
                         cv::resize(hu[z], res_out[z], cv::Size(nc, nr), 0, 0, cv::INTER_LINEAR);
                       });
                     }});
    // resample_inplane replaces the slices: give `work` its shape back before the next case.
  }
  cases.push_back({"threshold", none, [&] { k::threshold_into(hu, {-1e30, -400.5}, mwork); }, [&] {
                     slices(hu, [&](std::size_t z) { cv::inRange(hu[z], cv::Scalar(-32768), cv::Scalar(-401), mout[z]); });
                   }});
  const k::StructuringElement se2{2, 2, 0, k::Footprint::ellipse};
  const cv::Mat ell = cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(5, 5));
  cases.push_back({"open_r2", reset_mask, [&] { k::open(mwork, se2); }, [&] {
                     slices(body, [&](std::size_t z) {
                       cv::erode(body[z], mtmp[z], ell);
                       cv::dilate(mtmp[z], mout[z], ell);
                     });
                   }});
  cases.push_back({"close_r2", reset_mask, [&] { k::close(mwork, se2); }, [&] {
                     slices(body, [&](std::size_t z) {
                       cv::dilate(body[z], mtmp[z], ell);
                       cv::erode(mtmp[z], mout[z], ell);
                     });
                   }});
  {
    const int rows = vol.rows(), cols = vol.cols();
    cases.push_back({"fill_holes_2d", reset_mask, [&] { k::fill_holes_2d(mwork); }, [&, rows, cols] {
                       // Floor: OpenCV's flood fill from the border of a padded copy, per slice.
                       cv::parallel_for_(cv::Range(0, static_cast<int>(body.size())), [&](const cv::Range& r) {
                         cv::Mat pad(rows + 2, cols + 2, CV_8U);
                         for (int z = r.start; z < r.end; ++z) {
                           pad.setTo(0);  // the previous fill marked the frame
                           body[static_cast<std::size_t>(z)].copyTo(pad(cv::Rect(1, 1, cols, rows)));
                           cv::floodFill(pad, cv::Point(0, 0), cv::Scalar(2), nullptr, cv::Scalar(0), cv::Scalar(0), 4);
                         }
                       });
                     }});
  }
  cases.push_back({"binarise", reset_mask, [&] { k::binarise(mwork); }, [&] {
                     slices(body, [&](std::size_t z) { cv::compare(body[z], 0, mout[z], cv::CMP_NE); });
                   }});

  std::printf("\n%-18s %9s %9s %7s %10s %12s %12s\n", "kernel", "ours_ms", "floor_ms", "ratio", "target<=1.5",
              "ours_1t_ms", "floor_1t_ms");
  for (auto& c : cases) {
    if (c.name.find(only) == std::string::npos) continue;
    const auto prep = [&] {
      if (work.front().size() != hu.front().size()) work = make_stack(hu, CV_16S);
      c.prepare_ours();
    };
    cv::setNumThreads(threads);
    const double ours = best_of(reps, prep, c.ours);
    const double floor = best_of(reps, [] {}, c.floor);
    cv::setNumThreads(1);
    const double ours1 = best_of(std::min(reps, 3), prep, c.ours);
    const double floor1 = best_of(std::min(reps, 3), [] {}, c.floor);
    cv::setNumThreads(threads);
    const double ratio = ours / floor;
    std::printf("%-18s %9.1f %9.1f %7.2f %10s %12.1f %12.1f\n", c.name.c_str(), ours, floor, ratio,
                ratio <= 1.5 ? "yes" : "NO", ours1, floor1);
    std::printf("@ %s %.3f %.3f %.3f\n", c.name.c_str(), ours, floor, ratio);
    std::fflush(stdout);
  }
  std::printf("\nloadavg after: %s\n", loadavg().c_str());
  return 0;
}
