#include "analysis/kernels/ibsi/zones.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/core/hal/intrin.hpp>

namespace analysis::kernels::ibsi {
namespace {

constexpr FeatureDef kGlszm[] = {
    {"szm_sze", "5QRC", "Small zone emphasis", ""},
    {"szm_lze", "48P8", "Large zone emphasis", ""},
    {"szm_lgze", "XMSY", "Low grey level zone emphasis", ""},
    {"szm_hgze", "5GN9", "High grey level zone emphasis", ""},
    {"szm_szlge", "5RAI", "Small zone low grey level emphasis", ""},
    {"szm_szhge", "HW1V", "Small zone high grey level emphasis", ""},
    {"szm_lzlge", "YH51", "Large zone low grey level emphasis", ""},
    {"szm_lzhge", "J17V", "Large zone high grey level emphasis", ""},
    {"szm_glnu", "JNSA", "Grey level non-uniformity", ""},
    {"szm_glnu_norm", "Y1RO", "Normalised grey level non-uniformity", ""},
    {"szm_zsnu", "4JP3", "Zone size non-uniformity", ""},
    {"szm_zsnu_norm", "VB3A", "Normalised zone size non-uniformity", ""},
    {"szm_z_perc", "P30P", "Zone percentage", ""},
    {"szm_gl_var", "BYLV", "Grey level variance", ""},
    {"szm_zs_var", "3NSA", "Zone size variance", ""},
    {"szm_zs_entr", "GU8N", "Zone size entropy", ""},
};

constexpr FeatureDef kGldzm[] = {
    {"dzm_sde", "0GBI", "Small distance emphasis", ""},
    {"dzm_lde", "MB4I", "Large distance emphasis", ""},
    {"dzm_lgze", "S1RA", "Low grey level zone emphasis", ""},
    {"dzm_hgze", "K26C", "High grey level zone emphasis", ""},
    {"dzm_sdlge", "RUVG", "Small distance low grey level emphasis", ""},
    {"dzm_sdhge", "DKNJ", "Small distance high grey level emphasis", ""},
    {"dzm_ldlge", "A7WM", "Large distance low grey level emphasis", ""},
    {"dzm_ldhge", "KLTH", "Large distance high grey level emphasis", ""},
    {"dzm_glnu", "VFT7", "Grey level non-uniformity", ""},
    {"dzm_glnu_norm", "7HP3", "Normalised grey level non-uniformity", ""},
    {"dzm_zdnu", "V294", "Zone distance non-uniformity", ""},
    {"dzm_zdnu_norm", "IATH", "Normalised zone distance non-uniformity", ""},
    {"dzm_z_perc", "VIWW", "Zone percentage", ""},
    {"dzm_gl_var", "QK93", "Grey level variance", ""},
    {"dzm_zd_var", "7WT1", "Zone distance variance", ""},
    {"dzm_zd_entr", "GBDU", "Zone distance entropy", ""},
};

using detail::MatrixEntry;

// A box [x0, x1) x [y0, y1) x [z0, z1) of the grid.
struct Box {
  int x0 = 0, x1 = 0, y0 = 0, y1 = 0, z0 = 0, z1 = 0;
  int nx() const { return x1 - x0; }
  int ny() const { return y1 - y0; }
  int nz() const { return z1 - z0; }
  std::size_t slice_size() const { return static_cast<std::size_t>(nx()) * static_cast<std::size_t>(ny()); }
  std::size_t size() const { return slice_size() * static_cast<std::size_t>(nz()); }
};

template <class Inside>
Box bounding_box(const Grid& g, Inside inside) {
  Box b{g.nx, -1, g.ny, -1, g.nz, -1};
  for (int z = 0; z < g.nz; ++z)
    for (int y = 0; y < g.ny; ++y) {
      const std::size_t row = g.index(0, y, z);
      int first = 0, last = g.nx - 1;  // scans from both ends, to the first voxel inside
      while (first < g.nx && !inside(row + static_cast<std::size_t>(first))) ++first;
      if (first == g.nx) continue;
      while (!inside(row + static_cast<std::size_t>(last))) --last;
      b.x0 = std::min(b.x0, first);
      b.x1 = std::max(b.x1, last);
      b.y0 = std::min(b.y0, y);
      b.y1 = std::max(b.y1, y);
      b.z0 = std::min(b.z0, z);
      b.z1 = std::max(b.z1, z);
    }
  ++b.x1;
  ++b.y1;
  ++b.z1;
  return b;
}

// Counts of (grey level, column) cells: dense for columns below kDense (with a list of the touched
// cells, so that collecting and clearing cost what was added), a key list for larger columns.
class Histogram {
 public:
  static constexpr std::int64_t kDense = 256;
  explicit Histogram(int ng = 0) : counts_(static_cast<std::size_t>(ng) * kDense, 0) {}
  // Empties the histogram and makes room for grey levels 1..ng.
  void reset(int ng) {
    for (const std::uint32_t cell : touched_) counts_[cell] = 0;
    touched_.clear();
    large_.clear();
    if (counts_.size() != static_cast<std::size_t>(ng) * kDense) counts_.assign(static_cast<std::size_t>(ng) * kDense, 0);
  }
  void add(int level, std::int64_t j) {
    if (j < kDense) {
      const std::size_t cell = static_cast<std::size_t>(level - 1) * kDense + static_cast<std::size_t>(j);
      if (counts_[cell]++ == 0) touched_.push_back(static_cast<std::uint32_t>(cell));
    } else {
      large_.push_back((static_cast<std::uint64_t>(level) << 40) | static_cast<std::uint64_t>(j));
    }
  }
  // Appends the non-zero cells to `out` and clears the histogram.
  void collect(std::vector<MatrixEntry>& out) {
    for (const std::uint32_t cell : touched_) {
      out.push_back({static_cast<int>(cell / kDense) + 1, static_cast<std::int64_t>(cell % kDense),
                     static_cast<double>(counts_[cell])});
      counts_[cell] = 0;
    }
    touched_.clear();
    std::sort(large_.begin(), large_.end());
    for (std::size_t a = 0; a < large_.size();) {
      std::size_t b = a;
      while (b < large_.size() && large_[b] == large_[a]) ++b;
      out.push_back({static_cast<int>(large_[a] >> 40), static_cast<std::int64_t>(large_[a] & ((std::uint64_t{1} << 40) - 1)),
                     static_cast<double>(b - a)});
      a = b;
    }
    large_.clear();
  }

