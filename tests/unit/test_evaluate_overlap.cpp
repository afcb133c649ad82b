#define BOOST_TEST_MODULE evaluate_overlap
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "analysis/kernels/evaluate.h"
#include "analysis/kernels/nifti.h"
#include "support/paths.h"

namespace k = analysis::kernels;
namespace fs = std::filesystem;
using analysis::Mask;
using analysis::Spacing;

namespace {

using TempDir = testsupport::TempDir;

Mask ellipsoid(int depth, int rows, int cols, const Spacing& sp, cv::Point3d centre_mm, cv::Point3d radii_mm) {
  Mask m = k::make_mask(depth, rows, cols);
  for (int z = 0; z < depth; ++z)
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const double x = (c * sp.col - centre_mm.x) / radii_mm.x, y = (r * sp.row - centre_mm.y) / radii_mm.y,
                     w = (z * sp.slice - centre_mm.z) / radii_mm.z;
        if (x * x + y * y + w * w <= 1.0) m[static_cast<std::size_t>(z)].at<uchar>(r, c) = 1;
      }
  return m;
}

std::map<std::string, double> run_python(const std::string& script, const std::string& args, const fs::path& out) {
  const std::string cmd = std::string(testsupport::python()) + " " +
                          (testsupport::source_dir() / "tests/scripts" / script).string() + " " + args + " > " +
                          out.string();
  const int rc = std::system(cmd.c_str());
  BOOST_TEST_REQUIRE(rc == 0, "python reference failed: " << cmd);
  std::map<std::string, double> values;
  std::ifstream f(out);
  std::string key;
  double v = 0;
  while (f >> key >> v) values[key] = v;
  return values;
}

}  // namespace

BOOST_AUTO_TEST_CASE(identical_masks_overlap_perfectly) {
  const Spacing sp{0.8, 0.8, 2.5};
  const Mask a = ellipsoid(12, 30, 30, sp, {12, 12, 15}, {6, 8, 10});
  const auto m = k::overlap_metrics(a, a, sp);
  BOOST_TEST(m.dice == 1.0);
  BOOST_TEST(m.jaccard == 1.0);
  BOOST_TEST(m.hausdorff_mm == 0.0);
  BOOST_TEST(m.hausdorff95_mm == 0.0);
  BOOST_TEST(m.mean_surface_distance_mm == 0.0);
  BOOST_TEST(m.volume_difference_mm3 == 0.0);
  BOOST_TEST(m.reference_volume_mm3 == static_cast<double>(k::count_nonzero(a)) * sp.voxel_volume());
}

