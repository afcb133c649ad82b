#define BOOST_TEST_MODULE classify_rules
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <ostream>

#include "analysis/kernels/classify.h"

namespace k = analysis::kernels;

namespace analysis::kernels {
// How Boost.Test prints a Code in a failed assertion.
std::ostream& boost_test_print_type(std::ostream& os, const Code& c) {
  return os << "(" << c.value << ", " << c.scheme << ", \"" << c.meaning << "\")";
}
}  // namespace analysis::kernels

namespace {

const k::Code kPresent{"52101004", "SCT", "Present"};
const k::Code kAbsent{"2667000", "SCT", "Absent"};
const k::Code kEmphysema{"87433001", "SCT", "Pulmonary emphysema"};

k::RuleSet one_condition(k::Comparison op, double threshold) {
  k::RuleSet rs;
  rs.name = "test";
  rs.rules.push_back(k::Rule{"x rule", {k::Condition{"x", op, threshold}}, k::Finding{kEmphysema, kPresent}});
  rs.otherwise = k::Finding{kEmphysema, kAbsent};
  return rs;
}

bool fires(k::Comparison op, double threshold, double x) {
  const auto out = k::evaluate(one_condition(op, threshold), k::FeatureMap{{"x", x}});
  BOOST_REQUIRE(out.finding.has_value());
  return out.finding->value == kPresent;
}

}  // namespace

BOOST_AUTO_TEST_CASE(each_comparison_at_and_around_its_threshold) {
  using C = k::Comparison;
  const double t = 5.0, below = std::nextafter(t, 0.0), above = std::nextafter(t, 10.0);
  BOOST_TEST(fires(C::less, t, below));
  BOOST_TEST(!fires(C::less, t, t));
  BOOST_TEST(fires(C::less_equal, t, t));
  BOOST_TEST(!fires(C::less_equal, t, above));
  BOOST_TEST(fires(C::greater, t, above));
  BOOST_TEST(!fires(C::greater, t, t));
  BOOST_TEST(fires(C::greater_equal, t, t));
  BOOST_TEST(!fires(C::greater_equal, t, below));
  BOOST_TEST(fires(C::equal, t, t));
  BOOST_TEST(!fires(C::equal, t, above));
  BOOST_TEST(!fires(C::equal, t, below));
}

BOOST_AUTO_TEST_CASE(default_emphysema_rule_uses_laa950_at_5_percent_inclusive) {
  const auto rs = k::emphysema_rule_set();
  const auto at = [&](double v) { return k::evaluate(rs, k::FeatureMap{{"laa950_percent", v}, {"other", 1.0}}); };
  const auto present = at(5.0), absent = at(std::nextafter(5.0, 0.0)), high = at(23.4);
  BOOST_REQUIRE(present.finding && absent.finding && high.finding);
  BOOST_TEST(present.finding->name == kEmphysema);
  BOOST_TEST(present.finding->value == kPresent);
  BOOST_TEST(high.finding->value == kPresent);
  BOOST_TEST(absent.finding->value == kAbsent);
  BOOST_TEST(absent.fired_rule.empty());
  BOOST_TEST(!present.fired_rule.empty());
  BOOST_TEST(present.rule_set == "emphysema");
  // Evidence holds exactly the features the rules read.
  BOOST_TEST(present.evidence.size() == 1u);
  BOOST_TEST(present.evidence.at("laa950_percent") == 5.0);
}

BOOST_AUTO_TEST_CASE(threshold_is_a_parameter) {
  const auto rs = k::emphysema_rule_set(6.0);
  BOOST_TEST(k::evaluate(rs, {{"laa950_percent", 5.5}}).finding->value == kAbsent);
  BOOST_TEST(k::evaluate(rs, {{"laa950_percent", 6.0}}).finding->value == kPresent);
}