 private:
  std::vector<std::uint32_t> counts_;
  std::vector<std::uint32_t> touched_;
  std::vector<std::uint64_t> large_;
};

// City block distance (in voxels) of every voxel of the box to the nearest voxel outside `morph`
// (voxels outside the box count as outside: the box holds the whole mask); 0 outside the mask.
// Two raster passes, 4-connected within each slice (three_d false) or 6-connected. Each row takes
// the rows before it (after it, going back) as a vector operation, then the voxel before it along x
// in one serial scan.
void city_block_distance(const std::vector<std::uint8_t>& morph, const Grid& g, const Box& b, bool three_d,
                         std::uint16_t* d) {
  const int nx = b.nx(), ny = b.ny(), nz = three_d ? b.nz() : 1;
  const std::ptrdiff_t sy = nx, sz = static_cast<std::ptrdiff_t>(b.slice_size());
  for (int z = 0; z < nz; ++z)
    for (int y = 0; y < ny; ++y) {
      const std::uint8_t* m = &morph[g.index(b.x0, b.y0 + y, b.z0 + z)];
      std::uint16_t* row = d + z * sz + y * sy;
      if (y > 0 && (!three_d || z > 0)) {
        const std::uint16_t* up = row - sy;
        const std::uint16_t* back = three_d ? row - sz : up;
        for (int x = 0; x < nx; ++x)  // (0 or 0xffff) & (1 + the smaller distance)
          row[x] = static_cast<std::uint16_t>(-static_cast<std::uint16_t>(m[x] != 0) & (std::min(up[x], back[x]) + 1));
      } else {
        for (int x = 0; x < nx; ++x) row[x] = m[x] != 0;
      }
      detail::min_plus_scan(row, nx, false);  // the voxel before x = 0 is outside
    }
  for (int z = nz - 1; z >= 0; --z)
    for (int y = ny - 1; y >= 0; --y) {
      std::uint16_t* row = d + z * sz + y * sy;
      if (y + 1 < ny && (!three_d || z + 1 < nz)) {
        const std::uint16_t* down = row + sy;
        const std::uint16_t* front = three_d ? row + sz : down;
        for (int x = 0; x < nx; ++x)
          row[x] = std::min<std::uint16_t>(row[x], static_cast<std::uint16_t>(std::min(down[x], front[x]) + 1));
      } else {
        for (int x = 0; x < nx; ++x) row[x] = std::min<std::uint16_t>(row[x], 1);
      }
      detail::min_plus_scan(row, nx, true);  // the voxel after x = nx - 1 is outside
    }
}

// The runs of one slice of the box (maximal sets of one grey level along x, level 0 included, so
// that each row is a partition of [0, nx)), row by row: row y's runs are row[y] .. row[y + 1] - 1,
// run k ends at x = end[k] (inclusive) and starts after the end of the run before it in its row.
struct SliceRuns {
  std::vector<std::int32_t> end, level, row;
};

// Scratch of one labelling: the runs of the current and the previous slice, per run its union-find
// parent, voxel count and smallest distance, and the pairs of touching runs of one level.
struct Scratch {
  std::unique_ptr<std::uint16_t[]> dist;  // the box's distance map, not initialised
  std::size_t dist_size = 0;
  SliceRuns prev, cur;
  std::vector<std::int32_t> parent, size;
  std::vector<std::uint16_t> min_dist;
  std::vector<std::int32_t> pair_a, pair_b;  // touching runs of one level (indices into parent)
  std::vector<std::int32_t> remap, next_parent, next_size;  // compaction between slices (3D)
  std::vector<std::uint16_t> next_dist;

