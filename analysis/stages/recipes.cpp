#include "analysis/stages/recipes.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>

#include "analysis/kernels/airway.h"
#include "analysis/kernels/preprocess.h"

namespace analysis::recipes {
namespace {

using kernels::Components;
using kernels::parallel_slices;

std::array<std::int64_t, 256> histogram(const LabelVolume& labels) {
  std::array<std::int64_t, 256> h{};
  for (const cv::Mat& s : labels)
    for (int r = 0; r < s.rows; ++r) {
      const std::uint8_t* p = s.ptr<std::uint8_t>(r);
      for (int c = 0; c < s.cols; ++c) ++h[p[c]];
    }
  return h;
}

std::vector<int> present(const LabelVolume& labels) {
  const auto h = histogram(labels);
  std::vector<int> out;
  for (int l = 1; l < 256; ++l)
    if (h[l] > 0) out.push_back(l);
  return out;
}

// Patient x is linear in the voxel indices: x = x0 + a c + b r + d z.
struct XMap {
  double x0, a, b, d;
  explicit XMap(const dicom::Geometry& g)
      : x0(g.origin[0]),
        a(g.row_dir[0] * g.spacing_col),
        b(g.col_dir[0] * g.spacing_row),
        d(g.normal[0] * g.spacing_slice) {}
  double base(int r, int z) const { return x0 + b * r + d * z; }
};

// Number of columns c in [begin, end) with base + a c > mid.
std::int64_t count_above(double base, double a, double mid, int begin, int end) {
  if (a == 0) return base > mid ? end - begin : 0;
  const double t = (mid - base) / a;  // c > t (a > 0) or c < t (a < 0)
  if (a > 0) {
    const int first = std::max(begin, static_cast<int>(std::floor(t)) + 1);
    return std::max(0, end - first);
  }
  const int last = std::min(end, static_cast<int>(std::ceil(t)));  // c < t
  return std::max(0, last - begin);
}

// Calls f(z, r, begin, end, component) for every run of the labelled mask.
template <typename F>
void for_each_run(const Components& comps, F&& f) {
  for (int z = 0; z < comps.depth; ++z)
    for (int r = 0; r < comps.rows; ++r) {
      const std::size_t row = static_cast<std::size_t>(z) * comps.rows + r;
      for (std::int64_t k = comps.row_offset[row]; k < comps.row_offset[row + 1]; ++k)
        f(z, r, comps.runs[k].begin, comps.runs[k].end, comps.run_component[k]);
    }
}

constexpr std::uint8_t kJoined = 255;  // temporary label of a component holding both lungs

// Splits one 2D blob holding both lungs (255 in `blob`, a slice of the box) into kRightLung and
// kLeftLung in `out` (same size): erodes it (3x3 cross) until it falls apart into parts that lie
// on either side of the mid-sagittal plane, then gives every voxel the side of the nearest part;
// when it never falls apart, cuts it at the plane. `left_of(r, c)`: voxel (r, c) is patient-left
// of the plane.
template <typename LeftOf>
void split_blob(const cv::Mat& blob, cv::Mat& out, int max_erosions, LeftOf&& left_of) {
  cv::Mat cur = blob.clone(), comps, next;
  const cv::Mat cross = cv::getStructuringElement(cv::MORPH_CROSS, {3, 3});
  for (int it = 0; it < max_erosions; ++it) {
    cv::erode(cur, next, cross, {-1, -1}, 1, cv::BORDER_CONSTANT, cv::Scalar(0));
    cur = next;
    const int n = cv::connectedComponents(cur, comps, 8, CV_32S);
    if (n <= 1) break;  // eroded away
    std::vector<std::int64_t> count(static_cast<std::size_t>(n), 0), left(static_cast<std::size_t>(n), 0);
    for (int r = 0; r < comps.rows; ++r) {
      const int* p = comps.ptr<int>(r);
      for (int c = 0; c < comps.cols; ++c)
        if (p[c]) ++count[static_cast<std::size_t>(p[c])], left[static_cast<std::size_t>(p[c])] += left_of(r, c);
    }
    std::vector<int> side(static_cast<std::size_t>(n), 0);
    bool have_l = false, have_r = false;
    for (int i = 1; i < n; ++i) {
      const double f = static_cast<double>(left[static_cast<std::size_t>(i)]) / static_cast<double>(count[static_cast<std::size_t>(i)]);
      if (f >= 0.85) side[static_cast<std::size_t>(i)] = kLeftLung, have_l = true;
      else if (f <= 0.15) side[static_cast<std::size_t>(i)] = kRightLung, have_r = true;
      else side[static_cast<std::size_t>(i)] = -1;  // still shared
    }
    if (!have_l || !have_r || std::count(side.begin() + 1, side.end(), -1) > 0) continue;
    // Nearest part: distance transform to the parts' pixels, labelled per pixel.
    cv::Mat src(blob.size(), CV_8U, cv::Scalar(255)), dist, nearest;
    src.setTo(0, cur);
    cv::distanceTransform(src, dist, nearest, cv::DIST_L2, cv::DIST_MASK_5, cv::DIST_LABEL_PIXEL);
    std::vector<std::uint8_t> side_of_zero(1, 0);  // labels of zero pixels, in raster order from 1
    for (int r = 0; r < cur.rows; ++r) {
      const std::uint8_t* z = src.ptr<std::uint8_t>(r);
      const int* p = comps.ptr<int>(r);
      for (int c = 0; c < cur.cols; ++c)
        if (!z[c]) side_of_zero.push_back(static_cast<std::uint8_t>(side[static_cast<std::size_t>(p[c])]));
    }
    for (int r = 0; r < blob.rows; ++r) {
      const std::uint8_t* b = blob.ptr<std::uint8_t>(r);
      const int* nl = nearest.ptr<int>(r);
      std::uint8_t* o = out.ptr<std::uint8_t>(r);
      for (int c = 0; c < blob.cols; ++c)
        if (b[c]) o[c] = side_of_zero[static_cast<std::size_t>(nl[c])];
    }
    return;
  }
  for (int r = 0; r < blob.rows; ++r) {
    const std::uint8_t* b = blob.ptr<std::uint8_t>(r);
    std::uint8_t* o = out.ptr<std::uint8_t>(r);
    for (int c = 0; c < blob.cols; ++c)
      if (b[c]) o[c] = static_cast<std::uint8_t>(left_of(r, c) ? kLeftLung : kRightLung);
  }
}

// The 8-connected components of `mask` (CV_8U, non-zero = set) that have a pixel where `marker`
// is set, as a 0/255 mask of the same size.
cv::Mat components_touching(const cv::Mat& mask, const cv::Mat& marker) {
  cv::Mat comps;
  const int n = cv::connectedComponents(mask, comps, 8, CV_32S);
  std::vector<std::uint8_t> hit(static_cast<std::size_t>(n), 0);
  for (int r = 0; r < comps.rows; ++r) {
    const int* c = comps.ptr<int>(r);
    const std::uint8_t* m = marker.ptr<std::uint8_t>(r);
    for (int x = 0; x < comps.cols; ++x)
      if (c[x] && m[x]) hit[static_cast<std::size_t>(c[x])] = 1;
  }
  cv::Mat out(mask.size(), CV_8U, cv::Scalar(0));
  for (int r = 0; r < comps.rows; ++r) {
    const int* c = comps.ptr<int>(r);
    std::uint8_t* o = out.ptr<std::uint8_t>(r);
    for (int x = 0; x < comps.cols; ++x)
      if (c[x] && hit[static_cast<std::size_t>(c[x])]) o[x] = 255;
  }
  return out;
}

// True when every hole of `thr` (4-connected regions of non-threshold pixels that do not reach
// the edge of the body's bounding rectangle) is bordered by body pixels only: then the repair of
// holes below has nothing to do on this slice. One flood fill of the exterior and a 3x3 dilation,
// instead of a labelling of every region of the full slice (2 ms per 512x512 slice, most of the
// body step). `body` and `thr` are CV_8U masks of one slice (non-zero = set).
bool holes_enclosed_by_body(const cv::Mat& body, const cv::Mat& thr) {
  const cv::Rect br = cv::boundingRect(body);
  if (br.area() == 0) return true;
  const cv::Rect roi = cv::Rect(br.x - 1, br.y - 1, br.width + 2, br.height + 2) & cv::Rect(0, 0, thr.cols, thr.rows);
  // Non-threshold pixels in the rectangle, framed by a 1-pixel border of them so that one fill
  // from the corner reaches every region that touches the rectangle's edge.
  cv::Mat open(roi.height + 2, roi.width + 2, CV_8U, cv::Scalar(255));
  cv::Mat inner = open(cv::Rect(1, 1, roi.width, roi.height));
  cv::compare(thr(roi), 0, inner, cv::CMP_EQ);
  cv::floodFill(open, cv::Point(0, 0), cv::Scalar(0), nullptr, cv::Scalar(), cv::Scalar(), 4);
  // `open` now holds the holes only; their 4-neighbours must all be body.
  cv::Mat ring, not_body;
  cv::dilate(open, ring, cv::getStructuringElement(cv::MORPH_CROSS, {3, 3}));
  cv::Mat ring_in = ring(cv::Rect(1, 1, roi.width, roi.height));
  cv::compare(body(roi), 0, not_body, cv::CMP_EQ);
  cv::bitwise_and(ring_in, not_body, not_body);
  cv::bitwise_and(not_body, ~inner, not_body);  // the holes themselves are not body either
  return cv::countNonZero(not_body) == 0;
}

// Resolves kJoined voxels slice by slice: each 2D blob (8-connected) that lies essentially on one
// side of the mid-sagittal plane (>= 85 % of its voxels) goes to that side's lung as a whole, so
// a lung reaching over the mid-plane (e.g. the right lung behind the heart) keeps its part;
// blobs that are really shared (two lungs touching at a junction line) are split by split_blob.
void split_joined(LabelVolume& labels, const kernels::ComponentInfo& info, const XMap& xm, double mid_x,
                  int max_erosions) {
  const cv::Rect box(info.c0, info.r0, info.c1 - info.c0 + 1, info.r1 - info.r0 + 1);
  parallel_slices(info.z0, info.z1 + 1, [&](int z) {
    cv::Mat view = labels[z](box), joined, blobs, one;
    cv::compare(view, kJoined, joined, cv::CMP_EQ);
    const int n = cv::connectedComponents(joined, blobs, 8, CV_32S);
    std::vector<std::int64_t> count(static_cast<std::size_t>(n), 0), left(static_cast<std::size_t>(n), 0);
    for (int r = 0; r < box.height; ++r) {
      const int* b = blobs.ptr<int>(r);
      const double base = xm.base(box.y + r, z);
      for (int c = 0; c < box.width; ++c)
        if (b[c]) ++count[static_cast<std::size_t>(b[c])], left[static_cast<std::size_t>(b[c])] += base + xm.a * (box.x + c) > mid_x;
    }
    for (int i = 1; i < n; ++i) {
      const double f = static_cast<double>(left[static_cast<std::size_t>(i)]) / static_cast<double>(count[static_cast<std::size_t>(i)]);
      cv::compare(blobs, i, one, cv::CMP_EQ);
      if (f >= 0.85 || f <= 0.15) {
        view.setTo(f >= 0.85 ? kLeftLung : kRightLung, one);
      } else {
        split_blob(one, view, max_erosions, [&](int r, int c) {
          return xm.base(box.y + r, z) + xm.a * (box.x + c) > mid_x;
        });
      }
    }
  });
}

// Index of break `b` in `breaks` (it must be there).
int break_index(const std::vector<double>& breaks, double b) {
  const auto it = std::find(breaks.begin(), breaks.end(), b);
  if (it == breaks.end())
    throw std::invalid_argument(fmt::format("ct-chest: the level map has no break at {} HU (use chest_level_breaks)", b));
  return static_cast<int>(it - breaks.begin());
}

// The airway thresholds tried in turn (lumen air <= t, as "< t + 0.5" on integer HU): stricter
// ones after an overflow (a leak into emphysematous lung) ...
std::array<double, 3> airway_breaks(const ChestParams& p) {
  return {p.airway_max_hu + 0.5, p.airway_max_hu - 19.5, p.airway_max_hu - 39.5};
}
// ... and more permissive ones after the first held (see segment_airways): with coarse pixels or
// thick slices partial volume with the wall lifts the lumen of smaller bronchi above airway_max_hu.
std::array<double, 2> airway_relaxed_breaks(const ChestParams& p) {
  return {p.airway_max_hu + 25.5, p.airway_max_hu + 50.5};
}

struct Box {
  int z_off, r_off, c_off, depth, rows, cols;
};

struct Seed {
  std::vector<std::int32_t> voxels;  // linear indices in the box
  int slice = -1;                    // box slice
  double area_mm2 = 0;
};

// The trachea in the cranial slices: an air blob of airway size, round, near the mid-sagittal
// plane, with lumen-air voxels, that continues caudally (a similar blob overlaps it in the next two
// slices). The most cranial slice with one wins; its largest such blob is the seed.
Seed find_trachea_seed(const std::vector<cv::Mat>& lbox, const std::vector<cv::Mat>& levbox, const Box& b,
                       const XMap& xm, double mid_x, int i_air, int i_core, int cranial_step, const Spacing& sp,
                       const ChestParams& p) {
  Seed seed;
  const int search = std::max(1, static_cast<int>(std::ceil(p.airway_seed_search_mm / sp.slice)));
  const double px_mm2 = sp.col * sp.row;
  const int first = cranial_step > 0 ? b.depth - 1 : 0;
  struct Blob {
    cv::Mat mask;  // 255 inside
    double area_mm2;
  };
  // The columns of box slice z that can hold a candidate: its centroid within airway_seed_offset_mm
  // of the mid-sagittal plane (at any row of the box), and its pixels within its width of the
  // centroid, a width that the area and roundness checks below bound by sqrt(5 max area) (w h <=
  // 2 area, w <= 2.5 h in mm). Labelling only these columns finds the same candidates: one lies
  // inside them with 2 columns to spare, and a component that does not reach the band's edge
  // columns is a whole component of the slice.
  const double reach = std::sqrt(5 * p.airway_seed_max_mm2) / sp.col + 2;  // columns from the centroid
  const auto band_of = [&](int z) {
    if (xm.a == 0) return cv::Range(0, b.cols);
    double lo = std::numeric_limits<double>::max(), hi = std::numeric_limits<double>::lowest();
    for (const int r : {b.r_off, b.r_off + b.rows - 1})
      for (const double x_mm : {mid_x - p.airway_seed_offset_mm, mid_x + p.airway_seed_offset_mm}) {
        const double c = (x_mm - xm.base(r, z + b.z_off)) / xm.a - b.c_off;  // centroid column
        lo = std::min(lo, c);
        hi = std::max(hi, c);
      }
    const double first = std::floor(lo - reach), last = std::ceil(hi + reach);
    if (!(first < b.cols && last >= 0)) return cv::Range(0, 0);  // no centroid can be near the plane
    return cv::Range(static_cast<int>(std::max(0.0, first)), static_cast<int>(std::min<double>(b.cols - 1, last)) + 1);
  };
  // Candidate blobs of a box slice.
  const auto blobs_of = [&](int z) {
    std::vector<Blob> out;
    const cv::Range band = band_of(z);
    if (band.empty()) return out;
    cv::Mat air, in_body, comps, stats, centroids;
    cv::compare(levbox[z].colRange(band), i_air, air, cv::CMP_LE);
    cv::compare(lbox[z].colRange(band), kBody, in_body, cv::CMP_EQ);
    cv::bitwise_and(air, in_body, air);
    const int n = cv::connectedComponentsWithStats(air, comps, stats, centroids, 8, CV_32S);
    for (int i = 1; i < n; ++i) {
      const int x = stats.at<int>(i, cv::CC_STAT_LEFT) + band.start, y = stats.at<int>(i, cv::CC_STAT_TOP);
      const int w = stats.at<int>(i, cv::CC_STAT_WIDTH), h = stats.at<int>(i, cv::CC_STAT_HEIGHT);
      const int area = stats.at<int>(i, cv::CC_STAT_AREA);
      const double area_mm2 = area * px_mm2;
      if (area_mm2 < p.airway_seed_min_mm2 || area_mm2 > p.airway_seed_max_mm2) continue;
      if (x == 0 || y == 0 || x + w == b.cols || y + h == b.rows) continue;
      if (x == band.start || x + w == band.end) continue;  // may go on outside the band: not a candidate
      const double wm = w * sp.col, hm = h * sp.row;
      if (std::max(wm, hm) > 2.5 * std::min(wm, hm) || area < 0.5 * w * h) continue;  // round-ish
      const double cx = centroids.at<double>(i, 0) + band.start, cy = centroids.at<double>(i, 1);
      const double x_mm = xm.base(static_cast<int>(std::lround(cy)) + b.r_off, z + b.z_off) + xm.a * (cx + b.c_off);
      if (std::abs(x_mm - mid_x) > p.airway_seed_offset_mm) continue;
      Blob blob;
      blob.mask = cv::Mat::zeros(b.rows, b.cols, CV_8U);
      cv::Mat in_band = blob.mask.colRange(band);
      cv::compare(comps, i, in_band, cv::CMP_EQ);
      cv::Mat core;
      cv::compare(levbox[z], i_core, core, cv::CMP_LE);
      cv::bitwise_and(core, blob.mask, core);
      if (cv::countNonZero(core) < std::max(3, area / 5)) continue;  // lumen air, not just lung
      blob.area_mm2 = area_mm2;
      out.push_back(std::move(blob));
    }
    return out;
  };
  // The blobs of a slice, found once: slice z's candidates are checked against the two slices
  // below it, which are the next slices' candidates. Found in batches of slices on OpenCV's threads
  // (the search usually ends in the first slices; without a trachea it runs through all of them).
  std::vector<std::optional<std::vector<Blob>>> found(static_cast<std::size_t>(b.depth));
  const int batch = std::max(2, 2 * cv::getNumThreads());
  const auto blobs_at = [&](int z) -> const std::vector<Blob>& {
    if (!found[static_cast<std::size_t>(z)]) {
      std::vector<int> todo;  // z and the next slices in search order, as far as the batch reaches
      for (int j = 0; j < batch; ++j) {
        const int zj = z - j * cranial_step;
        if (zj < 0 || zj >= b.depth) break;
        if (!found[static_cast<std::size_t>(zj)]) todo.push_back(zj);
      }
      parallel_slices(0, static_cast<int>(todo.size()), [&](int i) {
        found[static_cast<std::size_t>(todo[static_cast<std::size_t>(i)])] = blobs_of(todo[static_cast<std::size_t>(i)]);
      });
    }
    return *found[static_cast<std::size_t>(z)];
  };
  for (int k = 0; k < search; ++k) {
    const int z = first - k * cranial_step;
    if (z < 0 || z >= b.depth) break;
    auto cands = blobs_at(z);
    std::sort(cands.begin(), cands.end(), [](const Blob& x, const Blob& y) { return x.area_mm2 > y.area_mm2; });
    for (const Blob& c : cands) {
      bool continues = true;
      cv::Mat overlap;
      for (int j = 1; j <= 2 && continues; ++j) {
        const int zn = z - j * cranial_step;
        if (zn < 0 || zn >= b.depth) break;
        continues = false;
        for (const Blob& nb : blobs_at(zn)) {
          cv::bitwise_and(nb.mask, c.mask, overlap);
          if (cv::countNonZero(overlap) > 0 && nb.area_mm2 >= 0.5 * c.area_mm2 && nb.area_mm2 <= 2 * c.area_mm2) {
            continues = true;
            break;
          }
        }
      }
      if (!continues) continue;
      // The whole blob is the seed: the tree starts from its lumen-air core, and the blob's size
      // is the trachea's reference cross-section for the leak control.
      const std::int64_t plane = static_cast<std::int64_t>(b.rows) * b.cols;
      for (int r = 0; r < b.rows; ++r) {
        const std::uint8_t* q = c.mask.ptr<std::uint8_t>(r);
        for (int cc = 0; cc < b.cols; ++cc)
          if (q[cc]) seed.voxels.push_back(static_cast<std::int32_t>(z * plane + static_cast<std::int64_t>(r) * b.cols + cc));
      }
      seed.slice = z;
      seed.area_mm2 = c.area_mm2;
      return seed;
    }
  }
  return seed;
}

// The airway tree in the box's label map (kAirways), from `seed`; returns the tree's volume (ml),
// 0 when none was found. `work` is the box-sized working mask.
double segment_airways(std::vector<cv::Mat>& lbox, const std::vector<cv::Mat>& levbox, Mask& work, const Box& b,
                       const Seed& seed, const std::vector<double>& breaks, const Spacing& sp, const ChestParams& p,
                       std::vector<std::string>& notes) {
  const double voxel_ml = sp.voxel_volume() / 1000.0;
  const int i_edge = break_index(breaks, p.airway_edge_hu);
  const auto grow = [&](double t) {
    const int i_core = break_index(breaks, t);
    kernels::threshold_into(levbox, {0, static_cast<double>(i_core)}, work);  // lumen air: 1
    parallel_slices(0, b.depth, [&](int z) {
      cv::Mat body;
      cv::compare(lbox[z], kBody, body, cv::CMP_EQ);
      work[z].setTo(0, ~body);
    });
    return kernels::grow_airway_tree(work, seed.voxels, sp, p.airway);
  };
  kernels::AirwayResult res;
  bool grown = false;
  double used = 0;
  for (double t : airway_breaks(p)) {
    res = grow(t);
    used = t;
    if (!res.overflow) {
      grown = true;
      break;
    }
  }
  if (!grown) {
    notes.push_back("airways: the tree leaked into the lungs at every threshold; airways not separated");
    return 0;
  }
  // When the first threshold held, the permissive ones are tried in turn: partial volume with the
  // walls lifts the lumen of smaller bronchi above it (more so with coarse pixels or thick
  // slices). One is kept while its tree neither overflows nor has more than one leak event more
  // than the tree kept before it (a front entering the parenchyma shows as leaks).
  if (used == airway_breaks(p)[0]) {
    int kept_leaks = res.leaks;
    for (double t : airway_relaxed_breaks(p)) {
      const kernels::AirwayResult r = grow(t);
      if (r.overflow || r.leaks > kept_leaks + 1) break;
      res = r, used = t, kept_leaks = r.leaks;
    }
    if (used != airway_relaxed_breaks(p).back()) res = grow(used);  // `work` holds a rejected tree
  }
  const double used_hu = used - 0.5;
  if (res.voxels * voxel_ml < p.airway_min_ml) {
    notes.push_back(fmt::format("airways: only {:.1f} ml grown from the trachea seed; ignored", res.voxels * voxel_ml));
    return 0;
  }
  // Bounding box of the tree, widened by the edge distance.
  int z0 = b.depth, z1 = -1, r0 = b.rows, r1 = -1, c0 = b.cols, c1 = -1;
  for (int z = 0; z < b.depth; ++z) {
    cv::Mat tree;
    cv::compare(work[z], kernels::kAirwayTree, tree, cv::CMP_EQ);
    const cv::Rect br = cv::boundingRect(tree);
    if (br.area() == 0) continue;
    z0 = std::min(z0, z), z1 = std::max(z1, z);
    r0 = std::min(r0, br.y), r1 = std::max(r1, br.y + br.height - 1);
    c0 = std::min(c0, br.x), c1 = std::max(c1, br.x + br.width - 1);
  }
  const int steps = std::max(1, static_cast<int>(std::lround(p.airway_edge_mm / std::min(sp.col, sp.row))));
  const int steps_z = static_cast<int>(std::lround(p.airway_edge_mm / sp.slice));
  z0 = std::max(0, z0 - steps_z), z1 = std::min(b.depth - 1, z1 + steps_z);
  r0 = std::max(0, r0 - steps), r1 = std::min(b.rows - 1, r1 + steps);
  c0 = std::max(0, c0 - steps), c1 = std::min(b.cols - 1, c1 + steps);
  const cv::Rect roi(c0, r0, c1 - c0 + 1, r1 - r0 + 1);
  const int d = z1 - z0 + 1;
  Mask tree = kernels::make_mask(d, roi.height, roi.width), cond = kernels::make_mask(d, roi.height, roi.width);
  parallel_slices(0, d, [&](int k) {
    cv::Mat edge, body, open;
    cv::compare(work[z0 + k](roi), kernels::kAirwayTree, tree[k], cv::CMP_EQ);
    cv::compare(levbox[z0 + k](roi), i_edge, edge, cv::CMP_LE);
    cv::compare(lbox[z0 + k](roi), kBody, body, cv::CMP_EQ);
    cv::compare(work[z0 + k](roi), kernels::kAirwayBlocked, open, cv::CMP_NE);
    cv::bitwise_and(edge, body, cond[k]);
    cv::bitwise_and(cond[k], open, cond[k]);
  });
  const cv::Mat cross = cv::getStructuringElement(cv::MORPH_CROSS, {3, 3});
  Mask next = kernels::make_mask(d, roi.height, roi.width);
  for (int s = 0; s < steps; ++s) {
    const bool along_z = s < steps_z;
    parallel_slices(0, d, [&](int k) {
      cv::dilate(tree[k], next[k], cross);
      if (along_z && k > 0) cv::bitwise_or(next[k], tree[k - 1], next[k]);
      if (along_z && k + 1 < d) cv::bitwise_or(next[k], tree[k + 1], next[k]);
      cv::bitwise_and(next[k], cond[k], next[k]);
    });
    std::swap(tree, next);
  }
  std::int64_t voxels = 0;
  for (int k = 0; k < d; ++k) {
    lbox[z0 + k](roi).setTo(kAirways, tree[k]);
    voxels += cv::countNonZero(tree[k]);
  }
  notes.push_back(fmt::format("airways: {:.1f} ml from a trachea seed of {:.0f} mm2, lumen <= {:.0f} HU, {} branches, "
                              "{} leaks stopped",
                              voxels * voxel_ml, seed.area_mm2, used_hu, res.branches, res.leaks));
  return voxels * voxel_ml;
}

// Going caudally from the seed slice: the last slice where the airways are one blob before they
// are two (the carina); -1 if they never split.
int find_carina(const std::vector<cv::Mat>& lbox, const Seed& seed, int cranial_step, const Spacing& sp) {
  const double min_px = std::max(3.0, 0.1 * seed.area_mm2 / (sp.col * sp.row));
  cv::Mat aw, comps, stats, centroids;
  for (int z = seed.slice; z >= 0 && z < static_cast<int>(lbox.size()); z -= cranial_step) {
    cv::compare(lbox[z], kAirways, aw, cv::CMP_EQ);
    const int n = cv::connectedComponentsWithStats(aw, comps, stats, centroids, 8, CV_32S);
    int big = 0;
    for (int i = 1; i < n; ++i) big += stats.at<int>(i, cv::CC_STAT_AREA) >= min_px;
    if (big == 0) return -1;
    if (big >= 2) return z + cranial_step;
  }
  return -1;
}

struct LesionCandidate {
  std::vector<std::int32_t> voxels;  // linear indices in the box
  kernels::ComponentInfo box;        // their bounding box, in box indices
  double volume_ml = 0;
};

// Solid bumps into `lung` from its border (see segment_ct_chest, step 5), in the box.
std::vector<LesionCandidate> find_lesions(const std::vector<cv::Mat>& lbox, const std::vector<cv::Mat>& levbox,
                                          const Box& b, int lung, const std::array<int, 6>& lung_box,
                                          const XMap& xm, double mid_x, int i_solid, const Spacing& sp,
                                          const ChestParams& p) {
  std::vector<LesionCandidate> out;
  const int f = std::max(1, static_cast<int>(std::lround(2.0 / std::min(sp.col, sp.row))));  // ~2 mm grid
  const double radius = p.lesion_close_mm / (std::min(sp.col, sp.row) * f);
  const int pad = static_cast<int>(std::ceil(radius)) * f + f;
  const int z0 = lung_box[0], z1 = lung_box[1];
  const int x0 = std::max(0, lung_box[4] - pad), y0 = std::max(0, lung_box[2] - pad);
  const cv::Rect roi(x0, y0, std::min(b.cols, lung_box[5] + pad + 1) - x0, std::min(b.rows, lung_box[3] + pad + 1) - y0);
  const int d = z1 - z0 + 1;
  Mask cand = kernels::make_mask(d, roi.height, roi.width);
  parallel_slices(0, d, [&](int k) {
    const int z = z0 + k;
    cv::Mat m, small, src, dist, dil, closed, added, solid, body;
    cv::compare(lbox[z](roi), lung, m, cv::CMP_EQ);
    if (cv::countNonZero(m) == 0) return;
    const cv::Size ssize((roi.width + f - 1) / f, (roi.height + f - 1) / f);
    cv::resize(m, small, ssize, 0, 0, cv::INTER_AREA);
    cv::threshold(small, small, 127, 255, cv::THRESH_BINARY);
    cv::bitwise_not(small, src);  // lung pixels are the zeros: distance to the lung
    cv::distanceTransform(src, dist, cv::DIST_L2, cv::DIST_MASK_5);
    cv::compare(dist, radius, dil, cv::CMP_LE);
    cv::distanceTransform(dil, dist, cv::DIST_L2, cv::DIST_MASK_5);  // distance to outside the dilation
    cv::compare(dist, radius, closed, cv::CMP_GT);
    cv::bitwise_and(closed, ~small, added);
    cv::resize(added, added, roi.size(), 0, 0, cv::INTER_NEAREST);
    cv::compare(levbox[z](roi), i_solid, solid, cv::CMP_GT);
    cv::compare(lbox[z](roi), kBody, body, cv::CMP_EQ);
    cv::bitwise_and(added, solid, added);
    cv::bitwise_and(added, body, cand[k]);
  });
  const Components comps = kernels::label_components(cand, kernels::Connectivity::c26);
  const double voxel_ml = sp.voxel_volume() / 1000.0;
  // The lung's mean distance from the mid-sagittal plane per box slice, for the lateral check.
  std::vector<double> lung_sum(static_cast<std::size_t>(d), 0), lung_n(static_cast<std::size_t>(d), 0);
  for (int k = 0; k < d; ++k)
    for (int r = 0; r < roi.height; r += 2) {
      const std::uint8_t* l = lbox[z0 + k].ptr<std::uint8_t>(roi.y + r);
      for (int c = 0; c < roi.width; c += 2)
        if (l[roi.x + c] == lung) {
          lung_sum[static_cast<std::size_t>(k)] +=
              std::abs(xm.base(roi.y + r + b.r_off, z0 + k + b.z_off) + xm.a * (roi.x + c + b.c_off) - mid_x);
          ++lung_n[static_cast<std::size_t>(k)];
        }
    }
  const std::int64_t plane = static_cast<std::int64_t>(b.rows) * b.cols;
  for (std::size_t i = 0; i < comps.count(); ++i) {
    const auto& info = comps.components[i];
    const double ml = info.voxels * voxel_ml;
    if (ml < p.lesion_min_ml) break;  // sorted by size
    if (ml > p.lesion_max_ml) continue;
    LesionCandidate lc;
    lc.volume_ml = ml;
    lc.box = info;  // from the search window to the box
    lc.box.z0 += z0, lc.box.z1 += z0, lc.box.r0 += roi.y, lc.box.r1 += roi.y, lc.box.c0 += roi.x, lc.box.c1 += roi.x;
    std::int64_t border = 0, lung_border = 0, solid_lung_border = 0, band_border = 0;
    double sum_x = 0, lung_ref = 0, lung_ref_n = 0;
    double thickness_px = 0;
    for (int k = info.z0; k <= info.z1; ++k) {
      cv::Mat one(roi.height, roi.width, CV_8U, cv::Scalar(0));
      bool any = false;
      const std::size_t row0 = static_cast<std::size_t>(k) * comps.rows;
      for (int r = info.r0; r <= info.r1; ++r)
        for (auto q = comps.row_offset[row0 + r]; q < comps.row_offset[row0 + r + 1]; ++q) {
          if (static_cast<std::size_t>(comps.run_component[q]) != i) continue;
          const auto& run = comps.runs[q];
          std::fill(one.ptr<std::uint8_t>(r) + run.begin, one.ptr<std::uint8_t>(r) + run.end, std::uint8_t{255});
          any = true;
          for (int c = run.begin; c < run.end; ++c) {
            const int zb = z0 + k, rb = roi.y + r, cb = roi.x + c;
            lc.voxels.push_back(static_cast<std::int32_t>(zb * plane + static_cast<std::int64_t>(rb) * b.cols + cb));
            sum_x += std::abs(xm.base(rb + b.r_off, zb + b.z_off) + xm.a * (cb + b.c_off) - mid_x);
          }
        }
      if (!any) continue;
      lung_ref += lung_sum[static_cast<std::size_t>(k)];
      lung_ref_n += lung_n[static_cast<std::size_t>(k)];
      cv::Mat dist;
      cv::distanceTransform(one, dist, cv::DIST_L2, cv::DIST_MASK_5);
      double mx = 0;
      cv::minMaxLoc(dist, nullptr, &mx);
      thickness_px = std::max(thickness_px, mx);
      // Border: 4-neighbours in plane outside the component, lung or not.
      for (int r = info.r0; r <= info.r1; ++r) {
        const std::uint8_t* o = one.ptr<std::uint8_t>(r);
        for (int c = info.c0; c <= info.c1; ++c) {
          if (!o[c]) continue;
          const int rb = roi.y + r, cb = roi.x + c;
          const std::array<std::pair<int, int>, 4> nb{{{rb - 1, cb}, {rb + 1, cb}, {rb, cb - 1}, {rb, cb + 1}}};
          for (auto [rr, cc] : nb) {
            if (rr < 0 || rr >= b.rows || cc < 0 || cc >= b.cols) continue;
            if (rr >= roi.y && rr < roi.y + roi.height && cc >= roi.x && cc < roi.x + roi.width &&
                one.at<std::uint8_t>(rr - roi.y, cc - roi.x))
              continue;
            ++border;
            if (lbox[z0 + k].at<std::uint8_t>(rr, cc) == lung) {
              ++lung_border;
              solid_lung_border += levbox[z0 + k].at<std::uint8_t>(rr, cc) > i_solid;
            } else if (levbox[z0 + k].at<std::uint8_t>(rr, cc) <= i_solid) {
              ++band_border;  // neither lung nor solid: the partial-volume band between them
            }
          }
        }
      }
    }
    const double thickness_mm = 2 * thickness_px * std::min(sp.col, sp.row);
    // Lung contact counts the partial-volume band (air_max_hu..lesion_min_hu) that lies between the
    // lung and a solid lesion: with finer pixels it is a larger share of the lesion's border.
    const double contact = border ? static_cast<double>(lung_border + band_border) / static_cast<double>(border) : 0;
    const double lateral = sum_x / static_cast<double>(info.voxels);
    const double lung_lateral = lung_ref_n > 0 ? lung_ref / lung_ref_n : 0;
    // A vessel reaching the pleura continues into the lung as solid tissue; a nodule meets air.
    const double solid_lung = lung_border ? static_cast<double>(solid_lung_border) / static_cast<double>(lung_border) : 1;
    if (thickness_mm < p.lesion_min_thickness_mm || contact < p.lesion_min_lung_contact ||
        lateral < 0.75 * lung_lateral || solid_lung > p.lesion_max_solid_lung_border)
      continue;
    out.push_back(std::move(lc));
  }
  return out;
}

// Gives a lesion candidate (its voxels labelled `label`, within `box`) back its caps: on the
// slices where only the top or bottom of a round lesion shows, that part is an island inside the
// lung, so hole filling (step 4) made it lung and the candidate (step 5) starts a few slices in.
// Beyond the candidate's first and last slice, slice by slice, the 8-connected islands of solid
// (> air_max_hu, the lung/tissue midpoint) lung voxels that overlap its footprint on the slice
// before go to it, within `reach` pixels of that footprint (the lung closing's radius), while the
// cross-section keeps shrinking (a cap narrows; a vessel leaving the lesion does not) and at most
// cap_mm away. Growing the candidate in its own slices into the solid voxels the closing gave the
// lung was tried and dropped: on the phantom it took twice as many vessel voxels as nodule rim.
// Returns the voxels added.
std::int64_t reclaim_lesion_voxels(std::vector<cv::Mat>& lbox, const std::vector<cv::Mat>& levbox, std::uint8_t label,
                                   const kernels::ComponentInfo& box, int i_air, const Spacing& sp,
                                   const ChestParams& p) {
  const int depth = static_cast<int>(lbox.size());
  const int z0 = box.z0, z1 = box.z1;
  const cv::Rect rect(box.c0, box.r0, box.c1 - box.c0 + 1, box.r1 - box.r0 + 1);
  const double px = std::min(sp.col, sp.row);
  const int reach = std::max(1, static_cast<int>(std::ceil(p.lung_close_radius_mm / px)));
  const double cap_mm = std::max(p.lesion_min_thickness_mm, 0.5 * std::max(rect.width * sp.col, rect.height * sp.row));
  const int margin = reach + static_cast<int>(std::ceil(cap_mm / px));
  const cv::Rect roi = cv::Rect(rect.x - margin, rect.y - margin, rect.width + 2 * margin, rect.height + 2 * margin) &
                       cv::Rect(0, 0, lbox.front().cols, lbox.front().rows);
  const cv::Mat cross = cv::getStructuringElement(cv::MORPH_CROSS, {3, 3});
  const auto solid_lung = [&](int z) {
    cv::Mat lung_r, lung_l, solid;
    cv::compare(lbox[z](roi), kRightLung, lung_r, cv::CMP_EQ);
    cv::compare(lbox[z](roi), kLeftLung, lung_l, cv::CMP_EQ);
    cv::compare(levbox[z](roi), i_air, solid, cv::CMP_GT);
    cv::bitwise_or(lung_r, lung_l, lung_r);
    cv::bitwise_and(lung_r, solid, solid);
    return solid;
  };
  std::int64_t added = 0;
  const cv::Mat near_se = cv::getStructuringElement(cv::MORPH_ELLIPSE, {2 * reach + 1, 2 * reach + 1});
  const int max_slices = static_cast<int>(std::ceil(cap_mm / sp.slice));
  for (const int step : {-1, 1}) {
    int z = step < 0 ? z0 : z1;
    cv::Mat prev;
    cv::compare(lbox[z](roi), label, prev, cv::CMP_EQ);
    int prev_area = cv::countNonZero(prev);
    for (int k = 1; k <= max_slices && z + step >= 0 && z + step < depth; ++k) {
      z += step;
      const cv::Mat ok = solid_lung(z);
      if (cv::countNonZero(ok) == 0) break;
      cv::Mat touch, near;
      cv::dilate(prev, touch, cross);
      cv::Mat cap = components_touching(ok, touch);
      cv::dilate(prev, near, near_se);
      cv::bitwise_and(cap, near, cap);
      const int area = cv::countNonZero(cap);
      if (area == 0 || area >= prev_area) break;
      lbox[z](roi).setTo(label, cap);
      added += area;
      prev = cap, prev_area = area;
    }
  }
  return added;
}

}  // namespace

double patient_x(const dicom::Geometry& g, double c, double r, double z) {
  return g.origin[0] + c * g.spacing_col * g.row_dir[0] + r * g.spacing_row * g.col_dir[0] +
         z * g.spacing_slice * g.normal[0];
}

RecipeResult segment_generic(const std::vector<cv::Mat>& image, const Spacing& spacing, const GenericSegmentParams& p) {
  kernels::check_stack(image, -1, "generic segmentation");
  RecipeResult out;
  if (p.window) {
    out.labels = kernels::threshold(image, *p.window);
  } else {
    const double t = kernels::otsu_threshold(image);
    out.labels = kernels::threshold_above(image, t);
    out.notes.push_back(fmt::format("Otsu threshold {:.6g}", t));
  }
  if (p.drop_border_components) kernels::remove_border_components(out.labels, false, p.connectivity);
  if (p.keep_largest > 0 && kernels::count_nonzero(out.labels) > 0)
    kernels::keep_largest_components(out.labels, p.keep_largest, p.connectivity);
  if (p.open_radius_mm > 0) kernels::open(out.labels, kernels::element_mm(p.open_radius_mm, spacing, false));
  if (p.close_radius_mm > 0) kernels::close(out.labels, kernels::element_mm(p.close_radius_mm, spacing, false));
  if (p.fill_holes) kernels::fill_holes_2d(out.labels);
  kernels::binarise(out.labels);
  out.present_labels = present(out.labels);
  return out;
}

std::vector<double> chest_level_breaks(const ChestParams& p) {
  std::vector<double> b{p.body_min_hu, p.airway_edge_hu, p.air_max_hu + 0.5, p.lesion_min_hu, p.dense_min_hu};
  for (double t : airway_breaks(p)) b.push_back(t);
  for (double t : airway_relaxed_breaks(p)) b.push_back(t);
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
  return b;
}

RecipeResult segment_ct_chest(const std::vector<cv::Mat>& image_hu, const dicom::Geometry& geom, const ChestParams& p) {
  const auto breaks = chest_level_breaks(p);
  return segment_ct_chest(kernels::level_map(image_hu, breaks), breaks, geom, p);
}

RecipeResult segment_ct_chest(const std::vector<cv::Mat>& levels, const std::vector<double>& breaks,
                              const dicom::Geometry& geom, const ChestParams& p) {
  kernels::check_stack(levels, CV_8U, "ct-chest segmentation");
  const Spacing sp = spacing_of(geom);
  kernels::check_spacing(sp, "ct-chest segmentation");
  const double voxel_ml = sp.voxel_volume() / 1000.0;
  const int i_body = break_index(breaks, p.body_min_hu), i_air = break_index(breaks, p.air_max_hu + 0.5);
  const int i_solid = break_index(breaks, p.lesion_min_hu), i_dense = break_index(breaks, p.dense_min_hu);
  RecipeResult out;

  // 1. Body: largest component of voxels >= body_min_hu after a 2D opening that cuts thin
  //    contacts (couch), its surface restored from the threshold; 2D holes filled. The mask itself
  //    becomes the label map (values 0/1 = background/body).
  out.labels = kernels::threshold(levels, {static_cast<double>(i_body + 1), 255});
  LabelVolume& labels = out.labels;
  const int full_depth = static_cast<int>(labels.size()), full_rows = labels.front().rows,
            full_cols = labels.front().cols;
  const int open_c = static_cast<int>(std::lround(p.body_open_mm / sp.col));
  const int open_r = static_cast<int>(std::lround(p.body_open_mm / sp.row));
  const cv::Mat open_se = cv::getStructuringElement(cv::MORPH_RECT, {2 * open_c + 1, 2 * open_r + 1});
  if (open_c > 0 || open_r > 0)
    // BORDER_ISOLATED: a slice is a row range of one block, and without it OpenCV reads the
    // neighbouring slices' rows (written by other threads) as this slice's border.
    parallel_slices(0, full_depth, [&](int z) {
      cv::morphologyEx(labels[z], labels[z], cv::MORPH_OPEN, open_se, {-1, -1}, 1, cv::BORDER_CONSTANT | cv::BORDER_ISOLATED,
                       cv::morphologyDefaultBorderValue());
    });
  kernels::ComponentInfo body;
  {
    const Components comps = kernels::label_components(labels, kernels::Connectivity::c26);
    if (comps.count() == 0) {
      out.notes.push_back("no body found");
      return out;
    }
    std::vector<bool> keep(comps.count(), false);
    keep[0] = true;  // components are sorted by decreasing size
    kernels::select_components(labels, comps, keep);
    body = comps.components[0];
  }
  if (open_c > 0 || open_r > 0) {
    parallel_slices(body.z0, body.z1 + 1, [&](int z) {
      cv::Mat grown, thr;
      cv::dilate(labels[z], grown, open_se, {-1, -1}, 1, cv::BORDER_CONSTANT | cv::BORDER_ISOLATED, cv::morphologyDefaultBorderValue());
      cv::compare(levels[z], i_body, thr, cv::CMP_GT);
      cv::bitwise_and(grown, thr, labels[z]);  // 0/1
      // Lungs and airways are holes of the threshold mask inside the chest wall. Where the wall
      // is thinner than the opening (a thin patient, a small field of view), the opening broke
      // the ring and the restore above cannot bridge the gap, so the lungs would no longer be
      // enclosed by the body. A hole whose border is mostly body goes back into it, with the
      // threshold mask within the opening's reach around it (the thin wall). Holes of the couch
      // or of anything else outside the body border on non-body and stay out.
      if (holes_enclosed_by_body(labels[z], thr)) return;  // the usual slice: nothing to repair
      cv::Mat outside, comps, stats, centroids;
      cv::bitwise_not(thr, outside);
      const int n = cv::connectedComponentsWithStats(outside, comps, stats, centroids, 4, CV_32S);
      for (int i = 1; i < n; ++i) {
        const int x = stats.at<int>(i, cv::CC_STAT_LEFT), y = stats.at<int>(i, cv::CC_STAT_TOP);
        const int w = stats.at<int>(i, cv::CC_STAT_WIDTH), h = stats.at<int>(i, cv::CC_STAT_HEIGHT);
        if (x == 0 || y == 0 || x + w == full_cols || y + h == full_rows) continue;  // not a hole
        const cv::Rect roi = cv::Rect(x - open_c - 1, y - open_r - 1, w + 2 * open_c + 2, h + 2 * open_r + 2) &
                             cv::Rect(0, 0, full_cols, full_rows);
        cv::Mat hole, ring, in_body, near;
        cv::compare(comps(roi), i, hole, cv::CMP_EQ);
        cv::dilate(hole, ring, cv::Mat());
        ring.setTo(0, hole);
        cv::compare(labels[z](roi), 0, in_body, cv::CMP_GT);
        const int border = cv::countNonZero(ring);
        cv::bitwise_and(in_body, ring, in_body);
        const int body_border = cv::countNonZero(in_body);
        if (body_border == border || 2 * body_border < border) continue;  // enclosed already, or not the body's
        cv::Mat view = labels[z](roi);
        view.setTo(1, hole);
        cv::dilate(hole, near, open_se);
        cv::bitwise_and(near, thr(roi), near);
        view.setTo(1, near);
      }
    });
    body.r0 = std::max(0, body.r0 - open_r), body.r1 = std::min(full_rows - 1, body.r1 + open_r);
    body.c0 = std::max(0, body.c0 - open_c), body.c1 = std::min(full_cols - 1, body.c1 + open_c);
  }
  // Everything below works in the body's bounding box (views, no copies).
  const Box b{body.z0, body.r0, body.c0, body.z1 - body.z0 + 1, body.r1 - body.r0 + 1, body.c1 - body.c0 + 1};
  const cv::Rect box(b.c_off, b.r_off, b.cols, b.rows);
  std::vector<cv::Mat> lbox, levbox;  // label map and level map in the box
  for (int z = body.z0; z <= body.z1; ++z) {
    lbox.push_back(labels[z](box));
    levbox.push_back(levels[z](box));
  }
  const int depth = b.depth, rows = b.rows, cols = b.cols;
  kernels::fill_holes_2d(lbox);  // writes 1 into holes: the map stays 0/1

  // Mid-sagittal plane: mean patient x of the body (every other row is plenty for a mean).
  const XMap xm(geom);
  double sum_x = 0, n_body = 0;
  for (int z = 0; z < depth; ++z)
    for (int r = 0; r < rows; r += 2) {
      const std::uint8_t* l = lbox[z].ptr<std::uint8_t>(r);
      std::int64_t n = 0, sc = 0;
      for (int c = 0; c < cols; ++c) n += l[c], sc += static_cast<std::int64_t>(l[c]) * c;  // values 0/1
      sum_x += static_cast<double>(n) * xm.base(r + b.r_off, z + b.z_off) + xm.a * static_cast<double>(sc + n * b.c_off);
      n_body += static_cast<double>(n);
    }
  const double mid_x = sum_x / n_body;
  // Cranial direction in slice index: +1 when the index grows towards the head (LPS +z).
  const bool axial = std::abs(geom.normal[2]) >= 0.8;
  const int cranial_step = geom.normal[2] >= 0 ? 1 : -1;

  // 2. Airways.
  Mask work;
  Seed seed;
  bool have_airways = false;
  if (p.find_airways && axial) {
    const int i_core = break_index(breaks, airway_breaks(p)[0]);
    seed = find_trachea_seed(lbox, levbox, b, xm, mid_x, i_air, i_core, cranial_step, sp, p);
    if (seed.voxels.empty()) {
      out.notes.push_back("airways: no trachea found in the cranial slices; airways not separated from the lungs");
    } else {
      work = kernels::make_mask(depth, rows, cols);
      have_airways = segment_airways(lbox, levbox, work, b, seed, breaks, sp, p, out.notes) > 0;
    }
  } else if (p.find_airways) {
    out.notes.push_back("airways: not an axial series; airways not separated from the lungs");
  }
  if (have_airways) {
    const int carina = find_carina(lbox, seed, cranial_step, sp);
    if (carina >= 0) out.landmarks["carina"] = carina + b.z_off;
  }

  // 3. Lungs: air inside the body (airways excluded: they are no longer label 1), in-plane border
  //    components dropped.
  kernels::threshold_into(levbox, {0, static_cast<double>(i_air)}, work);
  parallel_slices(0, depth, [&](int z) {
    cv::Mat in_body;
    cv::compare(lbox[z], kBody, in_body, cv::CMP_EQ);
    work[z].setTo(0, ~in_body);
  });
  bool have_left = false, have_right = false;
  std::array<int, 6> lung_box{depth, -1, rows, -1, cols, -1};  // z0 z1 r0 r1 c0 c1 of both lungs (box)
  std::array<std::array<int, 6>, 4> side_box{};                // per lung label
  for (auto& s : side_box) s = {depth, -1, rows, -1, cols, -1};
  {
    const Components comps = kernels::label_components(work, p.lung_connectivity);
    const std::size_t n = comps.count();
    std::vector<std::int64_t> left(n, 0);  // voxels with patient x > mid (patient left)
    for_each_run(comps, [&](int z, int r, int bg, int e, int k) {
      left[k] += count_above(xm.base(r + b.r_off, z + b.z_off), xm.a, mid_x, bg + b.c_off, e + b.c_off);
    });
    std::vector<int> cand;  // components by decreasing size
    for (std::size_t i = 0; i < n; ++i) {
      const auto& info = comps.components[i];
      if (!info.touches_inplane_border && info.voxels * voxel_ml >= p.min_lung_ml) cand.push_back(static_cast<int>(i));
    }
    // component -> label (0: not a lung; -1: both lungs, split below)
    std::vector<int> lung_label(n, 0);
    if (!cand.empty()) {
      const int a = cand.front();
      const double frac_left = static_cast<double>(left[a]) / comps.components[a].voxels;
      if (frac_left > 0.2 && frac_left < 0.8) {
        lung_label[a] = -1;
        out.notes.push_back(have_airways ? "lungs touch (junction line); split slice by slice where they meet"
                                         : "lungs joined (airways or junction); split slice by slice where they meet");
      } else {
        const bool a_left = frac_left >= 0.5;
        lung_label[a] = a_left ? kLeftLung : kRightLung;
        for (std::size_t j = 1; j < cand.size(); ++j) {
          const int c = cand[j];
          const bool c_left = 2 * left[c] >= comps.components[c].voxels;
          if (c_left != a_left) {
            lung_label[c] = c_left ? kLeftLung : kRightLung;
            break;
          }
        }
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (!lung_label[i]) continue;
      const auto& info = comps.components[i];
      have_left |= lung_label[i] != kRightLung;
      have_right |= lung_label[i] != kLeftLung;
      lung_box = {std::min(lung_box[0], info.z0), std::max(lung_box[1], info.z1), std::min(lung_box[2], info.r0),
                  std::max(lung_box[3], info.r1), std::min(lung_box[4], info.c0), std::max(lung_box[5], info.c1)};
    }
    for_each_run(comps, [&](int z, int r, int bg, int e, int k) {
      const int l = lung_label[k];
      if (l == 0) return;
      std::uint8_t* row = lbox[z].ptr<std::uint8_t>(r);
      // A joined component is marked and resolved per slice below.
      std::fill(row + bg, row + e, static_cast<std::uint8_t>(l > 0 ? l : kJoined));
    });
    const int max_erosions = std::max(2, static_cast<int>(std::lround(15.0 / std::min(sp.col, sp.row))));
    for (std::size_t i = 0; i < n; ++i)
      if (lung_label[i] < 0) {
        kernels::ComponentInfo abs = comps.components[i];  // in label-map coordinates
        abs.z0 += b.z_off, abs.z1 += b.z_off, abs.r0 += b.r_off, abs.r1 += b.r_off, abs.c0 += b.c_off,
            abs.c1 += b.c_off;
        split_joined(labels, abs, xm, mid_x, max_erosions);
      }
  }

  // 4. Per lung, in the lungs' bounding box: closing, then 2D hole filling with the airways that
  //    touch the lung counted in (bronchial walls and vessels inside the lung belong to it);
  //    filled voxels are taken from the body only, so airway lumen stays airway.
  const int pad = static_cast<int>(std::ceil(p.lung_close_radius_mm / std::min(sp.col, sp.row))) + 1;
  const int close_c = static_cast<int>(std::lround(p.lung_close_radius_mm / sp.col));
  const int close_r = static_cast<int>(std::lround(p.lung_close_radius_mm / sp.row));
  const cv::Mat close_se = cv::getStructuringElement(cv::MORPH_ELLIPSE, {2 * close_c + 1, 2 * close_r + 1});
  for (int lung : {kRightLung, kLeftLung}) {
    if (!(lung == kLeftLung ? have_left : have_right)) continue;
    if (!p.fill_lung_holes && close_c <= 0 && close_r <= 0) continue;
    const int z0 = lung_box[0], z1 = lung_box[1];
    const int x0 = std::max(0, lung_box[4] - pad), y0 = std::max(0, lung_box[2] - pad);
    const cv::Rect roi(x0, y0, std::min(cols, lung_box[5] + pad + 1) - x0, std::min(rows, lung_box[3] + pad + 1) - y0);
    Mask m = kernels::make_mask(z1 - z0 + 1, roi.height, roi.width);
    parallel_slices(z0, z1 + 1, [&](int z) {
      cv::Mat view = lbox[z](roi), aw, grown;
      cv::Mat& mz = m[static_cast<std::size_t>(z - z0)];
      cv::compare(view, lung, mz, cv::CMP_EQ);
      if (cv::countNonZero(mz) == 0) return;
      if (close_c > 0 || close_r > 0) cv::morphologyEx(mz, mz, cv::MORPH_CLOSE, close_se);
      if (have_airways) {  // airway blobs touching the (closed) lung
        cv::compare(view, kAirways, aw, cv::CMP_EQ);
        if (cv::countNonZero(aw)) {
          cv::dilate(mz, grown, cv::Mat());
          mz.setTo(255, components_touching(aw, grown));
        }
      }
      if (p.fill_lung_holes) {
        std::vector<cv::Mat> one{mz};
        kernels::fill_holes_2d(one);  // writes 1 into holes
      }
    });
    if (p.fill_lung_holes && p.lung_plane_hole_max_mm2 > 0) {  // vessels lying in the slice plane
      kernels::fill_holes_2d(m, kernels::PlaneAxis::coronal,
                             static_cast<std::int64_t>(p.lung_plane_hole_max_mm2 / (sp.col * sp.slice)));
      kernels::fill_holes_2d(m, kernels::PlaneAxis::sagittal,
                             static_cast<std::int64_t>(p.lung_plane_hole_max_mm2 / (sp.row * sp.slice)));
    }
    parallel_slices(z0, z1 + 1, [&](int z) {
      cv::Mat view = lbox[z](roi), from_body;
      cv::compare(view, kBody, from_body, cv::CMP_EQ);
      cv::Mat in;
      cv::compare(m[static_cast<std::size_t>(z - z0)], 0, in, cv::CMP_NE);
      cv::bitwise_and(from_body, in, from_body);
      view.setTo(lung, from_body);
    });
    for (int z = z0; z <= z1; ++z) {  // this lung's own box, for the lesion search
      cv::Mat m;
      cv::compare(lbox[z], lung, m, cv::CMP_EQ);
      const cv::Rect br = cv::boundingRect(m);
      if (br.area() == 0) continue;
      auto& s = side_box[static_cast<std::size_t>(lung)];
      s = {std::min(s[0], z), std::max(s[1], z), std::min(s[2], br.y), std::max(s[3], br.y + br.height - 1),
           std::min(s[4], br.x), std::max(s[5], br.x + br.width - 1)};
    }
  }

  // 5. Lesion candidates: solid bumps into a lung, out of the lung, largest first.
  std::vector<int> lesion_labels;
  if (p.find_lesions && p.max_lesions > 0) {
    std::vector<LesionCandidate> all;
    for (int lung : {kRightLung, kLeftLung}) {
      const auto& s = side_box[static_cast<std::size_t>(lung)];
      if (s[1] < s[0]) continue;
      auto found = find_lesions(lbox, levbox, b, lung, s, xm, mid_x, i_solid, sp, p);
      for (auto& l : found) all.push_back(std::move(l));
    }
    std::stable_sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.volume_ml > y.volume_ml; });
    const std::int64_t plane = static_cast<std::int64_t>(rows) * cols;
    for (std::size_t i = 0; i < all.size() && static_cast<int>(i) < p.max_lesions; ++i) {
      const int label = kLesion + static_cast<int>(i);
      for (const auto v : all[i].voxels) {
        const int z = static_cast<int>(v / plane);
        const std::int64_t rem = v - z * plane;
        const int r = static_cast<int>(rem / cols);
        lbox[z].at<std::uint8_t>(r, static_cast<int>(rem - static_cast<std::int64_t>(r) * cols)) =
            static_cast<std::uint8_t>(label);
      }
      const std::int64_t rim =
          reclaim_lesion_voxels(lbox, levbox, static_cast<std::uint8_t>(label), all[i].box, i_air, sp, p);
      lesion_labels.push_back(label);
      out.notes.push_back(fmt::format("lesion candidate {}: {:.1f} ml of solid tissue against the lung border "
                                      "(automatic candidate, not a diagnosis)",
                                      i + 1, all[i].volume_ml + static_cast<double>(rim) * voxel_ml));
    }
    if (static_cast<int>(all.size()) > p.max_lesions)
      out.notes.push_back(fmt::format("{} further lesion candidates not reported (max_lesions {})",
                                      static_cast<int>(all.size()) - p.max_lesions, p.max_lesions));
  }

