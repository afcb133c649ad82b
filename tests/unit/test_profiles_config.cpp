#define BOOST_TEST_MODULE scp_profiles
#include <boost/test/unit_test.hpp>

#include "analysis/profiles_config.h"

BOOST_AUTO_TEST_CASE(config_profiles_come_first_and_override_their_base) {
  const auto cfg = config::parse(R"(
[[profile]]
name = "ct-lung-screening"
base = "ct-chest"
keywords = ["SCREENING"]
tokens = []
median = 5
laa_threshold_hu = -910
emphysema_threshold_percent = 6
[[profile]]
name = "mr-any"
modalities = ["MR"]
threshold = [100, 4000]
keep_largest = 0
)", "t.toml");
  const auto profiles = analysis::profiles_from(cfg, /*all_builtins=*/true);
  BOOST_TEST_REQUIRE(profiles.size() == 4u);
  BOOST_TEST(profiles[0].name == "ct-lung-screening");
  BOOST_TEST(profiles[1].name == "mr-any");
  BOOST_TEST(profiles[2].name == "ct-chest");
  BOOST_TEST(profiles[3].name == "generic");
  BOOST_TEST((profiles[0].recipe == analysis::Recipe::ct_chest));
  BOOST_TEST(profiles[0].preprocess.median_ksize == 5);
  BOOST_TEST(profiles[0].chest.laa_threshold_hu == -910.0);
  BOOST_TEST_REQUIRE(profiles[0].rule_sets.size() == 1u);
  BOOST_TEST((profiles[1].recipe == analysis::Recipe::generic));
  BOOST_TEST(profiles[1].generic.window.has_value());
  BOOST_TEST(profiles[1].generic.keep_largest == 0);

  dicom::SeriesInfo screening;
  screening.modality = "CT";
  screening.series_description = "LOW DOSE SCREENING";
  BOOST_TEST(analysis::match_profile(profiles, screening)->name == "ct-lung-screening");
  dicom::SeriesInfo mr;
  mr.modality = "MR";
  BOOST_TEST(analysis::match_profile(profiles, mr)->name == "mr-any");
  dicom::SeriesInfo chest;
  chest.modality = "CT";
  chest.body_part = "CHEST";
  BOOST_TEST(analysis::match_profile(profiles, chest)->name == "ct-chest");
}

BOOST_AUTO_TEST_CASE(no_profiles_in_the_config_gives_the_enabled_built_in_ones) {
  // The daemon's default enables ct-chest only: a series no profile matches is not analysed.
  const auto daemon = analysis::profiles_from(config::Config{});
  BOOST_TEST_REQUIRE(daemon.size() == 1u);
  BOOST_TEST(daemon[0].name == "ct-chest");
  // analyze (research use) has every built-in.
  const auto all = analysis::profiles_from(config::Config{}, true);
  BOOST_TEST_REQUIRE(all.size() == 2u);
  BOOST_TEST(all[0].name == "ct-chest");
  BOOST_TEST(all[1].name == "generic");
  // Both can be enabled, or none.
  const auto both = analysis::profiles_from(config::parse("[analysis]\nbuiltin_profiles = [\"generic\", \"ct-chest\"]\n", "t"));
  BOOST_TEST(both.size() == 2u);
  BOOST_TEST(analysis::profiles_from(config::parse("[analysis]\nbuiltin_profiles = []\n", "t")).empty());
}
