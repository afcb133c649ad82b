#include "analysis/kernels/mesh.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

namespace analysis::kernels {
namespace {

struct Tables {
  std::array<std::array<int, 2>, 12> edges{};
  int edge_of[8][8];
  std::array<CubeTriangles, 256> triangles;

  cv::Point3d midpoint(int e) const {
    const auto [a, b] = edges[static_cast<std::size_t>(e)];
    return {((a & 1) + (b & 1)) * 0.5, (((a >> 1) & 1) + ((b >> 1) & 1)) * 0.5, (((a >> 2) & 1) + ((b >> 2) & 1)) * 0.5};
  }

  // All triangulations of polygon loop[i..j] (indices into loop) that use chord (i, j).
  void triangulations(const std::vector<int>& loop, int i, int j, std::vector<CubeTriangles>& out) const {
    out.clear();
    if (j - i < 2) {
      out.emplace_back();
      return;
    }
    for (int k = i + 1; k < j; ++k) {
      std::vector<CubeTriangles> left, right;
      triangulations(loop, i, k, left);
      triangulations(loop, k, j, right);
      for (const auto& l : left)
        for (const auto& r : right) {
          CubeTriangles t = l;
          t.insert(t.end(), r.begin(), r.end());
          t.push_back({loop[static_cast<std::size_t>(i)], loop[static_cast<std::size_t>(k)], loop[static_cast<std::size_t>(j)]});
          out.push_back(std::move(t));
        }
    }
  }

  CubeTriangles triangulate(const std::vector<int>& loop) const {
    std::vector<CubeTriangles> all;
    triangulations(loop, 0, static_cast<int>(loop.size()) - 1, all);
    // The triangulation of largest area (on the unit cube; ties: first enumerated).
    double best = -1;
    CubeTriangles pick;
    for (const auto& t : all) {
      double area = 0;
      for (const auto& tri : t) {
        const auto p0 = midpoint(tri[0]), p1 = midpoint(tri[1]), p2 = midpoint(tri[2]);
        const auto n = (p1 - p0).cross(p2 - p0);
        area += std::sqrt(n.dot(n));
      }
      if (area > best + 1e-9) {
        best = area;
        pick = t;
      }
    }
    return pick;
  }

