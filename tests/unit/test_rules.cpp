#define BOOST_TEST_MODULE rules
// Which series are analysed, and with which profile: [[rule]] tables tried in order, each criterion
// on the header facts, actions analyse/ignore, [analysis] unmatched, and built-in profiles that can
// be turned off (analysis/rules.h).
#include <boost/test/unit_test.hpp>

#include "analysis/profiles_config.h"
#include "analysis/rules.h"
#include "config/config.h"

namespace {

analysis::RuleDecision decide(const std::string& toml, const analysis::SeriesFacts& f) {
  const config::Config cfg = config::parse(toml, "rules.toml");
  return analysis::decide(cfg, analysis::profiles_from(cfg), f);
}

analysis::SeriesFacts chest_ct() {
  analysis::SeriesFacts f;
  f.modality = "CT";
  f.body_part = "CHEST";
  f.series_description = "Thorax 1.0 B31f";
  f.study_description = "CT Thorax screening";
  f.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2";
  f.calling_ae = "CT_SCANNER_1";
  f.images = 120;
  return f;
}

analysis::SeriesFacts abdominal_mr() {
  analysis::SeriesFacts f;
  f.modality = "MR";
  f.body_part = "ABDOMEN";
  f.series_description = "t2_haste_cor";
  f.sop_class_uid = "1.2.840.10008.5.1.4.1.1.4";
  f.calling_ae = "MR_1";
  f.images = 30;
  return f;
}

}  // namespace

BOOST_AUTO_TEST_CASE(default_rules_analyse_chest_ct_and_ignore_everything_else) {
  const auto ct = decide("", chest_ct());
  BOOST_TEST(ct.analyse);
  BOOST_TEST(ct.profile == "ct-chest");
  BOOST_TEST(ct.rule == "default");
  // The abdominal MR that used to get a one-segment "tissue" SEG: generic is off by default.
  const auto mr = decide("", abdominal_mr());
  BOOST_TEST(!mr.analyse);
  BOOST_TEST(mr.why.find("no enabled profile matches") != std::string::npos, mr.why);
  // With generic enabled, the same MR is analysed with it.
  const auto with_generic = decide("[analysis]\nbuiltin_profiles = [\"ct-chest\", \"generic\"]\n", abdominal_mr());
  BOOST_TEST(with_generic.analyse);
  BOOST_TEST(with_generic.profile == "generic");
  // Every built-in off: nothing is analysed, chest CT included.
  const auto none = decide("[analysis]\nbuiltin_profiles = []\n", chest_ct());
  BOOST_TEST(!none.analyse);
}

BOOST_AUTO_TEST_CASE(each_criterion_decides_and_the_first_matching_rule_wins) {
  const std::string rules = R"(
[analysis]
builtin_profiles = ["ct-chest", "generic"]
[[rule]]
name = "research-scanner"
action = "ignore"
calling_ae = ["ct_scanner_2"]
[[rule]]
name = "scouts"
action = "ignore"
modalities = ["CT"]
series_descriptions = ["topogram", "scout"]
[[rule]]
name = "thin-chest"
profile = "ct-chest"
modalities = ["ct"]
body_parts = ["chest"]
study_descriptions = ["thorax"]
sop_classes = ["1.2.840.10008.5.1.4.1.1.2"]
min_slices = 50
[[rule]]
name = "mr-generic"
profile = "generic"
modalities = ["MR"]
keywords = ["HASTE"]
)";
  // All criteria of thin-chest hold (case-insensitive).
  auto f = chest_ct();
  auto d = decide(rules, f);
  BOOST_TEST(d.analyse);
  BOOST_TEST(d.rule == "thin-chest");
  BOOST_TEST(d.profile == "ct-chest");
  // calling AE: the first rule ignores what the research scanner sends, whatever else it is.
  f.calling_ae = "CT_SCANNER_2";
  d = decide(rules, f);
  BOOST_TEST(!d.analyse);
  BOOST_TEST(d.rule == "research-scanner");
  // series description: a scout is ignored.
  f = chest_ct();
  f.series_description = "Topogram 0.6 T20s";
  d = decide(rules, f);
  BOOST_TEST(!d.analyse);
  BOOST_TEST(d.rule == "scouts");
  // min_slices: too few images, no rule matches, unmatched defaults to ignore.
  f = chest_ct();
  f.images = 20;
  d = decide(rules, f);
  BOOST_TEST(!d.analyse);
  BOOST_TEST(d.rule == "(unmatched)");
  BOOST_TEST(d.why.find("unmatched = \"ignore\"") != std::string::npos, d.why);
  // SOP class: an Enhanced CT is not listed.
  f = chest_ct();
  f.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2.1";
  BOOST_TEST(decide(rules, f).rule == "(unmatched)");
  // body part and study description.
  f = chest_ct();
  f.body_part = "ABDOMEN";
  BOOST_TEST(decide(rules, f).rule == "(unmatched)");
  f = chest_ct();
  f.study_description = "CT Abdomen";
  BOOST_TEST(decide(rules, f).rule == "(unmatched)");
  // keywords: the MR rule analyses with generic.
  d = decide(rules, abdominal_mr());
  BOOST_TEST(d.analyse);
  BOOST_TEST(d.rule == "mr-generic");
  BOOST_TEST(d.profile == "generic");
}

BOOST_AUTO_TEST_CASE(unmatched_can_be_auto_or_a_profile_and_bad_names_are_config_errors) {
  auto f = abdominal_mr();
  const std::string only_ct = "[[rule]]\nname = \"ct\"\nmodalities = [\"CT\"]\n";
  BOOST_TEST(!decide(only_ct, f).analyse);
  const auto a = decide(only_ct + "[analysis]\nunmatched = \"generic\"\nbuiltin_profiles = [\"ct-chest\", \"generic\"]\n", f);
  BOOST_TEST(a.analyse);
  BOOST_TEST(a.profile == "generic");
  const auto b = decide(only_ct + "[analysis]\nunmatched = \"auto\"\nbuiltin_profiles = [\"generic\"]\n", f);
  BOOST_TEST(b.analyse);
  BOOST_TEST(b.profile == "generic");

  const auto problems = [](const std::string& toml) {
    try {
      config::parse(toml, "bad.toml");
    } catch (const config::ConfigError& e) {
      std::string all;
      for (const auto& p : e.problems()) all += p + "\n";
      return all;
    }
    return std::string();
  };
  BOOST_TEST(problems("[[rule]]\nname = \"x\"\naction = \"maybe\"\n").find("is not analyse or ignore") != std::string::npos);
  BOOST_TEST(problems("[[rule]]\nname = \"x\"\nprofile = \"nope\"\n").find("no [[profile]] or enabled built-in profile named") !=
             std::string::npos);
  BOOST_TEST(problems("[[rule]]\nname = \"x\"\nmin_slices = -1\n").find("min_slices") != std::string::npos);
  BOOST_TEST(problems("[[rule]]\nname = \"x\"\nbody_part = [\"CHEST\"]\n").find("unknown key") != std::string::npos);
}
