#include "analysis/stages/stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
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
#include "analysis/kernels/features.h"
#include "analysis/kernels/preprocess.h"
#include "analysis/stages/recipes.h"
#include "dicom/decode_header.h"
#include "dicom/series_loader.h"

namespace analysis::stages {
namespace {

kernels::Rgb colour_of(std::string_view name, int label) {
  if (name == "body") return {230, 180, 140};
  if (name == "right_lung") return {70, 130, 255};
  if (name == "left_lung") return {60, 220, 90};
  if (name == "bone") return {255, 240, 80};
  static constexpr std::array<kernels::Rgb, 6> cycle{
      {{255, 140, 0}, {0, 200, 220}, {220, 60, 200}, {160, 220, 40}, {255, 90, 90}, {120, 120, 255}}};
  return cycle[static_cast<std::size_t>(label - 1) % cycle.size()];
}

SegmentResult make_segment(int label, std::string name) {
  SegmentResult s;
  s.label = label;
  s.codes = dicom::codes::segment_codes(name);
  s.colour = colour_of(name, label);
  s.name = std::move(name);
  return s;
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Per-label sums over the whole label map in one pass.
struct LabelStats {
  std::int64_t n = 0, below = 0;  // below: value <= the LAA threshold
  double sum = 0, sum2 = 0;
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
  int z0 = std::numeric_limits<int>::max(), z1 = -1, r0 = std::numeric_limits<int>::max(), r1 = -1,
      c0 = std::numeric_limits<int>::max(), c1 = -1;
};

// Bit volume of image <= t (CV_16S or CV_32F; other types: every value compared as double).
BitVolume bits_at_or_below(const std::vector<cv::Mat>& image, double t) {
  BitVolume b;
  b.depth = static_cast<int>(image.size());
  b.rows = image.front().rows;
  b.cols = image.front().cols;
  const int rb = b.row_bytes();
  b.bytes.assign(static_cast<std::size_t>(b.depth) * b.rows * rb, 0);
  cv::Mat flags;  // one slice of 0/1 bytes
  for (int z = 0; z < b.depth; ++z) {
    cv::compare(image[z], t, flags, cv::CMP_LE);
    cv::bitwise_and(flags, 1, flags);
    for (int r = 0; r < b.rows; ++r) {
      const std::uint8_t* f = flags.ptr<std::uint8_t>(r);
      std::uint8_t* out = b.bytes.data() + (static_cast<std::size_t>(z) * b.rows + r) * rb;
      int c = 0;
      for (; c + 8 <= b.cols; c += 8) {  // 8 flag bytes -> 8 bits (flag i -> bit i)
        std::uint64_t x;
        std::memcpy(&x, f + c, 8);
        out[c / 8] = static_cast<std::uint8_t>((x * 0x0102040810204080ull) >> 56);
      }
      for (; c < b.cols; ++c) out[c / 8] |= static_cast<std::uint8_t>(f[c] << (c % 8));
    }
  }
  return b;
}

// Set bits among columns [begin, end) of one row.
std::int64_t count_bits(const std::uint8_t* row, int begin, int end) {
  std::int64_t n = 0;
  while (begin < end && begin % 8) n += (row[begin / 8] >> (begin % 8)) & 1, ++begin;
  while (begin + 64 <= end) {
    std::uint64_t x;
    std::memcpy(&x, row + begin / 8, 8);
    n += std::popcount(x);
    begin += 64;
  }
  while (begin + 8 <= end) n += std::popcount(static_cast<unsigned>(row[begin / 8])), begin += 8;
  while (begin < end) n += (row[begin / 8] >> (begin % 8)) & 1, ++begin;
  return n;
}

// Run by run (a run: equal labels along a row), so the bounding box is updated once per run and
// the inner loop is branch-free; integer images accumulate exactly in 64-bit integers.
template <typename T>
void accumulate(const std::vector<cv::Mat>& image, const LabelVolume& labels, double laa_threshold,
                const BitVolume* low, std::array<LabelStats, 256>& st) {
  using Acc = std::conditional_t<std::is_integral_v<T>, std::int64_t, double>;
  const T below_max = std::is_integral_v<T> ? static_cast<T>(std::clamp(std::floor(laa_threshold),
                                                                        double(std::numeric_limits<T>::lowest()),
                                                                        double(std::numeric_limits<T>::max())))
                                            : static_cast<T>(laa_threshold);
  // Integer images: x <= t is x <= floor(t); a t below the type's range selects nothing.
  const bool none_below = std::is_integral_v<T> && std::floor(laa_threshold) < double(std::numeric_limits<T>::lowest());
  for (std::size_t z = 0; z < image.size(); ++z) {
    const int zi = static_cast<int>(z), cols = image[z].cols;
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
          for (int k = c; k < e; ++k) {
            const T x = v[k];
            sum += static_cast<Acc>(x);
            sum2 += static_cast<Acc>(x) * static_cast<Acc>(x);
            below += x <= below_max;
            mn = std::min(mn, x);
            mx = std::max(mx, x);
          }
          LabelStats& s = st[lab];
          s.n += e - c;
          s.sum += static_cast<double>(sum);
          s.sum2 += static_cast<double>(sum2);
          if (low)
            s.below +=
                count_bits(low->bytes.data() + (z * low->rows + r) * static_cast<std::size_t>(low->row_bytes()), c, e);
          else
            s.below += none_below ? 0 : below;
          s.min = std::min(s.min, static_cast<double>(mn));
          s.max = std::max(s.max, static_cast<double>(mx));
          s.z0 = std::min(s.z0, zi), s.z1 = std::max(s.z1, zi);
          s.r0 = std::min(s.r0, r), s.r1 = std::max(s.r1, r);
          s.c0 = std::min(s.c0, c), s.c1 = std::max(s.c1, e - 1);
        }
        c = e;
      }
    }
  }
}

