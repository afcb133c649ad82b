#include "analysis/kernels/ibsi/radiomics.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <span>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/core/utility.hpp>

#include "analysis/kernels/ibsi/glcm.h"
#include "analysis/kernels/ibsi/glrlm.h"
#include "analysis/kernels/ibsi/morphology.h"
#include "analysis/kernels/ibsi/neighbourhood.h"
#include "analysis/kernels/ibsi/zones.h"

namespace analysis::kernels::ibsi {
namespace {

constexpr Aggregation kPerDirection[] = {Aggregation::d2_avg,  Aggregation::d2_comb, Aggregation::d25_avg,
                                         Aggregation::d25_comb, Aggregation::d3_avg, Aggregation::d3_comb};
constexpr Aggregation kSingleMatrix[] = {Aggregation::d2, Aggregation::d25, Aggregation::d3};

std::string_view aggregation_name(Aggregation a) {
  switch (a) {
    case Aggregation::d2_avg: return "2D, averaged";
    case Aggregation::d2_comb: return "2D, slice-merged";
    case Aggregation::d25_avg: return "2.5D, direction-merged";
    case Aggregation::d25_comb: return "2.5D, merged";
    case Aggregation::d3_avg: return "3D, averaged";
    case Aggregation::d3_comb: return "3D, merged";
    case Aggregation::d2: return "2D";
    case Aggregation::d25: return "2.5D";
    case Aggregation::d3: return "3D";
  }
  return "";
}

struct FamilyInfo {
  Family family;
  std::span<const FeatureDef> (*definitions)();
  std::span<const Aggregation> aggregations;  // empty: not a texture family
};

const std::vector<FamilyInfo>& families() {
  static const std::vector<FamilyInfo> f{
      {Family::morphology, morphology_definitions, {}},
      {Family::local_intensity, local_intensity_definitions, {}},
      {Family::statistics, statistics_definitions, {}},
      {Family::histogram, histogram_definitions, {}},
      {Family::ivh, ivh_definitions, {}},
      {Family::glcm, glcm_definitions, kPerDirection},
      {Family::glrlm, glrlm_definitions, kPerDirection},
      {Family::glszm, glszm_definitions, kSingleMatrix},
      {Family::gldzm, gldzm_definitions, kSingleMatrix},
      {Family::ngtdm, ngtdm_definitions, kSingleMatrix},
      {Family::ngldm, ngldm_definitions, kSingleMatrix},
  };
  return f;
}

}  // namespace

std::string_view to_string(Family f) {
  switch (f) {
    case Family::morphology: return "morphology";
    case Family::local_intensity: return "local_intensity";
    case Family::statistics: return "statistics";
    case Family::histogram: return "histogram";
    case Family::ivh: return "ivh";
    case Family::glcm: return "glcm";
    case Family::glrlm: return "glrlm";
    case Family::glszm: return "glszm";
    case Family::gldzm: return "gldzm";
    case Family::ngtdm: return "ngtdm";
    case Family::ngldm: return "ngldm";
  }
  return "";
}

Family parse_family(std::string_view name) {
  std::string all;
  for (Family f : kAllFamilies) {
    if (to_string(f) == name) return f;
    all += fmt::format("{}{}", all.empty() ? "" : ", ", to_string(f));
  }
  throw std::invalid_argument(fmt::format("unknown feature family \"{}\" (one of: {})", name, all));
}

IvhOptions ivh_options_for(const Discretisation& d, const Resegmentation& r) {
  IvhOptions o;
  switch (d.method) {
    case Discretisation::Method::none:
      o.method = IvhOptions::Method::none;
      o.step = 1;
      o.lower = r.min;
      o.upper = r.max;
      break;
    case Discretisation::Method::fixed_bin_size:
      o.method = IvhOptions::Method::fixed_bin_size;
      o.bin_width = d.bin_width;
      o.lower = d.lower_bound ? d.lower_bound : r.min;
      o.upper = r.max;
      break;
    case Discretisation::Method::fixed_bin_number:
      o.method = IvhOptions::Method::fixed_bin_number;
      o.bins = d.bins;
      break;
  }
  return o;
}

bool FeatureSettings::has(Family f) const { return std::find(families.begin(), families.end(), f) != families.end(); }

namespace {

// A step of compute_features, not yet run; it refers to the ROI, levels and settings it was made
// from, which outlive it.
struct FeatureTask {
  std::string step;  // as in FamilyTime
  double cost = 0;   // for scheduling only: the step's rough wall time on this ROI (relative)
  std::function<void(Features&)> run;
  Features out;
  double seconds = 0;
  std::exception_ptr error;
};

// The steps for `s` on this ROI, in catalogue order. Throws std::invalid_argument on an empty ROI or
// inconsistent inputs.
std::vector<FeatureTask> feature_tasks(const RoiImage& roi, const Levels& levels, const FeatureSettings& s) {
  check_roi(roi, "IBSI features");
  // The levels are checked once here; the tasks below take copies of `checked` (a reference to
  // `levels`) and skip their own check.
  const CheckedLevels checked(levels, "IBSI features");
  if (levels.grid.nx != roi.grid.nx || levels.grid.ny != roi.grid.ny || levels.grid.nz != roi.grid.nz)
    throw std::invalid_argument("IBSI features: the grey levels and the ROI image have different grids");
  // One task per family, or per pair sharing a pass. Costs: the families' relative single-thread
  // times on the 300x512x512 chest phantom's lungs (bench_radiomics --threads 1), times the grid's
  // voxels, so that a large ROI's tasks start before a small one's.
  std::vector<FeatureTask> tasks;
  const double voxels = static_cast<double>(roi.grid.size()) / 1e6;
  const auto add = [&](std::string step, double cost, std::function<void(Features&)> run) {
    FeatureTask t;
    t.step = std::move(step);
    t.cost = cost * voxels;
    t.run = std::move(run);
    tasks.push_back(std::move(t));
  };
  const bool zones = s.has(Family::glszm) && s.has(Family::gldzm);
  const bool neighbourhoods = s.has(Family::ngtdm) && s.has(Family::ngldm);
  for (Family f : kAllFamilies) {
    if (!s.has(f)) continue;
    const std::string name(to_string(f));
    switch (f) {
      case Family::morphology: add(name, 60, [&](Features& o) { morphology_features(roi, o); }); break;
      case Family::local_intensity: add(name, 21, [&](Features& o) { local_intensity_features(roi, o); }); break;
      case Family::statistics: add(name, 3, [&](Features& o) { statistics_features(roi, o); }); break;
      case Family::histogram: add(name, 3, [&, checked](Features& o) { histogram_features(checked, o); }); break;
      case Family::ivh: add(name, 3, [&](Features& o) { ivh_features(roi, s.ivh, o); }); break;
      case Family::glcm: add(name, 9, [&, checked](Features& o) { glcm_features(checked, s.scope, o); }); break;
      case Family::glrlm: add(name, 12, [&, checked](Features& o) { glrlm_features(checked, s.scope, o); }); break;
      case Family::glszm:
        if (zones) add("glszm+gldzm", 43, [&, checked](Features& o) { zone_features(checked, roi.morph, s.scope, o); });
        else add(name, 25, [&](Features& o) { glszm_features(levels, s.scope, o); });
        break;
      case Family::gldzm:
        if (!zones) add(name, 25, [&](Features& o) { gldzm_features(levels, roi.morph, s.scope, o); });
        break;
      case Family::ngtdm:
        if (neighbourhoods) add("ngtdm+ngldm", 8, [&, checked](Features& o) { neighbourhood_features(checked, s.scope, o); });
        else add(name, 5, [&](Features& o) { ngtdm_features(levels, s.scope, o); });
        break;
      case Family::ngldm:
        if (!neighbourhoods) add(name, 5, [&](Features& o) { ngldm_features(levels, s.scope, o); });
        break;
    }
  }
  return tasks;
}

// Runs the tasks on OpenCV's threads, the largest cost first; a task's exception is kept in it.
void run_feature_tasks(std::vector<FeatureTask>& tasks) {
  // Longest first, one task at a time to whichever thread is free, so that the short ones fill in
  // beside the long ones. Not OpenCV's stripes: it hands out several at once (a thread took the two
  // longest of a lung in a row, the other then idled ~40 ms of its ~0.35 s). Equal costs keep
  // their order.
  std::vector<FeatureTask*> order;
  for (auto& t : tasks) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const FeatureTask* a, const FeatureTask* b) { return a->cost > b->cost; });
  if (order.empty()) return;
  std::atomic<std::size_t> next{0};
  const int threads = std::clamp(cv::getNumThreads(), 1, static_cast<int>(order.size()));
  cv::parallel_for_(
      cv::Range(0, threads),
      [&](const cv::Range&) {  // each call takes tasks until none is left (all of them when run inline)
        for (std::size_t k; (k = next.fetch_add(1)) < order.size();) {
          FeatureTask& t = *order[k];
          const auto t0 = std::chrono::steady_clock::now();
          try {
            t.run(t.out);
          } catch (...) {
            t.error = std::current_exception();
          }
          t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        }
      },
      threads);
}

