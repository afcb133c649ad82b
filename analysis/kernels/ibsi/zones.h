#pragma once
// IBSI 1 zone families: the grey level size zone matrix (GLSZM, "szm_", manual section 3.8) and the
// grey level distance zone matrix (GLDZM, "dzm_", section 3.9), each aggregated 2D (per slice,
// features averaged over the slices), 2.5D (the slices' matrices merged) and 3D (the volume).
//
// A zone is a connected set of voxels of the same grey level inside the intensity mask (level > 0):
// 8-connected within a slice (2D, 2.5D), 26-connected in the volume (3D). GLSZM counts zones by grey
// level and size (voxels); GLDZM by grey level and distance to the ROI edge, the smallest distance
// of the zone's voxels. The distance of a voxel is its city block distance (4-connected in a slice,
// 6-connected in 3D) to the nearest voxel outside the morphological mask or outside the grid, so a
// voxel on the edge has distance 1. The morphological mask defines the edge as in the reference
// implementation (mirp), so voxels that re-segmentation removed do not make an edge inside the ROI.
//
// Implementation: zones by union-find on runs (maximal sets of one grey level along x) over the
// bounding box (per slice for 2D): a run joins the touching runs of its level in the previous row
// and the previous slice's three nearest rows, found by a branch-free merge walk of the two rows;
// the sets of two slices are kept and complete zones go to the matrices after each slice. Distance
// maps by a two-pass city block chamfer transform; the 3D pass runs beside the slices on OpenCV's
// threads. Matrices are kept sparse, as (level, size, count) entries: a zone may have millions of
// voxels. Each thread keeps its slice-sized buffers between calls.
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "analysis/kernels/ibsi/aggregation.h"
#include "analysis/kernels/ibsi/image.h"

namespace analysis::kernels::ibsi {

std::span<const FeatureDef> glszm_definitions();
// Appends the 16 GLSZM features per aggregation in scope ("szm_sze_2D", ..., "szm_zs_entr_3D").
// Throws std::invalid_argument on bad levels (check_levels).
void glszm_features(const Levels& levels, const TextureScope& scope, Features& out);

std::span<const FeatureDef> gldzm_definitions();
// Appends the 16 GLDZM features per aggregation in scope. `morph_mask` is the morphological mask
// (one 0/1 per voxel of the grid) that defines the ROI edge; it must contain every voxel with a
// grey level. Throws std::invalid_argument on bad levels or a mismatched mask.
void gldzm_features(const Levels& levels, const std::vector<std::uint8_t>& morph_mask, const TextureScope& scope,
                    Features& out);

// Both families from one labelling of the zones (what glszm_features followed by gldzm_features give).
void zone_features(const Levels& levels, const std::vector<std::uint8_t>& morph_mask, const TextureScope& scope,
                   Features& out);
void zone_features(const CheckedLevels& levels, const std::vector<std::uint8_t>& morph_mask, const TextureScope& scope,
                   Features& out);  // no check_levels pass

namespace detail {
// One cell of a sparse texture matrix: `count` (zones, neighbourhoods) of grey level i and column j
// (zone size, distance, dependence count), j >= 1.
struct MatrixEntry {
  int i = 0;
  std::int64_t j = 0;
  double count = 0;
};

// The features that GLSZM, GLDZM and NGLDM share, in this order: small j emphasis, large j emphasis,
// low and high grey level emphasis, the four combined emphases (small j low grey, small j high grey,
// large j low grey, large j high grey), grey level non-uniformity and its normalised form, j
// non-uniformity and its normalised form, percentage (sum of counts / n_voxels), grey level variance,
// j variance, j entropy, j energy. Entries must have distinct (i, j); any order. Empty -> NaN.
using MatrixFeatures = std::array<double, 17>;
MatrixFeatures sparse_matrix_features(std::span<const MatrixEntry> entries, double n_voxels);

// Sums the counts of equal (i, j) cells: the 2.5D merge of slice matrices. Sorts by (i, j).
std::vector<MatrixEntry> merge_entries(std::vector<MatrixEntry> entries);

// The distance transform's scan along x of one row of n values (the GLDZM distance map):
// forward, d[x] = min(d[x], d[x - 1] + 1) for x = 0..n-1 with d[-1] = 0 (the voxel before the row
// is outside); backward, d[x] = min(d[x], d[x + 1] + 1) for x = n-1..0 with d[n] = 0. Eight
// values at a time (a min-plus prefix within each vector, then the carry from the one before);
// the same as the serial loop when every value is below 65535 (the sums saturate, not wrap).
void min_plus_scan(std::uint16_t* d, int n, bool backward);
}  // namespace detail

}  // namespace analysis::kernels::ibsi
