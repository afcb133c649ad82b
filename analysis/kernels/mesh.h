#pragma once
// Surface mesh of a mask by marching cubes, for the IBSI morphological features.
//
// As IBSI 1 (section "Morphological features"): the mask is padded with a layer of background,
// the iso-surface at 0.5 is extracted between voxel centres, so every mesh vertex is the midpoint
// of a lattice edge joining a foreground and a background voxel; coordinates are in mm.
// The cube triangulation is derived once from the cube faces (no lookup tables are copied):
// on every face the crossing points are joined so that the background corners are cut off; a
// face with two diagonal foreground corners therefore joins them (foreground connected across
// face diagonals). The choice depends on the face alone, so neighbouring cubes agree and the mesh
// is closed. The loops so formed are consistently oriented, and each is triangulated by its
// triangulation of largest area. On the IBSI digital phantom this reproduces scikit-image's
// marching cubes exactly (area 388.07 mm2, volume 556.33 mm3), on smooth shapes to < 0.1%
// (tests/unit/test_kernels_mesh.cpp). On noisy masks, marching-cubes implementations differ by
// up to ~1.5% in area, as they resolve ambiguous cubes differently.
#include <array>
#include <cstddef>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/types.h"

namespace analysis::kernels {

struct MeshMeasures {
  double area_mm2 = 0;        // sum of triangle areas
  double volume_mm3 = 0;      // enclosed volume (divergence theorem over the oriented triangles)
  std::size_t triangles = 0;
  std::size_t vertices = 0;   // distinct mesh vertices
  // Mesh vertices that can be extreme points: those that are vertices of the 2D convex hull of
  // their own plane of constant x, of constant y and of constant z. They contain every vertex of
  // the 3D convex hull of the mesh, hence both ends of the maximum diameter.
  std::vector<cv::Point3d> hull_candidates;
};

// Marching cubes over `mask` (non-zero = inside) with the given spacing. An empty mask gives zeros.
MeshMeasures mesh_measures(const Mask& mask, const Spacing& spacing);

// Largest Euclidean distance between any two points (O(n^2); pass hull candidates).
double max_pairwise_distance(const std::vector<cv::Point3d>& points);

// One triangle of the per-configuration table: indices of the cube edges its vertices lie on.
// Corner i of a cube is (i & 1, (i >> 1) & 1, (i >> 2) & 1); exposed for tests.
using CubeTriangles = std::vector<std::array<int, 3>>;
const CubeTriangles& cube_triangles(int configuration);
std::array<int, 2> cube_edge(int edge);  // the two corners of edge 0..11

}  // namespace analysis::kernels
