#pragma once
// Which series the daemon analyses, and with which profile: the [[rule]] tables of the config,
// decided from header facts alone (no pixels), so that the daemon decides before any worker starts
// and `pacsnode explain` can show the decision for a folder without analysing it.
//
// Rules are tried in order; the first whose every given criterion holds decides:
//   action "ignore"  - the series is stored, never analysed;
//   action "analyse" - with `profile` (a [[profile]] name or an enabled built-in), or "auto": the
//                      first profile (config profiles first, then the enabled built-ins) whose own
//                      match rules accept the series; none: ignored, with the reason.
// A series no rule matches gets [analysis] unmatched: "ignore" (the default), "auto", or a profile.
// Without any [[rule]] one built-in rule applies: analyse with profile "auto" (so with the default
// built-ins, chest CT goes to ct-chest and everything else is ignored).
//
// Criteria (all case-insensitive; an empty list is no criterion):
//   modalities          the series' Modality is one of them
//   keywords / tokens   one occurs in Body Part Examined, Series Description, Protocol Name or
//                       Study Description (keyword: substring; token: whole word)
//   body_parts          Body Part Examined equals one of them
//   series_descriptions / study_descriptions   one is a substring of the description
//   calling_ae          the AE title that sent the series is one of them
//   sop_classes         its SOP Class UID is one of them
//   min_slices          at least this many images (instances x frames)
#include <string>
#include <vector>

#include "analysis/profile.h"
#include "config/config.h"

namespace analysis {

// What rules look at: header values of a series (from the index, or read from files by `explain`).
struct SeriesFacts {
  std::string modality, body_part, series_description, protocol_name, study_description;
  std::string sop_class_uid, calling_ae;
  int images = 0;  // instances x frames
};

struct RuleDecision {
  bool analyse = false;
  std::string rule;     // the rule that decided; "(unmatched)" when none did
  std::string profile;  // the profile to use (resolved: never "auto") when analyse
  std::string why;      // one line for logs and `explain`
};

// The rules a config asks for (its [[rule]] tables, or the built-in default rule).
std::vector<config::RuleConfig> effective_rules(const config::Config& cfg);

// `profiles`: the profiles the config makes available (analysis::profiles_from).
RuleDecision decide(const config::Config& cfg, const std::vector<Profile>& profiles, const SeriesFacts& facts);

}  // namespace analysis