BOOST_AUTO_TEST_CASE(single_voxels_distance_uses_anisotropic_spacing) {
  const Spacing sp{0.5, 0.7, 3.0};
  Mask a = k::make_mask(5, 6, 7), b = k::make_mask(5, 6, 7);
  a[1].at<uchar>(2, 3) = 1;
  b[3].at<uchar>(4, 1) = 1;  // dz = 2, dr = 2, dc = -2
  const auto m = k::overlap_metrics(a, b, sp);
  const double expected = std::sqrt(std::pow(2 * 3.0, 2) + std::pow(2 * 0.7, 2) + std::pow(2 * 0.5, 2));
  BOOST_TEST(m.dice == 0.0);
  BOOST_TEST(m.hausdorff_mm == expected, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(m.mean_surface_distance_mm == expected, boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(empty_masks_are_defined) {
  const Mask e = k::make_mask(2, 3, 3);
  Mask one = k::make_mask(2, 3, 3);
  one[0].at<uchar>(1, 1) = 1;
  const auto both = k::overlap_metrics(e, e, {});
  BOOST_TEST(both.dice == 1.0);
  BOOST_TEST(both.hausdorff_mm == 0.0);
  const auto half = k::overlap_metrics(one, e, {});
  BOOST_TEST(half.dice == 0.0);
  BOOST_TEST(std::isinf(half.hausdorff_mm));
}

BOOST_AUTO_TEST_CASE(surface_is_six_neighbour_boundary) {
  Mask cube = k::make_mask(5, 5, 5);
  for (int z = 1; z < 4; ++z) cube[static_cast<std::size_t>(z)](cv::Rect(1, 1, 3, 3)).setTo(1);
  const Mask s = k::surface_voxels(cube);
  BOOST_TEST(k::count_nonzero(s) == 26u);  // 27 voxels minus the centre
  BOOST_TEST(s[2].at<uchar>(2, 2) == 0);
  // A mask filling the volume: its outer layer is surface (outside the volume is background).
  Mask full = k::make_mask(3, 3, 3);
  for (auto& sl : full) sl.setTo(1);
  BOOST_TEST(k::count_nonzero(k::surface_voxels(full)) == 26u);
}

BOOST_AUTO_TEST_CASE(distance_transform_matches_brute_force) {
  const Spacing sp{0.6, 1.1, 2.3};
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  Mask f = k::make_mask(6, 9, 11);
  std::vector<cv::Point3i> pts;
  for (int z = 0; z < 6; ++z)
    for (int r = 0; r < 9; ++r)
      for (int c = 0; c < 11; ++c)
        if (u(rng) < 0.03) {
          f[static_cast<std::size_t>(z)].at<uchar>(r, c) = 1;
          pts.emplace_back(c, r, z);
        }
  BOOST_TEST_REQUIRE(!pts.empty());
  const auto d = k::squared_distance_transform(f, sp);
  double worst = 0;
  for (int z = 0; z < 6; ++z)
    for (int r = 0; r < 9; ++r)
      for (int c = 0; c < 11; ++c) {
        double best = 1e300;
        for (const auto& p : pts) {
          const double dx = (c - p.x) * sp.col, dy = (r - p.y) * sp.row, dz = (z - p.z) * sp.slice;
          best = std::min(best, dx * dx + dy * dy + dz * dz);
        }
        worst = std::max(worst, std::abs(best - d[static_cast<std::size_t>(z)].at<float>(r, c)));
      }
  BOOST_TEST(worst < 1e-3);
}

BOOST_AUTO_TEST_CASE(offset_ellipsoids_match_scipy) {
  // Two overlapping ellipsoids, anisotropic spacing; the SciPy script is the independent reference.
  const Spacing sp{0.7, 0.9, 2.0};
  const int depth = 24, rows = 60, cols = 70;
  const Mask ref = ellipsoid(depth, rows, cols, sp, {24, 27, 23}, {14, 16, 15});
  const Mask test = ellipsoid(depth, rows, cols, sp, {27.1, 25.2, 26.5}, {12, 17, 13});
  TempDir tmp;
  k::write_nifti(tmp.path / "ref.nii", ref, sp);
  k::write_nifti(tmp.path / "test.nii", test, sp);
  const auto py = run_python("evaluate_overlap.py", (tmp.path / "ref.nii").string() + " " + (tmp.path / "test.nii").string(),
                             tmp.path / "out.txt");
  const auto m = k::overlap_metrics(ref, test, sp);
  BOOST_TEST_MESSAGE("dice " << m.dice << " jaccard " << m.jaccard << " hd " << m.hausdorff_mm << " hd95 "
                             << m.hausdorff95_mm << " msd " << m.mean_surface_distance_mm);
  BOOST_TEST_REQUIRE(py.size() == 10u);
  BOOST_TEST(m.reference_voxels == py.at("reference_voxels"));
  BOOST_TEST(m.test_voxels == py.at("test_voxels"));
  BOOST_TEST(m.reference_surface_voxels == py.at("reference_surface_voxels"));
  BOOST_TEST(m.test_surface_voxels == py.at("test_surface_voxels"));
  const auto tol = boost::test_tools::tolerance(1e-6);
  BOOST_TEST(m.dice == py.at("dice"), tol);
  BOOST_TEST(m.jaccard == py.at("jaccard"), tol);
  BOOST_TEST(m.volume_difference_mm3 == py.at("volume_difference_mm3"), tol);
  // float32 squared distances in the C++ transform: agree to ~1e-5 relative.
  BOOST_TEST(m.hausdorff_mm == py.at("hausdorff_mm"), boost::test_tools::tolerance(1e-5));
  BOOST_TEST(m.hausdorff95_mm == py.at("hausdorff95_mm"), boost::test_tools::tolerance(1e-5));
  BOOST_TEST(m.mean_surface_distance_mm == py.at("mean_surface_distance_mm"), boost::test_tools::tolerance(1e-5));
  BOOST_TEST(m.dice > 0.5);  // the case is a real partial overlap
  BOOST_TEST(m.hausdorff_mm > m.hausdorff95_mm);
}

BOOST_AUTO_TEST_CASE(rejects_mismatched_shapes) {
  BOOST_CHECK_THROW(k::overlap_metrics(k::make_mask(2, 3, 3), k::make_mask(2, 3, 4), {}), std::invalid_argument);
  BOOST_CHECK_THROW(k::overlap_metrics(k::make_mask(2, 3, 3), k::make_mask(2, 3, 3), {0, 1, 1}), std::invalid_argument);
}