  std::uint16_t* dist_buffer(std::size_t n) {
    if (dist_size < n) {
      dist.reset(new std::uint16_t[n]);
      dist_size = n;
      advise_huge_pages(dist.get(), n * sizeof(std::uint16_t));
    }
    return dist.get();
  }
};

inline std::int32_t find_root(std::int32_t* parent, std::int32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]];  // path halving
    x = parent[x];
  }
  return x;
}

// Splits a row of nx >= 1 grey levels into runs of one level, written at end[0..], level[0..] (room
// for nx + 1); returns their count.
std::int32_t row_runs(const int* row, int nx, std::int32_t* end, std::int32_t* level) {
  std::int32_t n = 0;
  int last = row[0];
  level[0] = last;
  int x = 1;
  const auto step = [&](int v) {  // branch-free: a new run where the level changes
    end[n] = x - 1;
    n += v != last;
    level[n] = v;
    last = v;
  };
  while (x < nx) {
    // Whole vectors without a change (outside the ROI, inside large zones) are skipped.
    constexpr int w = cv::v_int32x4::nlanes;
    if (x + 2 * w <= nx) {
      const cv::v_int32x4 a0 = cv::v_load(row + x), a1 = cv::v_load(row + x + w);
      const cv::v_int32x4 b0 = cv::v_load(row + x - 1), b1 = cv::v_load(row + x + w - 1);
      if (cv::v_check_all((a0 == b0) & (a1 == b1))) {
        x += 2 * w;
        continue;
      }
      for (const int stop = x + 2 * w; x < stop; ++x) step(row[x]);
      continue;
    }
    step(row[x]);
    ++x;
  }
  end[n] = nx - 1;
  return n + 1;
}

// Appends to (a, b) the pairs of runs of the adjacent rows r (n_r runs, indices from `r_index`) and q
// (from `q_index`) that have one grey level > 0 and touch (8-connected: their x ranges overlap when
// widened by one). Free of data-dependent branches: the grey levels are random.
//
// A merge walk over both rows (the run that ends first moves on, both when they end together)
// meets every pair whose x ranges overlap; the pairs that only touch at a corner follow a pair that
// ends together (the next run of either row with the current one of the other), checked there.
// Both rows cover [0, nx), so they end together.
inline void touching_pairs(const std::int32_t* r_end, const std::int32_t* r_level, std::int32_t n_r, std::int32_t r_index,
                           const std::int32_t* q_end, const std::int32_t* q_level, std::int32_t n_q,
                           std::int32_t q_index, std::int32_t* a, std::int32_t* b, std::size_t& n) {
  std::int32_t i = 0, j = 0;
  std::size_t m = n;
  while (i < n_r) {
    const std::int32_t i1 = std::min(i + 1, n_r - 1), j1 = std::min(j + 1, n_q - 1);
    const std::int32_t lu = r_level[i], lv = q_level[j], eu = r_end[i], ev = q_end[j];
    const bool together = eu == ev;
    a[m] = r_index + i;
    b[m] = q_index + j;
    m += (lu == lv) & (lu != 0);
    a[m] = r_index + i;
    b[m] = q_index + j1;
    m += together & (lu == q_level[j1]) & (lu != 0);
    a[m] = r_index + i1;
    b[m] = q_index + j;
    m += together & (r_level[i1] == lv) & (lv != 0);
    i += eu <= ev;
    j += ev <= eu;
  }
  n = m;
}

