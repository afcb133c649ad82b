#pragma once
// Analysis profiles: which analysis runs on which series, and with what parameters.
//
// A Profile is a plain struct. Two are built in (builtin_profiles(): "ct-chest", then "generic");
// config/ fills more from `[[profile]]` TOML tables (same fields, same defaults). match_profile()
// returns the first profile, in list order, whose match rules accept the series, so put specific
// profiles before catch-all ones.
//
// Matching (all case-insensitive, see SeriesMatch):
//   * modality: the series' Modality must be one of `modalities` (empty list: any modality);
//   * text: when `keywords` or `tokens` are given, at least one must occur in Body Part Examined,
//     Series Description or Protocol Name. A keyword matches as a substring ("THORA" matches
//     "THORAX" and "THORACIC"), a token only as a whole word, words being split at anything that
//     is not a letter or digit ("CH" matches "CT CH/AB/PEL" but not "CHOLANGIO" or "CHEST").
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/kernels/classify.h"
#include "analysis/kernels/display.h"
#include "analysis/kernels/features.h"
#include "analysis/kernels/segment.h"
#include "dicom/volume.h"

namespace analysis {

struct SeriesMatch {
  std::vector<std::string> modalities;  // e.g. {"CT"}; empty: any
  std::vector<std::string> keywords;    // substrings, e.g. "CHEST", "THORA", "LUNG"
  std::vector<std::string> tokens;      // whole words, e.g. "CH", "THX"
};

// Preprocess stage (in place on the volume, slice by slice; no float copy of the volume).
struct PreprocessParams {
  int median_ksize = 0;                // 0 = off, else 3 or 5 (in-plane median)
  double gaussian_sigma_mm = 0;        // 0 = off; in-plane Gaussian sigma (mm)
  double gaussian_sigma_slice_mm = 0;  // 0 = off; sigma along z (mm)
  // In-plane resampling to this spacing (mm), 0 = off. The label map then lives on the resampled
  // grid, so no SEG is written for such a series (its frames must match the source images).
  double resample_mm = 0;
};

// Which segmentation recipe the Segment stage runs.
enum class Recipe {
  // One foreground segment "tissue" (label 1): threshold (Otsu or window), optional border drop,
  // keep the largest k components, open/close, 2D hole filling.
  generic,
  // CT chest: body (1), right lung (2), left lung (3), bone (4); see ChestParams.
  ct_chest,
};

std::string_view to_string(Recipe r);
Recipe parse_recipe(std::string_view s);  // "generic" | "ct-chest"; throws std::invalid_argument

struct GenericSegmentParams {
  // Threshold: Otsu over the whole volume when `window` is empty, else lo <= value <= hi.
  std::optional<kernels::Window> window;
  kernels::Connectivity connectivity = kernels::Connectivity::c26;
  bool drop_border_components = false;  // drop components touching the in-plane border
  int keep_largest = 1;                 // 0 = keep all components
  double open_radius_mm = 0;            // 0 = off (2D, in-plane ellipse)
  double close_radius_mm = 0;           // 0 = off
  bool fill_holes = true;               // 2D hole filling per slice
  std::string segment_name = "tissue";  // name of label 1 (dicom::codes::segment_codes key)
};

struct ChestParams {
  // Body: voxels >= body_min_hu, largest 3D component, 2D holes filled (so it contains the lungs).
  double body_min_hu = -500;
  // Lungs: air inside the body, value <= air_max_hu; components touching the in-plane border are
  // dropped, components below min_lung_ml are ignored; the largest becomes one lung and the
  // largest on the other side of the body's mid-sagittal plane the other one; a component that
  // straddles the mid-plane (lungs joined by the airways or a junction line) is split slice by
  // slice: 2D parts lying (>= 85 %) on one side go to that side whole, shared parts are cut at the
  // plane. Airways are not removed: trachea and main bronchi count as lung.
  double air_max_hu = -400;
  double min_lung_ml = 20;
  kernels::Connectivity lung_connectivity = kernels::Connectivity::c6;
  double lung_close_radius_mm = 0;  // 0 = off; in-plane closing of each lung before hole filling
  bool fill_lung_holes = true;      // 2D hole filling of each lung (vessels belong to the lung)
  // Bone: voxels >= bone_min_hu inside the body and outside the lungs, components below
  // min_bone_ml dropped.
  double bone_min_hu = 300;
  double min_bone_ml = 1;
  // Emphysema index: share of lung voxels <= laa_threshold_hu, in percent ("laa950_percent").
  double laa_threshold_hu = -950;
  // Measure the emphysema index on the HU as decoded, before the Preprocess stage's median or
  // Gaussian smoothing (smoothing removes noise voxels below -950 HU and so lowers LAA%, while
  // the literature thresholds were set on unsmoothed images). Costs one bit per voxel.
  bool laa_on_original_hu = true;
};

struct FeatureParams {
  bool morphology = true;                  // IBSI mesh-based morphology (marching cubes)
  bool texture = true;                     // IBSI intensity histogram and GLCM (3D, merged)
  kernels::Discretisation discretisation;  // default: fixed bin size 25 (HU for CT)
  // Segments (by name) that only get volume and intensity statistics (big, uninteresting ones,
  // e.g. "body" in ct-chest). Empty: all get the full set.
  std::vector<std::string> basic_only;
  // Compute the IBSI features of different segments concurrently on OpenCV's worker threads
  // (cv::setNumThreads bounds them; memory: one bounding-box mask and its work arrays per thread).
  bool parallel_segments = true;
};

struct Profile {
  std::string name;
  SeriesMatch match;
  PreprocessParams preprocess;
  Recipe recipe = Recipe::generic;
  GenericSegmentParams generic;
  ChestParams chest;
  FeatureParams features;
  // Rule sets evaluated on each segment's features whose name is listed in `rule_segments`
  // (empty: every segment). E.g. the emphysema rule on each lung.
  std::vector<kernels::RuleSet> rule_sets;
  std::vector<std::string> rule_segments;
  // Optional trained model (train_random_forest output), applied like the rule sets.
  std::optional<std::filesystem::path> model_path;
  std::optional<kernels::WindowLevel> window;  // preview window; empty: kernels::choose_window()
  int preview_tiles = 12;

