#pragma once
// The analysis profiles a config asks for: its [[profile]] tables (each a built-in profile with
// overrides), then the built-in ones.
#include <vector>

#include "analysis/profile.h"
#include "config/config.h"

namespace analysis {

// The config's [[profile]] tables (in order), then the built-in profiles [analysis]
// builtin_profiles enables (every built-in when `all_builtins`, as `pacsnode analyze` uses them).
// Throws config::ConfigError naming the profile when a resulting profile is inconsistent.
std::vector<analysis::Profile> profiles_from(const config::Config& cfg, bool all_builtins = false);

// Applies the ibsi_* keys of a [[profile]] table (or of `pacsnode analyze`'s feature options,
// config::parse_feature_overrides) to a profile's FeatureParams: first ibsi_preset (an IBSI CT
// phantom configuration), then each key that is set. Throws std::invalid_argument for an unknown
// family name.
void apply_feature_config(const config::ProfileConfig& pc, FeatureParams& f);

}  // namespace analysis
