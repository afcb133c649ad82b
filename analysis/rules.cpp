#include "analysis/rules.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace analysis {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string trimmed(std::string_view s) {
  const auto b = s.find_first_not_of(' ');
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(' ') - b + 1));
}

bool equals_any(const std::vector<std::string>& list, const std::string& value) {
  const std::string v = upper(trimmed(value));
  return std::any_of(list.begin(), list.end(), [&](const std::string& x) { return upper(trimmed(x)) == v; });
}

bool contains_any(const std::vector<std::string>& list, const std::string& value) {
  const std::string v = upper(value);
  return std::any_of(list.begin(), list.end(), [&](const std::string& x) { return !x.empty() && v.find(upper(x)) != std::string::npos; });
}

// Why `r` does not match `f` (empty: it matches).
std::string mismatch(const config::RuleConfig& r, const SeriesFacts& f) {
  if (!r.modalities.empty() && !equals_any(r.modalities, f.modality)) return fmt::format("modality {} not listed", f.modality);
  if (!r.body_parts.empty() && !equals_any(r.body_parts, f.body_part)) return "body part not listed";
  if (!r.series_descriptions.empty() && !contains_any(r.series_descriptions, f.series_description))
    return "series description does not match";
  if (!r.study_descriptions.empty() && !contains_any(r.study_descriptions, f.study_description))
    return "study description does not match";
  if (!r.calling_ae.empty() && !equals_any(r.calling_ae, f.calling_ae)) return fmt::format("sent by '{}'", f.calling_ae);
  if (!r.sop_classes.empty() && !equals_any(r.sop_classes, f.sop_class_uid)) return fmt::format("SOP class {} not listed", f.sop_class_uid);
  if (r.min_slices > 0 && f.images < r.min_slices) return fmt::format("{} image(s), fewer than {}", f.images, r.min_slices);
  if (!text_matches(r.keywords, r.tokens, {f.body_part, f.series_description, f.protocol_name, f.study_description}))
    return "no keyword or token in body part, descriptions or protocol";
  return {};
}

// The profile for `name` ("auto": the first whose own match accepts the series); empty if none.
std::string resolve(const std::string& name, const std::vector<Profile>& profiles, const SeriesFacts& f) {
  if (name != "auto") return find_profile(profiles, name) ? name : std::string();
  dicom::SeriesInfo info;
  info.modality = f.modality;
  info.body_part = f.body_part;
  info.series_description = f.series_description;
  info.protocol_name = f.protocol_name;
  const Profile* p = match_profile(profiles, info);
  return p ? p->name : std::string();
}

RuleDecision analyse_with(const std::string& rule, const std::string& profile_name, const std::vector<Profile>& profiles,
                          const SeriesFacts& f, const std::string& because) {
  RuleDecision d;
  d.rule = rule;
  d.profile = resolve(profile_name, profiles, f);
  d.analyse = !d.profile.empty();
  if (d.analyse)
    d.why = profile_name == "auto" ? fmt::format("{}; profile {} matches the series", because, d.profile)
                                   : fmt::format("{}; profile {}", because, d.profile);
  else
    d.why = profile_name == "auto" ? fmt::format("{}; but no enabled profile matches the series: not analysed", because)
                                   : fmt::format("{}; profile {} is not available: not analysed", because, profile_name);
  return d;
}

}  // namespace

std::vector<config::RuleConfig> effective_rules(const config::Config& cfg) {
  if (!cfg.rules.empty()) return cfg.rules;
  config::RuleConfig r;
  r.name = "default";
  r.action = "analyse";
  r.profile = "auto";
  return {r};
}

RuleDecision decide(const config::Config& cfg, const std::vector<Profile>& profiles, const SeriesFacts& f) {
  const auto rules = effective_rules(cfg);
  for (const auto& r : rules) {
    if (!mismatch(r, f).empty()) continue;
    if (r.action == "ignore") return {false, r.name, {}, fmt::format("rule '{}' ignores it", r.name)};
    return analyse_with(r.name, r.profile, profiles, f, fmt::format("rule '{}' analyses it", r.name));
  }
  std::string why = "no rule matches";
  if (rules.size() == 1) why += fmt::format(" (rule '{}': {})", rules.front().name, mismatch(rules.front(), f));
  if (cfg.analysis.unmatched == "ignore") return {false, "(unmatched)", {}, why + "; [analysis] unmatched = \"ignore\""};
  return analyse_with("(unmatched)", cfg.analysis.unmatched, profiles, f,
                      fmt::format("{}; [analysis] unmatched = \"{}\"", why, cfg.analysis.unmatched));
}

}  // namespace analysis