// OpenCV's worker threads for the loader (cv::setNumThreads bounds them, as for the other stages).
void opencv_parallel(std::size_t n, const std::function<void(std::size_t)>& body) {
  cv::parallel_for_(cv::Range(0, static_cast<int>(n)), [&](const cv::Range& r) {
    for (int i = r.start; i < r.end; ++i) body(static_cast<std::size_t>(i));
  });
}

}  // namespace

void DecodeStage::run_(StudyContext& c) {
  dicom::LoadResult r = c.folder.empty() ? dicom::load_files(c.files, opencv_parallel)
                                         : dicom::load_folder(c.folder, opencv_parallel);
  c.volumes = std::move(r.volumes);
  c.rejected = std::move(r.rejected);
  c.notes = std::move(r.notes);
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
  if (smooths && c.profile->recipe == Recipe::ct_chest && c.profile->chest.laa_on_original_hu &&
      c.volume.info.units == "HU" && p.resample_mm <= 0) {
    c.low_attenuation = bits_at_or_below(slices, c.profile->chest.laa_threshold_hu);
    c.low_attenuation_hu = c.profile->chest.laa_threshold_hu;
  }
  if (p.median_ksize) kernels::median_filter(slices, p.median_ksize);
  if (p.gaussian_sigma_mm > 0 || p.gaussian_sigma_slice_mm > 0)
    kernels::gaussian_filter(slices, spacing_of(c.volume.geom), p.gaussian_sigma_mm,
                             c.volume.depth() > 1 ? p.gaussian_sigma_slice_mm : 0.0);
  if (p.resample_mm > 0) {
    kernels::resample_inplane(c.volume, p.resample_mm, p.resample_mm, kernels::Interpolation::linear);
    c.resampled = true;
  }
}

void SegmentStage::run_(SeriesContext& c) {
  const Profile& p = *c.profile;
  recipes::RecipeResult r;
  std::vector<std::pair<int, std::string>> names;
  if (p.recipe == Recipe::ct_chest) {
    r = recipes::segment_ct_chest(c.volume.slices, c.volume.geom, p.chest);
    names = {{recipes::kBody, "body"},
             {recipes::kRightLung, "right_lung"},
             {recipes::kLeftLung, "left_lung"},
             {recipes::kBone, "bone"}};
  } else {
    r = recipes::segment_generic(c.volume.slices, spacing_of(c.volume.geom), p.generic);
    names = {{1, p.generic.segment_name}};
  }
  c.labels = std::move(r.labels);
  for (auto& n : r.notes) c.notes.push_back(std::move(n));
  c.segments.clear();
  for (const auto& [label, name] : names) {
    if (std::find(r.present_labels.begin(), r.present_labels.end(), label) != r.present_labels.end())
      c.segments.push_back(make_segment(label, name));
    else
      c.notes.push_back(fmt::format("segment {} not found", name));
  }
}

