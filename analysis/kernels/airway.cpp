#include "analysis/kernels/airway.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include <fmt/format.h>

namespace analysis::kernels {
namespace {

struct Branch {
  int parent = -1;
  int anchor = -1;  // nearest established ancestor (-1: none)
  int born = 0;     // layer of its first front
  bool established = false;
  bool dead = false;
  double ref = 0;   // reference front size (voxels)
  int last_ok = 0;  // last layer whose front was of normal size
  std::vector<std::int64_t> sizes;
};

struct Layer {
  std::vector<std::int32_t> vox;     // linear indices, sorted
  std::vector<std::int32_t> branch;  // branch of each voxel
};

struct Volume {
  Mask& state;
  int depth, rows, cols;
  std::int64_t plane;
  std::uint8_t& at(std::int64_t i) const {
    const int z = static_cast<int>(i / plane);
    const std::int64_t rem = i - z * plane;
    const int r = static_cast<int>(rem / cols);
    return state[static_cast<std::size_t>(z)].ptr<std::uint8_t>(r)[rem - static_cast<std::int64_t>(r) * cols];
  }
};

struct UnionFind {
  std::vector<int> p;
  explicit UnionFind(std::size_t n) : p(n) { std::iota(p.begin(), p.end(), 0); }
  int find(int x) {
    while (p[x] != x) x = p[x] = p[p[x]];
    return x;
  }
  void unite(int a, int b) {
    a = find(a), b = find(b);
    if (a != b) p[std::max(a, b)] = std::min(a, b);
  }
};

// 26-connected components of the (sorted) voxel list; returns the component of each voxel and
// the number of components (numbered in order of first voxel).
int components(const std::vector<std::int32_t>& vox, const Volume& v, std::vector<int>& comp) {
  const std::size_t n = vox.size();
  UnionFind uf(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t idx = vox[i];
    const int z = static_cast<int>(idx / v.plane);
    const std::int64_t rem = idx - z * v.plane;
    const int r = static_cast<int>(rem / v.cols), c = static_cast<int>(rem - static_cast<std::int64_t>(r) * v.cols);
    // The 13 neighbours that come later in linear order (the others find this voxel).
    for (int dz = 0; dz <= 1; ++dz)
      for (int dr = -1; dr <= 1; ++dr)
        for (int dc = -1; dc <= 1; ++dc) {
          if (dz == 0 && (dr < 0 || (dr == 0 && dc <= 0))) continue;
          const int zz = z + dz, rr = r + dr, cc = c + dc;
          if (zz >= v.depth || rr < 0 || rr >= v.rows || cc < 0 || cc >= v.cols) continue;
          const auto key = static_cast<std::int32_t>(zz * v.plane + static_cast<std::int64_t>(rr) * v.cols + cc);
          const auto it = std::lower_bound(vox.begin() + static_cast<std::ptrdiff_t>(i) + 1, vox.end(), key);
          if (it != vox.end() && *it == key) uf.unite(static_cast<int>(i), static_cast<int>(it - vox.begin()));
        }
  }
  comp.assign(n, -1);
  std::vector<int> id(n, -1);
  int k = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const int root = uf.find(static_cast<int>(i));
    if (id[root] < 0) id[root] = k++;
    comp[i] = id[root];
  }
  return k;
}

double median(std::vector<std::int64_t> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? static_cast<double>(v[n / 2]) : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

}  // namespace

AirwayResult grow_airway_tree(Mask& state, const std::vector<std::int32_t>& seeds, const Spacing& spacing,
                              const AirwayParams& p) {
  check_stack(state, CV_8U, "grow_airway_tree");
  check_spacing(spacing, "grow_airway_tree");
  if (!(p.leak_ratio > 1) || p.reference_layers < 1 || !(p.max_front_mm2 > 0) || !(p.max_volume_ml > 0))
    throw std::invalid_argument("grow_airway_tree: bad parameters");
  Volume v{state, static_cast<int>(state.size()), state.front().rows, state.front().cols, 0};
  v.plane = static_cast<std::int64_t>(v.rows) * v.cols;
  const std::int64_t total = v.plane * v.depth;
  if (total >= std::numeric_limits<std::int32_t>::max())
    throw std::invalid_argument("grow_airway_tree: volume too large for 32-bit indices");
  const double face_mm2 = (spacing.col * spacing.row + spacing.col * spacing.slice + spacing.row * spacing.slice) / 3;
  const double voxel_ml = spacing.voxel_volume() / 1000.0;
  const auto max_voxels = static_cast<std::int64_t>(p.max_volume_ml / voxel_ml);

  AirwayResult out;
  std::vector<Branch> branches;
  std::vector<Layer> layers;
  {
    Layer l0;
    for (const auto s : seeds) {
      if (s < 0 || s >= total) throw std::invalid_argument("grow_airway_tree: seed outside the volume");
      if (v.at(s) != kAirwayOpen) continue;
      v.at(s) = kAirwayTree;
      l0.vox.push_back(s);
    }
    if (l0.vox.empty()) return out;
    std::sort(l0.vox.begin(), l0.vox.end());
    std::vector<int> comp;
    const int n = components(l0.vox, v, comp);
    // The seed's cross-section is the reference, counting the seed voxels that are not passable
    // too (with coarse pixels only the core of the lumen is), shared among its components.
    std::vector<std::int32_t> given(seeds);
    std::sort(given.begin(), given.end());
    const auto distinct = std::unique(given.begin(), given.end()) - given.begin();
    const double seed_share = static_cast<double>(distinct) / static_cast<double>(l0.vox.size());
    for (int k = 0; k < n; ++k) {
      Branch b;
      b.established = true;
      b.sizes.push_back(std::count(comp.begin(), comp.end(), k));
      b.ref = static_cast<double>(b.sizes.back()) * seed_share;
      branches.push_back(b);
    }
    l0.branch.assign(comp.begin(), comp.end());
    out.voxels = static_cast<std::int64_t>(l0.vox.size());
    layers.push_back(std::move(l0));
  }

  // Gives back the voxels of the branches in `which` added after layer `after` (per branch).
  const auto roll_back = [&](const std::vector<int>& which, const std::vector<int>& after, int first_layer) {
    for (std::size_t l = static_cast<std::size_t>(std::max(first_layer, 0)); l < layers.size(); ++l) {
      Layer& L = layers[l];
      for (std::size_t i = 0; i < L.vox.size(); ++i) {
        const auto it = std::find(which.begin(), which.end(), L.branch[i]);
        if (it == which.end() || static_cast<int>(l) <= after[static_cast<std::size_t>(it - which.begin())]) continue;
        if (v.at(L.vox[i]) == kAirwayTree) {
          v.at(L.vox[i]) = kAirwayBlocked;
          --out.voxels;
        }
      }
    }
    for (int b : which) branches[static_cast<std::size_t>(b)].dead = true;
    ++out.leaks;
  };

  static constexpr int dz[6] = {-1, 1, 0, 0, 0, 0}, dr[6] = {0, 0, -1, 1, 0, 0}, dc[6] = {0, 0, 0, 0, -1, 1};
  std::vector<int> comp;
  for (int d = 1;; ++d) {
    Layer next;
    {
      const Layer& cur = layers.back();
      for (std::size_t i = 0; i < cur.vox.size(); ++i) {
        const int b = cur.branch[i];
        if (branches[static_cast<std::size_t>(b)].dead || v.at(cur.vox[i]) != kAirwayTree) continue;
        const std::int64_t idx = cur.vox[i];
        const int z = static_cast<int>(idx / v.plane);
        const std::int64_t rem = idx - z * v.plane;
        const int r = static_cast<int>(rem / v.cols), c = static_cast<int>(rem - static_cast<std::int64_t>(r) * v.cols);
        for (int k = 0; k < 6; ++k) {
          const int zz = z + dz[k], rr = r + dr[k], cc = c + dc[k];
          if (zz < 0 || zz >= v.depth || rr < 0 || rr >= v.rows || cc < 0 || cc >= v.cols) continue;
          const std::int64_t n = zz * v.plane + static_cast<std::int64_t>(rr) * v.cols + cc;
          std::uint8_t& s = v.at(n);
          if (s != kAirwayOpen) continue;
          s = kAirwayTree;
          next.vox.push_back(static_cast<std::int32_t>(n));
          next.branch.push_back(b);
        }
      }
    }
    if (next.vox.empty()) break;
    out.layers = d;
    out.voxels += static_cast<std::int64_t>(next.vox.size());
    {  // sort voxels, keeping their branch
      std::vector<std::size_t> order(next.vox.size());
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return next.vox[a] < next.vox[b]; });
      Layer sorted;
      sorted.vox.reserve(order.size());
      sorted.branch.reserve(order.size());
      for (auto i : order) sorted.vox.push_back(next.vox[i]), sorted.branch.push_back(next.branch[i]);
      next = std::move(sorted);
    }
    const int ncomp = components(next.vox, v, comp);
    // Each component's branch: its voxels' branch (the smallest id if fronts of several meet).
    std::vector<int> from(static_cast<std::size_t>(ncomp), std::numeric_limits<int>::max());
    std::vector<std::int64_t> size(static_cast<std::size_t>(ncomp), 0);
    for (std::size_t i = 0; i < next.vox.size(); ++i) {
      const auto k = static_cast<std::size_t>(comp[i]);
      from[k] = std::min(from[k], next.branch[i]);
      ++size[k];
    }
    std::vector<int> pieces(branches.size(), 0);
    for (int k = 0; k < ncomp; ++k) ++pieces[static_cast<std::size_t>(from[static_cast<std::size_t>(k)])];
    std::vector<int> assigned(static_cast<std::size_t>(ncomp));
    for (int k = 0; k < ncomp; ++k) {
      const int b = from[static_cast<std::size_t>(k)];
      if (pieces[static_cast<std::size_t>(b)] == 1) {
        assigned[static_cast<std::size_t>(k)] = b;
        continue;
      }
      Branch child;  // a bifurcation: every piece is a new branch
      child.parent = b;
      const Branch& pb = branches[static_cast<std::size_t>(b)];
      child.anchor = pb.established ? b : pb.anchor;
      child.born = d;
      child.last_ok = d;
      assigned[static_cast<std::size_t>(k)] = static_cast<int>(branches.size());
      branches.push_back(child);
    }
    for (std::size_t i = 0; i < next.vox.size(); ++i) next.branch[i] = assigned[static_cast<std::size_t>(comp[i])];
    layers.push_back(std::move(next));