  // Throws std::invalid_argument naming the profile and field on inconsistent parameters
  // (including a ct-chest rule set that reads an laa<N>_percent other than the one the profile
  // measures: use emphysema_rules(percent, chest.laa_threshold_hu)).
  void validate() const;
};

// The built-in profiles, in matching order:
//
// "ct-chest": Modality CT and a chest word in Body Part Examined, Series Description or Protocol
//   Name (keywords CHEST, THORA(X/CIC), TORAX, LUNG, PULMO, POUMON; whole words CH, CHST, THX, CAP,
//   TAP, so "CT CH/AB/PEL" and "CT CAP" match). Median 3x3; segments body (1), right lung (2),
//   left lung (3), bone (4) (ChestParams defaults); per segment volume_ml, mean/std/min/max_hu;
//   per lung laa950_percent (share of lung voxels <= -950 HU, on the HU as decoded) and the IBSI
//   features; body gets the basic set only. Classification: kernels::emphysema_rule_set(5.0) on
//   each lung, i.e. laa950_percent >= 5 -> (87433001, SCT, "Pulmonary emphysema") = Present, else
//   Absent. Literature (full citations in analysis/kernels/classify.cpp): -950 HU is the
//   threshold whose relative area matched macroscopic morphometry of emphysema (Gevenois et al.,
//   AJRCCM 1995); ">= 5% of lung volume below -950 HU" is the usual quantitative-CT definition of
//   emphysema in COPDGene-based work (e.g. Amaza et al., Int J COPD 2021; LAA-950 as in
//   Schroeder et al., AJR 2013), well above the ~1% median of healthy never-smokers (MESA Lung,
//   Hoffman et al., Ann Am Thorac Soc 2014). Valid for inspiratory, standard-kernel CT: sharp
//   kernels, low dose and expiration shift LAA-950. Preview window: lung W1500/L-600.
// "generic": any modality, 2D or 3D. Median 3x3 (in-plane), Otsu foreground over the whole
//   volume, largest 3D component (26-connected), 2D hole filling; one segment "tissue" with the
//   basic and IBSI features (intensities in arbitrary units, "_au", unless the series is in HU).
std::vector<Profile> builtin_profiles();

// Name of the emphysema-index feature for a threshold: "laa950_percent" for -950 HU (the
// literature's, kernels::kLaa950PercentFeature), else "laa<|t|>_percent" (e.g. "laa910_percent").
std::string laa_feature_name(double laa_threshold_hu);

// kernels::emphysema_rule_set(threshold_percent) reading the feature of `laa_threshold_hu`, for
// profiles that change ChestParams::laa_threshold_hu.
kernels::RuleSet emphysema_rules(double threshold_percent, double laa_threshold_hu = -950);

// True iff the profile's match rules accept the series.
bool matches(const Profile& p, const dicom::SeriesInfo& info);

// True when there are no keywords and tokens, or one keyword occurs in one of `fields` as a
// substring, or one token as a whole word (case-insensitive; words split at non-alphanumerics).
bool text_matches(const std::vector<std::string>& keywords, const std::vector<std::string>& tokens,
                  std::initializer_list<std::string_view> fields);

// First profile in `profiles` that matches, or nullptr.
const Profile* match_profile(const std::vector<Profile>& profiles, const dicom::SeriesInfo& info);

// Profile named `name`, or nullptr.
const Profile* find_profile(const std::vector<Profile>& profiles, std::string_view name);

}  // namespace analysis
