#define BOOST_TEST_MODULE kernels_segment
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>
#include <random>
#include <set>

#include <opencv2/imgproc.hpp>

#include "analysis/kernels/evaluate.h"
#include "analysis/kernels/preprocess.h"
#include "analysis/kernels/segment.h"
#include "support/masks.h"

namespace k = analysis::kernels;
using analysis::Mask;

namespace {

// Reference labelling: breadth-first flood fill over explicit neighbour offsets.
std::vector<int> bfs_labels(const Mask& m, int conn, int& n) {
  const int D = static_cast<int>(m.size()), R = m[0].rows, C = m[0].cols;
  std::vector<int> lab(static_cast<std::size_t>(D) * R * C, -1);
  auto id = [&](int z, int y, int x) { return (static_cast<std::size_t>(z) * R + y) * C + x; };
  std::vector<std::array<int, 3>> off;
  for (int dz = -1; dz <= 1; ++dz)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        const int nzc = (dz != 0) + (dy != 0) + (dx != 0);
        if (nzc == 0) continue;
        if ((conn == 6 && nzc > 1) || (conn == 18 && nzc > 2)) continue;
        off.push_back({dz, dy, dx});
      }
  n = 0;
  for (int z = 0; z < D; ++z)
    for (int y = 0; y < R; ++y)
      for (int x = 0; x < C; ++x) {
        if (!m[static_cast<std::size_t>(z)].at<uchar>(y, x) || lab[id(z, y, x)] >= 0) continue;
        std::queue<std::array<int, 3>> q;
        q.push({z, y, x});
        lab[id(z, y, x)] = n;
        while (!q.empty()) {
          const auto p = q.front();
          q.pop();
          for (const auto& o : off) {
            const int zz = p[0] + o[0], yy = p[1] + o[1], xx = p[2] + o[2];
            if (zz < 0 || zz >= D || yy < 0 || yy >= R || xx < 0 || xx >= C) continue;
            if (!m[static_cast<std::size_t>(zz)].at<uchar>(yy, xx) || lab[id(zz, yy, xx)] >= 0) continue;
            lab[id(zz, yy, xx)] = n;
            q.push({zz, yy, xx});
          }
        }
        ++n;
      }
  return lab;
}

Mask ellipsoid(int depth, int rows, int cols, const analysis::Spacing& sp, cv::Point3d c_mm, cv::Point3d r_mm) {
  Mask m = k::make_mask(depth, rows, cols);
  for (int z = 0; z < depth; ++z)
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const double x = (c * sp.col - c_mm.x) / r_mm.x, y = (r * sp.row - c_mm.y) / r_mm.y,
                     w = (z * sp.slice - c_mm.z) / r_mm.z;
        if (x * x + y * y + w * w <= 1.0) m[static_cast<std::size_t>(z)].at<uchar>(r, c) = 1;
      }
  return m;
}

}  // namespace

BOOST_AUTO_TEST_CASE(threshold_window_is_inclusive) {
  std::vector<cv::Mat> img{(cv::Mat_<int16_t>(1, 6) << -1000, -101, -100, 300, 301, 32767)};
  const Mask m = k::threshold(img, {-100, 300});
  const std::vector<uchar> expected{0, 0, 1, 1, 0, 0};
  for (int c = 0; c < 6; ++c) BOOST_TEST(m[0].at<uchar>(0, c) == expected[static_cast<std::size_t>(c)]);
  const Mask frac = k::threshold(img, {-100.5, 300.5});  // integer data: [ceil lo, floor hi]
  BOOST_TEST(k::count_nonzero(frac) == 2u);
  const Mask none = k::threshold(img, {0.2, 0.8});
  BOOST_TEST(k::count_nonzero(none) == 0u);
  std::vector<cv::Mat> f{(cv::Mat_<float>(1, 4) << -0.5f, 0.0f, 0.25f, 0.2500001f)};
  BOOST_TEST(k::count_nonzero(k::threshold(f, {0.0, 0.25})) == 2u);
  BOOST_TEST(k::count_nonzero(k::threshold_above(img, 300)) == 2u);
  BOOST_TEST(k::count_nonzero(k::threshold_above(f, 0.0)) == 2u);
  BOOST_TEST(k::count_nonzero(k::threshold(img, k::hu::soft_tissue)) == 2u);
}