  Tables() {
    int n = 0;
    for (int a = 0; a < 8; ++a)
      for (int b = 0; b < 8; ++b) edge_of[a][b] = -1;
    for (int a = 0; a < 8; ++a)
      for (int bit = 0; bit < 3; ++bit) {
        const int b = a | (1 << bit);
        if (b == a) continue;
        edges[static_cast<std::size_t>(n)] = {a, b};
        edge_of[a][b] = edge_of[b][a] = n;
        ++n;
      }
    // Faces: corners in counter-clockwise order seen from outside the cube.
    std::vector<std::array<int, 4>> faces;
    for (int axis = 0; axis < 3; ++axis)
      for (int side = 0; side < 2; ++side) {
        const int u = axis == 0 ? 1 : 0, v = axis == 2 ? 1 : 2;
        auto corner = [&](int cu, int cv) { return (side << axis) | (cu << u) | (cv << v); };
        std::array<int, 4> f = {corner(0, 0), corner(1, 0), corner(1, 1), corner(0, 1)};
        // The cycle above turns like e_u x e_v; the outward normal is (side ? +1 : -1) e_axis.
        std::array<int, 3> eu{}, ev{};
        eu[static_cast<std::size_t>(u)] = 1;
        ev[static_cast<std::size_t>(v)] = 1;
        const std::array<int, 3> cr = {eu[1] * ev[2] - eu[2] * ev[1], eu[2] * ev[0] - eu[0] * ev[2],
                                       eu[0] * ev[1] - eu[1] * ev[0]};
        const int turn = cr[static_cast<std::size_t>(axis)] * (side ? 1 : -1);
        if (turn < 0) std::swap(f[1], f[3]);
        faces.push_back(f);
      }
    for (int config = 0; config < 256; ++config) {
      std::array<int, 12> next;
      next.fill(-1);
      auto in = [&](int corner) { return (config >> corner) & 1; };
      for (const auto& f : faces) {
        int inside = 0;
        for (int k = 0; k < 4; ++k) inside += in(f[static_cast<std::size_t>(k)]);
        if (inside == 0 || inside == 4) continue;
        auto e = [&](int k) {
          return edge_of[f[static_cast<std::size_t>((k + 4) % 4)]][f[static_cast<std::size_t>((k + 5) % 4)]];
        };
        auto fin = [&](int k) { return in(f[static_cast<std::size_t>((k + 4) % 4)]); };
        if (inside == 2 && fin(0) == fin(2)) {
          // Diagonal face: cut off each background corner, joining the two foreground corners
          // (exit edge k-1 -> entry edge k around background corner k).
          for (int k = 0; k < 4; ++k)
            if (!fin(k)) next[static_cast<std::size_t>(e(k - 1))] = e(k);
        } else {
          int exit = -1, entry = -1;
          for (int k = 0; k < 4; ++k) {
            if (fin(k) && !fin(k + 1)) exit = e(k);
            if (!fin(k) && fin(k + 1)) entry = e(k);
          }
          next[static_cast<std::size_t>(exit)] = entry;
        }
      }
      std::array<bool, 12> seen{};
      for (int start = 0; start < 12; ++start) {
        if (next[static_cast<std::size_t>(start)] < 0 || seen[static_cast<std::size_t>(start)]) continue;
        std::vector<int> loop;
        int cur = start;
        while (!seen[static_cast<std::size_t>(cur)]) {
          seen[static_cast<std::size_t>(cur)] = true;
          loop.push_back(cur);
          cur = next[static_cast<std::size_t>(cur)];
          if (cur < 0) throw std::logic_error("marching cubes: open loop");
        }
        const auto tris = triangulate(loop);
        triangles[static_cast<std::size_t>(config)].insert(triangles[static_cast<std::size_t>(config)].end(), tris.begin(), tris.end());
      }
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const CubeTriangles& cube_triangles(int configuration) {
  if (configuration < 0 || configuration > 255) throw std::out_of_range("cube_triangles: configuration 0..255");
  return tables().triangles[static_cast<std::size_t>(configuration)];
}

std::array<int, 2> cube_edge(int edge) {
  if (edge < 0 || edge > 11) throw std::out_of_range("cube_edge: edge 0..11");
  return tables().edges[static_cast<std::size_t>(edge)];
}

MeshMeasures mesh_measures(const Mask& mask, const Spacing& spacing) {
  check_stack(mask, CV_8U, "mesh_measures");
  check_spacing(spacing, "mesh_measures");
  const Tables& t = tables();
  const int depth = static_cast<int>(mask.size()), rows = mask.front().rows, cols = mask.front().cols;
  // Bounding box of the foreground.
  int z0 = depth, z1 = -1, r0 = rows, r1 = -1, c0 = cols, c1 = -1;
  for (int z = 0; z < depth; ++z) {
    const cv::Mat& s = mask[static_cast<std::size_t>(z)];
    for (int r = 0; r < rows; ++r) {
      const uchar* p = s.ptr<uchar>(r);
      for (int c = 0; c < cols; ++c)
        if (p[c]) {
          z0 = std::min(z0, z); z1 = std::max(z1, z);
          r0 = std::min(r0, r); r1 = std::max(r1, r);
          c0 = std::min(c0, c); c1 = std::max(c1, c);
        }
    }
  }
  MeshMeasures out;
  if (z1 < 0) return out;
  // Row of the padded box, or nullptr outside the foreground box.
  auto row = [&](int z, int r) -> const uchar* {
    if (z < z0 || z > z1 || r < r0 || r > r1) return nullptr;
    return mask[static_cast<std::size_t>(z)].ptr<uchar>(r);
  };
  // Edge midpoints in mm relative to the cube's corner 0.
  std::array<cv::Point3d, 12> mid;
  for (int e = 0; e < 12; ++e) {
    const auto [a, b] = t.edges[static_cast<std::size_t>(e)];
    mid[static_cast<std::size_t>(e)] = cv::Point3d(((a & 1) + (b & 1)) * 0.5 * spacing.col,
                                                   (((a >> 1) & 1) + ((b >> 1) & 1)) * 0.5 * spacing.row,
                                                   (((a >> 2) & 1) + ((b >> 2) & 1)) * 0.5 * spacing.slice);
  }
  // A column of 4 corners (y, z) packed as a nibble, spread to the x = 0 corner bits 0, 2, 4, 6.
  std::array<int, 16> spread{};
  for (int n = 0; n < 16; ++n)
    spread[static_cast<std::size_t>(n)] = (n & 1) | ((n >> 1) & 1) << 2 | ((n >> 2) & 1) << 4 | ((n >> 3) & 1) << 6;
  std::vector<std::array<int, 3>> keys;  // vertex coordinates in half-voxel units, relative to the box
  double area = 0, volume6 = 0;
  for (int z = z0 - 1; z <= z1; ++z)
    for (int r = r0 - 1; r <= r1; ++r) {
      const uchar* p00 = row(z, r);
      const uchar* p10 = row(z, r + 1);
      const uchar* p01 = row(z + 1, r);
      const uchar* p11 = row(z + 1, r + 1);
      if (!p00 && !p10 && !p01 && !p11) continue;
      auto nibble = [&](int c) -> int {
        if (c < c0 || c > c1) return 0;
        return (p00 && p00[c] ? 1 : 0) | (p10 && p10[c] ? 2 : 0) | (p01 && p01[c] ? 4 : 0) | (p11 && p11[c] ? 8 : 0);
      };
      int left = 0;  // nibble of column c (x = 0 side), starting outside the box
      for (int c = c0 - 1; c <= c1; ++c) {
        const int right = nibble(c + 1);
        const int config = spread[static_cast<std::size_t>(left)] | spread[static_cast<std::size_t>(right)] << 1;
        left = right;
        if (config == 0 || config == 255) continue;
        // Coordinates relative to the box corner keep the sums well conditioned.
        const cv::Point3d o((c - c0) * spacing.col, (r - r0) * spacing.row, (z - z0) * spacing.slice);
        for (const auto& tri : t.triangles[static_cast<std::size_t>(config)]) {
          const cv::Point3d q0 = o + mid[static_cast<std::size_t>(tri[0])];
          const cv::Point3d q1 = o + mid[static_cast<std::size_t>(tri[1])];
          const cv::Point3d q2 = o + mid[static_cast<std::size_t>(tri[2])];
          const cv::Point3d n = (q1 - q0).cross(q2 - q0);
          area += 0.5 * std::sqrt(n.dot(n));
          volume6 += q0.dot(q1.cross(q2));
          ++out.triangles;
        }
        // The three lattice edges leaving corner 0 belong to this cube alone: each vertex once.
        const int v0 = config & 1;
        const int owned[3][2] = {{1, 0}, {2, 1}, {4, 2}};  // far corner, axis
        for (const auto& oc : owned) {
          if (((config >> oc[0]) & 1) == v0) continue;
          std::array<int, 3> k = {2 * (c - c0), 2 * (r - r0), 2 * (z - z0)};
          ++k[static_cast<std::size_t>(oc[1])];
          keys.push_back(k);
        }
      }
    }
  out.area_mm2 = area;
  out.volume_mm3 = std::abs(volume6) / 6.0;
  out.vertices = keys.size();
  // A vertex of the 3D convex hull is a vertex of the 2D hull of its own plane for planes of
  // constant x, y and z alike; keep the vertices that pass all three. In a plane, a 2D hull vertex
  // is the first or the last point of its line (constant u, sorted by v): only those go to
  // cv::convexHull. Planes of up to 3 points keep all of them.
  const double h[3] = {0.5 * spacing.col, 0.5 * spacing.row, 0.5 * spacing.slice};
  std::vector<unsigned char> votes(keys.size(), 0);
  std::array<int, 3> lo{}, hi{};
  if (!keys.empty()) lo = hi = keys.front();
  for (const auto& k : keys)
    for (std::size_t a = 0; a < 3; ++a) lo[a] = std::min(lo[a], k[a]), hi[a] = std::max(hi[a], k[a]);
  std::vector<std::uint32_t> start, order(keys.size());
  std::vector<std::int32_t> first, last;  // per line of the plane: the key with the smallest / largest v
  std::vector<int> lines;                 // the lines of the plane that have a key
  std::vector<std::uint32_t> extreme;     // keys of the plane sent to the 2D hull
  std::vector<cv::Point2f> pts;
  std::vector<int> hull;
  for (std::size_t axis = 0; axis < 3; ++axis) {
    const std::size_t u = axis == 0 ? 1 : 0, v = axis == 2 ? 1 : 2;
    // Counting sort of the keys by plane (stable: a plane's keys in generation order).
    start.assign(static_cast<std::size_t>(hi[axis] - lo[axis]) + 2, 0);
    for (const auto& k : keys) ++start[static_cast<std::size_t>(k[axis] - lo[axis]) + 1];
    for (std::size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
    {
      std::vector<std::uint32_t> fill(start.begin(), start.end() - 1);
      for (std::size_t i = 0; i < keys.size(); ++i)
        order[fill[static_cast<std::size_t>(keys[i][axis] - lo[axis])]++] = static_cast<std::uint32_t>(i);
    }
    first.assign(static_cast<std::size_t>(hi[u] - lo[u]) + 1, -1);
    last.assign(first.size(), -1);
    for (std::size_t plane = 0; plane + 1 < start.size(); ++plane) {
      const std::uint32_t g = start[plane], e = start[plane + 1];
      if (e - g <= 3) {
        for (std::uint32_t i = g; i < e; ++i) ++votes[order[i]];
        continue;
      }
      lines.clear();
      for (std::uint32_t i = g; i < e; ++i) {
        const std::uint32_t k = order[i];
        const auto line = static_cast<std::size_t>(keys[k][u] - lo[u]);
        if (first[line] < 0) {
          first[line] = last[line] = static_cast<std::int32_t>(k);
          lines.push_back(static_cast<int>(line));
          continue;
        }
        if (keys[k][v] < keys[static_cast<std::size_t>(first[line])][v]) first[line] = static_cast<std::int32_t>(k);
        if (keys[k][v] > keys[static_cast<std::size_t>(last[line])][v]) last[line] = static_cast<std::int32_t>(k);
      }
      extreme.clear();
      pts.clear();
      for (const int line : lines) {
        const auto l = static_cast<std::size_t>(line);
        for (const std::int32_t k : {first[l], last[l]}) {
          const auto& key = keys[static_cast<std::size_t>(k)];
          extreme.push_back(static_cast<std::uint32_t>(k));
          pts.emplace_back(static_cast<float>(key[u]), static_cast<float>(key[v]));
          if (first[l] == last[l]) break;  // a line of one key
        }
        first[l] = last[l] = -1;
      }
      cv::convexHull(pts, hull, false, false);
      for (int i : hull) ++votes[extreme[static_cast<std::size_t>(i)]];
    }
  }
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (votes[i] == 3)
      out.hull_candidates.emplace_back(keys[i][0] * h[0] + c0 * spacing.col, keys[i][1] * h[1] + r0 * spacing.row,
                                       keys[i][2] * h[2] + z0 * spacing.slice);
  return out;
}

double max_pairwise_distance(const std::vector<cv::Point3d>& points) {
  double best = 0;
  for (std::size_t i = 0; i < points.size(); ++i)
    for (std::size_t j = i + 1; j < points.size(); ++j) {
      const cv::Point3d d = points[i] - points[j];
      best = std::max(best, d.dot(d));
    }
  return std::sqrt(best);
}

}  // namespace analysis::kernels
