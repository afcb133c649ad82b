#pragma once
// Preprocessing kernels. All work slice by slice and in place (no float copy of the volume):
// the only extra memory is a few slices.
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/types.h"

namespace analysis::kernels {

// In-plane (2D, per slice) median filter with a ksize x ksize window, ksize 3 or 5, in place.
// Types: CV_8U, CV_16U, CV_16S, CV_32F, all exact (OpenCV's sorting network supports each).
// Borders replicate the edge pixel (OpenCV's medianBlur). Slices run on OpenCV's threads; each is
// filtered in bands of rows through two small buffers per thread, so it is read and written once.
void median_filter(std::vector<cv::Mat>& slices, int ksize);

// Gaussian smoothing with standard deviations in mm. sigma_inplane_mm applies along rows and
// columns (per slice on OpenCV's threads, cv::GaussianBlur, BORDER_REFLECT_101 within the slice,
// also when the slices are row ranges of one block); sigma_slice_mm > 0 adds a serial pass
// along z (replicated end slices). The kernel radius is ceil(3 sigma) voxels. Integer types are
// rounded back (saturating). sigma 0 skips that direction.
void gaussian_filter(std::vector<cv::Mat>& slices, const Spacing& spacing, double sigma_inplane_mm,
                     double sigma_slice_mm = 0.0);

enum class Interpolation { nearest, linear, cubic, area };

// In-plane resampling to the target spacing (mm). The field of view is kept: the new size is
// round(n * old / new) and the achieved spacing, old * n / new_n, is written back to `spacing`
// (it may differ slightly from the target). Masks (CV_8U with 0/1) should use nearest.
// Slices run on OpenCV's threads, into one new block.
void resample_inplane(std::vector<cv::Mat>& slices, Spacing& spacing, double target_col_mm, double target_row_mm,
                      Interpolation interp = Interpolation::linear);

// Same on a Volume: also updates geom.spacing_* and geom.origin (the centre of the new first
// pixel moves by (new - old) / 2 spacing along row_dir and col_dir, as the pixel-area grid is kept).
void resample_inplane(dicom::Volume& volume, double target_col_mm, double target_row_mm,
                      Interpolation interp = Interpolation::linear);

// Level map of `image` for the ascending thresholds `breaks`: the level of a voxel is the number
// of breaks b with value >= b (0 .. breaks.size() <= 255), so "value >= breaks[i]" is "level > i"
// and "value < breaks[i]" is "level <= i". With median_ksize (3 or 5) or gaussian_sigma_mm > 0
// each slice is first filtered as median_filter / gaussian_filter (in-plane) would, into a
// scratch copy: `image` itself is not changed. This keeps a filtered view for masks at one byte
// per voxel beside the unfiltered image that measurements use. Slices run on OpenCV's threads.
// Types: CV_8U, CV_16S, CV_16U, CV_32F.
LabelVolume level_map(const std::vector<cv::Mat>& image, const std::vector<double>& breaks, int median_ksize = 0,
                      double gaussian_sigma_mm = 0, const Spacing& spacing = {});

}  // namespace analysis::kernels
