#define BOOST_TEST_MODULE profile
#include <boost/test/unit_test.hpp>

// Profile matching and validation.
#include <stdexcept>
#include <string>

#include "analysis/pipeline.h"
#include "analysis/profile.h"

using namespace analysis;

namespace {

dicom::SeriesInfo series(std::string modality, std::string body_part, std::string description = {},
                         std::string protocol = {}) {
  dicom::SeriesInfo s;
  s.modality = std::move(modality);
  s.body_part = std::move(body_part);
  s.series_description = std::move(description);
  s.protocol_name = std::move(protocol);
  return s;
}

std::string matched(const dicom::SeriesInfo& s) {
  static const auto profiles = builtin_profiles();
  const Profile* p = match_profile(profiles, s);
  return p ? p->name : "none";
}

}  // namespace

BOOST_AUTO_TEST_CASE(builtins_are_ct_chest_then_generic_and_valid) {
  const auto ps = builtin_profiles();
  BOOST_TEST_REQUIRE(ps.size() == 2u);
  BOOST_TEST(ps[0].name == "ct-chest");
  BOOST_TEST(ps[1].name == "generic");
  for (const auto& p : ps) BOOST_CHECK_NO_THROW(p.validate());
  BOOST_TEST_REQUIRE(ps[0].rule_sets.size() == 1u);
  BOOST_TEST(ps[0].rule_sets[0].name == "emphysema");
  BOOST_TEST(ps[0].rule_sets[0].rules.at(0).all_of.at(0).threshold == 5.0);  // LAA-950 >= 5 %
}

BOOST_AUTO_TEST_CASE(ct_chest_matches_vendor_spellings) {
  BOOST_TEST(matched(series("CT", "CHEST")) == "ct-chest");
  BOOST_TEST(matched(series("CT", "THORAX")) == "ct-chest");
  BOOST_TEST(matched(series("CT", "LUNG")) == "ct-chest");
  BOOST_TEST(matched(series("CT", "", "Thorax 1.0 B31f")) == "ct-chest");
  BOOST_TEST(matched(series("CT", "", "CT CH/AB/PEL")) == "ct-chest");
  BOOST_TEST(matched(series("CT", "", "", "CT CAP")) == "ct-chest");
  BOOST_TEST(matched(series("ct", "chest")) == "ct-chest");  // case-insensitive
  BOOST_TEST(matched(series("CT", "", "HR lungs insp")) == "ct-chest");
  BOOST_TEST(matched(series("CT", "TORAX")) == "ct-chest");
}

BOOST_AUTO_TEST_CASE(other_series_fall_back_to_generic) {
  BOOST_TEST(matched(series("CT", "HEAD", "Brain routine")) == "generic");
  BOOST_TEST(matched(series("CT", "ABDOMEN", "CHOLANGIO")) == "generic");  // CH only as a whole word
  BOOST_TEST(matched(series("MR", "CHEST", "T2 thorax")) == "generic");    // ct-chest is CT only
  BOOST_TEST(matched(series("DX", "")) == "generic");
  BOOST_TEST(matched(series("", "")) == "generic");
}

BOOST_AUTO_TEST_CASE(custom_profiles_match_in_order) {
  Profile knee;
  knee.name = "mr-knee";
  knee.match.modalities = {"MR"};
  knee.match.keywords = {"knee"};
  auto ps = builtin_profiles();
  ps.insert(ps.begin() + 1, knee);
  BOOST_TEST(match_profile(ps, series("MR", "KNEE"))->name == "mr-knee");
  BOOST_TEST(match_profile(ps, series("MR", "", "", "Knee PD fs"))->name == "mr-knee");
  BOOST_TEST(match_profile(ps, series("MR", "BRAIN"))->name == "generic");
  std::vector<Profile> only_knee{knee};
  BOOST_TEST(match_profile(only_knee, series("CT", "KNEE")) == nullptr);
}

BOOST_AUTO_TEST_CASE(forced_profile_and_unknown_name) {
  const Pipeline pipeline;
  BOOST_TEST(pipeline.select(series("MR", "BRAIN"), "ct-chest")->name == "ct-chest");
  BOOST_CHECK_THROW(pipeline.select(series("MR", "BRAIN"), "no-such"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(validate_names_the_bad_field) {
  Profile p = builtin_profiles()[1];
  p.preprocess.median_ksize = 4;
  try {
    p.validate();
    BOOST_FAIL("expected invalid_argument");
  } catch (const std::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("preprocess.median") != std::string::npos, e.what());
  }
  p = builtin_profiles()[1];
  p.generic.window = kernels::Window{10, -10};
  BOOST_CHECK_THROW(p.validate(), std::invalid_argument);
  BOOST_CHECK_THROW(Pipeline({p}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(emphysema_rule_must_read_the_measured_index) {
  Profile p = builtin_profiles()[0];
  p.chest.laa_threshold_hu = -910;  // measures laa910_percent, the default rule reads laa950_percent
  BOOST_CHECK_THROW(p.validate(), std::invalid_argument);
  p.rule_sets = {emphysema_rules(10.0, -910)};
  BOOST_CHECK_NO_THROW(p.validate());
  BOOST_TEST(p.rule_sets[0].rules.at(0).all_of.at(0).feature == "laa910_percent");
  BOOST_TEST(p.rule_sets[0].rules.at(0).all_of.at(0).threshold == 10.0);
  BOOST_TEST(laa_feature_name(-950) == "laa950_percent");
  BOOST_TEST(emphysema_rules(5.0).rules.at(0).all_of.at(0).feature == "laa950_percent");
}