  // 6. Dense structures: >= dense_min_hu in the body, in no other segment.
  kernels::threshold_into(levbox, {static_cast<double>(i_dense + 1), 255}, work);
  parallel_slices(0, depth, [&](int z) {
    cv::Mat in_body;
    cv::compare(lbox[z], kBody, in_body, cv::CMP_EQ);
    cv::bitwise_and(work[z], in_body, work[z]);
  });
  const auto min_dense = static_cast<std::int64_t>(std::ceil(p.min_dense_ml / voxel_ml));
  if (min_dense > 1) kernels::remove_small_components(work, min_dense, kernels::Connectivity::c26);
  const bool have_dense = kernels::count_nonzero(work) > 0;
  if (have_dense)
    for (int z = 0; z < depth; ++z) lbox[z].setTo(kDense, work[z]);
  work.clear();

  // Landmarks and coverage from the lungs' cross-sections per slice (full volume index).
  std::vector<std::int64_t> lung_area(static_cast<std::size_t>(full_depth), 0);
  parallel_slices(0, depth, [&](int z) {
    const cv::Mat& s = lbox[z];
    std::int64_t n = 0;
    for (int r = 0; r < rows; ++r) {
      const std::uint8_t* l = s.ptr<std::uint8_t>(r);
      for (int c = 0; c < cols; ++c) n += l[c] == kRightLung || l[c] == kLeftLung;
    }
    lung_area[static_cast<std::size_t>(z + b.z_off)] = n;
  });
  const std::int64_t max_area = *std::max_element(lung_area.begin(), lung_area.end());
  if ((have_left || have_right) && max_area > 0) {
    const auto frac = [&](int z) { return static_cast<double>(lung_area[static_cast<std::size_t>(z)]) / max_area; };
    const int top = cranial_step > 0 ? full_depth - 1 : 0, bottom = full_depth - 1 - top;
    // Key image levels: the most cranial / caudal slice with at least 10 % of the largest area.
    for (int k = 0; k < full_depth; ++k)
      if (frac(top - k * cranial_step) >= 0.1) {
        out.landmarks["apex"] = top - k * cranial_step;
        break;
      }
    for (int k = 0; k < full_depth; ++k)
      if (frac(bottom + k * cranial_step) >= 0.1) {
        out.landmarks["base"] = bottom + k * cranial_step;
        break;
      }
    if (axial) {
      out.apices_in_scan = frac(top) <= p.coverage_edge_fraction;
      out.bases_in_scan = frac(bottom) <= p.coverage_edge_fraction;
    }
  }

  // Present labels, without another pass: the body keeps most of its voxels, each lung that was
  // assigned keeps its component.
  out.present_labels.push_back(kBody);
  if (have_right) out.present_labels.push_back(kRightLung);
  if (have_left) out.present_labels.push_back(kLeftLung);
  if (have_dense) out.present_labels.push_back(kDense);
  if (have_airways) out.present_labels.push_back(kAirways);
  for (int l : lesion_labels) out.present_labels.push_back(l);
  return out;
}

}  // namespace analysis::recipes