// The features of the run tasks, as compute_features returns them.
Features collect_features(std::vector<FeatureTask>& tasks, std::vector<FamilyTime>* times,
                          std::vector<std::string>* refused) {
  Features out;
  out.reserve(600);
  for (auto& t : tasks) {
    if (t.error && refused) {
      try {
        std::rethrow_exception(t.error);
      } catch (const std::invalid_argument& e) {
        refused->push_back(fmt::format("{}: {}", t.step, e.what()));
        continue;
      }  // anything else propagates
    }
    if (t.error) std::rethrow_exception(t.error);
    std::move(t.out.begin(), t.out.end(), std::back_inserter(out));
    if (times) times->push_back({t.step, t.seconds});
  }
  return out;
}

}  // namespace

Features compute_features(const RoiImage& roi, const Levels& levels, const FeatureSettings& s,
                          std::vector<FamilyTime>* times, std::vector<std::string>* refused) {
  std::vector<FeatureTask> tasks = feature_tasks(roi, levels, s);
  run_feature_tasks(tasks);
  return collect_features(tasks, times, refused);
}

const std::vector<CatalogueEntry>& catalogue() {
  static const std::vector<CatalogueEntry> c = [] {
    std::vector<CatalogueEntry> out;
    for (const auto& fam : families())
      for (const FeatureDef& d : fam.definitions()) {
        if (fam.aggregations.empty()) {
          out.push_back({std::string(d.base_tag), std::string(d.code), std::string(d.name),
                         std::string(to_string(fam.family)), std::string(d.unit)});
          continue;
        }
        for (Aggregation a : fam.aggregations)
          out.push_back({aggregated_tag(d.base_tag, a), fmt::format("{}.{}", d.code, code(a)),
                         fmt::format("{} ({})", d.name, aggregation_name(a)), std::string(to_string(fam.family)),
                         std::string(d.unit)});
      }
    return out;
  }();
  return c;
}

