#pragma once
// Minimal NIfTI-1 single-file (.nii / .nii.gz) reader and writer for 3D scalar images and masks,
// used by the IBSI phantom tests and by `pacsnode evaluate` for reference masks.
//
// Axes: NIfTI i (fastest) -> column, j -> row, k -> slice; so slice k is a dim[2] x dim[1] matrix.
// Supported on read: 3D (or 2D) images, little- or big-endian, datatypes uint8, int8, int16,
// uint16, int32, uint32, float32, float64; scl_slope/scl_inter are applied. 4D+ data and
// compressed or detached (.hdr/.img) pairs other than .nii.gz are rejected. Orientation
// (qform/sform) is not interpreted: the kernels only need the voxel spacing (pixdim[1..3]).
#include <filesystem>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/types.h"

namespace analysis::kernels {

struct NiftiImage {
  // CV_8U for uint8 data; CV_16S when every (scaled) value is an integer that fits int16;
  // else CV_32F. One matrix per slice.
  std::vector<cv::Mat> slices;
  Spacing spacing;      // |pixdim[1..3]| in mm (NIfTI units other than mm are converted)
  int datatype = 0;     // NIfTI datatype code as stored
};

// Reads a .nii or .nii.gz file (gzip detected from the content). Throws std::runtime_error
// naming the file on any malformed or unsupported input.
NiftiImage read_nifti(const std::filesystem::path& path);

// Reads a mask: every non-zero voxel becomes 1 (CV_8U). `spacing` receives the voxel spacing.
Mask read_nifti_mask(const std::filesystem::path& path, Spacing* spacing = nullptr);

// Writes slices (CV_8U -> uint8, CV_16S -> int16, CV_32F -> float32) as NIfTI-1 with pixdim =
// spacing (mm) and an axis-aligned sform. Compressed with gzip when the name ends in ".gz".
void write_nifti(const std::filesystem::path& path, const std::vector<cv::Mat>& slices, const Spacing& spacing);

}  // namespace analysis::kernels
