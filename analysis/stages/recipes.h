#pragma once
// Segmentation recipes: sequences of segment kernels that turn a volume into a label map.
// Pure (no DICOM, no logging); the Segment stage calls them with the profile's parameters.
#include <string>
#include <vector>

#include "analysis/kernels/segment.h"
#include "analysis/kernels/types.h"
#include "analysis/profile.h"
#include "dicom/volume.h"

namespace analysis::recipes {

// Labels of the ct-chest recipe.
inline constexpr int kBody = 1, kRightLung = 2, kLeftLung = 3, kBone = 4;

struct RecipeResult {
  LabelVolume labels;               // CV_8U, one slice per volume slice
  std::vector<int> present_labels;  // labels with at least one voxel, ascending
  std::vector<std::string> notes;
};

// Generic: threshold (window or Otsu) -> optional border drop -> keep largest k -> open/close ->
// 2D hole filling; label 1 = the foreground. `image`: CV_8U/16S/16U/32F slices.
RecipeResult segment_generic(const std::vector<cv::Mat>& image, const Spacing& spacing, const GenericSegmentParams& p);

// CT chest (image in HU): body 1, right lung 2, left lung 3, bone 4 (see ChestParams).
// Patient left is +x of DICOM LPS; the side of a voxel comes from `geom` (row_dir, col_dir,
// normal), so flipped or rotated acquisitions are labelled correctly.
// Memory: the label map and one working mask (both CV_8U); no copy of the image.
RecipeResult segment_ct_chest(const std::vector<cv::Mat>& image, const dicom::Geometry& geom, const ChestParams& p);

// Patient-space x (LPS, mm) of voxel (column c, row r, slice z).
double patient_x(const dicom::Geometry& g, double c, double r, double z);

}  // namespace analysis::recipes