// Labels the zones of the box (one slice when three_d is false: 8-connected; else 26-connected) and
// adds each zone's (level, size) to `sizes` and (level, distance) to `dists` (either may be null;
// `dist` is the box's distance map when `dists` is set). Returns the voxel count.
//
// Zones are unions of runs: a run joins the runs of its level that touch it in the previous row
// and, in 3D, in the three nearest rows of the previous slice. Union-find works on the runs of two
// slices (root: a set's smallest index): after each slice the sets are compacted, a zone that no
// run of the slice belongs to is complete and goes to the histograms, the others are renumbered as
// the slice's runs.
std::int64_t label_zones(const Levels& lv, const Box& b, bool three_d, const std::uint16_t* dist, Scratch& s,
                         Histogram* sizes, Histogram* dists) {
  const Grid& g = lv.grid;
  const int nx = b.nx(), ny = b.ny(), nz = three_d ? b.nz() : 1;
  const std::size_t max_runs = static_cast<std::size_t>(nx) * static_cast<std::size_t>(ny) + 1;
  for (SliceRuns* r : {&s.prev, &s.cur}) {
    r->end.resize(max_runs);
    r->level.resize(max_runs);
    r->row.assign(static_cast<std::size_t>(ny) + 1, 0);
  }
  s.parent.clear();
  s.size.clear();
  s.min_dist.clear();
  // Pairs per row: at most 3 per step of each of the 4 merges, a step per run of either row.
  s.pair_a.resize(24 * static_cast<std::size_t>(nx) + 16);
  s.pair_b.resize(s.pair_a.size());
  std::int64_t n_voxels = 0;
  std::int32_t n_prev = 0;  // runs of the previous slice: 0 .. n_prev - 1
  for (int z = 0; z < nz; ++z) {
    SliceRuns& cur = s.cur;
    const SliceRuns& prev = s.prev;
    const std::uint16_t* dslice = dist ? dist + static_cast<std::size_t>(z) * b.slice_size() : nullptr;
    std::int32_t n_cur = 0;
    for (int y = 0; y < ny; ++y) {
      const std::int32_t first = n_cur;
      n_cur += row_runs(&lv.level[g.index(b.x0, b.y0 + y, b.z0 + z)], nx, cur.end.data() + first, cur.level.data() + first);
      cur.row[static_cast<std::size_t>(y) + 1] = n_cur;
      // New sets, one per run, with the run's size and smallest distance.
      s.parent.resize(static_cast<std::size_t>(n_prev + n_cur));
      s.size.resize(s.parent.size());
      s.min_dist.resize(s.parent.size());
      const std::uint16_t* drow = dslice ? dslice + static_cast<std::size_t>(y) * static_cast<std::size_t>(nx) : nullptr;
      for (std::int32_t r = first, x0 = 0; r < n_cur; ++r) {
        const auto k = static_cast<std::size_t>(n_prev + r);
        const std::int32_t x1 = cur.end[static_cast<std::size_t>(r)];
        const bool in = cur.level[static_cast<std::size_t>(r)] != 0;
        s.parent[k] = n_prev + r;
        s.size[k] = in ? x1 - x0 + 1 : 0;
        std::uint16_t d = std::numeric_limits<std::uint16_t>::max();
        if (drow && in)
          for (int x = x0; x <= x1; ++x) d = std::min(d, drow[x]);
        s.min_dist[k] = d;
        n_voxels += s.size[k];
        x0 = x1 + 1;
      }
      // Touching pairs with row y - 1 of this slice and rows y - 1, y, y + 1 of the previous one.
      std::size_t n = 0;
      std::int32_t* pa = s.pair_a.data();
      std::int32_t* pb = s.pair_b.data();
      const std::int32_t* ce = cur.end.data();
      const std::int32_t* cl = cur.level.data();
      if (y > 0) {
        const std::int32_t up = cur.row[static_cast<std::size_t>(y) - 1];
        touching_pairs(ce + first, cl + first, n_cur - first, n_prev + first, ce + up, cl + up, first - up, n_prev + up, pa,
                       pb, n);
      }
      if (z > 0)
        for (int yy = std::max(0, y - 1); yy <= std::min(ny - 1, y + 1); ++yy) {
          const std::int32_t p0 = prev.row[static_cast<std::size_t>(yy)], p1 = prev.row[static_cast<std::size_t>(yy) + 1];
          touching_pairs(ce + first, cl + first, n_cur - first, n_prev + first, prev.end.data() + p0,
                         prev.level.data() + p0, p1 - p0, p0, pa, pb, n);
        }
      std::int32_t* parent = s.parent.data();
      for (std::size_t k = 0; k < n; ++k) {
        if (parent[pa[k]] == parent[pb[k]]) continue;  // most pairs: already one set, below one root
        const std::int32_t u = find_root(parent, pa[k]), v = find_root(parent, pb[k]);
        parent[std::max(u, v)] = std::min(u, v);
      }
    }
    // Every set's size and smallest distance into its root.
    std::int32_t* parent = s.parent.data();
    const std::int32_t total = n_prev + n_cur;
    std::int32_t* size = s.size.data();
    std::uint16_t* min_dist = s.min_dist.data();
    for (std::int32_t k = 0; k < total; ++k) {  // branch-free: a root adds nothing to itself
      const std::int32_t r = find_root(parent, k);
      parent[k] = r;
      size[r] += r != k ? size[k] : 0;
      min_dist[r] = std::min(min_dist[r], min_dist[k]);
    }
    const auto flush = [&](std::int32_t k) {
      const std::int32_t level = k < n_prev ? prev.level[static_cast<std::size_t>(k)] : cur.level[static_cast<std::size_t>(k - n_prev)];
      if (level == 0) return;
      if (sizes) sizes->add(level, s.size[static_cast<std::size_t>(k)]);
      if (dists) dists->add(level, s.min_dist[static_cast<std::size_t>(k)]);
    };
    if (z + 1 == nz) {
      for (std::int32_t k = 0; k < total; ++k)
        if (parent[k] == k) flush(k);
      break;
    }
    // Compact: the sets this slice reaches become sets of its runs (root: the set's first run of the
    // slice), the others are complete zones.
    s.remap.assign(static_cast<std::size_t>(total), -1);
    s.next_parent.resize(static_cast<std::size_t>(n_cur));
    s.next_size.resize(static_cast<std::size_t>(n_cur));
    s.next_dist.resize(static_cast<std::size_t>(n_cur));
    std::int32_t* remap = s.remap.data();
    for (std::int32_t r = 0; r < n_cur; ++r) {  // branch-free
      const std::int32_t root = parent[n_prev + r];
      const bool first_run = remap[root] < 0;  // the set's first run of the slice holds its counts
      const std::int32_t to = first_run ? r : remap[root];
      remap[root] = to;
      s.next_parent[static_cast<std::size_t>(r)] = to;
      s.next_size[static_cast<std::size_t>(r)] = first_run ? size[root] : 0;
      s.next_dist[static_cast<std::size_t>(r)] = first_run ? min_dist[root] : std::numeric_limits<std::uint16_t>::max();
    }
    for (std::int32_t k = 0; k < n_prev; ++k)  // a root among this slice's runs is reached
      if (parent[k] == k && remap[k] < 0) flush(k);
    s.parent.swap(s.next_parent);
    s.size.swap(s.next_size);
    s.min_dist.swap(s.next_dist);
    std::swap(s.prev, s.cur);
    n_prev = n_cur;
  }
  return n_voxels;
}