const CatalogueEntry* find_in_catalogue(std::string_view tag) {
  static const std::map<std::string, const CatalogueEntry*, std::less<>> index = [] {
    std::map<std::string, const CatalogueEntry*, std::less<>> m;
    for (const auto& e : catalogue()) m.emplace(e.tag, &e);
    return m;
  }();
  const auto it = index.find(tag);
  return it == index.end() ? nullptr : it->second;
}

std::string feature_table_markdown() {
  std::string o =
      "# IBSI 1 features computed by pacsnode\n\n"
      "Generated from the code (`analysis/kernels/ibsi/radiomics.cpp`, `feature_table_markdown`); "
      "`tests/unit/test_ibsi_catalogue.cpp` fails when this page is out of date (run it with "
      "`PACSNODE_WRITE_DOCS=1` to rewrite it).\n\n"
      "Tags are those of the IBSI reference tables, so `features.csv` columns can be compared with them by name. "
      "The IBSI code of a texture feature is the feature's code and the aggregation method's code "
      "(`GYBY.IAZD`: joint maximum, 3D merged). Texture features are computed in 3D by default; the 2D and 2.5D "
      "aggregations with `--texture 2d|all` (`analyze`) or `ibsi_texture` (a `[[profile]]`). Units: `I` is the "
      "intensity unit (HU for CT), `mm`, `mm^2`, `mm^3`; empty: dimensionless.\n";
  std::string family;
  for (const auto& e : catalogue()) {
    if (e.family != family) {
      family = e.family;
      o += fmt::format("\n## {}\n\n| tag | IBSI code | name | unit |\n|---|---|---|---|\n", family);
    }
    o += fmt::format("| `{}` | {} | {} | {} |\n", e.tag, e.code, e.name, e.unit);
  }
  return o;
}

}  // namespace analysis::kernels::ibsi
