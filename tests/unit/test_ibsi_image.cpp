#define BOOST_TEST_MODULE ibsi_image
#include <boost/test/unit_test.hpp>

// The common data of the IBSI feature families: the digital phantom as loaded for every family's
// test, and the checks of RoiImage and Levels.
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "analysis/kernels/ibsi/image.h"
#include "support/ibsi_reference.h"

namespace ib = analysis::kernels::ibsi;

BOOST_AUTO_TEST_CASE(digital_phantom_is_as_published) {
  const testsupport::ibsi::DigitalPhantom p;
  BOOST_TEST(p.roi.grid.nx == 5);
  BOOST_TEST(p.roi.grid.ny == 4);
  BOOST_TEST(p.roi.grid.nz == 4);
  BOOST_TEST(p.roi.grid.voxel_volume() == 8.0);
  BOOST_TEST(std::count(p.roi.mask.begin(), p.roi.mask.end(), 1) == 74);  // IBSI: 74 voxels in the ROI
  BOOST_TEST(p.levels.ng == 6);
  BOOST_CHECK_NO_THROW(ib::check_roi(p.roi, "phantom"));
  BOOST_CHECK_NO_THROW(ib::check_levels(p.levels, "phantom"));
}

BOOST_AUTO_TEST_CASE(mismatched_or_empty_inputs_are_refused) {
  testsupport::ibsi::DigitalPhantom p;
  auto roi = p.roi;
  roi.mask.pop_back();
  BOOST_CHECK_THROW(ib::check_roi(roi, "t"), std::invalid_argument);
  roi = p.roi;
  std::fill(roi.mask.begin(), roi.mask.end(), 0);
  BOOST_CHECK_THROW(ib::check_roi(roi, "t"), std::invalid_argument);
  auto lv = p.levels;
  lv.level[0] = lv.ng + 1;
  BOOST_CHECK_THROW(ib::check_levels(lv, "t"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(bad_levels_are_named_in_the_refusal) {
  // check_levels tests the whole volume in one branch-free pass: negative levels (above ng as
  // unsigned), levels above ng and an all-zero volume are refused; the message names the first bad
  // level in voxel order.
  testsupport::ibsi::DigitalPhantom p;
  const auto message = [](const ib::Levels& lv) {
    try {
      ib::check_levels(lv, "t");
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  auto lv = p.levels;
  BOOST_TEST(message(lv) == "accepted");
  lv.level[lv.level.size() - 1] = -1;
  BOOST_TEST(message(lv) == "t: grey level -1 outside 0..6");
  lv.level[3] = 7;
  BOOST_TEST(message(lv) == "t: grey level 7 outside 0..6");
  lv.level[3] = std::numeric_limits<int>::min();
  BOOST_TEST(message(lv) == fmt::format("t: grey level {} outside 0..6", std::numeric_limits<int>::min()));
  lv = p.levels;
  lv.level[5] = 6;  // the highest level is fine
  BOOST_TEST(message(lv) == "accepted");
  std::fill(lv.level.begin(), lv.level.end(), 0);
  BOOST_TEST(message(lv) == "t: empty intensity mask");
}

BOOST_AUTO_TEST_CASE(checked_levels_are_checked_once) {
  // CheckedLevels runs check_levels when it is made (what compute_features hands to the families):
  // bad levels never get one.
  testsupport::ibsi::DigitalPhantom p;
  const ib::CheckedLevels ok(p.levels, "t");
  BOOST_TEST(&ok.get() == &p.levels);
  auto lv = p.levels;
  lv.level[2] = lv.ng + 1;
  BOOST_CHECK_THROW(ib::CheckedLevels(lv, "t"), std::invalid_argument);
  std::fill(lv.level.begin(), lv.level.end(), 0);
  BOOST_CHECK_THROW(ib::CheckedLevels(lv, "t"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(levels_beyond_the_grey_level_limit_are_refused) {
  testsupport::ibsi::DigitalPhantom p;
  auto lv = p.levels;
  lv.ng = ib::kMaxGreyLevels + 1;
  BOOST_CHECK_THROW(ib::check_levels(lv, "t"), std::invalid_argument);
}