struct SliceMatrices {
  std::vector<MatrixEntry> sizes, dists;
  std::int64_t n_voxels = 0;
};


void emit_2d(std::span<const FeatureDef> defs, const std::vector<SliceMatrices>& slices, bool by_size,
             Features& out) {
  detail::MatrixFeatures mean{};
  std::int64_t n_voxels = 0;
  std::size_t total = 0;
  int n = 0, max_i = 0;
  std::int64_t max_j = 0;
  for (const auto& s : slices) {
    if (s.n_voxels == 0) continue;
    const auto& e = by_size ? s.sizes : s.dists;
    const auto f = detail::sparse_matrix_features(e, static_cast<double>(s.n_voxels));
    for (std::size_t k = 0; k < f.size(); ++k) mean[k] += f[k];
    ++n;
    n_voxels += s.n_voxels;
    total += e.size();
    for (const auto& x : e) {
      max_i = std::max(max_i, x.i);
      max_j = std::max(max_j, x.j);
    }
  }
  for (auto& v : mean) v /= n;
  emit(defs, mean, Aggregation::d2, out);
  // 2.5D: the slices' matrices summed, in a dense array when it is small, else by sorting.
  std::vector<MatrixEntry> merged;
  const auto columns = static_cast<std::size_t>(max_j) + 1;
  if (static_cast<double>(max_i + 1) * static_cast<double>(columns) <= 4.0 * static_cast<double>(total) + 65536) {
    std::vector<double> dense(static_cast<std::size_t>(max_i + 1) * columns, 0.0);
    for (const auto& s : slices)
      for (const auto& x : by_size ? s.sizes : s.dists)
        dense[static_cast<std::size_t>(x.i) * columns + static_cast<std::size_t>(x.j)] += x.count;
    for (std::size_t cell = 0; cell < dense.size(); ++cell)
      if (dense[cell] != 0)
        merged.push_back({static_cast<int>(cell / columns), static_cast<std::int64_t>(cell % columns), dense[cell]});
  } else {
    merged.reserve(total);
    for (const auto& s : slices) {
      const auto& e = by_size ? s.sizes : s.dists;
      merged.insert(merged.end(), e.begin(), e.end());
    }
    merged = detail::merge_entries(std::move(merged));
  }
  emit(defs, detail::sparse_matrix_features(merged, static_cast<double>(n_voxels)), Aggregation::d25, out);
}

