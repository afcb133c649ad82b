#pragma once
// Segmentation kernels on slice stacks: thresholds, Otsu, 3D connected components, component
// selection, morphology and hole filling. Masks are analysis::Mask (CV_8U, non-zero = inside).
//
// Memory: components are labelled on a run-length encoding of the mask (one entry per run of
// foreground voxels along a row), so no int32 label volume is ever allocated; filters that
// select components rewrite the mask in place.
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/types.h"

namespace analysis::kernels {

// ---- thresholds ---------------------------------------------------------------------------

// Closed interval [lo, hi] of real-world values (HU for CT).
struct Window {
  double lo = 0;
  double hi = 0;
};

// Common CT windows in HU (inclusive), usable with threshold().
namespace hu {
inline constexpr Window air{-1e9, -900.0};  // air and everything below
inline constexpr Window lung{-950.0, -500.0};
inline constexpr Window fat{-190.0, -30.0};
inline constexpr Window soft_tissue{-100.0, 300.0};
inline constexpr Window body{-500.0, 1e6};           // patient body versus surrounding air
inline constexpr Window bone{300.0, 1e6};
}  // namespace hu

// Mask of voxels with lo <= value <= hi. Slices: CV_8U, CV_16S, CV_16U or CV_32F.
Mask threshold(const std::vector<cv::Mat>& image, Window window);

// Same, writing into `out`, whose memory is reused when it already has the image's shape and
// CV_8U type (else it is reallocated). For pipelines that threshold repeatedly.
void threshold_into(const std::vector<cv::Mat>& image, Window window, Mask& out);

// Mask of voxels with value > t (e.g. with the Otsu threshold).
Mask threshold_above(const std::vector<cv::Mat>& image, double t);

// Otsu threshold over the histogram of the whole volume (optionally only voxels inside `roi`).
// CV_8U/CV_16S/CV_16U: exact histogram with one bin per integer value; CV_32F: `bins` equal bins
// between the minimum and maximum. Returns t such that "foreground" = value > t, i.e. the
// largest value of the lower class (the upper edge of its last bin for CV_32F).
// Throws std::invalid_argument if there are no voxels.
double otsu_threshold(const std::vector<cv::Mat>& image, const Mask* roi = nullptr, int bins = 4096);

// ---- connected components -----------------------------------------------------------------

// 6: faces, 18: faces and edges, 26: faces, edges and corners.
enum class Connectivity { c6 = 6, c18 = 18, c26 = 26 };

struct ComponentInfo {
  std::int64_t voxels = 0;
  int z0 = 0, z1 = 0, r0 = 0, r1 = 0, c0 = 0, c1 = 0;  // inclusive bounding box
  bool touches_inplane_border = false;  // row 0, last row, column 0 or last column
  bool touches_z_border = false;        // first or last slice
};

// std::allocator whose vector::resize leaves new elements default-initialised (for int and Run:
// not written). label_components sizes its per-run arrays first and then writes every element on
// OpenCV's threads, so a fresh array's pages are first touched by all threads, not zeroed by one.
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    if constexpr (sizeof...(A) == 0) ::new (static_cast<void*>(p)) U;
    else ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};

// Result of 3D labelling: the runs of the mask and, for each run, its component index.
// Components are numbered 0..n-1 by decreasing voxel count (ties: first in raster order).
struct Components {
  struct Run {
    std::int32_t begin, end;  // columns [begin, end)
  };
  int depth = 0, rows = 0, cols = 0;
  std::vector<std::int64_t> row_offset;  // runs of row (z, r) are runs[row_offset[z*rows+r] .. [+1])
  std::vector<Run, UninitializedAllocator<Run>> runs;
  std::vector<std::int32_t, UninitializedAllocator<std::int32_t>> run_component;
  std::vector<ComponentInfo> components;

  std::size_t count() const { return components.size(); }
};

// Labels the 3D connected components of `mask`. O(voxels) scan plus near-linear union-find on runs.
Components label_components(const Mask& mask, Connectivity connectivity = Connectivity::c26);

// Writes `mask` so that only voxels of components with keep[i] == true remain (set to 1).
// `mask` must have the shape the components were computed from.
void select_components(Mask& mask, const Components& comps, const std::vector<bool>& keep);

// Label map with label i+1 for component i (i < 255; larger indices are dropped), i.e. label 1
// is the largest component.
LabelVolume label_map(const Components& comps, int max_labels = 255);

// Keeps the k largest components of `mask` (in place). k >= 1.
void keep_largest_components(Mask& mask, int k, Connectivity connectivity = Connectivity::c26);

// Removes (in place) every component touching the in-plane border of the volume (first/last row
// or column of any slice) and, if z_border_counts, the first or last slice.
void remove_border_components(Mask& mask, bool z_border_counts = false,
                              Connectivity connectivity = Connectivity::c26);

// Removes (in place) components smaller than min_voxels.
void remove_small_components(Mask& mask, std::int64_t min_voxels, Connectivity connectivity = Connectivity::c26);

// ---- morphology ---------------------------------------------------------------------------

enum class Footprint { box, ellipse, cross };

// Structuring element: in-plane footprint of (2*radius_col+1) x (2*radius_row+1) pixels, extended
// over 2*radius_slice+1 slices (a prism: box, elliptic cylinder or cross). radius_slice = 0 is
// a pure 2D per-slice operation. Voxels outside the volume are neutral (they never erode the
// border and never dilate into it); in-plane, that holds per slice also when the slices are row
// ranges of one block. The in-plane part runs slices on OpenCV's threads (open and close do both
// steps per slice in one pass when radius_slice is 0); the along-z part is serial.
struct StructuringElement {
  int radius_col = 1;
  int radius_row = 1;
  int radius_slice = 0;
  Footprint footprint = Footprint::ellipse;
};

// Builds an element from radii in mm (rounded to the nearest voxel count).
StructuringElement element_mm(double radius_mm, const Spacing& spacing, bool three_d,
                              Footprint footprint = Footprint::ellipse);

void erode(Mask& mask, const StructuringElement& se);
void dilate(Mask& mask, const StructuringElement& se);
void open(Mask& mask, const StructuringElement& se);   // erode then dilate
void close(Mask& mask, const StructuringElement& se);  // dilate then erode

// Fills, per slice, background regions not 4-connected to the slice border (2D holes), writing 1
// into them (other voxels keep their values). Slices run on OpenCV's threads.
void fill_holes_2d(Mask& mask);

// The same in the planes across the slices: PlaneAxis::coronal fills, for every row, the plane
// of (slice, column); PlaneAxis::sagittal, for every column, the plane of (slice, row). Catches
// what runs within the slices, e.g. a vessel lying in the slice plane that 2D hole filling per
// slice cannot see as enclosed. Only holes of at most max_hole_px pixels of that plane are
// filled (0: all), so that e.g. a nodule the lung surrounds in a sagittal plane stays a hole.
// Writes 1 into holes. Memory: one plane per thread.
enum class PlaneAxis { coronal, sagittal };
void fill_holes_2d(Mask& mask, PlaneAxis axis, std::int64_t max_hole_px = 0);

// Normalises a mask in place to 0/1.
void binarise(Mask& mask);

}  // namespace analysis::kernels
