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

#include "analysis/kernels/airway.h"
#include "analysis/kernels/classify.h"
#include "analysis/kernels/display.h"
#include "analysis/kernels/ibsi/processing.h"
#include "analysis/kernels/ibsi/radiomics.h"
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
  // Measure the features on the filtered image instead of the values as decoded (which costs a
  // copy of the volume while the filters make the masks). Off: IBSI features are defined on the
  // unfiltered image.
  bool measure_filtered = false;
};

// Which segmentation recipe the Segment stage runs.
enum class Recipe {
  // One foreground segment "tissue" (label 1): threshold (Otsu or window), optional border drop,
  // keep the largest k components, open/close, 2D hole filling.
  generic,
  // CT chest: body (1), right lung (2), left lung (3), dense (4), airways (5), lesion
  // candidates (6..); see ChestParams and recipes::segment_ct_chest.
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
  // Body: voxels >= body_min_hu; a 2D opening with a square of half-width body_open_mm cuts thin
  // contacts (the CT couch's pad, straps) before the largest 3D component is taken; the surface
  // the opening rounded off is restored from the threshold within that distance; 2D holes filled.
  double body_min_hu = -500;
  double body_open_mm = 4;  // 0 = off
  // Airways (trachea, main and lobar bronchi): seeded where the trachea is in the cranial slices
  // (an air region of airway_seed_min_mm2..airway_seed_max_mm2 within airway_seed_offset_mm of
  // the mid-sagittal plane, searched over the cranial airway_seed_search_mm), grown through voxels
  // <= airway_max_hu (up to 50 HU higher while the leak control allows, for bronchi whose lumen
  // partial volume lifts) with leak control, widened by airway_edge_mm into voxels < airway_edge_hu.
  bool find_airways = true;
  double airway_max_hu = -950;
  double airway_edge_hu = -500;
  double airway_edge_mm = 1.5;
  double airway_seed_min_mm2 = 40, airway_seed_max_mm2 = 800, airway_seed_offset_mm = 30;
  double airway_seed_search_mm = 80;
  double airway_min_ml = 1;  // a smaller tree is ignored
  kernels::AirwayParams airway;
  // Lungs: air inside the body, value <= air_max_hu, airways excluded; components touching the
  // in-plane border are dropped, components below min_lung_ml ignored; the largest becomes one
  // lung and the largest on the other side of the body's mid-sagittal plane the other; a
  // component holding both is split per slice (see recipes::segment_ct_chest).
  double air_max_hu = -400;
  double min_lung_ml = 20;
  kernels::Connectivity lung_connectivity = kernels::Connectivity::c6;
  double lung_close_radius_mm = 3;  // 0 = off; in-plane closing of each lung before hole filling
  bool fill_lung_holes = true;      // 2D hole filling of each lung (vessels belong to the lung)
  // ... also in the coronal and sagittal planes, for holes up to this area (vessels lying in the
  // slice plane; larger holes, e.g. a nodule against the pleura, stay out). 0 = off.
  double lung_plane_hole_max_mm2 = 120;
  // Lesion candidates: solid (>= lesion_min_hu) bumps into a lung from its border (see the recipe).
  bool find_lesions = true;
  double lesion_close_mm = 20;
  double lesion_min_hu = -300;
  double lesion_min_ml = 0.1, lesion_max_ml = 250;
  double lesion_min_thickness_mm = 3;
  // Share of the candidate's in-plane border that is lung (or the partial-volume band next to it).
  // A hemisphere on the pleura has about 0.6 (arc against base); a nodule whose centre lies at
  // the pleural line or just beyond it, as the phantom's do, 0.45..0.6.
  double lesion_min_lung_contact = 0.4;
  // ... of which at most this share may be solid (a vessel reaching the pleura continues into the
  // lung as solid tissue; a nodule borders aerated lung)
  double lesion_max_solid_lung_border = 0.45;
  int max_lesions = 5;
  // Dense structures: voxels >= dense_min_hu inside the body and in no other segment, components
  // below min_dense_ml dropped. Bone, calcification and iodinated or oral contrast all exceed it.
  double dense_min_hu = 300;
  double min_dense_ml = 1;
  // Coverage: the apices (bases) count as inside the scan unless the lungs in the cranial
  // (caudal) end slice still cover more than this share of their largest cross-section.
  double coverage_edge_fraction = 0.02;
  // Emphysema index: share of lung voxels strictly below laa_threshold_hu, in percent
  // ("laa950_percent"), and Perc15 (15th percentile of the lung HU, "perc15_hu").
  double laa_threshold_hu = -950;
  // Every number is measured on the HU as decoded; the filters of the Preprocess stage only make
  // the masks (they go into a level map, kernels::level_map). false: filter the volume in place
  // and measure on the filtered image (the behaviour before; said in the SR).
  bool measure_on_original_hu = true;
  // Protocol check (from the headers): emphysema densitometry wants thin slices (<= this),
  // a smooth/standard reconstruction kernel and no IV contrast; otherwise the finding is qualified.
  double densitometry_max_slice_mm = 1.5;
};

struct FeatureParams {
  // The IBSI image processing chain (interpolation, re-segmentation, discretisation) and the
  // families computed on each segment (analysis/kernels/ibsi/). Defaults: the original grid, no
  // re-segmentation, fixed bin size 25 (HU for CT) from the segment's minimum, every family,
  // texture in 3D only (the 2D/2.5D aggregations on request: ibsi_texture). The measured image is
  // never filtered (the profile's filters make the masks only).
  kernels::ibsi::ProcessingSettings processing = default_processing();
  kernels::ibsi::FeatureSettings ibsi = default_feature_settings();
  // Segments (by name) that only get volume and intensity statistics (big, uninteresting ones,
  // e.g. "body" in ct-chest). Empty: all get the full set.
  std::vector<std::string> basic_only;

  static kernels::ibsi::ProcessingSettings default_processing();
  static kernels::ibsi::FeatureSettings default_feature_settings();
};

// Default of config analysis.research_label.
inline constexpr std::string_view kDefaultResearchLabel = "RESEARCH USE ONLY";

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
  // Marks every finding and the series descriptions of the results (SEG, SR, key images) and the
  // preview: the results are for research, not diagnosis. From config analysis.research_label.
  std::string research_label = std::string(kDefaultResearchLabel);

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

// Name of the lung density 15th-percentile feature (HU).
inline constexpr std::string_view kPerc15Feature = "perc15_hu";

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
