#include "analysis/profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <stdexcept>

namespace analysis {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> words(const std::string& upper_text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : upper_text) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      cur += c;
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

void require(bool ok, const std::string& profile, std::string_view field, std::string_view why) {
  if (!ok) throw std::invalid_argument(fmt::format("profile '{}': {}: {}", profile, field, why));
}

}  // namespace

bool text_matches(const std::vector<std::string>& keywords, const std::vector<std::string>& tokens,
                  std::initializer_list<std::string_view> fields) {
  if (keywords.empty() && tokens.empty()) return true;
  for (const std::string_view field : fields) {
    const std::string text = upper(field);
    if (text.empty()) continue;
    for (const auto& k : keywords)
      if (!k.empty() && text.find(upper(k)) != std::string::npos) return true;
    if (!tokens.empty()) {
      const auto ws = words(text);
      for (const auto& t : tokens)
        if (std::find(ws.begin(), ws.end(), upper(t)) != ws.end()) return true;
    }
  }
  return false;
}

std::string_view to_string(Recipe r) { return r == Recipe::ct_chest ? "ct-chest" : "generic"; }

Recipe parse_recipe(std::string_view s) {
  if (s == "generic") return Recipe::generic;
  if (s == "ct-chest" || s == "ct_chest") return Recipe::ct_chest;
  throw std::invalid_argument(fmt::format("unknown segmentation recipe '{}' (generic, ct-chest)", s));
}

kernels::ibsi::ProcessingSettings FeatureParams::default_processing() {
  kernels::ibsi::ProcessingSettings s;
  s.discretisation.method = kernels::ibsi::Discretisation::Method::fixed_bin_size;
  s.discretisation.bin_width = 25;  // HU for CT; the lower bound is the segment's minimum
  s.image_diagnostics = false;
  return s;
}

kernels::ibsi::FeatureSettings FeatureParams::default_feature_settings() {
  kernels::ibsi::FeatureSettings s;
  s.scope = {false, true};  // texture in 3D; the 2D and 2.5D aggregations on request
  return s;
}