void run_zones(const CheckedLevels& checked, const std::vector<std::uint8_t>* morph, const TextureScope& scope, bool want_size,
               bool want_dist, Features& out) {
  const Levels& levels = checked.get();
  const Grid& g = levels.grid;
  if (g.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    throw std::invalid_argument("zone features: grid too large");
  Box box;
  if (want_dist) {
    if (morph->size() != g.size())
      throw std::invalid_argument("zone features: the morphological mask must have one value per voxel of the grid");
    int outside = 0;  // the levels (>= 0: check_levels) of voxels outside the mask, or-ed; vectorised
    for (std::size_t i = 0; i < g.size(); ++i) outside |= levels.level[i] & (static_cast<int>((*morph)[i] != 0) - 1);
    if (outside != 0)
      throw std::invalid_argument("zone features: a voxel with a grey level lies outside the morphological mask");
    box = bounding_box(g, [&](std::size_t i) { return (*morph)[i] != 0; });
  } else {
    box = bounding_box(g, [&](std::size_t i) { return levels.level[i] > 0; });
  }

  // Tasks: the 3D labelling first (the longest), then one per slice, spread over OpenCV's threads.
  std::vector<SliceMatrices> slices(scope.two_d ? static_cast<std::size_t>(box.nz()) : 0);
  std::vector<MatrixEntry> sizes3, dists3;
  std::int64_t n3 = 0;
  const int first_slice = scope.three_d ? 1 : 0;
  const int tasks = first_slice + static_cast<int>(slices.size());
  cv::parallel_for_(
      cv::Range(0, tasks),
      [&](const cv::Range& r) {
        // Slice-sized buffers and histograms, reused by the thread's next slices (and calls).
        thread_local Scratch slice_scratch;
        thread_local Histogram hs, hd;
        hs.reset(levels.ng);
        hd.reset(levels.ng);
        for (int t = r.start; t < r.end; ++t) {
          if (t < first_slice) {
            Scratch s;
            std::uint16_t* d = nullptr;
            if (want_dist) {
              d = s.dist_buffer(box.size());
              city_block_distance(*morph, g, box, true, d);
            }
            n3 = label_zones(levels, box, true, d, s, want_size ? &hs : nullptr, want_dist ? &hd : nullptr);
            hs.collect(sizes3);
            hd.collect(dists3);
            continue;
          }
          const int z = t - first_slice;
          Scratch& s = slice_scratch;
          Box slice = box;
          slice.z0 = box.z0 + z;
          slice.z1 = slice.z0 + 1;
          std::uint16_t* d = nullptr;
          if (want_dist) {
            d = s.dist_buffer(slice.slice_size());
            city_block_distance(*morph, g, slice, false, d);
          }
          auto& m = slices[static_cast<std::size_t>(z)];
          m.n_voxels = label_zones(levels, slice, false, d, s, want_size ? &hs : nullptr, want_dist ? &hd : nullptr);
          hs.collect(m.sizes);
          hd.collect(m.dists);
        }
      },
      tasks);
  for (const bool by_size : {true, false}) {
    if (by_size ? !want_size : !want_dist) continue;
    const std::span<const FeatureDef> defs = by_size ? std::span<const FeatureDef>(kGlszm) : std::span<const FeatureDef>(kGldzm);
    if (scope.two_d) emit_2d(defs, slices, by_size, out);
    if (scope.three_d)
      emit(defs, detail::sparse_matrix_features(by_size ? sizes3 : dists3, static_cast<double>(n3)), Aggregation::d3, out);
  }
}

}  // namespace

