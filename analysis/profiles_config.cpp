#include "analysis/profiles_config.h"

#include <algorithm>

#include <fmt/format.h>


namespace analysis {

void apply_feature_config(const config::ProfileConfig& pc, FeatureParams& f) {
  namespace ib = kernels::ibsi;
  auto& proc = f.processing;
  if (pc.ibsi_preset) {
    const char c = (*pc.ibsi_preset)[0];
    proc = ib::ct_phantom_configuration(c);
    f.ibsi.scope = ib::ct_phantom_texture_scope(c);
    f.ibsi.ivh = ib::ivh_options_for(ib::ct_phantom_ivh_discretisation(c), proc.resegmentation);
  }
  if (pc.ibsi_families) {
    f.ibsi.families.clear();
    for (const auto& name : *pc.ibsi_families) f.ibsi.families.push_back(ib::parse_family(name));
  }
  if (pc.ibsi_texture) f.ibsi.scope = {*pc.ibsi_texture != "3d", *pc.ibsi_texture != "2d"};
  if (pc.ibsi_spacing_mm) {
    const double s = *pc.ibsi_spacing_mm;
    proc.interpolation.spacing = std::array<double, 3>{s, s, s};
    proc.interpolation.in_plane_only = !f.ibsi.scope.three_d;  // 2D texture: in-plane (IBSI)
    proc.interpolation.round_intensities = true;
  }
  if (pc.ibsi_interpolation)
    proc.interpolation.image_method = *pc.ibsi_interpolation == "nearest" ? ib::Interpolation::Method::nearest
                                      : *pc.ibsi_interpolation == "cubic" ? ib::Interpolation::Method::cubic
                                                                          : ib::Interpolation::Method::linear;
  if (pc.ibsi_reseg_range) {
    proc.resegmentation.min = (*pc.ibsi_reseg_range)[0];
    proc.resegmentation.max = (*pc.ibsi_reseg_range)[1];
    proc.discretisation.lower_bound = proc.resegmentation.min;  // IBSI: FBS starts at the range's lower bound
  }
  if (pc.ibsi_reseg_outliers) proc.resegmentation.outlier_3sigma = *pc.ibsi_reseg_outliers;
  if (pc.ibsi_reseg_range && !pc.ibsi_preset && f.ibsi.ivh.method == ib::IvhOptions::Method::none) {
    f.ibsi.ivh.lower = proc.resegmentation.min;  // the IVH spans the re-segmentation range (IBSI)
    f.ibsi.ivh.upper = proc.resegmentation.max;
  }
  if (pc.ibsi_discretisation)
    proc.discretisation.method = *pc.ibsi_discretisation == "fbn" ? ib::Discretisation::Method::fixed_bin_number
                                                                  : ib::Discretisation::Method::fixed_bin_size;
  if (pc.ibsi_bin_width) proc.discretisation.bin_width = *pc.ibsi_bin_width;
  if (pc.ibsi_bins) proc.discretisation.bins = *pc.ibsi_bins;
}

std::vector<Profile> profiles_from(const config::Config& cfg, bool all_builtins) {
  const auto builtin = builtin_profiles();
  std::vector<Profile> out;
  std::vector<std::string> problems;
  for (std::size_t i = 0; i < cfg.profiles.size(); ++i) {
    const auto& pc = cfg.profiles[i];
    const auto* base = find_profile(builtin, pc.base);
    if (!base) {
      problems.push_back(fmt::format("profile[{}].base: no built-in profile \"{}\"", i, pc.base));
      continue;
    }
    Profile p = *base;
    p.name = pc.name;
    if (pc.modalities) p.match.modalities = *pc.modalities;
    if (pc.keywords) p.match.keywords = *pc.keywords;
    if (pc.tokens) p.match.tokens = *pc.tokens;
    if (pc.median) p.preprocess.median_ksize = *pc.median;
    if (pc.gaussian_sigma_mm) p.preprocess.gaussian_sigma_mm = *pc.gaussian_sigma_mm;
    if (pc.threshold) p.generic.window = kernels::Window{(*pc.threshold)[0], (*pc.threshold)[1]};
    if (pc.keep_largest) p.generic.keep_largest = *pc.keep_largest;
    if (pc.fill_holes) p.generic.fill_holes = *pc.fill_holes;
    if (pc.segment_name) p.generic.segment_name = *pc.segment_name;
    if (pc.laa_threshold_hu) p.chest.laa_threshold_hu = *pc.laa_threshold_hu;
    if (pc.laa_threshold_hu || pc.emphysema_threshold_percent)  // the rule reads the index it names
      p.rule_sets = {emphysema_rules(pc.emphysema_threshold_percent.value_or(5.0), p.chest.laa_threshold_hu)};
    if (pc.window) p.window = kernels::WindowLevel{(*pc.window)[0], (*pc.window)[1]};
    if (pc.model) p.model_path = *pc.model;
    try {
      apply_feature_config(pc, p.features);
      p.validate();
    } catch (const std::exception& e) {
      problems.push_back(fmt::format("profile[{}] \"{}\": {}", i, pc.name, e.what()));
    }
    out.push_back(std::move(p));
  }
  if (!problems.empty()) throw config::ConfigError(problems);
  const auto& enabled = cfg.analysis.builtin_profiles;
  for (const auto& b : builtin)
    if (all_builtins || std::find(enabled.begin(), enabled.end(), b.name) != enabled.end()) out.push_back(b);
  for (auto& p : out) p.research_label = cfg.analysis.research_label;
  return out;
}

}  // namespace analysis