void Profile::validate() const {
  require(!name.empty(), name, "name", "must not be empty");
  const auto& p = preprocess;
  require(p.median_ksize == 0 || p.median_ksize == 3 || p.median_ksize == 5, name, "preprocess.median", "0, 3 or 5");
  require(std::isfinite(p.gaussian_sigma_mm) && p.gaussian_sigma_mm >= 0, name, "preprocess.gaussian_sigma_mm", ">= 0");
  require(std::isfinite(p.gaussian_sigma_slice_mm) && p.gaussian_sigma_slice_mm >= 0, name,
          "preprocess.gaussian_sigma_slice_mm", ">= 0");
  require(std::isfinite(p.resample_mm) && p.resample_mm >= 0, name, "preprocess.resample_mm", ">= 0");
  if (generic.window) require(generic.window->lo <= generic.window->hi, name, "segment.window", "lo > hi");
  require(generic.keep_largest >= 0, name, "segment.keep_largest", ">= 0");
  require(generic.open_radius_mm >= 0 && generic.close_radius_mm >= 0, name, "segment.open/close_radius_mm", ">= 0");
  require(!generic.segment_name.empty(), name, "segment.name", "must not be empty");
  require(chest.min_lung_ml >= 0 && chest.min_dense_ml >= 0, name, "chest.min_*_ml", ">= 0");
  require(chest.lung_close_radius_mm >= 0 && chest.body_open_mm >= 0 && chest.lesion_close_mm >= 0 &&
              chest.airway_edge_mm >= 0,
          name, "chest.*_mm", ">= 0");
  require(chest.dense_min_hu > chest.air_max_hu, name, "chest.dense_min_hu", "must be above air_max_hu");
  require(chest.airway_max_hu < chest.airway_edge_hu, name, "chest.airway_max_hu", "must be below airway_edge_hu");
  require(chest.max_lesions >= 0 && chest.max_lesions <= 20, name, "chest.max_lesions", "0..20");
  require(chest.coverage_edge_fraction >= 0 && chest.coverage_edge_fraction < 1, name, "chest.coverage_edge_fraction",
          "0 <= f < 1");
  require(research_label.size() <= 40, name, "research_label", "at most 40 characters");
  require(preview_tiles >= 1 && preview_tiles <= 64, name, "preview_tiles", "1..64");
  if (window) require(window->width > 0, name, "window.width", "> 0");
  for (const auto& rs : rule_sets) {
    kernels::validate(rs);
    if (recipe != Recipe::ct_chest) continue;
    const std::string measured = laa_feature_name(chest.laa_threshold_hu);
    for (const auto& rule : rs.rules)
      for (const auto& cond : rule.all_of) {
        const auto& f = cond.feature;
        const bool is_laa = f.size() > 11 && f.rfind("laa", 0) == 0 && f.ends_with("_percent") &&
                            std::all_of(f.begin() + 3, f.end() - 8,
                                        [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
        require(!is_laa || f == measured, name, fmt::format("rule set '{}'", rs.name),
                fmt::format("reads {} but chest.laa_threshold_hu {} gives {}", f, chest.laa_threshold_hu, measured));
      }
  }
}

std::string laa_feature_name(double laa_threshold_hu) {
  if (laa_threshold_hu == -950) return std::string(kernels::kLaa950PercentFeature);
  return fmt::format("laa{}_percent", static_cast<long>(std::lround(std::abs(laa_threshold_hu))));
}

kernels::RuleSet emphysema_rules(double threshold_percent, double laa_threshold_hu) {
  kernels::RuleSet rs = kernels::emphysema_rule_set(threshold_percent);
  const std::string feature = laa_feature_name(laa_threshold_hu);
  for (auto& rule : rs.rules) {
    for (auto& c : rule.all_of)
      if (c.feature == kernels::kLaa950PercentFeature) c.feature = feature;
    if (feature != kernels::kLaa950PercentFeature) rule.name = fmt::format("{} >= {}%", feature, threshold_percent);
  }
  kernels::validate(rs);
  return rs;
}

std::vector<Profile> builtin_profiles() {
  std::vector<Profile> out;

  Profile chest;
  chest.name = "ct-chest";
  chest.match.modalities = {"CT"};
  // Substrings: CHEST, THORAX/THORACIC/THORAKS (THORA), TORAX (es/pt), LUNG/LUNGE/LUNGS,
  // PULMONARY/PULMO, POUMON (fr); whole words: vendor abbreviations such as "CT CH/AB/PEL", "CHST",
  // "THX", and "CAP"/"TAP" (chest-abdomen-pelvis / thorax-abdomen-pelvis protocols).
  chest.match.keywords = {"CHEST", "THORA", "TORAX", "LUNG", "PULMO", "POUMON"};
  chest.match.tokens = {"CH", "CHST", "THX", "CAP", "TAP"};
  chest.preprocess.median_ksize = 3;
  chest.recipe = Recipe::ct_chest;
  // The full IBSI set on each lung, the airways and the lesion candidates; bone and contrast
  // ("dense") and the body get volume and intensity statistics only.
  chest.features.basic_only = {"body", "lungs", "dense"};
  chest.rule_sets = {kernels::emphysema_rule_set()};  // laa950_percent >= 5 % -> present
  chest.rule_segments = {"right_lung", "left_lung"};
  chest.window = kernels::kLungWindow;
  out.push_back(std::move(chest));

  Profile generic;
  generic.name = "generic";
  generic.preprocess.median_ksize = 3;
  generic.recipe = Recipe::generic;
  generic.generic.keep_largest = 1;
  generic.generic.fill_holes = true;
  out.push_back(std::move(generic));
  return out;
}

bool matches(const Profile& p, const dicom::SeriesInfo& info) {
  if (!p.match.modalities.empty()) {
    const std::string mod = upper(info.modality);
    if (std::none_of(p.match.modalities.begin(), p.match.modalities.end(),
                     [&](const std::string& m) { return upper(m) == mod; }))
      return false;
  }
  return text_matches(p.match.keywords, p.match.tokens, {info.body_part, info.series_description, info.protocol_name});
}

const Profile* match_profile(const std::vector<Profile>& profiles, const dicom::SeriesInfo& info) {
  for (const auto& p : profiles)
    if (matches(p, info)) return &p;
  return nullptr;
}

const Profile* find_profile(const std::vector<Profile>& profiles, std::string_view name) {
  for (const auto& p : profiles)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace analysis
