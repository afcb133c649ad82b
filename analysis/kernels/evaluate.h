#pragma once
// Evaluation kernels: overlap between a reference and a test mask in physical space.
// Classification metrics over a labelled set (accuracy, sensitivity, specificity, ROC AUC with
// mid-rank ties) are analysis/kernels/classify_metrics.h; test_evaluate_classification.cpp
// cross-checks them against SciPy.
//
// Surface definition (used by every surface distance here and by the SciPy cross-check,
// tests/scripts/evaluate_overlap.py): the surface of a mask is its set of foreground voxels with
// at least one 6-neighbour (face neighbour) in the background; voxels outside the volume count as
// background. Distances are between voxel centres, in mm, with the anisotropic spacing.
#include <cstdint>
#include <vector>

#include "analysis/kernels/types.h"

namespace analysis::kernels {

struct OverlapMetrics {
  std::int64_t reference_voxels = 0, test_voxels = 0, intersection_voxels = 0;
  std::int64_t reference_surface_voxels = 0, test_surface_voxels = 0;
  double dice = 0;                    // 2 |R n T| / (|R| + |T|); 1 when both are empty
  double jaccard = 0;                 // |R n T| / |R u T|; 1 when both are empty
  double reference_volume_mm3 = 0;
  double test_volume_mm3 = 0;
  double volume_difference_mm3 = 0;   // V_test - V_ref
  double relative_volume_difference = 0;  // (V_test - V_ref) / V_ref (NaN if V_ref = 0)
  // Symmetric surface distances over the pooled directed distances (every reference surface
  // voxel to the nearest test surface voxel, and every test surface voxel to the nearest
  // reference one). All 0 when both masks are empty, +infinity when exactly one is.
  double hausdorff_mm = 0;            // maximum
  double hausdorff95_mm = 0;          // 95th percentile, linear interpolation (NumPy default)
  double mean_surface_distance_mm = 0;  // mean (average symmetric surface distance, ASSD)
};

// Both masks must have the same shape. Works on the bounding box of the two masks; memory: two
// bytes and one float per voxel of that box, plus one double per surface voxel (exact Euclidean
// distance transform, Felzenszwalb-Huttenlocher, separable per axis).
OverlapMetrics overlap_metrics(const Mask& reference, const Mask& test, const Spacing& spacing);

// Surface voxels (definition above) as a 0/1 mask.
Mask surface_voxels(const Mask& mask);

// Squared Euclidean distance (mm^2) from every voxel of a box to the nearest non-zero voxel of
// `features` (a stack of CV_8U slices), computed exactly and separably with the given spacing.
// Returns one CV_32F matrix per slice; +infinity where there is no feature at all.
std::vector<cv::Mat> squared_distance_transform(const std::vector<cv::Mat>& features, const Spacing& spacing);

}  // namespace analysis::kernels
