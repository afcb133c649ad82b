#define BOOST_TEST_MODULE decode_geometry
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dicom/decode_geometry.h"

// plan_volumes on synthetic planes: one behaviour per test.

using dicom::PlaneRef;
using dicom::plan_volumes;

namespace {

// An axial plane at height z (LPS), 4x4 pixels of 0.5 mm.
PlaneRef axial(std::size_t id, double z, double t = 0) {
  PlaneRef p;
  p.id = id;
  p.position = {-10, -20, z};
  p.rows = p.cols = 4;
  p.spacing_row = p.spacing_col = 0.5;
  p.frame_of_reference_uid = "1.2.3";
  p.temporal_key = {t, 0, 0, 0, static_cast<double>(id), 0};
  return p;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_CASE(sorts_along_normal_and_takes_spacing_from_positions) {
  // Given out of order; spacing 2.5 mm although nothing says so but the positions.
  const auto r = plan_volumes({axial(0, 5), axial(1, 0), axial(2, 7.5), axial(3, 2.5)});
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 1u);
  BOOST_TEST(r.rejected.empty());
  const auto& v = r.volumes.front();
  BOOST_TEST(v.ids == (std::vector<std::size_t>{1, 3, 0, 2}), boost::test_tools::per_element());
  BOOST_TEST(v.geom.spacing_slice == 2.5, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(v.geom.origin[2] == 0.0);
  BOOST_TEST(v.geom.normal[2] == 1.0);
  BOOST_TEST(v.geom.spacing_row == 0.5);
}

BOOST_AUTO_TEST_CASE(normal_follows_orientation_not_z) {
  // Sagittal: row = +y, col = -z, normal = row x col = -x. Sorted by increasing position along -x.
  std::vector<PlaneRef> planes;
  for (int i = 0; i < 3; ++i) {
    auto p = axial(static_cast<std::size_t>(i), 0);
    p.orientation = {0, 1, 0, 0, 0, -1};
    p.position = {static_cast<double>(i) * 3.0, 0, 0};
    planes.push_back(p);
  }
  const auto r = plan_volumes(planes);
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 1u);
  BOOST_TEST(r.volumes[0].geom.normal[0] == -1.0);
  BOOST_TEST(r.volumes[0].ids == (std::vector<std::size_t>{2, 1, 0}), boost::test_tools::per_element());
  BOOST_TEST(r.volumes[0].geom.spacing_slice == 3.0, boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(missing_slice_splits_at_the_gap) {
  // 0, 1, 2, [3 missing], 4, 5: two runs, a note naming one missing slice.
  const auto r = plan_volumes({axial(0, 0), axial(1, 1), axial(2, 2), axial(4, 4), axial(5, 5)});
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 2u);
  BOOST_TEST(r.volumes[0].ids.size() == 3u);
  BOOST_TEST(r.volumes[1].ids.size() == 2u);
  BOOST_REQUIRE_EQUAL(r.notes.size(), 1u);
  BOOST_TEST(contains(r.notes[0], "gap of 1 missing slice"));
}

BOOST_AUTO_TEST_CASE(isolated_slice_after_gap_is_rejected) {
  const auto r = plan_volumes({axial(0, 0), axial(1, 1), axial(2, 2), axial(3, 5)});
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 1u);
  BOOST_TEST(r.volumes[0].ids.size() == 3u);
  BOOST_REQUIRE_EQUAL(r.rejected.size(), 1u);
  BOOST_TEST(r.rejected[0].ids == (std::vector<std::size_t>{3}), boost::test_tools::per_element());
  BOOST_TEST(contains(r.rejected[0].reason, "isolated slice"));
}

BOOST_AUTO_TEST_CASE(gantry_tilt_is_rejected_with_angle) {
  // Positions step 5 mm in z, but the planes are tilted 15 degrees about x.
  const double a = 15.0 * 3.14159265358979 / 180.0;
  std::vector<PlaneRef> planes;
  for (int i = 0; i < 4; ++i) {
    auto p = axial(static_cast<std::size_t>(i), 5.0 * i);
    p.orientation = {1, 0, 0, 0, std::cos(a), -std::sin(a)};
    planes.push_back(p);
  }
  const auto r = plan_volumes(planes);
  BOOST_TEST(r.volumes.empty());
  BOOST_REQUIRE_EQUAL(r.rejected.size(), 1u);
  BOOST_TEST(r.rejected[0].ids.size() == 4u);
  BOOST_TEST(contains(r.rejected[0].reason, "gantry tilt"));
  BOOST_TEST(contains(r.rejected[0].reason, "15.00 deg"));
}

BOOST_AUTO_TEST_CASE(temporal_phases_become_separate_volumes) {
  // 3 positions x 2 phases, phase told by the temporal key.
  std::vector<PlaneRef> planes;
  std::size_t id = 0;
  for (int t = 0; t < 2; ++t)
    for (int z = 0; z < 3; ++z) planes.push_back(axial(id++, z * 2.0, t));
  const auto r = plan_volumes(planes);
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 2u);
  BOOST_TEST(r.volumes[0].ids == (std::vector<std::size_t>{0, 1, 2}), boost::test_tools::per_element());
  BOOST_TEST(r.volumes[1].ids == (std::vector<std::size_t>{3, 4, 5}), boost::test_tools::per_element());
  BOOST_TEST(r.volumes[1].geom.spacing_slice == 2.0, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(contains(r.notes.at(0), "2 temporal phases"));
}

BOOST_AUTO_TEST_CASE(uneven_duplicates_are_rejected) {
  const auto r = plan_volumes({axial(0, 0), axial(1, 0), axial(2, 1), axial(3, 2), axial(4, 2)});
  BOOST_TEST(r.volumes.empty());
  BOOST_REQUIRE_EQUAL(r.rejected.size(), 1u);
  BOOST_TEST(r.rejected[0].ids.size() == 5u);
  BOOST_TEST(contains(r.rejected[0].reason, "unequal numbers"));
}

BOOST_AUTO_TEST_CASE(one_position_time_series_is_rejected) {
  const auto r = plan_volumes({axial(0, 3, 0), axial(1, 3, 1), axial(2, 3, 2)});
  BOOST_TEST(r.volumes.empty());
  BOOST_REQUIRE_EQUAL(r.rejected.size(), 1u);
  BOOST_TEST(contains(r.rejected[0].reason, "one position"));
}

BOOST_AUTO_TEST_CASE(orientation_groups_split_and_lone_localizer_rejected) {
  std::vector<PlaneRef> planes = {axial(0, 0), axial(1, 1), axial(2, 2)};
  auto coronal = axial(3, 0);
  coronal.orientation = {1, 0, 0, 0, 0, -1};
  planes.push_back(coronal);
  auto bigger = axial(4, 0);  // a different matrix: its own group
  bigger.rows = 8;
  auto bigger2 = axial(5, 1);
  bigger2.rows = 8;
  planes.push_back(bigger);
  planes.push_back(bigger2);
  const auto r = plan_volumes(planes);
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 2u);
  BOOST_TEST(r.volumes[0].ids.size() == 3u);
  BOOST_TEST(r.volumes[1].ids.size() == 2u);
  BOOST_REQUIRE_EQUAL(r.rejected.size(), 1u);
  BOOST_TEST(r.rejected[0].ids == (std::vector<std::size_t>{3}), boost::test_tools::per_element());
  BOOST_TEST(contains(r.rejected[0].reason, "localizer"));
}