void FeaturesStage::run_(SeriesContext& c) {
  const Profile& p = *c.profile;
  const auto& image = c.volume.slices;
  if (c.labels.size() != image.size()) throw std::logic_error("no label map (segment stage not run)");
  const Spacing sp = spacing_of(c.volume.geom);
  const bool hu = c.volume.info.units == "HU";
  const std::string u = hu ? "hu" : "au";  // intensity unit in the names: HU or arbitrary units
  std::array<LabelStats, 256> st{};
  const double laa = p.chest.laa_threshold_hu;
  const BitVolume* low = nullptr;  // below-threshold voxels of the unsmoothed image, if recorded
  if (!c.low_attenuation.empty() && c.low_attenuation_hu == laa && !c.resampled &&
      c.low_attenuation.depth == static_cast<int>(image.size()) && c.low_attenuation.rows == image.front().rows &&
      c.low_attenuation.cols == image.front().cols)
    low = &c.low_attenuation;
  if (image.front().type() == CV_16S)
    accumulate<std::int16_t>(image, c.labels, laa, low, st);
  else if (image.front().type() == CV_32F)
    accumulate<float>(image, c.labels, laa, low, st);
  else if (image.front().type() == CV_16U)
    accumulate<std::uint16_t>(image, c.labels, laa, low, st);
  else if (image.front().type() == CV_8U)
    accumulate<std::uint8_t>(image, c.labels, laa, low, st);
  else
    throw std::invalid_argument(fmt::format("unsupported volume type {}", image.front().type()));

  std::vector<SegmentResult*> full;  // segments that get the IBSI features, largest first
  for (SegmentResult& seg : c.segments) {
    const LabelStats& s = st[seg.label];
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
    if (p.recipe == Recipe::ct_chest && hu && (seg.name == "left_lung" || seg.name == "right_lung"))
      f[laa_feature_name(laa)] = 100.0 * static_cast<double>(s.below) / static_cast<double>(s.n);
    if (!contains(p.features.basic_only, seg.name)) full.push_back(&seg);
  }
  std::stable_sort(full.begin(), full.end(), [](auto* a, auto* b) { return a->voxels > b->voxels; });

  // IBSI features on each segment's bounding box (views of the image, a mask of the box only).
  // Segments are independent: they run on OpenCV's worker threads (cv::setNumThreads bounds them).
  const auto ibsi = [&](SegmentResult& seg) {
    const LabelStats& s = st[seg.label];
    auto& f = seg.features;
    const cv::Rect box(s.c0, s.r0, s.c1 - s.c0 + 1, s.r1 - s.r0 + 1);
    std::vector<cv::Mat> views;
    Mask roi = kernels::make_mask(s.z1 - s.z0 + 1, box.height, box.width);
    for (int z = s.z0; z <= s.z1; ++z) {
      views.push_back(image[z](box));
      cv::compare(c.labels[z](box), seg.label, roi[z - s.z0], cv::CMP_EQ);
    }
    kernels::binarise(roi);
    if (p.features.morphology) {
      const auto m = kernels::morphology_features(roi, sp);
      f["morph_volume_mm3"] = m.volume_mesh_mm3;
      f["morph_area_mm2"] = m.surface_area_mm2;
      f["morph_av_per_mm"] = m.surface_to_volume;
      f["morph_sphericity"] = m.sphericity;
      f["morph_diam_mm"] = m.max_3d_diameter_mm;
    }
    const auto is = kernels::intensity_statistics(views, roi);
    f["median_" + u] = is.median;
    f["p10_" + u] = is.percentile_10;
    f["p90_" + u] = is.percentile_90;
    f["iqr_" + u] = is.interquartile_range;
    f["mad_" + u] = is.mean_absolute_deviation;
    f["rms_" + u] = is.root_mean_square;
    f["skewness"] = is.skewness;
    f["excess_kurtosis"] = is.excess_kurtosis;
    if (p.features.texture) {
      const auto h = kernels::intensity_histogram_features(views, roi, p.features.discretisation);
      f["ih_entropy_bits"] = h.entropy;
      f["ih_uniformity"] = h.uniformity;
      const auto g = kernels::glcm_features_3d_merged(views, roi, p.features.discretisation);
      f["cm_joint_max"] = g.joint_maximum;
      f["cm_joint_avg"] = g.joint_average;
      f["cm_joint_var"] = g.joint_variance;
      f["cm_joint_entr_bits"] = g.joint_entropy;
      f["cm_contrast"] = g.contrast;
      f["cm_dissimilarity"] = g.dissimilarity;
      f["cm_energy"] = g.angular_second_moment;
      f["cm_inv_diff"] = g.inverse_difference;
      f["cm_inv_diff_norm"] = g.normalised_inverse_difference;
      f["cm_inv_diff_mom"] = g.inverse_difference_moment;
      f["cm_inv_diff_mom_norm"] = g.normalised_inverse_difference_moment;
      f["cm_inv_var"] = g.inverse_variance;
      f["cm_corr"] = g.correlation;
    }
  };
  std::vector<std::exception_ptr> errors(full.size());
  const auto body = [&](const cv::Range& range) {
    for (int i = range.start; i < range.end; ++i) {
      try {
        ibsi(*full[static_cast<std::size_t>(i)]);
      } catch (...) {
        errors[static_cast<std::size_t>(i)] = std::current_exception();
      }
    }
  };
  if (p.features.parallel_segments && full.size() > 1)
    cv::parallel_for_(cv::Range(0, static_cast<int>(full.size())), body, static_cast<double>(full.size()));
  else
    body(cv::Range(0, static_cast<int>(full.size())));
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

void ClassifyStage::run_(SeriesContext& c) {
  const Profile& p = *c.profile;
  std::optional<kernels::ForestModel> model;
  if (p.model_path) model = kernels::load_model(*p.model_path);
  for (SegmentResult& seg : c.segments) {
    if (!p.rule_segments.empty() && !contains(p.rule_segments, seg.name)) continue;
    if (!p.rule_sets.empty())
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

void DisplayStage::run_(SeriesContext& c) {
  if (c.out_dir.empty()) return;
  std::vector<kernels::SegmentStyle> styles;
  for (const auto& s : c.segments) styles.push_back({static_cast<std::uint8_t>(s.label), s.name, s.colour});
  kernels::PreviewParams params;
  params.window = c.profile->window;
  params.max_tiles = c.profile->preview_tiles;
  const auto png = c.out_dir / (c.key + "_preview.png");
  kernels::write_preview(png, c.volume, c.labels, styles, params);
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
