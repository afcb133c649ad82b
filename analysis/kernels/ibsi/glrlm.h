#pragma once
// IBSI 1 grey level run length matrix (GLRLM) features (the manual, section "Grey level run length
// based features", 16 features), in the six aggregation methods of aggregation.h: 2D_avg, 2D_comb,
// 2_5D_avg, 2_5D_comb (scope.two_d) and 3D_avg, 3D_comb (scope.three_d).
//
// A run is a maximal line of voxels of one grey level along a direction, all in the intensity mask
// (level > 0); 4 in-plane directions (2D, 2.5D) or 13 directions (3D). The matrix has Ng = levels.ng
// rows (levels absent from the ROI stay zero) and one column per run length.
//
// Run percentage divides the number of runs by the number of voxels the matrix was counted over:
// for a matrix merged over m directions that is m times the voxels of the ROI (or of the slice),
// as the manual asks for merged matrices and MIRP does. A slice without ROI voxels has empty
// matrices and is left out of the 2D averages; a non-empty ROI always has runs (a lone voxel is a
// run of length 1 in every direction), so no feature is ever undefined.
#include <span>

#include "analysis/kernels/ibsi/aggregation.h"
#include "analysis/kernels/ibsi/image.h"

namespace analysis::kernels::ibsi {

// The 16 features, in the manual's order (base tags "rlm_sre", ...).
std::span<const FeatureDef> glrlm_definitions();

// Appends "rlm_<feature>_<suffix>" for every feature and every aggregation in scope.
// Throws std::invalid_argument on bad levels (check_levels).
void glrlm_features(const Levels& levels, const TextureScope& scope, Features& out);
void glrlm_features(const CheckedLevels& levels, const TextureScope& scope, Features& out);  // no check_levels pass

}  // namespace analysis::kernels::ibsi
