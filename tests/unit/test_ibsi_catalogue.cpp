#define BOOST_TEST_MODULE ibsi_catalogue
#include <boost/test/unit_test.hpp>

// The catalogue of IBSI feature tags (analysis/kernels/ibsi/radiomics.h): complete against the
// reference tables, unique, and the same as the documentation page docs/features.md.
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "analysis/kernels/ibsi/radiomics.h"
#include "support/ibsi_reference.h"

namespace ib = analysis::kernels::ibsi;

namespace {
bool diagnostic(const std::string& t) {
  for (const std::string s : {"_init_img", "_interp_img", "_init_roi", "_interp_roi", "_reseg_roi"})
    if (t.size() > s.size() && t.compare(t.size() - s.size(), s.size(), s) == 0) return true;
  return false;
}
}  // namespace

BOOST_AUTO_TEST_CASE(every_reference_feature_is_in_the_catalogue) {
  std::size_t checked = 0;
  for (const char* table : {"ibsi_1_dig_phantom.csv", "ibsi_1_chest_config_a.csv", "ibsi_1_chest_config_b.csv",
                            "ibsi_1_chest_config_c.csv", "ibsi_1_chest_config_d.csv", "ibsi_1_chest_config_e.csv"})
    for (const auto& [tag, r] : testsupport::ibsi::read_reference(table)) {
      if (diagnostic(tag)) continue;
      ++checked;
      BOOST_TEST((ib::find_in_catalogue(tag) != nullptr), tag << " (" << table << ") is not in the catalogue");
    }
  BOOST_TEST(checked > 400u);
}

BOOST_AUTO_TEST_CASE(tags_and_codes_are_unique_and_described) {
  std::set<std::string> tags, codes;
  for (const auto& e : ib::catalogue()) {
    BOOST_TEST(tags.insert(e.tag).second, "duplicate tag " << e.tag);
    BOOST_TEST(codes.insert(e.code).second, "duplicate code " << e.code << " (" << e.tag << ")");
    BOOST_TEST(!e.name.empty(), e.tag);
    BOOST_TEST(!e.family.empty(), e.tag);
  }
  // 29 + 2 + 18 + 23 + 7 features, 25 + 16 GLCM/GLRLM in 6 aggregations, 16 + 16 + 5 + 17 in 3
  BOOST_TEST(ib::catalogue().size() == 29u + 2 + 18 + 23 + 7 + (25 + 16) * 6 + (16 + 16 + 5 + 17) * 3);
}

BOOST_AUTO_TEST_CASE(documentation_page_is_current) {
  const auto page = testsupport::source_dir() / "docs/features.md";
  const std::string want = ib::feature_table_markdown();
  if (std::getenv("PACSNODE_WRITE_DOCS")) std::ofstream(page) << want;
  std::ifstream f(page);
  std::stringstream got;
  got << f.rdbuf();
  BOOST_TEST((got.str() == want), page << " is out of date: run test_ibsi_catalogue with PACSNODE_WRITE_DOCS=1");
}
