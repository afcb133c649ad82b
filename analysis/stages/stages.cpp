#include "analysis/stages/stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <stdexcept>
#include <type_traits>

#include "analysis/kernels/display.h"
#include "analysis/kernels/ibsi/processing.h"
#include "analysis/kernels/ibsi/radiomics.h"
#include "analysis/kernels/preprocess.h"
#include "analysis/stages/recipes.h"
#include "dicom/acquisition.h"
#include "dicom/decode_header.h"
#include "dicom/series_loader.h"

namespace analysis::stages {
namespace {

kernels::Rgb colour_of(std::string_view name, int label) {
  if (name == "body") return {230, 180, 140};
  if (name == "right_lung") return {70, 130, 255};
  if (name == "left_lung") return {60, 220, 90};
  if (name == "dense") return {255, 240, 80};
  if (name == "airways") return {0, 230, 230};
  if (name.starts_with("lesion_candidate")) return {255, 40, 200};
  static constexpr std::array<kernels::Rgb, 6> cycle{
      {{255, 140, 0}, {0, 200, 220}, {220, 60, 200}, {160, 220, 40}, {255, 90, 90}, {120, 120, 255}}};
  return cycle[static_cast<std::size_t>(label - 1) % cycle.size()];
}

SegmentResult make_segment(int label, std::string name, std::string display_name, std::string description = {}) {
  SegmentResult s;
  s.label = label;
  s.codes = dicom::codes::segment_codes(name);
  s.colour = colour_of(name, label);
  s.name = std::move(name);
  s.display_name = std::move(display_name);
  s.description = std::move(description);
  return s;
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool is_lung(std::string_view name) { return name == "right_lung" || name == "left_lung" || name == "lungs"; }

// Per-label sums over the whole label map in one pass.
struct LabelStats {
  std::int64_t n = 0, below = 0;  // below: value strictly below the LAA threshold
  double sum = 0, sum2 = 0;
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
  int z0 = std::numeric_limits<int>::max(), z1 = -1, r0 = std::numeric_limits<int>::max(), r1 = -1,
      c0 = std::numeric_limits<int>::max(), c1 = -1;
  void merge(const LabelStats& o) {
    n += o.n, below += o.below, sum += o.sum, sum2 += o.sum2;
    min = std::min(min, o.min), max = std::max(max, o.max);
    z0 = std::min(z0, o.z0), z1 = std::max(z1, o.z1), r0 = std::min(r0, o.r0), r1 = std::max(r1, o.r1);
    c0 = std::min(c0, o.c0), c1 = std::max(c1, o.c1);
  }
};

// Histogram of values rounded to integers and clamped to the int16 range: bin v + 32768.
using Histogram = std::vector<std::int64_t>;
constexpr int kHistOffset = 32768;

// The value at `q` (0..1) of the distribution in `h`, interpolated linearly between order
// statistics at position q (N - 1) (numpy.percentile's default).
double percentile(const Histogram& h, std::int64_t n, double q) {
  if (n <= 0) return std::nan("");
  const double pos = q * static_cast<double>(n - 1);
  const auto lo = static_cast<std::int64_t>(std::floor(pos)), hi = static_cast<std::int64_t>(std::ceil(pos));
  double v_lo = 0, v_hi = 0;
  std::int64_t seen = 0;
  bool got_lo = false;
  for (std::size_t b = 0; b < h.size(); ++b) {
    if (!h[b]) continue;
    seen += h[b];
    if (!got_lo && seen > lo) v_lo = static_cast<double>(b) - kHistOffset, got_lo = true;
    if (seen > hi) {
      v_hi = static_cast<double>(b) - kHistOffset;
      break;
    }
  }
  return v_lo + (pos - static_cast<double>(lo)) * (v_hi - v_lo);
}

// Run by run (a run: equal labels along a row), so the bounding box is updated once per run and
// the inner loop is branch-free; integer images accumulate exactly in 64-bit integers. Labels with
// a histogram (hist[label] non-null) also count their values into it. Blocks of slices run on
// OpenCV's threads, each into its own sums, merged in block order (a fixed number of blocks: the
// result does not depend on the thread count; for integer images the sums are exact integers, so
// they equal one pass in raster order).
template <typename T>
void accumulate(const std::vector<cv::Mat>& image, const LabelVolume& labels, double laa_threshold,
                const std::array<Histogram*, 256>& hist, std::array<LabelStats, 256>& st) {
  using Acc = std::conditional_t<std::is_integral_v<T>, std::int64_t, double>;
  // "x < t": for integer images x <= ceil(t) - 1; a bound below the type's range selects nothing.
  const double lim = std::is_integral_v<T> ? std::ceil(laa_threshold) - 1 : laa_threshold;
  const bool none_below = std::is_integral_v<T> && lim < double(std::numeric_limits<T>::lowest());
  const T below_max = static_cast<T>(std::clamp(lim, double(std::numeric_limits<T>::lowest()),
                                                double(std::numeric_limits<T>::max())));
  const int depth = static_cast<int>(image.size());
  const int blocks = std::clamp(depth / 8, 1, 8);
  const auto block_start = [&](int k) { return static_cast<int>(static_cast<std::int64_t>(depth) * k / blocks); };
  std::vector<std::array<LabelStats, 256>> part(static_cast<std::size_t>(blocks));
  std::vector<std::array<Histogram, 256>> part_hist(static_cast<std::size_t>(blocks));  // made when first needed
  cv::parallel_for_(cv::Range(0, blocks), [&](const cv::Range& range) {
    for (int k = range.start; k < range.end; ++k) {
      auto& pst = part[static_cast<std::size_t>(k)];
      auto& phist = part_hist[static_cast<std::size_t>(k)];
      for (int zi = block_start(k); zi < block_start(k + 1); ++zi) {
        const auto z = static_cast<std::size_t>(zi);
        const int cols = image[z].cols;
        for (int r = 0; r < image[z].rows; ++r) {
          const T* v = image[z].ptr<T>(r);
          const std::uint8_t* l = labels[z].ptr<std::uint8_t>(r);
          int c = 0;
          while (c < cols) {
            const std::uint8_t lab = l[c];
            // End of the run of `lab`: 8 labels at a time, then one by one.
            const std::uint64_t eight = 0x0101010101010101ull * lab;
            int e = c + 1;
            for (std::uint64_t w; e + 8 <= cols && (std::memcpy(&w, l + e, 8), w == eight);) e += 8;
            while (e < cols && l[e] == lab) ++e;
            if (lab) {
              Acc sum = 0, sum2 = 0;
              std::int64_t below = 0;
              T mn = v[c], mx = v[c];
              for (int x = c; x < e; ++x) {
                const T val = v[x];
                sum += static_cast<Acc>(val);
                sum2 += static_cast<Acc>(val) * static_cast<Acc>(val);
                if constexpr (std::is_integral_v<T>) below += val <= below_max;
                else below += val < below_max;
                mn = std::min(mn, val);
                mx = std::max(mx, val);
              }
              if (hist[lab] != nullptr) {
                Histogram& h = phist[lab];
                if (h.empty()) h.assign(hist[lab]->size(), 0);
                for (int x = c; x < e; ++x) {
                  if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int16_t>) {
                    ++h[static_cast<std::size_t>(static_cast<int>(v[x]) + kHistOffset)];
                  } else if constexpr (std::is_integral_v<T>) {  // uint16: above the int16 range -> its top bin
                    ++h[static_cast<std::size_t>(std::min(static_cast<int>(v[x]), 32767) + kHistOffset)];
                  } else {
                    const double d = std::clamp(std::round(static_cast<double>(v[x])), -32768.0, 32767.0);
                    ++h[static_cast<std::size_t>(static_cast<int>(d) + kHistOffset)];
                  }
                }
              }
              LabelStats& ps = pst[lab];
              ps.n += e - c;
              ps.sum += static_cast<double>(sum);
              ps.sum2 += static_cast<double>(sum2);
              ps.below += none_below ? 0 : below;
              ps.min = std::min(ps.min, static_cast<double>(mn));
              ps.max = std::max(ps.max, static_cast<double>(mx));
              ps.z0 = std::min(ps.z0, zi), ps.z1 = std::max(ps.z1, zi);
              ps.r0 = std::min(ps.r0, r), ps.r1 = std::max(ps.r1, r);
              ps.c0 = std::min(ps.c0, c), ps.c1 = std::max(ps.c1, e - 1);
            }
            c = e;
          }
        }
      }
    }
  });
  for (int k = 0; k < blocks; ++k)
    for (std::size_t lab = 0; lab < 256; ++lab) {
      const LabelStats& ps = part[static_cast<std::size_t>(k)][lab];
      if (ps.n == 0) continue;
      st[lab].merge(ps);
      const Histogram& h = part_hist[static_cast<std::size_t>(k)][lab];
      for (std::size_t i = 0; i < h.size(); ++i) (*hist[lab])[i] += h[i];
    }
}

// OpenCV's worker threads for the loader (cv::setNumThreads bounds them, as for the other stages).
void opencv_parallel(std::size_t n, const std::function<void(std::size_t)>& body) {
  cv::parallel_for_(cv::Range(0, static_cast<int>(n)), [&](const cv::Range& r) {
    for (int i = r.start; i < r.end; ++i) body(static_cast<std::size_t>(i));
  });
}

std::string upper(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

KernelClass classify_kernel(std::string_view kernel) {
  const std::string k = upper(std::string(kernel));
  if (k.empty()) return KernelClass::unknown;
  for (const char* sharp : {"LUNG", "BONE", "SHARP", "EDGE", "DETAIL", "HIGH", "ULTRA"})
    if (k.find(sharp) != std::string::npos) return KernelClass::sharp;
  for (const char* smooth : {"STANDARD", "STND", "SOFT", "SMOOTH"})
    if (k.find(smooth) != std::string::npos) return KernelClass::smooth;
  // Siemens (B30f, Br40d, I31f, Qr40, H45s...) and Canon/Toshiba (FC03, FC51...): letters, then
  // the sharpness number.
  std::size_t i = 0;
  while (i < k.size() && std::isalpha(static_cast<unsigned char>(k[i]))) ++i;
  if (i >= 1 && i <= 2 && i + 1 < k.size() && std::isdigit(static_cast<unsigned char>(k[i])) &&
      std::isdigit(static_cast<unsigned char>(k[i + 1]))) {
    const int n = (k[i] - '0') * 10 + (k[i + 1] - '0');
    if (k.rfind("FC", 0) == 0) return n >= 50 ? KernelClass::sharp : n < 30 ? KernelClass::smooth : KernelClass::unknown;
    return n >= 50 ? KernelClass::sharp : n <= 45 ? KernelClass::smooth : KernelClass::unknown;
  }
  if (k == "B" || k == "C") return KernelClass::smooth;  // Philips standard / smooth
  if (k == "D" || k == "E" || k == "L" || k == "YA" || k == "YB" || k == "YC") return KernelClass::sharp;
  return KernelClass::unknown;
}

std::vector<std::string> protocol_remarks(const dicom::AcquisitionInfo& a, const dicom::Geometry& g,
                                          const ChestParams& p, bool& suitable) {
  std::vector<std::string> out;
  suitable = true;
  const double thickness = a.slice_thickness_mm > 0 ? a.slice_thickness_mm : g.spacing_slice;
  if (thickness > p.densitometry_max_slice_mm) {
    out.push_back(fmt::format("{:g} mm slices (densitometry: <= {:g} mm)", thickness, p.densitometry_max_slice_mm));
    suitable = false;
  }
  switch (classify_kernel(a.kernel)) {
    case KernelClass::sharp:
      out.push_back(fmt::format("sharp reconstruction kernel {} (densitometry: standard or smooth)", a.kernel));
      suitable = false;
      break;
    case KernelClass::unknown:
      out.push_back(a.kernel.empty() ? std::string("reconstruction kernel not recorded")
                                     : fmt::format("reconstruction kernel {} of unknown sharpness", a.kernel));
      break;
    case KernelClass::smooth:
      break;
  }
  const std::string route = upper(a.contrast_route);
  if (!a.contrast_agent.empty() || !a.contrast_route.empty()) {
    const bool oral = route.find("ORAL") != std::string::npos && route.find("IV") == std::string::npos &&
                      route.find("INTRAVEN") == std::string::npos;
    out.push_back(fmt::format("{} contrast{}", oral ? "oral" : "IV", a.contrast_agent.empty() ? "" : " (" + a.contrast_agent + ")"));
    if (!oral) suitable = false;  // enhancement raises lung attenuation
  }
  return out;
}

void DecodeStage::run_(StudyContext& c) {
  dicom::LoadResult r = c.folder.empty() ? dicom::load_files(c.files, opencv_parallel)
                                         : dicom::load_folder(c.folder, opencv_parallel);
  c.volumes = std::move(r.volumes);
  c.rejected = std::move(r.rejected);
  c.notes = std::move(r.notes);
  for (auto& v : c.volumes) v.acquisition = dicom::read_acquisition(v.sources);
}

std::vector<std::vector<std::filesystem::path>> group_by_series(const std::vector<std::filesystem::path>& files) {
  std::vector<std::vector<std::filesystem::path>> groups;
  std::map<std::string, std::size_t> index;  // series UID -> group
  std::vector<std::filesystem::path> unreadable;
  std::vector<std::optional<std::string>> uids(files.size());  // nullopt: unreadable
  opencv_parallel(files.size(), [&](std::size_t i) {
    try {
      uids[i] = dicom::read_image_header(files[i]).series_uid;
    } catch (...) {
      // load_files gives the reason
    }
  });
  for (std::size_t i = 0; i < files.size(); ++i) {  // in file order: groups do not depend on threads
    if (!uids[i]) {
      unreadable.push_back(files[i]);
      continue;
    }
    const auto [it, fresh] = index.try_emplace(*uids[i], groups.size());
    if (fresh) groups.emplace_back();
    groups[it->second].push_back(files[i]);
  }
  if (!unreadable.empty()) groups.push_back(std::move(unreadable));
  return groups;
}

void PreprocessStage::run_(SeriesContext& c) {
  const PreprocessParams& p = c.profile->preprocess;
  auto& slices = c.volume.slices;
  const bool smooths = p.median_ksize || p.gaussian_sigma_mm > 0 || p.gaussian_sigma_slice_mm > 0;
  c.seg_levels.clear();
  c.measured_on_filtered = false;
  if (c.external_mask) return;  // no mask to make: the volume stays as decoded
  // ct-chest in HU: the filters only make the masks (a level map); the volume keeps its HU.
  if (c.profile->recipe == Recipe::ct_chest && c.profile->chest.measure_on_original_hu && c.volume.info.units == "HU" &&
      p.resample_mm <= 0 && p.gaussian_sigma_slice_mm <= 0) {
    c.seg_level_breaks = recipes::chest_level_breaks(c.profile->chest);
    c.seg_levels = kernels::level_map(slices, c.seg_level_breaks, p.median_ksize, p.gaussian_sigma_mm,
                                      spacing_of(c.volume.geom));
    return;
  }
  c.original_slices.clear();
  // The filters make the masks; the features see the values as decoded, unless the profile opts out
  // (measure_filtered, or ct-chest's measure_on_original_hu = false).
  const bool opted_out = p.measure_filtered || (c.profile->recipe == Recipe::ct_chest && !c.profile->chest.measure_on_original_hu);
  if (smooths && !opted_out) {
    c.original_slices.reserve(slices.size());
    for (const auto& s : slices) c.original_slices.push_back(s.clone());
  }
  if (p.median_ksize) kernels::median_filter(slices, p.median_ksize);
  if (p.gaussian_sigma_mm > 0 || p.gaussian_sigma_slice_mm > 0)
    kernels::gaussian_filter(slices, spacing_of(c.volume.geom), p.gaussian_sigma_mm,
                             c.volume.depth() > 1 ? p.gaussian_sigma_slice_mm : 0.0);
  c.measured_on_filtered = smooths && c.original_slices.empty();
  if (p.resample_mm > 0) {
    Spacing original = spacing_of(c.volume.geom);
    kernels::resample_inplane(c.volume, p.resample_mm, p.resample_mm, kernels::Interpolation::linear);
    if (!c.original_slices.empty())
      kernels::resample_inplane(c.original_slices, original, p.resample_mm, p.resample_mm, kernels::Interpolation::linear);
    c.resampled = true;
  }
}

void SegmentStage::run_(SeriesContext& c) {
  const Profile& p = *c.profile;
  recipes::RecipeResult r;
  c.segments.clear();
  if (c.external_mask) {
    kernels::check_same_shape(*c.external_mask, c.volume.slices, "given mask vs volume");
    c.labels = std::move(*c.external_mask);
    c.external_mask.reset();
    c.segments.push_back(make_segment(1, "roi", "Region of interest (given mask)"));
    return;
  }
  if (p.recipe == Recipe::ct_chest) {
    r = c.seg_levels.empty() ? recipes::segment_ct_chest(c.volume.slices, c.volume.geom, p.chest)
                             : recipes::segment_ct_chest(c.seg_levels, c.seg_level_breaks, c.volume.geom, p.chest);
    c.seg_levels.clear();  // release the level map: the masks are made
    c.seg_levels.shrink_to_fit();
    const auto has = [&](int l) { return std::find(r.present_labels.begin(), r.present_labels.end(), l) != r.present_labels.end(); };
    SegmentResult body = make_segment(recipes::kBody, "body", "Body");
    for (int l : r.present_labels)
      if (l != recipes::kBody) body.also_labels.push_back(l);
    c.segments.push_back(std::move(body));
    if (has(recipes::kRightLung)) c.segments.push_back(make_segment(recipes::kRightLung, "right_lung", "Right lung"));
    else c.notes.push_back("segment right_lung not found");
    if (has(recipes::kLeftLung)) c.segments.push_back(make_segment(recipes::kLeftLung, "left_lung", "Left lung"));
    else c.notes.push_back("segment left_lung not found");
    if (has(recipes::kRightLung) && has(recipes::kLeftLung)) {
      SegmentResult lungs = make_segment(recipes::kBothLungs, "lungs", "Lungs (both)");
      lungs.also_labels = {recipes::kRightLung, recipes::kLeftLung};
      c.segments.push_back(std::move(lungs));
    }
    if (has(recipes::kAirways))
      c.segments.push_back(make_segment(recipes::kAirways, "airways", "Airways (trachea and bronchi)"));
    for (int l : r.present_labels)
      if (l >= recipes::kLesion) {
        const int n = l - recipes::kLesion + 1;
        c.segments.push_back(make_segment(
            l, fmt::format("lesion_candidate_{}", n), fmt::format("Lesion candidate {} (unconfirmed)", n),
            fmt::format("{}: automatic candidate, solid tissue against the lung border; not a diagnosis, to be "
                        "confirmed or rejected by a reader",
                        p.research_label)));
      }
    if (has(recipes::kDense))
      c.segments.push_back(make_segment(recipes::kDense, "dense",
                                        fmt::format("Bone, calcium or contrast (>= {:g} HU)", p.chest.dense_min_hu)));
    ChestReport report;
    report.landmarks = r.landmarks;
    if (r.apices_in_scan && r.bases_in_scan) {
      report.coverage = *r.apices_in_scan && *r.bases_in_scan ? "complete" : "incomplete";
      if (!*r.apices_in_scan && !*r.bases_in_scan) report.coverage_note = "neither the lung apices nor the bases are in the scan";
      else if (!*r.apices_in_scan) report.coverage_note = "the lung apices are not in the scan";
      else if (!*r.bases_in_scan) report.coverage_note = "the lung bases are not in the scan";
    } else {
      report.coverage_note = c.segment("right_lung") || c.segment("left_lung") ? "not an axial series" : "no lungs found";
    }
    bool suitable = true;
    report.protocol_remarks = protocol_remarks(c.volume.acquisition, c.volume.geom, p.chest, suitable);
    report.densitometry_protocol = suitable;
    c.chest = std::move(report);
  } else {
    r = recipes::segment_generic(c.volume.slices, spacing_of(c.volume.geom), p.generic);
    if (std::find(r.present_labels.begin(), r.present_labels.end(), 1) != r.present_labels.end())
      c.segments.push_back(make_segment(1, p.generic.segment_name, p.generic.segment_name));
    else
      c.notes.push_back(fmt::format("segment {} not found", p.generic.segment_name));
  }
  c.labels = std::move(r.labels);
  for (auto& n : r.notes) c.notes.push_back(std::move(n));
}

void FeaturesStage::run_(SeriesContext& c) {
  const Profile& p = *c.profile;
  const auto& image = c.original_slices.empty() ? c.volume.slices : c.original_slices;
  if (c.labels.size() != image.size()) throw std::logic_error("no label map (segment stage not run)");
  const Spacing sp = spacing_of(c.volume.geom);
  const bool hu = c.volume.info.units == "HU";
  const std::string u = hu ? "hu" : "au";  // intensity unit in the names: HU or arbitrary units
  std::array<LabelStats, 256> st{};
  const double laa = p.chest.laa_threshold_hu;
  const bool chest = p.recipe == Recipe::ct_chest && hu;
  std::array<Histogram*, 256> hist{};
  std::map<int, Histogram> lung_hist;
  if (chest)
    for (const auto& seg : c.segments)
      if (seg.name == "right_lung" || seg.name == "left_lung")
        hist[seg.label] = &(lung_hist[seg.label] = Histogram(65536, 0));
  if (image.front().type() == CV_16S)
    accumulate<std::int16_t>(image, c.labels, laa, hist, st);
  else if (image.front().type() == CV_32F)
    accumulate<float>(image, c.labels, laa, hist, st);
  else if (image.front().type() == CV_16U)
    accumulate<std::uint16_t>(image, c.labels, laa, hist, st);
  else if (image.front().type() == CV_8U)
    accumulate<std::uint8_t>(image, c.labels, laa, hist, st);
  else
    throw std::invalid_argument(fmt::format("unsupported volume type {}", image.front().type()));

  std::vector<LabelStats> seg_stats(c.segments.size());
  std::vector<SegmentResult*> full;  // segments that get the IBSI features, largest first
  for (std::size_t i = 0; i < c.segments.size(); ++i) {
    SegmentResult& seg = c.segments[i];
    LabelStats s = st[seg.label];
    for (int l : seg.also_labels) s.merge(st[static_cast<std::size_t>(l)]);
    seg_stats[i] = s;
    auto& f = seg.features;
    seg.voxels = s.n;
    if (s.n == 0) continue;
    const double mean = s.sum / s.n;
    f["voxels"] = static_cast<double>(s.n);
    f["volume_ml"] = s.n * sp.voxel_volume() / 1000.0;
    f["mean_" + u] = mean;
    f["std_" + u] = std::sqrt(std::max(0.0, s.sum2 / s.n - mean * mean));
    f["min_" + u] = s.min;
    f["max_" + u] = s.max;
    if (chest && is_lung(seg.name)) {
      Histogram merged(65536, 0);
      for (const auto& [label, h] : lung_hist)
        if (seg.covers(label))
          for (std::size_t b = 0; b < merged.size(); ++b) merged[b] += h[b];
      f[laa_feature_name(laa)] = 100.0 * static_cast<double>(s.below) / static_cast<double>(s.n);
      f[std::string(kPerc15Feature)] = percentile(merged, s.n, 0.15);
      if (seg.name == "lungs" && c.chest)
        c.chest->both_lungs = LungDensity{s.n, f["volume_ml"], f[laa_feature_name(laa)], f[std::string(kPerc15Feature)]};
    }
    if (!contains(p.features.basic_only, seg.name)) full.push_back(&seg);
  }
  std::stable_sort(full.begin(), full.end(), [](auto* a, auto* b) { return a->voxels > b->voxels; });

  // IBSI features on each segment's bounding box plus a margin (the local intensity features look
  // 6.2 mm around the ROI).
  const auto& proc = p.features.processing;
  const int mx = static_cast<int>(std::ceil(proc.interpolation.margin_mm / sp.col));
  const int my = static_cast<int>(std::ceil(proc.interpolation.margin_mm / sp.row));
  const int mz = static_cast<int>(std::ceil(proc.interpolation.margin_mm / sp.slice));
  const int rows = image.front().rows, cols = image.front().cols, depth = static_cast<int>(image.size());
  c.radiomics_pending.clear();
  for (SegmentResult* seg : full) {
    const std::size_t i = static_cast<std::size_t>(seg - c.segments.data());
    const LabelStats& s = seg_stats[i];
    c.radiomics_pending.push_back({i, std::max(0, s.c0 - mx), std::min(cols - 1, s.c1 + mx), std::max(0, s.r0 - my),
                                   std::min(rows - 1, s.r1 + my), std::max(0, s.z0 - mz), std::min(depth - 1, s.z1 + mz)});
  }
  if (!c.defer_radiomics) measure_radiomics(c);
}

void measure_radiomics(SeriesContext& c) {
  const Profile& p = *c.profile;
  const auto& image = c.original_slices.empty() ? c.volume.slices : c.original_slices;
  const Spacing sp = spacing_of(c.volume.geom);
  const auto& proc = p.features.processing;
  // Views of the image, a mask of the box only. One ROI at a time: it is prepared and discretised
  // (both steps use all threads themselves), its families run side by side (compute_features), and
  // its arrays go before the next one. All ROIs' families side by side held both lungs' arrays at
  // once on the 300-slice chest CT (475 against 414 MiB at the peak) and were slower too (features
  // 1.02-1.12 s against 0.89-0.98 s, alternated): fewer fresh pages to fault in, and one lung's
  // families balance well enough over the cores on their own.
  std::exception_ptr error;  // the first one, thrown once every ROI has been tried
  for (const SeriesContext::RadiomicsRoi& b : c.radiomics_pending) {
    SegmentResult& seg = c.segments.at(b.segment);
    try {
      const cv::Rect box(b.x0, b.y0, b.x1 - b.x0 + 1, b.y1 - b.y0 + 1);
      std::vector<cv::Mat> views;
      Mask roi = kernels::make_mask(b.z1 - b.z0 + 1, box.height, box.width);
      cv::Mat member(1, 256, CV_8U, cv::Scalar(0));
      member.at<std::uint8_t>(seg.label) = 1;
      for (int l : seg.also_labels) member.at<std::uint8_t>(l) = 1;
      for (int z = b.z0; z <= b.z1; ++z) {
        views.push_back(image[static_cast<std::size_t>(z)](box));
        cv::LUT(c.labels[static_cast<std::size_t>(z)](box), member, roi[static_cast<std::size_t>(z - b.z0)]);
      }
      const kernels::ibsi::RoiImage prepared = kernels::ibsi::prepare_roi(views, roi, sp, proc);
      const kernels::ibsi::Levels levels = kernels::ibsi::discretise(prepared, proc.discretisation);
      std::vector<std::string> refused;
      for (const auto& x : kernels::ibsi::compute_features(prepared, levels, p.features.ibsi, nullptr, &refused))
        seg.features[x.tag] = x.value;
      for (const auto& why : refused) c.notes.push_back(fmt::format("{}: IBSI {}", seg.name, why));
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  c.radiomics_pending.clear();
  if (error) std::rethrow_exception(error);
}

bool needs_radiomics_for_findings(const Profile& p) {
  if (p.model_path) return true;  // a trained model may use any feature
  for (const auto& rs : p.rule_sets)
    for (const auto& rule : rs.rules)
      for (const auto& cond : rule.all_of)
        if (kernels::ibsi::find_in_catalogue(cond.feature)) return true;
  return false;
}

void ClassifyStage::run_(SeriesContext& c) {
  const Profile& p = *c.profile;
  std::optional<kernels::ForestModel> model;
  if (p.model_path) model = kernels::load_model(*p.model_path);
  const bool no_conclusion = c.chest && !c.chest->emphysema_conclusion();
  if (no_conclusion && !p.rule_sets.empty())
    c.notes.push_back(fmt::format("no emphysema conclusion: lung coverage {}{}", c.chest->coverage,
                                  c.chest->coverage_note.empty() ? "" : " (" + c.chest->coverage_note + ")"));
  for (SegmentResult& seg : c.segments) {
    if (!p.rule_segments.empty() && !contains(p.rule_segments, seg.name)) continue;
    if (!p.rule_sets.empty() && !(no_conclusion && is_lung(seg.name)))
      seg.findings = kernels::evaluate(std::span<const kernels::RuleSet>(p.rule_sets), seg.features);
    if (model) seg.prediction = kernels::predict(*model, seg.features);
  }
}

void EvaluateStage::run_(SeriesContext& c) {
  if (!c.reference) return;
  const Reference& ref = *c.reference;
  if (c.resampled) throw std::invalid_argument("reference given but the volume was resampled");
  kernels::check_same_shape(ref.labels, c.labels, "reference vs label map");
  const Spacing sp = spacing_of(c.volume.geom);
  for (SegmentResult& seg : c.segments) {
    int ref_label = 0;  // 0: any non-zero reference voxel
    if (!ref.label_of_segment.empty()) {
      const auto it = ref.label_of_segment.find(seg.name);
      if (it == ref.label_of_segment.end()) continue;
      ref_label = it->second;
    }
    Mask test = kernels::label_mask(c.labels, seg.label);
    Mask truth =
        kernels::make_mask(static_cast<int>(ref.labels.size()), ref.labels.front().rows, ref.labels.front().cols);
    for (std::size_t z = 0; z < truth.size(); ++z) {
      if (ref_label)
        cv::compare(ref.labels[z], ref_label, truth[z], cv::CMP_EQ);
      else
        cv::compare(ref.labels[z], 0, truth[z], cv::CMP_NE);
    }
    kernels::binarise(truth);
    seg.overlap = kernels::overlap_metrics(truth, test, sp);
  }
}

std::vector<kernels::SegmentStyle> segment_styles(const SeriesContext& c) {
  std::vector<kernels::SegmentStyle> out;
  const std::string laa = c.profile ? laa_feature_name(c.profile->chest.laa_threshold_hu) : std::string();
  for (const auto& s : c.segments) {
    if (s.label <= 0 || s.label > 255 || s.name == "lungs") continue;
    kernels::SegmentStyle st;
    st.label = static_cast<std::uint8_t>(s.label);
    st.name = s.display_name.empty() ? s.name : s.display_name;
    st.colour = s.colour;
    for (int l : s.also_labels)
      if (l > 0 && l < 256) st.also.push_back(static_cast<std::uint8_t>(l));
    if (s.name == "body" || s.name == "dense") st.fill_opacity = 0;
    else if (is_lung(s.name)) st.fill_opacity = 0.18;
    else if (s.name == "airways") st.fill_opacity = 0.45;
    else if (s.name.starts_with("lesion_candidate")) st.fill_opacity = 0.4;
    const auto f = [&](const std::string& k) {
      const auto it = s.features.find(k);
      return it == s.features.end() ? std::nan("") : it->second;
    };
    if (const double ml = f("volume_ml"); std::isfinite(ml)) {
      st.legend = fmt::format("{} {:.{}f} mL", st.name, ml, ml < 10 ? 2 : ml < 1000 ? 1 : 0);
      if (std::isfinite(f(laa))) st.legend += fmt::format(", LAA {:.1f} %", f(laa));
      if (std::isfinite(f(std::string(kPerc15Feature)))) st.legend += fmt::format(", P15 {:.0f} HU", f(std::string(kPerc15Feature)));
      if (s.name.starts_with("lesion_candidate") && std::isfinite(f("morph_diam")))
        st.legend += fmt::format(", longest {:.1f} mm", f("morph_diam"));
    }
    out.push_back(std::move(st));
  }
  return out;
}

std::vector<std::string> finding_lines(const SeriesContext& c) {
  std::vector<std::string> out;
  if (!c.profile) return out;
  const Profile& p = *c.profile;
  const std::string mark = p.research_label.empty() ? std::string() : " (" + p.research_label + ")";
  for (const auto& s : c.segments)
    for (const auto& f : s.findings)
      if (f.finding)
        out.push_back(fmt::format("{}: {} {}{}", s.display_name.empty() ? s.name : s.display_name,
                                  f.finding->name.meaning, f.finding->value.meaning, mark));
  if (c.chest) {
    const auto& r = *c.chest;
    if (const SegmentResult* both = c.segment("lungs"); both && both->features.count("volume_ml")) {
      const auto& ft = both->features;
      const auto laa = ft.find(laa_feature_name(p.chest.laa_threshold_hu));
      const auto p15 = ft.find(std::string(kPerc15Feature));
      out.push_back(fmt::format("Both lungs {:.0f} mL{}{}", ft.at("volume_ml"),
                                laa != ft.end() ? fmt::format(", LAA%-950 {:.1f} %", laa->second) : std::string(),
                                p15 != ft.end() ? fmt::format(", Perc15 {:.0f} HU", p15->second) : std::string()));
    }
    out.push_back(fmt::format("Lung coverage: {}{}{}", r.coverage, r.coverage_note.empty() ? "" : " - " + r.coverage_note,
                              r.emphysema_conclusion() ? "" : "; no emphysema conclusion"));
    std::string protocol;
    for (const auto& rm : r.protocol_remarks) protocol += (protocol.empty() ? "" : "; ") + rm;
    out.push_back(fmt::format("Protocol: {}{}", protocol.empty() ? "nothing to remark" : protocol,
                              r.densitometry_protocol ? "" : " - not a densitometry protocol"));
  }
  if (!c.segments.empty() && c.volume.info.units == "HU")
    out.push_back(c.measured_on_filtered ? "Values measured on the filtered image"
                                         : "Values on the original HU; masks from the filtered image");
  if (!p.research_label.empty() && !out.empty()) out.push_back(p.research_label + " - not for diagnosis");
  return out;
}

kernels::PreviewParams preview_params(const SeriesContext& c) {
  kernels::PreviewParams params;
  params.window = c.profile->window;
  params.max_tiles = c.profile->preview_tiles;
  params.study_description = c.volume.acquisition.study_description;
  params.lines = finding_lines(c);
  if (c.profile->recipe == Recipe::ct_chest && c.volume.info.units == "HU") {
    kernels::LowAttenuationOverlay laa;
    laa.below = c.profile->chest.laa_threshold_hu;
    laa.legend = fmt::format("LAA < {:g} HU", laa.below);
    for (const auto& s : c.segments)
      if (s.name == "right_lung" || s.name == "left_lung") laa.labels.push_back(static_cast<std::uint8_t>(s.label));
    if (!laa.labels.empty()) params.laa = laa;
  }
  return params;
}

kernels::KeyImageParams key_image_params(const SeriesContext& c) {
  kernels::KeyImageParams params;
  params.window = c.profile->window;
  params.study_description = c.volume.acquisition.study_description;
  params.lines = finding_lines(c);
  const kernels::PreviewParams pp = preview_params(c);
  params.laa = pp.laa;
  if (!c.chest) return params;
  const auto& lm = c.chest->landmarks;
  if (const auto it = lm.find("apex"); it != lm.end()) params.slices.push_back({it->second, "Apex"});
  if (const auto it = lm.find("carina"); it != lm.end()) params.slices.push_back({it->second, "Carina"});
  for (const auto& s : c.segments)
    if (s.name == "lesion_candidate_1") {  // the largest candidate: its largest slice
      const auto counts = kernels::label_counts(c.labels);
      int best = -1;
      std::int64_t area = 0;
      for (std::size_t z = 0; z < counts.size(); ++z)
        if (counts[z][static_cast<std::size_t>(s.label)] > area) area = counts[z][static_cast<std::size_t>(s.label)], best = static_cast<int>(z);
      if (best >= 0) params.slices.push_back({best, s.display_name});
    }
  if (const auto it = lm.find("base"); it != lm.end()) params.slices.push_back({it->second, "Base"});
  params.max_images = std::max<int>(1, static_cast<int>(params.slices.size()));
  return params;
}

void DisplayStage::run_(SeriesContext& c) {
  if (c.out_dir.empty()) return;
  const auto styles = segment_styles(c);
  const auto png = c.out_dir / (c.key + "_preview.png");
  kernels::write_preview(png, c.volume, c.labels, styles, preview_params(c));
  c.preview = png;
}

std::vector<std::unique_ptr<Stage>> series_stages() {
  std::vector<std::unique_ptr<Stage>> out;
  out.push_back(std::make_unique<PreprocessStage>());
  out.push_back(std::make_unique<SegmentStage>());
  out.push_back(std::make_unique<FeaturesStage>());
  out.push_back(std::make_unique<ClassifyStage>());
  out.push_back(std::make_unique<EvaluateStage>());
  out.push_back(std::make_unique<DisplayStage>());
  return out;
}

}  // namespace analysis::stages
