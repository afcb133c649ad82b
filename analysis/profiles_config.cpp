#include "analysis/profiles_config.h"

#include <algorithm>

#include <fmt/format.h>


namespace analysis {

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
  return out;
}

}  // namespace analysis
