#define BOOST_TEST_MODULE kernels_mesh
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <random>
#include <set>

#include <opencv2/imgproc.hpp>

#include "analysis/kernels/ibsi/morphology.h"
#include "analysis/kernels/mesh.h"
#include "analysis/kernels/nifti.h"
#include "support/masks.h"
#include "support/paths.h"

namespace k = analysis::kernels;
using analysis::Mask;

namespace {

// Global id of the lattice edge of cube (z, r, c) (corner 0 at that voxel) and local edge e.
std::array<int, 4> edge_key(int z, int r, int c, int e) {
  const auto [a, b] = k::cube_edge(e);
  const int lo = std::min(a, b);
  const int axis = (a ^ b) == 1 ? 0 : (a ^ b) == 2 ? 1 : 2;
  return {z + ((lo >> 2) & 1), r + ((lo >> 1) & 1), c + (lo & 1), axis};
}

}  // namespace

BOOST_AUTO_TEST_CASE(single_voxel_is_an_octahedron) {
  Mask m = k::make_mask(1, 1, 1);
  m[0].at<uchar>(0, 0) = 1;
  const analysis::Spacing sp{0.8, 1.3, 2.5};
  const auto mesh = k::mesh_measures(m, sp);
  BOOST_TEST(mesh.triangles == 8u);
  BOOST_TEST(mesh.vertices == 6u);
  BOOST_TEST(mesh.volume_mm3 == sp.col * sp.row * sp.slice / 6.0, boost::test_tools::tolerance(1e-12));
  // Faces: triangles with vertices at half-spacings on the three axes.
  const double a = sp.col / 2, b = sp.row / 2, c = sp.slice / 2;
  const double face = 0.5 * std::sqrt(a * a * b * b + b * b * c * c + a * a * c * c);
  BOOST_TEST(mesh.area_mm2 == 8 * face, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(k::max_pairwise_distance(mesh.hull_candidates) == 2 * c, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(every_configuration_gives_a_closed_oriented_mesh) {
  // On random masks, every directed mesh edge must be matched by exactly one reverse edge.
  for (unsigned seed : {1u, 2u, 3u}) {
    const Mask m = testsupport::random_mask(5, 6, 7, 0.5, seed);
    auto at = [&](int z, int r, int c) {
      if (z < 0 || z >= 5 || r < 0 || r >= 6 || c < 0 || c >= 7) return 0;
      return m[static_cast<std::size_t>(z)].at<uchar>(r, c) ? 1 : 0;
    };
    std::map<std::pair<std::array<int, 4>, std::array<int, 4>>, int> directed;
    std::set<int> configs;
    for (int z = -1; z < 5; ++z)
      for (int r = -1; r < 6; ++r)
        for (int c = -1; c < 7; ++c) {
          int config = 0;
          for (int i = 0; i < 8; ++i) config |= at(z + ((i >> 2) & 1), r + ((i >> 1) & 1), c + (i & 1)) << i;
          configs.insert(config);
          for (const auto& tri : k::cube_triangles(config))
            for (int j = 0; j < 3; ++j)
              ++directed[{edge_key(z, r, c, tri[static_cast<std::size_t>(j)]), edge_key(z, r, c, tri[static_cast<std::size_t>((j + 1) % 3)])}];
        }
    bool closed = true;
    for (const auto& [e, n] : directed) {
      const auto rev = directed.find({e.second, e.first});
      if (n != 1 || rev == directed.end() || rev->second != 1) closed = false;
    }
    BOOST_TEST(closed, "seed " << seed);
    BOOST_TEST(configs.size() > 100u);
  }
  for (int config = 1; config < 255; ++config) BOOST_TEST(!k::cube_triangles(config).empty());
  BOOST_TEST(k::cube_triangles(0).empty());
  BOOST_TEST(k::cube_triangles(255).empty());
}

BOOST_AUTO_TEST_CASE(diameter_candidates_contain_the_farthest_pair) {
  // Brute force over all mesh vertices (midpoints of in/out lattice edges) versus the hull candidates.
  const analysis::Spacing sp{0.9, 0.6, 1.7};
  for (unsigned seed : {4u, 5u}) {
    const Mask m = testsupport::random_mask(6, 9, 8, 0.3, seed);
    std::vector<cv::Point3d> all;
    auto in = [&](int z, int r, int c) {
      return z >= 0 && z < 6 && r >= 0 && r < 9 && c >= 0 && c < 8 && m[static_cast<std::size_t>(z)].at<uchar>(r, c);
    };
    for (int z = -1; z <= 6; ++z)
      for (int r = -1; r <= 9; ++r)
        for (int c = -1; c <= 8; ++c) {
          if (in(z, r, c) != in(z, r, c + 1)) all.emplace_back((c + 0.5) * sp.col, r * sp.row, z * sp.slice);
          if (in(z, r, c) != in(z, r + 1, c)) all.emplace_back(c * sp.col, (r + 0.5) * sp.row, z * sp.slice);
          if (in(z, r, c) != in(z + 1, r, c)) all.emplace_back(c * sp.col, r * sp.row, (z + 0.5) * sp.slice);
        }
    const auto mesh = k::mesh_measures(m, sp);
    BOOST_TEST(mesh.vertices == all.size());
    BOOST_TEST(mesh.hull_candidates.size() < all.size());
    BOOST_TEST(k::max_pairwise_distance(mesh.hull_candidates) == k::max_pairwise_distance(all),
               boost::test_tools::tolerance(1e-9));
  }
}

BOOST_AUTO_TEST_CASE(hull_candidates_are_exactly_the_vertices_of_their_three_plane_hulls) {
  // The definition (mesh.h), by brute force: a mesh vertex is a candidate when it is a vertex of
  // the 2D convex hull of all mesh vertices of its plane of constant x, of constant y and of
  // constant z (a plane of at most 3 vertices keeps them all). The kernel gives the hull of a plane
  // only the first and last vertex of each line; the candidates must be the same.
  const analysis::Spacing sp{0.7, 0.8, 1.5};
  const double h[3] = {0.5 * sp.col, 0.5 * sp.row, 0.5 * sp.slice};
  int cases = 0;
  for (unsigned seed = 1; seed <= 8; ++seed)
    for (double p : {0.04, 0.3, 0.8}) {
      const int d = 5 + static_cast<int>(seed % 4), rows = 9 + static_cast<int>(seed % 5), cols = 11;
      Mask m = testsupport::random_mask(d, rows, cols, p, seed);
      if (seed % 3 == 0)  // a solid box too: long straight edges, many collinear vertices
        for (int z = 1; z < d - 1; ++z) m[static_cast<std::size_t>(z)](cv::Rect(2, 2, cols - 4, rows - 4)).setTo(1);
      auto in = [&](int z, int r, int c) {
        return z >= 0 && z < d && r >= 0 && r < rows && c >= 0 && c < cols && m[static_cast<std::size_t>(z)].at<uchar>(r, c);
      };
      std::vector<std::array<int, 3>> keys;  // half-voxel units: (2c + 1, 2r, 2z) for an edge along x, ...
      for (int z = -1; z <= d; ++z)
        for (int r = -1; r <= rows; ++r)
          for (int c = -1; c <= cols; ++c) {
            if (in(z, r, c) != in(z, r, c + 1)) keys.push_back({2 * c + 1, 2 * r, 2 * z});
            if (in(z, r, c) != in(z, r + 1, c)) keys.push_back({2 * c, 2 * r + 1, 2 * z});
            if (in(z, r, c) != in(z + 1, r, c)) keys.push_back({2 * c, 2 * r, 2 * z + 1});
          }
      if (keys.empty()) continue;
      std::vector<int> votes(keys.size(), 0);
      for (std::size_t axis = 0; axis < 3; ++axis) {
        const std::size_t u = axis == 0 ? 1 : 0, v = axis == 2 ? 1 : 2;
        std::map<int, std::vector<std::size_t>> planes;
        for (std::size_t i = 0; i < keys.size(); ++i) planes[keys[i][axis]].push_back(i);
        for (const auto& [coord, idx] : planes) {
          if (idx.size() <= 3) {
            for (auto i : idx) ++votes[i];
            continue;
          }
          std::vector<cv::Point2f> pts;
          for (auto i : idx) pts.emplace_back(static_cast<float>(keys[i][u]), static_cast<float>(keys[i][v]));
          std::vector<int> hull;
          cv::convexHull(pts, hull, false, false);
          for (int j : hull) ++votes[idx[static_cast<std::size_t>(j)]];
        }
      }
      std::set<std::array<long, 3>> expected, got;
      for (std::size_t i = 0; i < keys.size(); ++i)
        if (votes[i] == 3) expected.insert({keys[i][0], keys[i][1], keys[i][2]});
      for (const auto& q : k::mesh_measures(m, sp).hull_candidates)
        got.insert({std::lround(q.x / h[0]), std::lround(q.y / h[1]), std::lround(q.z / h[2])});
      BOOST_TEST((got == expected), "seed " << seed << " p " << p << ": " << got.size() << " vs " << expected.size());
      ++cases;
    }
  BOOST_TEST(cases >= 20);
}

// The IBSI morphology family (analysis/kernels/ibsi/morphology.h) on a 0/1 mask, tag -> value.
std::map<std::string, double> morphology(const Mask& m, const analysis::Spacing& sp) {
  namespace ib = analysis::kernels::ibsi;
  ib::RoiImage roi;
  roi.grid = {m.front().cols, m.front().rows, static_cast<int>(m.size()), sp.col, sp.row, sp.slice};
  for (const auto& s : m)
    for (int r = 0; r < s.rows; ++r)
      for (int c = 0; c < s.cols; ++c) roi.morph.push_back(s.at<uchar>(r, c) ? 1 : 0);
  roi.mask = roi.morph;
  roi.intensity.assign(roi.morph.size(), 100.0f);
  ib::Features out;
  ib::morphology_features(roi, out);
  std::map<std::string, double> by_tag;
  for (const auto& f : out) by_tag[f.tag] = f.value;
  return by_tag;
}

BOOST_AUTO_TEST_CASE(sphere_volume_area_and_translation_invariance) {
  const double radius = 12.0;  // voxels
  const analysis::Spacing sp{1.0, 1.0, 1.0};
  Mask m = k::make_mask(30, 30, 30);
  for (int z = 0; z < 30; ++z)
    for (int r = 0; r < 30; ++r)
      for (int c = 0; c < 30; ++c)
        if (std::pow(z - 14.5, 2) + std::pow(r - 14.5, 2) + std::pow(c - 14.5, 2) <= radius * radius)
          m[static_cast<std::size_t>(z)].at<uchar>(r, c) = 1;
  const auto f = morphology(m, sp);
  const double v = 4.0 / 3.0 * std::numbers::pi * radius * radius * radius;
  BOOST_TEST(std::abs(f.at("morph_volume") - v) / v < 0.02);
  BOOST_TEST(std::abs(f.at("morph_vol_approx") - v) / v < 0.02);
  BOOST_TEST(f.at("morph_sphericity") > 0.85);
  BOOST_TEST(f.at("morph_sphericity") <= 1.0);
  BOOST_TEST(std::abs(f.at("morph_diam") - 2 * radius) < 1.5);
  // Shifting the object inside the volume changes nothing.
  Mask shifted = k::make_mask(30, 30, 30);
  for (int z = 0; z + 2 < 30; ++z) m[static_cast<std::size_t>(z)](cv::Rect(0, 0, 27, 28)).copyTo(shifted[static_cast<std::size_t>(z + 2)](cv::Rect(3, 2, 27, 28)));
  const auto g = morphology(shifted, sp);
  BOOST_TEST(g.at("morph_volume") == f.at("morph_volume"), boost::test_tools::tolerance(1e-9));
  BOOST_TEST(g.at("morph_area_mesh") == f.at("morph_area_mesh"), boost::test_tools::tolerance(1e-9));
  BOOST_TEST(g.at("morph_diam") == f.at("morph_diam"), boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(empty_mask_has_no_mesh) {
  const auto mesh = k::mesh_measures(k::make_mask(2, 2, 2), {});
  BOOST_TEST(mesh.triangles == 0u);
  BOOST_TEST(mesh.area_mm2 == 0.0);
}

BOOST_AUTO_TEST_CASE(area_and_volume_match_scikit_image) {
  // Smooth shapes: tilted, off-grid ellipsoids and a non-convex union of two. (On noisy masks,
  // marching-cubes implementations legitimately differ by ~1% in area because they resolve the
  // ambiguous configurations differently; scikit-image's Lewiner method adds interior vertices.)
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("pacsnode_mesh_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const analysis::Spacing sp{0.7, 0.9, 1.5};
  std::vector<k::MeshMeasures> ours;
  std::string args;
  for (unsigned seed : {21u, 22u, 23u}) {
    Mask m = k::make_mask(16, 30, 34);
    const double t = 0.3 * seed;  // rotation in the x-y plane
    for (int z = 0; z < 16; ++z)
      for (int r = 0; r < 30; ++r)
        for (int c = 0; c < 34; ++c) {
          const double x = c * sp.col - 11.3, y = r * sp.row - 13.1, w = z * sp.slice - 11.7;
          const double u = std::cos(t) * x + std::sin(t) * y, v = -std::sin(t) * x + std::cos(t) * y;
          bool in = u * u / 81.0 + v * v / 36.0 + w * w / 64.0 <= 1.0;
          if (seed == 23u) in = in || (std::pow(x - 9, 2) + std::pow(y + 5, 2) + std::pow(w - 3, 2) <= 16.0);
          m[static_cast<std::size_t>(z)].at<uchar>(r, c) = in ? 1 : 0;
        }
    const fs::path f = dir / ("m" + std::to_string(seed) + ".nii");
    k::write_nifti(f, m, sp);
    args += " " + f.string();
    ours.push_back(k::mesh_measures(m, sp));
  }
  const std::string cmd = std::string(testsupport::python()) + " " +
                          (testsupport::source_dir() / "tests/scripts/features_mesh.py").string() + args + " > " +
                          (dir / "out.txt").string();
  BOOST_TEST_REQUIRE(std::system(cmd.c_str()) == 0, cmd);
  std::ifstream in(dir / "out.txt");
  for (const auto& o : ours) {
    double area = 0, volume = 0;
    BOOST_TEST_REQUIRE(static_cast<bool>(in >> area >> volume));
    BOOST_TEST_MESSAGE("area " << o.area_mm2 << " vs " << area << ", volume " << o.volume_mm3 << " vs " << volume);
    BOOST_TEST(o.area_mm2 == area, boost::test_tools::tolerance(0.003));
    BOOST_TEST(o.volume_mm3 == volume, boost::test_tools::tolerance(0.003));
  }
  fs::remove_all(dir);
}