BOOST_AUTO_TEST_CASE(missing_feature_throws_naming_it) {
  const auto rs = k::emphysema_rule_set();
  try {
    k::evaluate(rs, k::FeatureMap{{"laa910_percent", 12.0}});
    BOOST_FAIL("expected MissingFeatureError");
  } catch (const k::MissingFeatureError& e) {
    BOOST_TEST(e.feature() == "laa950_percent");
    BOOST_TEST(std::string(e.what()).find("laa950_percent") != std::string::npos);
    BOOST_TEST(e.needed_by().find("emphysema") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(missing_feature_of_a_later_rule_throws_even_if_an_earlier_rule_fires) {
  k::RuleSet rs;
  rs.name = "grade";
  rs.rules.push_back(k::Rule{"a", {k::Condition{"a", k::Comparison::greater, 0.0}}, k::Finding{kEmphysema, kPresent}});
  rs.rules.push_back(k::Rule{"b", {k::Condition{"b", k::Comparison::greater, 0.0}}, k::Finding{kEmphysema, kAbsent}});
  BOOST_CHECK_THROW(k::evaluate(rs, k::FeatureMap{{"a", 1.0}}), k::MissingFeatureError);
}

BOOST_AUTO_TEST_CASE(non_finite_feature_is_rejected) {
  const auto rs = k::emphysema_rule_set();
  BOOST_CHECK_THROW(k::evaluate(rs, {{"laa950_percent", std::numeric_limits<double>::quiet_NaN()}}),
                    std::invalid_argument);
  BOOST_CHECK_THROW(k::evaluate(rs, {{"laa950_percent", std::numeric_limits<double>::infinity()}}),
                    std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(all_conditions_must_hold_and_first_matching_rule_wins) {
  const k::Code severe{"24484000", "SCT", "Severe"}, mild{"255604002", "SCT", "Mild"};
  k::RuleSet rs;
  rs.name = "severity";
  rs.rules.push_back(k::Rule{"severe",
                             {k::Condition{"laa950_percent", k::Comparison::greater_equal, 25.0},
                              k::Condition{"volume_ml", k::Comparison::greater, 1000.0}},
                             k::Finding{kEmphysema, severe}});
  rs.rules.push_back(k::Rule{"mild", {k::Condition{"laa950_percent", k::Comparison::greater_equal, 5.0}},
                             k::Finding{kEmphysema, mild}});
  // No otherwise: no finding when nothing fires.
  const auto a = k::evaluate(rs, {{"laa950_percent", 30.0}, {"volume_ml", 5000.0}});
  const auto b = k::evaluate(rs, {{"laa950_percent", 30.0}, {"volume_ml", 500.0}});
  const auto c = k::evaluate(rs, {{"laa950_percent", 1.0}, {"volume_ml", 5000.0}});
  BOOST_TEST(a.finding->value == severe);
  BOOST_TEST(a.fired_rule == "severe");
  BOOST_TEST(b.finding->value == mild);  // one condition of "severe" fails
  BOOST_TEST(b.fired_rule == "mild");
  BOOST_TEST(!c.finding.has_value());
  BOOST_TEST(c.evidence.size() == 2u);
}

BOOST_AUTO_TEST_CASE(evaluating_several_rule_sets_keeps_their_order) {
  std::vector<k::RuleSet> sets{k::emphysema_rule_set(), one_condition(k::Comparison::less, 0.0)};
  const auto out = k::evaluate(sets, {{"laa950_percent", 8.0}, {"x", 1.0}});
  BOOST_REQUIRE(out.size() == 2u);
  BOOST_TEST(out[0].rule_set == "emphysema");
  BOOST_TEST(out[0].finding->value == kPresent);
  BOOST_TEST(out[1].rule_set == "test");
  BOOST_TEST(out[1].finding->value == kAbsent);
}

BOOST_AUTO_TEST_CASE(validate_rejects_malformed_rule_sets) {
  auto good = k::emphysema_rule_set();
  BOOST_CHECK_NO_THROW(k::validate(good));
  auto no_name = good;
  no_name.name.clear();
  BOOST_CHECK_THROW(k::validate(no_name), std::invalid_argument);
  auto no_conditions = good;
  no_conditions.rules[0].all_of.clear();
  BOOST_CHECK_THROW(k::validate(no_conditions), std::invalid_argument);
  auto nan_threshold = good;
  nan_threshold.rules[0].all_of[0].threshold = std::numeric_limits<double>::quiet_NaN();
  BOOST_CHECK_THROW(k::validate(nan_threshold), std::invalid_argument);
  auto no_meaning = good;
  no_meaning.rules[0].finding.value.meaning.clear();
  BOOST_CHECK_THROW(k::validate(no_meaning), std::invalid_argument);
  auto bad_otherwise = good;
  bad_otherwise.otherwise->name.scheme.clear();
  BOOST_CHECK_THROW(k::validate(bad_otherwise), std::invalid_argument);
  auto empty = good;
  empty.rules.clear();
  empty.otherwise.reset();
  BOOST_CHECK_THROW(k::validate(empty), std::invalid_argument);
  BOOST_CHECK_THROW(k::evaluate(no_conditions, {{"laa950_percent", 1.0}}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(comparison_operators_parse_and_print) {
  for (const char* op : {"<", "<=", ">", ">=", "=="}) {
    BOOST_TEST(k::to_string(k::parse_comparison(op)) == op);
  }
  BOOST_TEST(k::to_string(k::parse_comparison("  >= ")) == ">=");
  for (const char* bad : {"=>", "=", "!=", "", "gt"}) {
    BOOST_CHECK_THROW(k::parse_comparison(bad), std::invalid_argument);
  }
}
