#pragma once
// The IBSI 1 image processing chain (the manual, arXiv:1612.07003, chapter 2): from an image volume
// and a segmentation mask to the RoiImage (image.h) that the feature families work on, then to the
// discretised Levels.
//
//   prepare_roi: interpolation to a new grid (manual 2.4: image interpolation and ROI interpolation
//                with a partial-volume threshold), intensity rounding, re-segmentation (2.5: range
//                and outlier filtering). The morphological mask is the interpolated ROI; the
//                intensity mask is the morphological mask minus the voxels re-segmentation removed.
//   discretise:  intensity discretisation (2.7: fixed bin size, fixed bin number, or none).
//
// The RoiImage does not cover the whole image: only the bounding box of the (interpolated)
// morphological mask plus a margin (Interpolation::margin_mm), so that preparing a lung mask on a
// 300x512x512 CT costs a fraction of the whole volume. Interpolation is separable and runs one
// output slice at a time on OpenCV's threads; the only volume-sized allocations are the RoiImage's
// own vectors (and, for the cubic spline, one block of coefficients of the source under the ROI). The margin gives the local intensity
// features (the manual 3.2, a 1 cm^3 sphere, radius 6.2 mm) the image around the ROI.
//
// Diagnostics (the manual's "diagnostic features", the reference tables' tags ending in _init_img,
// _interp_img, _init_roi, _interp_roi and _reseg_roi) are appended to `diagnostics` when given.
#include <array>
#include <optional>
#include <span>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/ibsi/aggregation.h"
#include "analysis/kernels/ibsi/image.h"
#include "analysis/kernels/types.h"

