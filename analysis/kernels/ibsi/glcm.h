#pragma once
// IBSI 1 grey level co-occurrence matrix (GLCM) features (the manual, section "Grey level
// co-occurrence based features", 25 features), in the six aggregation methods of aggregation.h:
// 2D_avg, 2D_comb, 2_5D_avg, 2_5D_comb (scope.two_d) and 3D_avg, 3D_comb (scope.three_d).
//
// Matrices: Chebyshev distance 1, symmetric (each voxel pair counted in both orders), 4 in-plane
// directions (2D, 2.5D) or 13 directions (3D), Ng x Ng with Ng = levels.ng (rows and columns of
// levels absent from the ROI stay zero). A pair counts only when both voxels are in the intensity
// mask (level > 0).
//
// Undefined values:
//  - a matrix without any voxel pair (a slice whose ROI has no neighbours in a direction) is left
//    out of the averages (as MIRP); when an aggregation has no non-empty matrix at all (e.g. a
//    one-voxel ROI) every feature of it is NaN;
//  - correlation of a matrix whose marginal variance is 0 (one grey level) is 1 (MIRP, pyradiomics:
//    every pair has equal levels);
//  - information correlation 1 of a matrix with marginal entropy HX = 0 is 0 (0/0; as pyradiomics,
//    and consistent with information correlation 2, which is 0 there by its formula; MIRP gives 1);
//  - inverse variance of a matrix without off-diagonal cells is left out of the averages (MIRP); when
//    no matrix of the aggregation has one it is 0 (the manual's sum over k >= 1 is empty).
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "analysis/kernels/ibsi/aggregation.h"
#include "analysis/kernels/ibsi/image.h"

namespace analysis::kernels::ibsi {

// The 25 features, in the manual's order (base tags "cm_joint_max", ...).
std::span<const FeatureDef> glcm_definitions();

// Appends "cm_<feature>_<suffix>" for every feature and every aggregation in scope.
// Throws std::invalid_argument on bad levels (check_levels).
void glcm_features(const Levels& levels, const TextureScope& scope, Features& out);
void glcm_features(const CheckedLevels& levels, const TextureScope& scope, Features& out);  // no check_levels pass

namespace detail {

// The bounding box of the ROI (level > 0) of a Levels volume, inclusive, and per row of the box the
// range of x with a level > 0, so that the texture kernels visit only the ROI's rows and read
// neighbours without leaving the box (every voxel outside it has level 0). Shared by the GLCM and
// GLRLM kernels. Kept to the grid's own memory: a padded copy of a lung-sized box is tens of MB of
// fresh pages, whose first-touch faults cost more than the whole matrix pass on a virtual machine.
struct RoiBox {
  int x0 = 0, x1 = -1, y0 = 0, y1 = -1, z0 = 0, z1 = -1;
  std::vector<std::pair<int, int>> extent;  // [(z - z0) * (y1 - y0 + 1) + y - y0]: [first, last + 1), {0, 0}: none
  const std::pair<int, int>& row(int y, int z) const {
    return extent[static_cast<std::size_t>(z - z0) * static_cast<std::size_t>(y1 - y0 + 1) + static_cast<std::size_t>(y - y0)];
  }
};

// Throws std::invalid_argument for an empty ROI.
RoiBox roi_box(const Levels& levels);

}  // namespace detail

}  // namespace analysis::kernels::ibsi
