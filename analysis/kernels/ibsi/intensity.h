#pragma once
// IBSI 1 intensity feature families (the manual, arXiv:1612.07003, chapter 3):
//
//   local intensity (3.2, "loc_", 2 features)        on RoiImage: intensities of the whole grid
//   intensity-based statistics (3.3, "stat_", 18)     on RoiImage: intensity mask, not discretised
//   intensity histogram (3.4, "ih_", 23)              on Levels: grey levels 1..Ng
//   intensity-volume histogram (3.5, "ivh_", 7)       on RoiImage, with a discretisation of its own
//
// Percentiles (median, P10, P25, P75, P90) are order statistics with linear interpolation between
// the two nearest ranks (NumPy's default, as mirp: position (N - 1) p of the sorted values); the
// manual gives no interpolation rule. Undefined ratios (a zero denominator in the coefficient of
// variation with a zero mean, or in the quartile coefficient of dispersion) are NaN; skewness and
// kurtosis of a constant ROI are 0 (as mirp); the robust mean absolute deviation is NaN when no
// voxel lies in [P10, P90] (two distinct values only, as mirp).
#include <optional>
#include <span>

#include "analysis/kernels/ibsi/image.h"

namespace analysis::kernels::ibsi {

// Local intensity peak (VJGA): the highest mean intensity in a 1 cm^3 sphere centred on a voxel of
// the intensity mask that has the ROI's maximum intensity. Global intensity peak (0F91): the
// highest such sphere mean over every voxel of the intensity mask. The sphere (radius
// r = (3 / (4 pi))^(1/3) cm = 6.2035 mm) holds the voxels whose centres lie within r of the centre
// voxel's centre (world distance, the grid's spacing), from the whole grid (roi.intensity), not
// only the ROI; voxels the sphere would need beyond the grid are left out of the mean (mirp's
// direct method, which made the digital phantom's values). Every sphere is summed as a stack of
// discs (one per slice it spans), each disc computed once per slice and shared by the two spheres
// centred k slices above and below, a disc from per-row window sums of each chord width:
// O(ROI voxels x chords / 2), parallel over slices, exact int32 sums for integer intensities.
// Throws std::invalid_argument for a non-finite intensity within the spheres' reach.
std::span<const FeatureDef> local_intensity_definitions();
void local_intensity_features(const RoiImage& roi, Features& out);

// Intensity-based statistics on the intensities inside roi.mask. Integer intensities within
// -32768..32767 (HU) take one pass into a value histogram (no sort); others are sorted once.
std::span<const FeatureDef> statistics_definitions();
void statistics_features(const RoiImage& roi, Features& out);

// Intensity histogram features on the grey levels 1..levels.ng (empty levels included in the
// histogram and its gradient). Mode: the most frequent level; on a tie, the one closest to the
// mean, then the lowest (as mirp). Histogram gradient (np.gradient): H(i+1) - H(i-1) over 2 inside,
// one-sided differences at 1 and Ng (0 when Ng = 1); the grey level of the maximum (minimum) is
// the lowest one on a tie.
std::span<const FeatureDef> histogram_definitions();
void histogram_features(const Levels& levels, Features& out);
void histogram_features(const CheckedLevels& levels, Features& out);  // no check_levels pass

// The intensity-volume histogram (the manual 3.5) discretises the intensity mask's intensities on
// its own, into levels G_1 < ... < G_n:
//   none:             G_k = lower + (k - 1) step, k = 1 .. (upper - lower) / step + 1; a voxel
//                     takes the nearest level (intensities are expected on that grid, e.g. integer
//                     HU with step 1). lower/upper: the given bounds, else the ROI's min/max.
//   fixed_bin_size:   bin k = floor((x - lower) / bin_width) + 1 (clamped to 1..n),
//                     n = ceil((upper - lower) / bin_width) + 1; G_k = the bin centre
//                     lower + (k - 0.5) bin_width. lower/upper: given, else the ROI's min/max.
//   fixed_bin_number: bin k = floor(bins (x - min) / (max - min)) + 1, clamped to 1..bins, min/max
//                     of the ROI (lower/upper must be unset); G_k = k (the bin number).
// Intensity fraction gamma_k = (G_k - G_1) / (G_n - G_1); volume fraction nu_k = the fraction of
// the ROI's voxels at level >= k.
//   V_x (ivh_v10, ivh_v90): nu at the lowest level with gamma >= x (the largest such nu).
//   I_x (ivh_i10, ivh_i90): the lowest G_k with nu_k <= x; when none has (the top level alone
//                           holds more than x of the volume), the level above the top
//                           (G_n + step, G_n + bin_width, bins + 1), as mirp.
//   ivh_diff_v10_v90 = V10 - V90, ivh_diff_i10_i90 = I10 - I90,
//   ivh_auc: trapezoidal area under nu(gamma) (IBSI gives no reference value).
// With a single level (a constant ROI and no bounds) gamma is undefined: V_x and the AUC are NaN.
//
// Settings of the IBSI 1 reference data (the manual, chapter 5: the digital phantom, and the CT
// phantom's configurations, whose "IVH" row gives the discretisation; bounds: the re-segmentation
// range where the configuration has one, as mirp, which made the reference values):
//   digital phantom  none, step 1, bounds unset (the grey levels 1..6 as they are; G from 1 to 6)
//   A, B             none, step 1, lower -500, upper 400 (re-segmentation range, integer HU)
//   C                fixed_bin_size, bin_width 2.5, lower -1000, upper 400
//   D                none, step 1, bounds unset (D re-segments by outliers only: ROI min/max)
//   E                fixed_bin_number, bins 1000 (ROI min/max)
struct IvhOptions {
  enum class Method { none, fixed_bin_size, fixed_bin_number };
  Method method = Method::none;
  double step = 1;                     // none: spacing of the intensity grid, > 0
  double bin_width = 2.5;              // fixed_bin_size, > 0
  int bins = 1000;                     // fixed_bin_number, >= 2
  std::optional<double> lower, upper;  // none and fixed_bin_size; lower < upper when both set
};

// Throws std::invalid_argument on bad options, non-finite intensities in the mask, or more than
// 10^7 levels.
std::span<const FeatureDef> ivh_definitions();
void ivh_features(const RoiImage& roi, const IvhOptions& o, Features& out);

}  // namespace analysis::kernels::ibsi
