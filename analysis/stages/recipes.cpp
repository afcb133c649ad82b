#include "analysis/stages/recipes.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>

namespace analysis::recipes {
namespace {

using kernels::Components;

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

// labels := to where labels == from and mask != 0, within the views.
void relabel_where(std::vector<cv::Mat>& labels, const std::vector<cv::Mat>& mask, int from, int to) {
  cv::Mat cond;
  for (std::size_t z = 0; z < labels.size(); ++z) {
    cv::compare(labels[z], from, cond, cv::CMP_EQ);
    cv::bitwise_and(cond, mask[z], cond);
    labels[z].setTo(to, cond);
  }
}

constexpr std::uint8_t kJoined = 255;  // temporary label of a component holding both lungs

// Resolves kJoined voxels slice by slice: each 2D blob (8-connected) that lies essentially on one
// side of the mid-sagittal plane (>= 85 % of its voxels) goes to that side's lung as a whole, so
// a lung reaching over the mid-plane (e.g. the right lung behind the heart) keeps its part;
// blobs that are really shared (trachea, carina, a junction line) are cut at the plane.
void split_joined(LabelVolume& labels, const kernels::ComponentInfo& info, const XMap& xm, double mid_x) {
  const cv::Rect box(info.c0, info.r0, info.c1 - info.c0 + 1, info.r1 - info.r0 + 1);
  cv::Mat joined, blobs;
  for (int z = info.z0; z <= info.z1; ++z) {
    cv::Mat view = labels[z](box);
    cv::compare(view, kJoined, joined, cv::CMP_EQ);
    const int n = cv::connectedComponents(joined, blobs, 8, CV_32S);
    std::vector<std::int64_t> count(n, 0), left(n, 0);
    for (int r = 0; r < box.height; ++r) {
      const int* b = blobs.ptr<int>(r);
      const double base = xm.base(box.y + r, z);
      for (int c = 0; c < box.width; ++c)
        if (b[c]) ++count[b[c]], left[b[c]] += base + xm.a * (box.x + c) > mid_x;
    }
    std::vector<int> side(n, 0);  // kLeftLung, kRightLung, or 0: cut at the plane
    for (int i = 1; i < n; ++i) {
      const double f = static_cast<double>(left[i]) / static_cast<double>(count[i]);
      side[i] = f >= 0.85 ? kLeftLung : f <= 0.15 ? kRightLung : 0;
    }
    for (int r = 0; r < box.height; ++r) {
      const int* b = blobs.ptr<int>(r);
      std::uint8_t* l = view.ptr<std::uint8_t>(r);
      const double base = xm.base(box.y + r, z);
      for (int c = 0; c < box.width; ++c) {
        if (!b[c]) continue;
        const int sd = side[b[c]];
        l[c] = static_cast<std::uint8_t>(sd ? sd : (base + xm.a * (box.x + c) > mid_x ? kLeftLung : kRightLung));
      }
    }
  }
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

RecipeResult segment_ct_chest(const std::vector<cv::Mat>& image, const dicom::Geometry& geom, const ChestParams& p) {
  kernels::check_stack(image, -1, "ct-chest segmentation");
  const Spacing sp = spacing_of(geom);
  kernels::check_spacing(sp, "ct-chest segmentation");
  const double voxel_ml = sp.voxel_volume() / 1000.0;
  RecipeResult out;

  // 1. Body: largest component above body_min_hu, 2D holes (lungs, airways) filled. The mask
  //    itself becomes the label map (values 0/1 = background/body).
  out.labels = kernels::threshold(image, {p.body_min_hu, 1e30});
  LabelVolume& labels = out.labels;
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
  // Everything below works in the body's bounding box (views, no copies): lungs and bone are
  // inside the body, and the box's border is the image border wherever the body reaches it.
  const int z_off = body.z0, r_off = body.r0, c_off = body.c0;
  const cv::Rect box(c_off, r_off, body.c1 - body.c0 + 1, body.r1 - body.r0 + 1);
  std::vector<cv::Mat> lbox, ibox;  // label map and image in the box
  for (int z = body.z0; z <= body.z1; ++z) {
    lbox.push_back(labels[z](box));
    ibox.push_back(image[z](box));
  }
  const int depth = static_cast<int>(lbox.size()), rows = box.height, cols = box.width;
  kernels::fill_holes_2d(lbox);  // writes 1 into holes: the map stays 0/1

  // Mid-sagittal plane: mean patient x of the body (every other row is plenty for a mean).
  const XMap xm(geom);
  double sum_x = 0, n_body = 0;
  for (int z = 0; z < depth; ++z)
    for (int r = 0; r < rows; r += 2) {
      const std::uint8_t* l = lbox[z].ptr<std::uint8_t>(r);
      std::int64_t n = 0, sc = 0;
      for (int c = 0; c < cols; ++c) n += l[c], sc += static_cast<std::int64_t>(l[c]) * c;  // values 0/1
      sum_x += static_cast<double>(n) * xm.base(r + r_off, z + z_off) + xm.a * static_cast<double>(sc + n * c_off);
      n_body += static_cast<double>(n);
    }
  const double mid_x = sum_x / n_body;

  // 2. Lungs: air inside the body, in-plane border components dropped.
  Mask work = kernels::threshold(ibox, {-1e30, p.air_max_hu});
  for (int z = 0; z < depth; ++z) cv::bitwise_and(work[z], lbox[z], work[z]);
  bool have_left = false, have_right = false;
  std::array<int, 6> lung_box{depth, -1, rows, -1, cols, -1};  // z0 z1 r0 r1 c0 c1 of both lungs (box)
  {
    const Components comps = kernels::label_components(work, p.lung_connectivity);
    const std::size_t n = comps.count();
    std::vector<std::int64_t> left(n, 0);  // voxels with patient x > mid (patient left)
    for_each_run(comps, [&](int z, int r, int b, int e, int k) {
      left[k] += count_above(xm.base(r + r_off, z + z_off), xm.a, mid_x, b + c_off, e + c_off);
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
        out.notes.push_back("lungs joined (airways or junction); split slice by slice at the mid-sagittal plane");
      } else {
        const bool a_left = frac_left >= 0.5;
        lung_label[a] = a_left ? kLeftLung : kRightLung;
        for (std::size_t j = 1; j < cand.size(); ++j) {
          const int b = cand[j];
          const bool b_left = 2 * left[b] >= comps.components[b].voxels;
          if (b_left != a_left) {
            lung_label[b] = b_left ? kLeftLung : kRightLung;
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
    for_each_run(comps, [&](int z, int r, int b, int e, int k) {
      const int l = lung_label[k];
      if (l == 0) return;
      std::uint8_t* row = lbox[z].ptr<std::uint8_t>(r);
      // A joined component is marked and resolved per slice below.
      std::fill(row + b, row + e, static_cast<std::uint8_t>(l > 0 ? l : kJoined));
    });
    for (std::size_t i = 0; i < n; ++i)
      if (lung_label[i] < 0) {
        kernels::ComponentInfo abs = comps.components[i];  // in label-map coordinates
        abs.z0 += z_off, abs.z1 += z_off, abs.r0 += r_off, abs.r1 += r_off, abs.c0 += c_off, abs.c1 += c_off;
        split_joined(labels, abs, xm, mid_x);
      }
  }

  // 3. Per lung, in the lungs' bounding box: optional closing, then 2D hole filling (vessels and
  //    airway walls inside the lung belong to it); filled voxels are taken from the body only.
  const int pad = p.lung_close_radius_mm > 0
                      ? static_cast<int>(std::ceil(p.lung_close_radius_mm / std::min(sp.col, sp.row))) + 1
                      : 1;
  for (int lung : {kRightLung, kLeftLung}) {
    if (!p.fill_lung_holes && p.lung_close_radius_mm <= 0) break;
    if (!(lung == kLeftLung ? have_left : have_right)) continue;
    const int z0 = lung_box[0], z1 = lung_box[1], r0 = lung_box[2], r1 = lung_box[3], c0 = lung_box[4],
              c1 = lung_box[5];
    const int x0 = std::max(0, c0 - pad), y0 = std::max(0, r0 - pad);
    const cv::Rect roi(x0, y0, std::min(cols, c1 + pad + 1) - x0, std::min(rows, r1 + pad + 1) - y0);
    std::vector<cv::Mat> views;
    Mask lung_mask = kernels::make_mask(z1 - z0 + 1, roi.height, roi.width);
    for (int z = z0; z <= z1; ++z) {
      views.push_back(lbox[z](roi));
      cv::compare(views.back(), lung, lung_mask[z - z0], cv::CMP_EQ);
    }
    kernels::binarise(lung_mask);
    if (p.lung_close_radius_mm > 0) kernels::close(lung_mask, kernels::element_mm(p.lung_close_radius_mm, sp, false));
    if (p.fill_lung_holes) kernels::fill_holes_2d(lung_mask);
    for (auto& m : lung_mask) m *= 255;
    relabel_where(views, lung_mask, kBody, lung);
  }

  // 4. Bone: dense voxels of the body outside the lungs.
  kernels::threshold_into(ibox, {p.bone_min_hu, 1e30}, work);
  {
    cv::Mat in_body;
    for (int z = 0; z < depth; ++z) {
      cv::compare(lbox[z], kBody, in_body, cv::CMP_EQ);
      cv::bitwise_and(work[z], in_body, work[z]);
    }
  }
  const auto min_bone = static_cast<std::int64_t>(std::ceil(p.min_bone_ml / voxel_ml));
  if (min_bone > 1) kernels::remove_small_components(work, min_bone, kernels::Connectivity::c26);
  const bool have_bone = kernels::count_nonzero(work) > 0;
  if (have_bone)
    for (int z = 0; z < depth; ++z) lbox[z].setTo(kBone, work[z]);
  work.clear();

  // Present labels, without another pass: the body keeps most of its voxels (lungs and bone are
  // inside it), each lung that was assigned keeps its component.
  out.present_labels.push_back(kBody);
  if (have_right) out.present_labels.push_back(kRightLung);
  if (have_left) out.present_labels.push_back(kLeftLung);
  if (have_bone) out.present_labels.push_back(kBone);
  return out;
}

}  // namespace analysis::recipes