namespace analysis::kernels::ibsi {

// The manual 2.4 (interpolation). Grid alignment: "align grid centres" (the manual's recommended
// method, 2.4.1): the new grid has n_b = ceil(n_a s_a / s_b) voxels along each interpolated axis and
// its centre coincides with the centre of the original grid. Points of the new grid that fall
// outside the original voxel centres take the value at the nearest edge (no extrapolation).
struct Interpolation {
  enum class Method {
    nearest,  // nearest neighbour
    linear,   // (tri)linear
    cubic,    // cubic B-spline (an interpolating spline: prefiltered, so it passes through the samples;
              // the manual's "tricubic spline", configuration E; mirror boundary at the image edges)
  };
  // New voxel spacing (x, y, z) in mm; unset: no interpolation (the original grid, configuration A).
  std::optional<std::array<double, 3>> spacing;
  // Interpolate within each slice only (x, y): the slices and their spacing are kept, spacing[2] is
  // ignored. The manual: for 2D (slice-wise) feature computation, configuration B. Default false.
  bool in_plane_only = false;
  Method image_method = Method::linear;  // default linear (configurations B-D)
  Method mask_method = Method::linear;   // default linear: the mask is interpolated as a
                                         // partial-volume image (0/1 -> 0..1), then thresholded
  // Partial-volume threshold delta (manual 2.4.2): voxels whose interpolated mask value is >= this
  // are in the ROI. Default 0.5 (the manual's value, all configurations).
  double mask_threshold = 0.5;
  // Round the interpolated intensities to the nearest integer (manual 2.4, "for CT, intensities are
  // rounded to the nearest integer after interpolation"; configurations B-E). Default false.
  bool round_intensities = false;
  // Margin of image kept around the ROI, in mm along every axis (rounded up to whole voxels of the
  // new grid): the RoiImage spans the new-grid voxels the interpolated mask can reach (the mask's
  // bounding box, or up to a voxel or two more with interpolation) plus this margin, clipped to
  // the image. Default 7 mm: the local intensity peak's 6.2 mm sphere around any ROI voxel.
  double margin_mm = 7.0;
};

// The manual 2.5 (re-segmentation). The intensity mask keeps the morphological-mask voxels whose
// intensity lies in [min, max] (range re-segmentation; either bound may be unset) and, with
// outlier_3sigma, within mean +- 3 sd of the intensities left after the range (outlier filtering,
// population sd; configurations D and E; in E the range is applied first, then the outlier filter
// on what remains).
struct Resegmentation {
  std::optional<double> min, max;
  bool outlier_3sigma = false;
};

// The manual 2.7 (discretisation), applied to the intensities inside the intensity mask.
struct Discretisation {
  enum class Method {
    none,              // the intensities are the grey levels: each must be an integer >= 1 (the
                       // digital phantom). Ng = the highest level.
    fixed_bin_size,    // level = floor((x - x_min) / bin_width) + 1, x_min = lower_bound if set
                       // (the manual: the lower bound of the re-segmentation range), else the
                       // minimum intensity in the ROI. Ng = the highest level.
    fixed_bin_number,  // level = floor(bins (x - min) / (max - min)) + 1, x = max -> bins; min, max
                       // over the ROI. Ng = bins.
  };
  Method method = Method::none;
  double bin_width = 25;               // fixed_bin_size, > 0
  std::optional<double> lower_bound;   // fixed_bin_size
  int bins = 32;                       // fixed_bin_number, >= 1
};

struct ProcessingSettings {
  Interpolation interpolation;
  Resegmentation resegmentation;
  Discretisation discretisation;  // for texture and intensity-histogram features
  // With diagnostics requested, also the whole-image rows (_init_img, _interp_img: dimensions,
  // mean/min/max intensity). They need one pass over the whole image and, with interpolation, an
  // interpolation of the whole image (about the cost of the image, not of the ROI). Default true;
  // false gives only the ROI rows.
  bool image_diagnostics = true;
};

// Runs interpolation, rounding and re-segmentation. `image`: one matrix per slice (z), any
// single-channel type, real-world values (e.g. HU after rescale). `mask`: CV_8U, same shape,
// non-zero = ROI. `spacing`: the image's voxel spacing. Throws std::invalid_argument on shape,
// spacing or settings errors, an empty mask, or an empty intensity mask after re-segmentation.
RoiImage prepare_roi(const std::vector<cv::Mat>& image, const Mask& mask, const Spacing& spacing,
                     const ProcessingSettings& s, Features* diagnostics = nullptr);

// Discretises the intensity mask's intensities to grey levels 1..ng (0 outside the intensity mask).
// Throws std::invalid_argument on bad settings or (method none) non-integer or < 1 intensities.
Levels discretise(const RoiImage& roi, const Discretisation& d);

// The diagnostic features (tags as in the reference tables; IBSI gives them no codes).
std::span<const FeatureDef> diagnostics_definitions();

// The settings of the IBSI 1 CT radiomics phantom's configurations 'A'..'E' (the manual's table of
// configurations, chapter 5; upper or lower case). Throws std::invalid_argument for another letter.
//
//      texture  interpolation                       re-segmentation         discretisation  IVH
//   A  2D       none                                range [-500, 400] HU    FBS 25 HU       none
//   B  2D       2 x 2 mm in-plane, linear           range [-500, 400] HU    FBN 32 bins     none
//   C  3D       2 x 2 x 2 mm, trilinear             range [-1000, 400] HU   FBS 25 HU       FBS 2.5 HU
//   D  3D       2 x 2 x 2 mm, trilinear             outlier 3 sigma         FBN 32 bins     none
//   E  3D       2 x 2 x 2 mm, tricubic spline       range [-1000, 400] HU   FBN 32 bins     FBN 1000 bins
//                                                   + outlier 3 sigma
// With interpolation (B-E) the mask is interpolated (bi/trilinear) with partial-volume threshold 0.5
// and the intensities are rounded to integers. FBS uses the range's lower bound as x_min.
// "IVH none": the intensity-volume histogram uses the (integer HU) intensities themselves.
ProcessingSettings ct_phantom_configuration(char config);
// The texture dimension of a configuration: 2D (2D and 2.5D aggregations) for A and B, 3D for C-E.
TextureScope ct_phantom_texture_scope(char config);
// The discretisation of the intensity-volume histogram of a configuration (the IVH column above;
// Method::none for "none").
Discretisation ct_phantom_ivh_discretisation(char config);

}  // namespace analysis::kernels::ibsi