BOOST_AUTO_TEST_CASE(single_plane_uses_thickness) {
  auto p = axial(0, 0);
  p.thickness = 3.0;
  const auto r = plan_volumes({p});
  BOOST_REQUIRE_EQUAL(r.volumes.size(), 1u);
  BOOST_TEST(r.volumes[0].geom.spacing_slice == 3.0);
  BOOST_TEST(r.volumes[0].geom.has_frame_of_reference);
}

BOOST_AUTO_TEST_CASE(every_plane_is_accounted_for_once) {
  // A messy mix: phases, a gap, a tilted pair, a localizer.
  std::vector<PlaneRef> planes;
  for (std::size_t i = 0; i < 6; ++i) planes.push_back(axial(i, static_cast<double>(i < 3 ? i : i + 1)));
  auto loc = axial(6, 0);
  loc.orientation = {0, 1, 0, 0, 0, -1};
  planes.push_back(loc);
  const auto r = plan_volumes(planes);
  std::vector<std::size_t> seen;
  for (const auto& v : r.volumes) seen.insert(seen.end(), v.ids.begin(), v.ids.end());
  for (const auto& j : r.rejected) seen.insert(seen.end(), j.ids.begin(), j.ids.end());
  std::sort(seen.begin(), seen.end());
  BOOST_TEST(seen == (std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6}), boost::test_tools::per_element());
}