BOOST_AUTO_TEST_CASE(otsu_matches_exhaustive_search) {
  std::mt19937 rng(11);
  std::normal_distribution<double> lo(-300, 60), hi(200, 40);
  std::vector<cv::Mat> img;
  std::vector<int> values;
  for (int z = 0; z < 3; ++z) {
    cv::Mat s(20, 20, CV_16S);
    for (int r = 0; r < 20; ++r)
      for (int c = 0; c < 20; ++c) {
        const int v = static_cast<int>(std::lround((r + c) % 3 == 0 ? hi(rng) : lo(rng)));
        s.at<int16_t>(r, c) = static_cast<int16_t>(v);
        values.push_back(v);
      }
    img.push_back(s);
  }
  // Exhaustive: between-class variance of "v <= t" versus "v > t" over every distinct value.
  std::set<int> distinct(values.begin(), values.end());
  double best = -1;
  int best_t = 0;
  for (int t : distinct) {
    double n0 = 0, n1 = 0, s0 = 0, s1 = 0;
    for (int v : values) (v <= t ? (n0 += 1, s0 += v) : (n1 += 1, s1 += v));
    if (n0 == 0 || n1 == 0) continue;
    const double between = n0 * n1 * std::pow(s0 / n0 - s1 / n1, 2);
    if (between > best) {
      best = between;
      best_t = t;
    }
  }
  BOOST_TEST(k::otsu_threshold(img) == best_t);
  // Float path: a histogram of 4096 bins lands within one bin width of the exact threshold.
  std::vector<cv::Mat> f;
  for (const auto& s : img) {
    cv::Mat t;
    s.convertTo(t, CV_32F);
    f.push_back(t);
  }
  const double range = *std::max_element(values.begin(), values.end()) - *std::min_element(values.begin(), values.end());
  const double tf = k::otsu_threshold(f);
  BOOST_TEST(std::abs(tf - best_t) <= range / 4096 * 2 + 1);
  // ROI restriction: only the high class inside -> threshold within it.
  Mask roi = k::threshold(img, {0, 1e9});
  const double t_roi = k::otsu_threshold(img, &roi);
  BOOST_TEST(t_roi >= 0);
  Mask empty = k::make_mask(3, 20, 20);
  BOOST_CHECK_THROW(k::otsu_threshold(img, &empty), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(components_match_flood_fill) {
  for (int conn : {6, 18, 26})
    for (double p : {0.2, 0.35, 0.5}) {
      const Mask m = testsupport::random_mask(7, 13, 17, p, static_cast<unsigned>(conn * 100 + p * 10));
      int n_ref = 0;
      const auto ref = bfs_labels(m, conn, n_ref);
      const auto comps = k::label_components(m, static_cast<k::Connectivity>(conn));
      BOOST_TEST(static_cast<int>(comps.count()) == n_ref, "conn " << conn << " p " << p);
      const auto lm = k::label_map(comps, 255);
      // Same partition: the mapping reference label -> our component is a bijection.
      std::map<int, int> to_ours, to_ref;
      std::vector<std::int64_t> sizes(comps.count(), 0);
      bool consistent = true;
      std::size_t i = 0;
      // Use run components to recover per-voxel component indices beyond 255.
      std::vector<int> ours(ref.size(), -1);
      for (int z = 0; z < comps.depth; ++z)
        for (int r = 0; r < comps.rows; ++r) {
          const std::size_t row = static_cast<std::size_t>(z) * comps.rows + r;
          for (auto j = comps.row_offset[row]; j < comps.row_offset[row + 1]; ++j) {
            const auto& run = comps.runs[static_cast<std::size_t>(j)];
            for (int c = run.begin; c < run.end; ++c)
              ours[(static_cast<std::size_t>(z) * comps.rows + r) * comps.cols + c] =
                  comps.run_component[static_cast<std::size_t>(j)];
          }
        }
      for (i = 0; i < ref.size(); ++i) {
        if ((ref[i] < 0) != (ours[i] < 0)) consistent = false;
        if (ref[i] < 0 || ours[i] < 0) continue;
        ++sizes[static_cast<std::size_t>(ours[i])];
        auto [a, ins_a] = to_ours.emplace(ref[i], ours[i]);
        auto [b, ins_b] = to_ref.emplace(ours[i], ref[i]);
        if (a->second != ours[i] || b->second != ref[i]) consistent = false;
      }
      BOOST_TEST(consistent, "conn " << conn << " p " << p);
      for (std::size_t c = 0; c < comps.count(); ++c) {
        BOOST_TEST(sizes[c] == comps.components[c].voxels);
        if (c > 0) BOOST_TEST(comps.components[c - 1].voxels >= comps.components[c].voxels);
      }
      // The label map agrees with the run labels for the first 255 components.
      for (int z = 0; z < comps.depth; ++z)
        for (int r = 0; r < comps.rows; ++r)
          for (int c = 0; c < comps.cols; ++c) {
            const int o = ours[(static_cast<std::size_t>(z) * comps.rows + r) * comps.cols + c];
            const int expect = (o >= 0 && o < 255) ? o + 1 : 0;
            if (lm[static_cast<std::size_t>(z)].at<uchar>(r, c) != expect) consistent = false;
          }
      BOOST_TEST(consistent);
    }
}

// Rows longer than the 64-byte blocks of the vectorised run scan, with runs starting and ending
// on and around block boundaries and at both ends of the row, mask values other than 1, and
// enough slices for the blocks of slices that are linked in parallel: every component (voxels,
// bounding box, border flags) against the flood fill, and every array against a one-thread run.
BOOST_AUTO_TEST_CASE(components_vector_scan_and_parallel_blocks_match_flood_fill) {
  const int D = 37, R = 11, C = 200;
  for (int conn : {6, 18, 26})
    for (double p : {0.3, 0.55, 0.8}) {
      Mask m = testsupport::random_mask(D, R, C, p, static_cast<unsigned>(conn * 1000 + p * 100));
      for (int z = 0; z < D; ++z) {
        cv::Mat& s = m[static_cast<std::size_t>(z)];
        s.row(z % R).setTo(0);
        s.row((z + 3) % R).colRange(0, 64).setTo(1);      // a run ending on a block boundary
        s.row((z + 5) % R).colRange(63, 129).setTo(200);  // across two boundaries, other non-zero value
        s.row((z + 7) % R).colRange(128, C).setTo(1);     // from a boundary to the row's end
        s.row((z + 9) % R).colRange(0, C).setTo(z % 2 ? 1 : 0);
      }
      int n_ref = 0;
      const auto ref = bfs_labels(m, conn, n_ref);
      const auto comps = k::label_components(m, static_cast<k::Connectivity>(conn));
      BOOST_TEST_REQUIRE(static_cast<int>(comps.count()) == n_ref, "conn " << conn << " p " << p);
      // Expected per component, through the reference labels.
      std::vector<k::ComponentInfo> want(comps.count());
      std::vector<int> ref_to_ours(static_cast<std::size_t>(n_ref), -1);
      std::vector<bool> seen(comps.count(), false);
      bool same_partition = true;
      for (int z = 0; z < D; ++z)
        for (int r = 0; r < R; ++r) {
          const std::size_t row = static_cast<std::size_t>(z) * R + r;
          int covered = 0;
          for (auto j = comps.row_offset[row]; j < comps.row_offset[row + 1]; ++j) {
            const auto& run = comps.runs[static_cast<std::size_t>(j)];
            const int c = comps.run_component[static_cast<std::size_t>(j)];
            if (run.begin > 0 && m[static_cast<std::size_t>(z)].at<uchar>(r, run.begin - 1)) same_partition = false;
            if (run.end < C && m[static_cast<std::size_t>(z)].at<uchar>(r, run.end)) same_partition = false;
            for (int x = run.begin; x < run.end; ++x) {
              ++covered;
              const int rl = ref[row * C + static_cast<std::size_t>(x)];
              if (rl < 0) { same_partition = false; continue; }
              if (ref_to_ours[static_cast<std::size_t>(rl)] < 0) ref_to_ours[static_cast<std::size_t>(rl)] = c;
              if (ref_to_ours[static_cast<std::size_t>(rl)] != c) same_partition = false;
              auto& w = want[static_cast<std::size_t>(c)];
              if (!seen[static_cast<std::size_t>(c)]) {
                seen[static_cast<std::size_t>(c)] = true;
                w.z0 = w.z1 = z, w.r0 = w.r1 = r, w.c0 = w.c1 = x;
              }
              ++w.voxels;
              w.z0 = std::min(w.z0, z), w.z1 = std::max(w.z1, z), w.r0 = std::min(w.r0, r), w.r1 = std::max(w.r1, r);
              w.c0 = std::min(w.c0, x), w.c1 = std::max(w.c1, x);
              w.touches_inplane_border |= r == 0 || r == R - 1 || x == 0 || x == C - 1;
              w.touches_z_border |= z == 0 || z == D - 1;
            }
          }
          BOOST_TEST(covered == cv::countNonZero(m[static_cast<std::size_t>(z)].row(r)));
        }
      BOOST_TEST(same_partition, "conn " << conn << " p " << p);
      for (std::size_t c = 0; c < comps.count(); ++c) {
        const auto &g = comps.components[c], &w = want[c];
        BOOST_TEST((g.voxels == w.voxels && g.z0 == w.z0 && g.z1 == w.z1 && g.r0 == w.r0 && g.r1 == w.r1 &&
                    g.c0 == w.c0 && g.c1 == w.c1 && g.touches_inplane_border == w.touches_inplane_border &&
                    g.touches_z_border == w.touches_z_border),
                   "component " << c << " conn " << conn << " p " << p);
        if (c > 0) BOOST_TEST(comps.components[c - 1].voxels >= g.voxels);
      }
      // One thread: the same arrays, element for element.
      const int threads = cv::getNumThreads();
      cv::setNumThreads(1);
      const auto one = k::label_components(m, static_cast<k::Connectivity>(conn));
      cv::setNumThreads(threads);
      BOOST_TEST(one.row_offset == comps.row_offset);
      BOOST_TEST(std::equal(one.runs.begin(), one.runs.end(), comps.runs.begin(), comps.runs.end(),
                            [](const auto& a, const auto& b) { return a.begin == b.begin && a.end == b.end; }));
      BOOST_TEST(std::equal(one.run_component.begin(), one.run_component.end(), comps.run_component.begin(),
                            comps.run_component.end()));
    }
}

BOOST_AUTO_TEST_CASE(diagonal_contacts_depend_on_connectivity) {
  Mask m = k::make_mask(2, 3, 3);
  m[0].at<uchar>(0, 0) = 1;
  m[1].at<uchar>(1, 1) = 1;  // corner contact only
  m[0].at<uchar>(2, 2) = 1;
  m[0].at<uchar>(2, 1) = 1;  // face contact with (2,2); edge contact (dz 1, dr 1) with (1,1) on slice 1
  BOOST_TEST(k::label_components(m, k::Connectivity::c6).count() == 3u);
  BOOST_TEST(k::label_components(m, k::Connectivity::c18).count() == 2u);
  BOOST_TEST(k::label_components(m, k::Connectivity::c26).count() == 1u);
}

BOOST_AUTO_TEST_CASE(keep_largest_and_border_removal) {
  Mask m = k::make_mask(6, 20, 20);
  for (int z = 1; z < 5; ++z) m[static_cast<std::size_t>(z)](cv::Rect(5, 5, 6, 6)).setTo(1);   // 144, interior
  for (int z = 2; z < 4; ++z) m[static_cast<std::size_t>(z)](cv::Rect(0, 14, 4, 4)).setTo(1);  // 32, column 0
  m[0](cv::Rect(14, 2, 3, 3)).setTo(1);  // 9, first slice only
  m[3](cv::Rect(15, 15, 2, 2)).setTo(1); // 4, interior
  Mask a = m;
  for (auto& s : a) s = s.clone();
  k::keep_largest_components(a, 2);
  BOOST_TEST(k::count_nonzero(a) == 144u + 32u);
  BOOST_TEST(a[2].at<uchar>(15, 1) == 1);
  Mask b = m;
  for (auto& s : b) s = s.clone();
  k::remove_border_components(b, false);
  BOOST_TEST(k::count_nonzero(b) == 144u + 9u + 4u);
  Mask c = m;
  for (auto& s : c) s = s.clone();
  k::remove_border_components(c, true);
  BOOST_TEST(k::count_nonzero(c) == 144u + 4u);
  Mask d = m;
  for (auto& s : d) s = s.clone();
  k::remove_small_components(d, 10);
  BOOST_TEST(k::count_nonzero(d) == 144u + 32u);
  BOOST_CHECK_THROW(k::keep_largest_components(d, 0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(morphology_3d_matches_brute_force) {
  const Mask m = testsupport::random_mask(6, 12, 14, 0.6, 5);
  const k::StructuringElement se{1, 2, 1, k::Footprint::box};
  Mask er = m, di = m;
  for (auto& s : er) s = s.clone();
  for (auto& s : di) s = s.clone();
  k::erode(er, se);
  k::dilate(di, se);
  bool ok = true;
  for (int z = 0; z < 6; ++z)
    for (int r = 0; r < 12; ++r)
      for (int c = 0; c < 14; ++c) {
        int mn = 1, mx = 0;
        for (int dz = -1; dz <= 1; ++dz)
          for (int dr = -2; dr <= 2; ++dr)
            for (int dc = -1; dc <= 1; ++dc) {
              const int zz = z + dz, rr = r + dr, cc = c + dc;
              if (zz < 0 || zz >= 6 || rr < 0 || rr >= 12 || cc < 0 || cc >= 14) continue;  // neutral
              const int v = m[static_cast<std::size_t>(zz)].at<uchar>(rr, cc);
              mn = std::min(mn, v);
              mx = std::max(mx, v);
            }
        ok = ok && er[static_cast<std::size_t>(z)].at<uchar>(r, c) == mn && di[static_cast<std::size_t>(z)].at<uchar>(r, c) == mx;
      }
  BOOST_TEST(ok);
}

BOOST_AUTO_TEST_CASE(open_removes_specks_and_close_bridges_gaps) {
  Mask m = k::make_mask(3, 30, 30);
  for (auto& s : m) s(cv::Rect(5, 5, 15, 15)).setTo(1);
  m[1].at<uchar>(25, 25) = 1;  // speck
  m[1](cv::Rect(11, 5, 1, 15)).setTo(0);  // 1-pixel slit
  Mask o = m;
  for (auto& s : o) s = s.clone();
  k::open(o, {1, 1, 0, k::Footprint::box});
  BOOST_TEST(o[1].at<uchar>(25, 25) == 0);
  BOOST_TEST(o[1].at<uchar>(12, 15) == 1);
  Mask c = m;
  for (auto& s : c) s = s.clone();
  k::close(c, {1, 1, 1, k::Footprint::box});
  BOOST_TEST(c[1].at<uchar>(12, 11) == 1);  // slit closed
  const auto se = k::element_mm(2.0, {0.5, 1.0, 2.0}, true);
  BOOST_TEST(se.radius_col == 4);
  BOOST_TEST(se.radius_row == 2);
  BOOST_TEST(se.radius_slice == 1);
}

BOOST_AUTO_TEST_CASE(fill_holes_fills_only_enclosed_background) {
  Mask m = k::make_mask(1, 20, 20);
  cv::circle(m[0], {8, 8}, 6, cv::Scalar(1), 2);  // ring: hole inside
  m[0](cv::Rect(14, 0, 6, 6)).setTo(1);
  m[0](cv::Rect(16, 0, 2, 2)).setTo(0);  // notch open to the border: not a hole
  k::fill_holes_2d(m);
  BOOST_TEST(m[0].at<uchar>(8, 8) == 1);
  BOOST_TEST(m[0].at<uchar>(0, 16) == 0);
  BOOST_TEST(m[0].at<uchar>(19, 0) == 0);
}

BOOST_AUTO_TEST_CASE(noisy_ellipsoid_segmentation_dice_and_volume) {
  // Synthetic CT-like phantom: an ellipsoid (+40 HU) and a sphere (+200 HU) in fat-like
  // background (-100 HU), Gaussian noise SD 25 HU, anisotropic spacing. Pipeline: median 3,
  // Otsu, largest components, 2D hole filling; compared with the analytic truth.
  const analysis::Spacing sp{0.7, 0.7, 2.5};
  const int depth = 40, rows = 128, cols = 128;
  const Mask ell = ellipsoid(depth, rows, cols, sp, {40, 45, 50}, {22, 28, 35});
  const Mask sph = ellipsoid(depth, rows, cols, sp, {70, 60, 45}, {12, 12, 12});
  std::mt19937 rng(42);
  std::normal_distribution<double> noise(0, 25);
  std::vector<cv::Mat> img;
  for (int z = 0; z < depth; ++z) {
    cv::Mat s(rows, cols, CV_16S);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        double v = -100;
        if (ell[static_cast<std::size_t>(z)].at<uchar>(r, c)) v = 40;
        if (sph[static_cast<std::size_t>(z)].at<uchar>(r, c)) v = 200;
        s.at<int16_t>(r, c) = static_cast<int16_t>(std::lround(v + noise(rng)));
      }
    img.push_back(s);
  }
  BOOST_TEST_REQUIRE(k::count_nonzero(ell) > 0u);
  Mask truth = k::make_mask(depth, rows, cols);
  for (int z = 0; z < depth; ++z) cv::bitwise_or(ell[static_cast<std::size_t>(z)], sph[static_cast<std::size_t>(z)], truth[static_cast<std::size_t>(z)]);
  k::median_filter(img, 3);
  const double t = k::otsu_threshold(img);
  BOOST_TEST(t > -100);
  BOOST_TEST(t < 40);
  Mask seg = k::threshold_above(img, t);
  k::keep_largest_components(seg, 2, k::Connectivity::c6);
  k::fill_holes_2d(seg);
  const auto m = k::overlap_metrics(truth, seg, sp);
  BOOST_TEST_MESSAGE("otsu " << t << " dice " << m.dice << " rel volume " << m.relative_volume_difference);
  BOOST_TEST(m.dice >= 0.99);
  BOOST_TEST(std::abs(m.relative_volume_difference) <= 0.01);
  // Each object alone: the sphere by a window around its level.
  Mask hot = k::threshold(img, {120, 1e9});
  k::keep_largest_components(hot, 1);
  const auto ms = k::overlap_metrics(sph, hot, sp);
  BOOST_TEST(ms.dice >= 0.99);
  BOOST_TEST(std::abs(ms.relative_volume_difference) <= 0.01);
}

// ---- slices in parallel: equal to a serial reference ------------------------------------------

namespace {

// A random mask whose slices are row ranges of one block (as threshold allocates them), values
// 0, 1 and 255.
Mask block_mask(int depth, int rows, int cols, double p, unsigned seed) {
  const Mask m = testsupport::random_mask(depth, rows, cols, p, seed);
  const cv::Mat block(depth * rows, cols, CV_8U);
  Mask out;
  for (int z = 0; z < depth; ++z) {
    out.push_back(block.rowRange(z * rows, (z + 1) * rows));
    m[static_cast<std::size_t>(z)].copyTo(out.back());
  }
  out.front().at<uchar>(rows / 2, cols / 2) = 255;
  return out;
}

Mask clones(const Mask& m) {
  Mask out;
  for (const auto& s : m) out.push_back(s.clone());
  return out;
}

bool same(const cv::Mat& a, const cv::Mat& b) { return a.size() == b.size() && cv::countNonZero(a != b) == 0; }

// The previous 2D hole filling, one slice at a time.
void fill_holes_reference(cv::Mat& s) {
  cv::Mat pad(s.rows + 2, s.cols + 2, CV_8U, cv::Scalar(0));
  cv::Mat inner = pad(cv::Rect(1, 1, s.cols, s.rows));
  cv::compare(s, 0, inner, cv::CMP_NE);
  cv::floodFill(pad, cv::Point(0, 0), cv::Scalar(128), nullptr, cv::Scalar(0), cv::Scalar(0), 4);
  cv::Mat holes;
  cv::compare(inner, 0, holes, cv::CMP_EQ);
  s.setTo(1, holes);
}

}  // namespace

BOOST_AUTO_TEST_CASE(inplane_morphology_parallel_equals_opencv_per_slice) {
  const std::pair<k::Footprint, int> shapes[] = {
      {k::Footprint::box, cv::MORPH_RECT}, {k::Footprint::ellipse, cv::MORPH_ELLIPSE}, {k::Footprint::cross, cv::MORPH_CROSS}};
  for (auto [fp, shape] : shapes)
    for (auto [rc, rr] : {std::pair{1, 1}, std::pair{2, 1}, std::pair{3, 3}}) {
      const k::StructuringElement se{rc, rr, 0, fp};
      const cv::Mat kern = cv::getStructuringElement(shape, cv::Size(2 * rc + 1, 2 * rr + 1));
      const Mask m = block_mask(13, 29, 31, 0.6, static_cast<unsigned>(shape * 100 + rc * 10 + rr));
      for (int op = 0; op < 4; ++op) {  // erode, dilate, open, close
        Mask got = block_mask(13, 29, 31, 0.6, static_cast<unsigned>(shape * 100 + rc * 10 + rr));
        Mask expected = clones(m);  // standalone slices: nothing outside a slice is read
        for (auto& s : expected) {
          if (op == 0 || op == 2) cv::erode(s, s, kern);
          if (op == 1 || op == 3) cv::dilate(s, s, kern);
          if (op == 2) cv::dilate(s, s, kern);
          if (op == 3) cv::erode(s, s, kern);
        }
        if (op == 0) k::erode(got, se);
        if (op == 1) k::dilate(got, se);
        if (op == 2) k::open(got, se);
        if (op == 3) k::close(got, se);
        for (std::size_t z = 0; z < got.size(); ++z)
          BOOST_TEST(same(got[z], expected[z]), "op " << op << " shape " << shape << " r " << rc << "," << rr << " z " << z);
      }
    }
}

BOOST_AUTO_TEST_CASE(inplane_morphology_does_not_read_the_neighbouring_slices_of_a_block) {
  // Slices of one block: outside a slice is neutral, even where the block holds the next slice.
  const cv::Mat block(3 * 10, 12, CV_8U);
  Mask m{block.rowRange(0, 10), block.rowRange(10, 20), block.rowRange(20, 30)};
  m[0].setTo(1);
  m[1].setTo(0);
  m[2].setTo(1);
  k::erode(m, {1, 1, 0, k::Footprint::box});
  BOOST_TEST(cv::countNonZero(m[0]) == 120);  // no 0 eroded in from slice 1
  BOOST_TEST(cv::countNonZero(m[2]) == 120);
  m[0].setTo(0);
  m[1].setTo(1);
  m[2].setTo(0);
  k::dilate(m, {1, 1, 0, k::Footprint::box});
  BOOST_TEST(cv::countNonZero(m[0]) == 0);  // nothing grown in from slice 1
  BOOST_TEST(cv::countNonZero(m[2]) == 0);
}

BOOST_AUTO_TEST_CASE(fill_holes_parallel_equals_the_serial_implementation) {
  for (double p : {0.5, 0.6, 0.75}) {
    Mask got = block_mask(17, 41, 37, p, static_cast<unsigned>(p * 100));
    Mask expected = clones(got);
    for (auto& s : expected) fill_holes_reference(s);
    k::fill_holes_2d(got);
    for (std::size_t z = 0; z < got.size(); ++z) BOOST_TEST(same(got[z], expected[z]), "p " << p << " z " << z);
    BOOST_TEST(got.front().at<uchar>(20, 18) == 255);  // foreground values are kept
  }
}

BOOST_AUTO_TEST_CASE(fill_holes_of_small_blobs_in_large_planes_equals_the_reference) {
  // The kernel works in each plane's bounding box of the foreground; blobs far from the border
  // (rings with holes, a ring open on one side, specks) must fill as the whole plane would.
  Mask got = k::make_mask(9, 60, 70);
  for (int z = 0; z < 9; ++z) {
    cv::Mat& s = got[static_cast<std::size_t>(z)];
    cv::rectangle(s, cv::Rect(20 + z, 15, 12, 10), cv::Scalar(1));                  // a ring: its inside is a hole
    cv::rectangle(s, cv::Rect(40, 30 + z, 9, 9), cv::Scalar(7), cv::FILLED);      // solid, value kept
    s(cv::Rect(43, 33 + z, 3, 3)).setTo(0);                                       // a hole in it
    cv::rectangle(s, cv::Rect(5, 40, 10, 8), cv::Scalar(1));
    s.at<uchar>(44, 5) = 0;                                                       // a ring open to the outside
    if (z % 3 == 0) s.at<uchar>(2 + z, 66) = 1;                                   // a speck
  }
  got[4].setTo(0);  // an empty plane
  Mask expected = clones(got);
  for (auto& s : expected) fill_holes_reference(s);
  k::fill_holes_2d(got);
  for (std::size_t z = 0; z < got.size(); ++z) BOOST_TEST(same(got[z], expected[z]), "z " << z);
  BOOST_TEST(got[1].at<uchar>(20, 26) == 1);  // the ring's inside
  BOOST_TEST(got[1].at<uchar>(44, 8) == 0);   // the open ring's inside stays background
}

BOOST_AUTO_TEST_CASE(plane_hole_filling_equals_the_reference_per_plane) {
  // Coronal and sagittal planes, with and without the hole size limit, against filling each
  // gathered plane with the reference and keeping the holes of at most max pixels.
  for (const auto axis : {k::PlaneAxis::coronal, k::PlaneAxis::sagittal})
    for (const std::int64_t max_px : {std::int64_t{0}, std::int64_t{6}})
      for (unsigned seed : {3u, 9u}) {
        const int d = 14, rows = 23, cols = 27;
        Mask got = k::make_mask(d, rows, cols);
        const Mask noise = testsupport::random_mask(d, rows, cols, 0.55, seed);
        for (int z = 2; z < 12; ++z)  // a block of noise in the middle: planes with empty margins
          noise[static_cast<std::size_t>(z)](cv::Rect(6, 5, 15, 12)).copyTo(got[static_cast<std::size_t>(z)](cv::Rect(6, 5, 15, 12)));
        Mask expected = clones(got);
        const bool coronal = axis == k::PlaneAxis::coronal;
        const int planes = coronal ? rows : cols, width = coronal ? cols : rows;
        for (int p = 0; p < planes; ++p) {
          cv::Mat pl(d, width, CV_8U);
          for (int z = 0; z < d; ++z)
            for (int i = 0; i < width; ++i)
              pl.at<uchar>(z, i) = coronal ? expected[static_cast<std::size_t>(z)].at<uchar>(p, i) : expected[static_cast<std::size_t>(z)].at<uchar>(i, p);
          cv::Mat before = pl.clone(), holes, comps, stats, centroids;
          fill_holes_reference(pl);
          cv::compare(pl, before, holes, cv::CMP_NE);
          cv::connectedComponentsWithStats(holes, comps, stats, centroids, 4, CV_32S);
          for (int z = 0; z < d; ++z)
            for (int i = 0; i < width; ++i) {
              const int c = comps.at<int>(z, i);
              if (!c || (max_px > 0 && stats.at<int>(c, cv::CC_STAT_AREA) > max_px)) continue;
              (coronal ? expected[static_cast<std::size_t>(z)].at<uchar>(p, i) : expected[static_cast<std::size_t>(z)].at<uchar>(i, p)) = 1;
            }
        }
        k::fill_holes_2d(got, axis, max_px);
        for (int z = 0; z < d; ++z)
          BOOST_TEST(same(got[static_cast<std::size_t>(z)], expected[static_cast<std::size_t>(z)]),
                     (coronal ? "coronal" : "sagittal") << " max " << max_px << " seed " << seed << " z " << z);
      }
}

BOOST_AUTO_TEST_CASE(binarise_maps_nonzero_to_one) {
  Mask m = k::make_mask(3, 16, 16);
  for (auto& s : m) cv::randu(s, cv::Scalar(0), cv::Scalar(256));
  m[1].setTo(0);
  Mask expected = clones(m);
  for (auto& s : expected) {
    cv::compare(s, 0, s, cv::CMP_NE);
    cv::bitwise_and(s, cv::Scalar(1), s);
  }
  k::binarise(m);
  for (std::size_t z = 0; z < m.size(); ++z) BOOST_TEST(same(m[z], expected[z]));
}
