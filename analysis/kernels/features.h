#pragma once
// Per-segment radiomic features to the IBSI 1 definitions (Zwanenburg et al., "The Image Biomarker
// Standardisation Initiative", Radiology 2020; reference manual arXiv:1612.07003). Every field
// carries its IBSI identifier. Each is checked against the IBSI 1 digital phantom reference
// values (tests/unit/test_features_ibsi_phantom.cpp).
//
// Conventions: `image` is one CV_8U/CV_16S/CV_16U/CV_32F matrix per slice (real-world values),
// `roi` a Mask of the same shape (non-zero = inside). The intensity and morphological masks
// are the same here (no re-segmentation). Throws std::invalid_argument on an empty ROI.
#include <optional>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/types.h"

namespace analysis::kernels {

// Morphological features (IBSI 1 section 3.1), from the marching-cubes mesh (mesh.h).
struct MorphologyFeatures {
  double volume_mesh_mm3 = 0;       // RNU0  Volume (mesh), "morph_volume"
  double volume_voxel_mm3 = 0;      // YEKZ  Approximate volume (voxel counting), "morph_vol_approx"
  double surface_area_mm2 = 0;      // C0JK  Surface area (mesh), "morph_area_mesh"
  double surface_to_volume = 0;     // 2PR5  Surface to volume ratio A/V (1/mm), "morph_av"
  double sphericity = 0;            // QCFX  (36 pi V^2)^(1/3) / A, "morph_sphericity"
  double max_3d_diameter_mm = 0;    // L0JK  Maximum 3D diameter over mesh vertices, "morph_diam"
};
MorphologyFeatures morphology_features(const Mask& roi, const Spacing& spacing);

// Intensity-based statistical features (IBSI 1 section 3.3) on the ROI intensities, no
// discretisation. Percentiles: linear interpolation between order statistics (position
// p (N - 1), zero-based; NumPy's default), as used by the IBSI reference implementations.
struct IntensityStatistics {
  std::size_t voxels = 0;
  double mean = 0;                   // Q4LE  "stat_mean"
  double variance = 0;               // ECT3  population variance, divisor N (not N - 1), "stat_var"
  double standard_deviation = 0;     // (no IBSI feature) sqrt(variance): population SD
  double skewness = 0;               // KE2A  m3 / m2^1.5 (0 when the variance is 0), "stat_skew"
  double excess_kurtosis = 0;        // IPH6  m4 / m2^2 - 3 (0 when the variance is 0), "stat_kurt"
  double median = 0;                 // Y12H  "stat_median"
  double minimum = 0;                // 1GSF  "stat_min"
  double percentile_10 = 0;          // QG58  "stat_p10"
  double percentile_90 = 0;          // 8DWT  "stat_p90"
  double maximum = 0;                // 84IY  "stat_max"
  double interquartile_range = 0;    // SALO  P75 - P25, "stat_iqr"
  double range = 0;                  // 2OJQ  max - min, "stat_range"
  double mean_absolute_deviation = 0;  // 4FUA  mean |x - mean|, "stat_mad"
  double energy = 0;                 // N8CA  sum x^2 (no voxel-volume factor), "stat_energy"
  double root_mean_square = 0;       // 5ZWQ  sqrt(energy / N), "stat_rms"
};
IntensityStatistics intensity_statistics(const std::vector<cv::Mat>& image, const Mask& roi);

// Intensity discretisation (IBSI 1 section 2.7).
struct Discretisation {
  enum class Method {
    none,              // values are already grey levels: integers >= 1 (e.g. the IBSI digital phantom)
    fixed_bin_size,    // FBS, IBSI Q3RU: floor((x - x_min) / w) + 1
    fixed_bin_number,  // FBN, IBSI K15C: floor(Ng (x - x_min) / (x_max - x_min)) + 1, x_max -> Ng
  };
  Method method = Method::fixed_bin_size;
  double bin_width = 25.0;             // FBS w (e.g. HU)
  std::optional<double> lower_bound;   // FBS x_min: the re-segmentation lower bound; default ROI minimum
  int bins = 32;                       // FBN Ng
};

// Intensity histogram features (IBSI 1 section 3.4) after discretisation.
struct IntensityHistogramFeatures {
  int grey_levels = 0;     // Ng: highest discretised grey level in the ROI
  double entropy = 0;      // TLU2  -sum p_i log2 p_i, "ih_entropy"
  double uniformity = 0;   // BJ5W  sum p_i^2, "ih_uniformity"
};
IntensityHistogramFeatures intensity_histogram_features(const std::vector<cv::Mat>& image, const Mask& roi,
                                                        const Discretisation& discretisation);

// Grey level co-occurrence matrix features (IBSI 1 section 3.6), aggregated "3D:mrg"
// (IBSI IAZD): one symmetric GLCM summed over the 13 unique 3D directions at Chebyshev
// distance 1 (voxel pairs with both voxels in the ROI), then normalised. Ng is the highest
// discretised grey level in the ROI. Reference tags end in "_3D_comb".
//
// Naming: IBSI's "Inverse difference" (IB1S, sum p/(1+|i-j|)) is what several tools call
// "homogeneity" (Clausi's homogeneity, scikit-image's is IDM). Haralick's "homogeneity" /
// "local homogeneity" is IBSI's "Inverse difference moment" (WF4I, sum p/(1+(i-j)^2)).
// Both are provided under their IBSI names.
struct GlcmFeatures {
  int grey_levels = 0;                   // Ng
  double joint_maximum = 0;              // GYBY  "cm_joint_max"
  double joint_average = 0;              // 60VM  "cm_joint_avg"
  double joint_variance = 0;             // UR99  "cm_joint_var"
  double joint_entropy = 0;              // TU9B  -sum p log2 p, "cm_joint_entr"
  double contrast = 0;                   // ACUI  sum (i-j)^2 p, "cm_contrast"
  double dissimilarity = 0;              // 8S9J  sum |i-j| p, "cm_dissimilarity"
  double angular_second_moment = 0;      // 8ZQL  "joint energy", sum p^2, "cm_energy"
  double inverse_difference = 0;         // IB1S  sum p / (1 + |i-j|), "cm_inv_diff"
  double normalised_inverse_difference = 0;           // NDRX  sum p / (1 + |i-j|/Ng), "cm_inv_diff_norm"
  double inverse_difference_moment = 0;               // WF4I  sum p / (1 + (i-j)^2), "cm_inv_diff_mom"
  double normalised_inverse_difference_moment = 0;    // 1QCO  sum p / (1 + (i-j)^2/Ng^2), "cm_inv_diff_mom_norm"
  double inverse_variance = 0;           // E8JP  sum_{i != j} p / (i-j)^2, "cm_inv_var"
  double correlation = 0;                // NI2N  (sum i j p - mu_i mu_j) / (sigma_i sigma_j), "cm_corr"
};
GlcmFeatures glcm_features_3d_merged(const std::vector<cv::Mat>& image, const Mask& roi,
                                     const Discretisation& discretisation);

// All of the above for one segment: morphology on `roi` with `spacing`, statistics on the raw
// intensities, histogram and GLCM after `discretisation`.
struct SegmentFeatures {
  MorphologyFeatures morphology;
  IntensityStatistics statistics;
  IntensityHistogramFeatures histogram;
  GlcmFeatures glcm;
};
SegmentFeatures segment_features(const std::vector<cv::Mat>& image, const Mask& roi, const Spacing& spacing,
                                 const Discretisation& discretisation);

// The mask (0/1) of one label of a label map.
Mask label_mask(const LabelVolume& labels, int label);

// Discretised grey level of every ROI voxel, in raster order (z, row, column); exposed for tests.
std::vector<int> discretise_roi(const std::vector<cv::Mat>& image, const Mask& roi, const Discretisation& d);

}  // namespace analysis::kernels
