#define BOOST_TEST_MODULE kernels_airway
#include <boost/test/unit_test.hpp>

// Airway tree growing with leak control, plane hole filling and the level map of a filtered view,
// on small synthetic volumes.
#include <cstdint>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>

#include "analysis/kernels/airway.h"
#include "analysis/kernels/preprocess.h"
#include "analysis/kernels/segment.h"

using namespace analysis::kernels;
using analysis::Mask;
using analysis::Spacing;

namespace {

constexpr int kD = 60, kR = 64, kC = 64;

std::int64_t count_value(const Mask& m, std::uint8_t v) {
  std::int64_t n = 0;
  for (const auto& s : m) n += cv::countNonZero(s == v);
  return n;
}

// A vertical tube of radius 3 (passable) from slice 0 to `tube_end`, then a wide open chamber
// (passable, like emphysematous lung the lumen opens into) from tube_end to the last slice.
Mask tube_into_chamber(int tube_end) {
  Mask m = make_mask(kD, kR, kC);
  for (int z = 0; z < kD; ++z) {
    if (z < tube_end) cv::circle(m[z], {kC / 2, kR / 2}, 3, cv::Scalar(kAirwayOpen), cv::FILLED);
    else m[z](cv::Rect(4, 4, kC - 8, kR - 8)).setTo(kAirwayOpen);
  }
  return m;
}

std::vector<std::int32_t> seeds_at_top(const Mask& m) {
  std::vector<std::int32_t> out;
  for (int r = 0; r < kR; ++r)
    for (int c = 0; c < kC; ++c)
      if (m[0].at<std::uint8_t>(r, c) == kAirwayOpen) out.push_back(r * kC + c);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(tube_is_grown_and_the_leak_into_a_chamber_is_rolled_back) {
  Mask m = tube_into_chamber(30);
  const std::int64_t tube = count_value(m, kAirwayOpen) - static_cast<std::int64_t>(kD - 30) * (kR - 8) * (kC - 8);
  const AirwayResult r = grow_airway_tree(m, seeds_at_top(m), Spacing{1, 1, 1});
  BOOST_TEST(r.leaks >= 1);
  BOOST_TEST(!r.overflow);
  // The whole tube is in the tree, the chamber is not (at most the first layer into it).
  std::int64_t tube_in_tree = 0, chamber_in_tree = 0;
  for (int z = 0; z < kD; ++z) {
    const std::int64_t n = cv::countNonZero(m[z] == kAirwayTree);
    (z < 30 ? tube_in_tree : chamber_in_tree) += n;
  }
  BOOST_TEST(tube_in_tree >= tube - 30, tube_in_tree << " of " << tube);  // the last normal front may be given back
  BOOST_TEST(chamber_in_tree <= (kR - 8) * (kC - 8) / 10, chamber_in_tree);
  BOOST_TEST(count_value(m, kAirwayBlocked) > 0);  // leaked voxels are marked, so nothing regrows into them
  BOOST_TEST(r.voxels == count_value(m, kAirwayTree));
}

BOOST_AUTO_TEST_CASE(tree_beyond_the_volume_cap_overflows) {
  Mask m = tube_into_chamber(30);
  AirwayParams p;
  p.max_volume_ml = 0.2;  // 200 voxels of 1 mm3: less than the tube
  const AirwayResult r = grow_airway_tree(m, seeds_at_top(m), Spacing{1, 1, 1}, p);
  BOOST_TEST(r.overflow);
}

// Coarse pixels: only the core of the lumen is passable where the seed is (1 voxel of a radius-3
// blob), the core widens further down (radius 1: 5 voxels, 5x the core). The seed's reference is
// its whole blob, so the wider core is a tube, not a leak; seeded with the core alone it is a leak.
BOOST_AUTO_TEST_CASE(seed_reference_counts_the_whole_seed_blob) {
  const auto make = [] {
    Mask m = make_mask(kD, kR, kC);
    for (int z = 0; z < kD; ++z) {
      if (z < 5) m[z].at<std::uint8_t>(kR / 2, kC / 2) = kAirwayOpen;
      else cv::circle(m[z], {kC / 2, kR / 2}, 1, cv::Scalar(kAirwayOpen), cv::FILLED);
    }
    return m;
  };
  std::vector<std::int32_t> blob;
  cv::Mat disc(kR, kC, CV_8U, cv::Scalar(0));
  cv::circle(disc, {kC / 2, kR / 2}, 3, cv::Scalar(1), cv::FILLED);
  for (int r = 0; r < kR; ++r)
    for (int c = 0; c < kC; ++c)
      if (disc.at<std::uint8_t>(r, c)) blob.push_back(r * kC + c);
  Mask whole = make();
  const AirwayResult a = grow_airway_tree(whole, blob, Spacing{1, 1, 1});
  BOOST_TEST(a.leaks == 0);
  BOOST_TEST(a.voxels == count_value(whole, kAirwayTree));
  BOOST_TEST(a.voxels == 5 + static_cast<std::int64_t>(kD - 5) * 5);  // the whole tube
  Mask core = make();
  const AirwayResult b = grow_airway_tree(core, {(kR / 2) * kC + kC / 2}, Spacing{1, 1, 1});
  BOOST_TEST(b.leaks >= 1);
  BOOST_TEST(b.voxels < a.voxels);
}

BOOST_AUTO_TEST_CASE(bad_seeds_are_rejected) {
  Mask m = tube_into_chamber(30);
  BOOST_CHECK_THROW(grow_airway_tree(m, {-1}, Spacing{1, 1, 1}), std::invalid_argument);
  BOOST_CHECK_THROW(grow_airway_tree(m, {kD * kR * kC}, Spacing{1, 1, 1}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(plane_hole_filling_fills_only_small_holes) {
  // A block whose inside has a thin in-plane channel (a vessel lying in the slice plane: open to
  // the slice border within each slice, enclosed in the coronal planes) and a large cavity.
  Mask m = make_mask(20, 40, 40);
  for (int z = 2; z < 18; ++z) m[z](cv::Rect(2, 2, 36, 36)).setTo(1);
  for (int z = 9; z <= 10; ++z) m[z](cv::Rect(0, 10, 40, 2)).setTo(0);  // channel through the block along columns
  for (int z = 5; z <= 14; ++z) m[z](cv::Rect(20, 20, 12, 12)).setTo(0);  // cavity 10 x 12 x 12
  Mask per_slice = m;
  for (auto& s : per_slice) s = s.clone();
  fill_holes_2d(per_slice);
  // Per slice the channel is open to the border: not a hole.
  BOOST_TEST(cv::countNonZero(per_slice[9](cv::Rect(5, 10, 30, 2))) == 0);
  // In the sagittal planes (slice x row, per column) the channel is a small enclosed hole.
  fill_holes_2d(m, PlaneAxis::sagittal, 8);
  BOOST_TEST(cv::countNonZero(m[9](cv::Rect(5, 10, 30, 2))) == 60);
  // The cavity's cross-sections in those planes (10 x 12 = 120 px) exceed the limit: it stays.
  BOOST_TEST(cv::countNonZero(m[8](cv::Rect(20, 20, 12, 12))) == 0);
}

BOOST_AUTO_TEST_CASE(level_map_counts_breaks_and_filters_a_copy) {
  std::vector<cv::Mat> image{cv::Mat(3, 3, CV_16S, cv::Scalar(-1000))};
  image[0].at<std::int16_t>(0, 0) = -960;
  image[0].at<std::int16_t>(0, 1) = -950;
  image[0].at<std::int16_t>(0, 2) = 40;
  image[0].at<std::int16_t>(1, 1) = 400;
  const std::vector<double> breaks{-950, -500, 300};
  const auto lv = level_map(image, breaks);
  BOOST_TEST(lv[0].at<std::uint8_t>(0, 0) == 0);  // -960 < -950
  BOOST_TEST(lv[0].at<std::uint8_t>(0, 1) == 1);  // -950 >= -950
  BOOST_TEST(lv[0].at<std::uint8_t>(0, 2) == 2);  // 40
  BOOST_TEST(lv[0].at<std::uint8_t>(1, 1) == 3);  // 400 >= 300
  // With a 3x3 median the centre sees its neighbourhood's median; the image itself is unchanged.
  const auto med = level_map(image, breaks, 3);
  BOOST_TEST(med[0].at<std::uint8_t>(1, 1) == 0);
  BOOST_TEST(image[0].at<std::int16_t>(1, 1) == 400);
}
