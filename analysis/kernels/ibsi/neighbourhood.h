#pragma once
// IBSI 1 neighbourhood families: the neighbourhood grey tone difference matrix (NGTDM, "ngt_", the
// manual's section 3.10) and the neighbouring grey level dependence matrix (NGLDM, "ngl_", section
// 3.11), each aggregated 2D (per slice, features averaged over the slices), 2.5D (the slices'
// matrices merged) and 3D (the volume).
//
// The neighbourhood of a voxel is the voxels at Chebyshev distance 1 (8 in a slice, 26 in the volume),
// without the voxel itself. Neighbours outside the intensity mask (level 0) or outside the grid are
// not part of it (IBSI: the neighbourhood average is taken over the W neighbours that are in the ROI).
//  - NGTDM: s_i sums |i - average of the neighbourhood| over the voxels of grey level i; n_i counts
//    them. A voxel without any neighbour in the ROI is left out (its average is undefined; as the
//    reference implementation, mirp). Coarseness is 10^6 when sum p_i s_i is (near) 0; contrast,
//    busyness and strength are 0 when their denominators are 0 (a single grey level).
//  - NGLDM: with coarseness parameter alpha = 0, a neighbour is dependent when it has the same grey
//    level; the dependence count j is 1 + the number of dependent neighbours (the voxel itself counts,
//    so j >= 1). Every voxel of the ROI is a neighbourhood.
// One pass over the ROI computes both the 2D and 3D neighbourhoods, in parallel over slices.
#include <span>

#include "analysis/kernels/ibsi/aggregation.h"
#include "analysis/kernels/ibsi/image.h"

namespace analysis::kernels::ibsi {

std::span<const FeatureDef> ngtdm_definitions();
// Appends the 5 NGTDM features per aggregation in scope ("ngt_coarseness_2D", ...). Throws
// std::invalid_argument on bad levels (check_levels).
void ngtdm_features(const Levels& levels, const TextureScope& scope, Features& out);

std::span<const FeatureDef> ngldm_definitions();
// Appends the 17 NGLDM features per aggregation in scope ("ngl_lde_2D", ...).
void ngldm_features(const Levels& levels, const TextureScope& scope, Features& out);

// Both families from one pass (what ngtdm_features followed by ngldm_features give).
void neighbourhood_features(const Levels& levels, const TextureScope& scope, Features& out);
void neighbourhood_features(const CheckedLevels& levels, const TextureScope& scope, Features& out);  // no check_levels pass

}  // namespace analysis::kernels::ibsi