namespace detail {

MatrixFeatures sparse_matrix_features(std::span<const MatrixEntry> entries, double n_voxels) {
  MatrixFeatures f;
  f.fill(std::numeric_limits<double>::quiet_NaN());
  double ns = 0;
  int max_i = 0;
  std::int64_t max_j = 0;
  for (const auto& e : entries) {
    ns += e.count;
    max_i = std::max(max_i, e.i);
    max_j = std::max(max_j, e.j);
  }
  if (!(ns > 0)) return f;
  std::vector<double> row(static_cast<std::size_t>(max_i) + 1, 0.0);
  std::vector<std::pair<std::int64_t, double>> col;
  col.reserve(entries.size());
  double sje = 0, lje = 0, lg = 0, hg = 0, sjlg = 0, sjhg = 0, ljlg = 0, ljhg = 0, mu_i = 0, mu_j = 0, entropy = 0,
         energy = 0;
  for (const auto& e : entries) {
    const double i2 = static_cast<double>(e.i) * e.i, j2 = static_cast<double>(e.j) * static_cast<double>(e.j);
    const double c = e.count, p = c / ns;
    sje += c / j2;
    lje += c * j2;
    lg += c / i2;
    hg += c * i2;
    sjlg += c / (i2 * j2);
    sjhg += c * i2 / j2;
    ljlg += c * j2 / i2;
    ljhg += c * i2 * j2;
    row[static_cast<std::size_t>(e.i)] += c;
    col.emplace_back(e.j, c);
    mu_i += p * e.i;
    mu_j += p * static_cast<double>(e.j);
    entropy -= p * std::log2(p);
    energy += p * p;
  }
  double var_i = 0, var_j = 0;
  for (const auto& e : entries) {
    const double p = e.count / ns;
    var_i += p * (e.i - mu_i) * (e.i - mu_i);
    var_j += p * (static_cast<double>(e.j) - mu_j) * (static_cast<double>(e.j) - mu_j);
  }
  double glnu = 0, jnu = 0;
  for (const double r : row) glnu += r * r;
  if (max_j <= static_cast<std::int64_t>(4 * entries.size()) + 4096) {  // column sums in a dense array
    std::vector<double> sums(static_cast<std::size_t>(max_j) + 1, 0.0);
    for (const auto& [j, c] : col) sums[static_cast<std::size_t>(j)] += c;
    for (const double c : sums) jnu += c * c;
  } else {
    std::sort(col.begin(), col.end());
    for (std::size_t a = 0; a < col.size();) {
      double sum = 0;
      std::size_t b = a;
      for (; b < col.size() && col[b].first == col[a].first; ++b) sum += col[b].second;
      jnu += sum * sum;
      a = b;
    }
  }
  f = {sje / ns, lje / ns, lg / ns, hg / ns, sjlg / ns, sjhg / ns, ljlg / ns, ljhg / ns, glnu / ns, glnu / (ns * ns),
       jnu / ns, jnu / (ns * ns), ns / n_voxels, var_i, var_j, entropy, energy};
  return f;
}

void min_plus_scan(std::uint16_t* d, int n, bool backward) {
  constexpr int w = cv::v_uint16x8::nlanes;
  const cv::v_uint16x8 inf = cv::v_setall_u16(0xffff), one = cv::v_setall_u16(1), two = cv::v_setall_u16(2),
                       four = cv::v_setall_u16(4);
  std::uint16_t run = 0;
  if (!backward) {
    // Lane i: min over lanes j <= i of v_j + (i - j), then min with run + (i + 1).
    const cv::v_uint16x8 ramp(1, 2, 3, 4, 5, 6, 7, 8);
    int x = 0;
    for (; x + w <= n; x += w) {
      cv::v_uint16x8 v = cv::v_load(d + x);
      v = cv::v_min(v, cv::v_rotate_left<1>(v, inf) + one);  // + saturates: inf stays inf
      v = cv::v_min(v, cv::v_rotate_left<2>(v, inf) + two);
      v = cv::v_min(v, cv::v_rotate_left<4>(v, inf) + four);
      v = cv::v_min(v, cv::v_setall_u16(run) + ramp);
      cv::v_store(d + x, v);
      run = d[x + w - 1];
    }
    for (; x < n; ++x) run = d[x] = std::min<std::uint16_t>(d[x], static_cast<std::uint16_t>(run + 1));
  } else {
    const cv::v_uint16x8 ramp(8, 7, 6, 5, 4, 3, 2, 1);
    int x = n;
    for (; x - w >= 0; x -= w) {
      cv::v_uint16x8 v = cv::v_load(d + x - w);
      v = cv::v_min(v, cv::v_rotate_right<1>(v, inf) + one);
      v = cv::v_min(v, cv::v_rotate_right<2>(v, inf) + two);
      v = cv::v_min(v, cv::v_rotate_right<4>(v, inf) + four);
      v = cv::v_min(v, cv::v_setall_u16(run) + ramp);
      cv::v_store(d + x - w, v);
      run = d[x - w];
    }
    for (--x; x >= 0; --x) run = d[x] = std::min<std::uint16_t>(d[x], static_cast<std::uint16_t>(run + 1));
  }
}

std::vector<MatrixEntry> merge_entries(std::vector<MatrixEntry> entries) {
  int max_i = 0;
  std::int64_t max_j = 0;
  for (const auto& e : entries) {
    max_i = std::max(max_i, e.i);
    max_j = std::max(max_j, e.j);
  }
  std::vector<MatrixEntry> out;
  const auto columns = static_cast<std::size_t>(max_j) + 1;
  if (static_cast<double>(max_i) * static_cast<double>(columns) <= 4.0 * static_cast<double>(entries.size()) + 65536) {
    std::vector<double> dense(static_cast<std::size_t>(max_i + 1) * columns, 0.0);  // small: sum in place
    for (const auto& e : entries) dense[static_cast<std::size_t>(e.i) * columns + static_cast<std::size_t>(e.j)] += e.count;
    for (std::size_t cell = 0; cell < dense.size(); ++cell)
      if (dense[cell] != 0)
        out.push_back({static_cast<int>(cell / columns), static_cast<std::int64_t>(cell % columns), dense[cell]});
    return out;
  }
  std::sort(entries.begin(), entries.end(),
            [](const MatrixEntry& a, const MatrixEntry& b) { return a.i != b.i ? a.i < b.i : a.j < b.j; });
  for (const auto& e : entries) {
    if (!out.empty() && out.back().i == e.i && out.back().j == e.j) out.back().count += e.count;
    else out.push_back(e);
  }
  return out;
}

}  // namespace detail

std::span<const FeatureDef> glszm_definitions() { return kGlszm; }
std::span<const FeatureDef> gldzm_definitions() { return kGldzm; }

constexpr const char* kWhat = "zone features";

void glszm_features(const Levels& levels, const TextureScope& scope, Features& out) {
  run_zones(CheckedLevels(levels, kWhat), nullptr, scope, true, false, out);
}

void gldzm_features(const Levels& levels, const std::vector<std::uint8_t>& morph_mask, const TextureScope& scope,
                    Features& out) {
  run_zones(CheckedLevels(levels, kWhat), &morph_mask, scope, false, true, out);
}

void zone_features(const Levels& levels, const std::vector<std::uint8_t>& morph_mask, const TextureScope& scope,
                   Features& out) {
  run_zones(CheckedLevels(levels, kWhat), &morph_mask, scope, true, true, out);
}

void zone_features(const CheckedLevels& levels, const std::vector<std::uint8_t>& morph_mask, const TextureScope& scope,
                   Features& out) {
  run_zones(levels, &morph_mask, scope, true, true, out);
}

}  // namespace analysis::kernels::ibsi