    // Sizes, references, leak checks.
    std::vector<int> leaked_est;                       // established branches that leaked
    std::vector<double> young_sum(branches.size(), 0);  // per anchor
    std::vector<int> young_anchor_oversize;             // anchors of oversized young fronts
    for (int k = 0; k < ncomp; ++k) {
      const int b = assigned[static_cast<std::size_t>(k)];
      Branch& B = branches[static_cast<std::size_t>(b)];
      const std::int64_t s = size[static_cast<std::size_t>(k)];
      B.sizes.push_back(s);
      const bool oversize = static_cast<double>(s) * face_mm2 > p.max_front_mm2;
      if (!B.established && static_cast<int>(B.sizes.size()) >= p.reference_layers && !oversize) {
        B.established = true;
        B.ref = median(B.sizes);
        B.last_ok = d;
        continue;
      }
      if (B.established) {
        if (oversize || static_cast<double>(s) > p.leak_ratio * B.ref) leaked_est.push_back(b);
        else if (static_cast<double>(s) <= 1.5 * B.ref) B.last_ok = d;
      } else if (B.anchor >= 0) {
        young_sum[static_cast<std::size_t>(B.anchor)] += static_cast<double>(s);
        if (oversize) young_anchor_oversize.push_back(B.anchor);
      } else if (oversize) {
        leaked_est.push_back(b);  // no reference above it: stop it where it is
      }
    }
    for (int b : leaked_est) {
      const Branch& B = branches[static_cast<std::size_t>(b)];
      roll_back({b}, {B.last_ok}, B.last_ok + 1);
    }
    for (std::size_t a = 0; a < branches.size(); ++a) {
      const bool over = young_sum[a] > p.leak_ratio * branches[a].ref;
      if (!over && std::find(young_anchor_oversize.begin(), young_anchor_oversize.end(), static_cast<int>(a)) ==
                       young_anchor_oversize.end())
        continue;
      // The anchor's young subtree goes, and the anchor's own growing front before it split.
      std::vector<int> which{static_cast<int>(a)};
      std::vector<int> after{branches[a].last_ok};
      int first = branches[a].last_ok + 1;
      for (std::size_t b = 0; b < branches.size(); ++b)
        if (branches[b].anchor == static_cast<int>(a) && !branches[b].established) {
          which.push_back(static_cast<int>(b));
          after.push_back(-1);
          first = std::min(first, branches[b].born);
        }
      roll_back(which, after, first);
    }
    if (out.voxels > max_voxels) {
      out.overflow = true;
      break;
    }
  }
  out.branches = static_cast<int>(branches.size());
  return out;
}

}  // namespace analysis::kernels
