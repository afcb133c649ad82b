#pragma once
// Turns DICOM SEG objects (dicom/seg_reader.h) into mask volumes on one common voxel grid, so
// that `pacsnode evaluate` can compare a SEG with another SEG (or with a NIfTI mask of the same
// grid).
//
// Grid rule (objects with a frame of reference):
//   * every object must have the same Frame of Reference UID, Rows/Columns, Image Orientation
//     (within 1e-4), Pixel Spacing (within 0.1%) and in-plane origin (the frames' positions
//     projected on the row and column directions agree within 5% of a pixel);
//   * slice positions are the union of all frames' positions projected on the normal
//     (row_dir x col_dir), sorted ascending; positions closer than 10% of the smaller pixel
//     spacing are one slice;
//   * the slice step is the smallest gap between distinct positions, refined over the whole span;
//     every distinct position must lie on that regular grid within 1% of the step, and gaps
//     between frames are filled with empty slices; one distinct position gives a step of the
//     SEG's Spacing Between Slices / Slice Thickness, else 1 mm. When the step is finer than an
//     object's declared Spacing Between Slices (e.g. two SEGs whose slices interleave), a warning
//     is returned in SegGrid::warnings.
// Objects without a frame of reference (2D projection images): slices are the distinct
// (referenced source SOP instance, frame) pairs, sorted; the slice step is 1 mm, so volumes are
// areas in mm^2 (surface distances are only meaningful when there is one source image).
// Segment selection: a number picks that segment (an error when it is not defined); nullopt is
// the union of all segments.
#include <optional>
#include <string>
#include <vector>

#include "analysis/kernels/types.h"
#include "dicom/seg_reader.h"

namespace analysis {

struct SegMaskInput {
  const dicom::SegObject* seg = nullptr;
  std::optional<int> segment;  // nullopt: any segment
  std::string name;            // for messages (e.g. the file name)
};

struct SegGrid {
  std::vector<Mask> masks;  // one per input, same order; each depth x rows x cols, CV_8U 0/1
  Spacing spacing;          // col/row from Pixel Spacing, slice = the common step
  bool physical = true;     // false: 2D objects stacked by source image
  std::vector<double> slice_positions;  // physical: mm along the normal of each slice
  std::vector<std::string> warnings;    // suspicious but usable geometry, for the user
  int depth() const { return masks.empty() ? 0 : static_cast<int>(masks.front().size()); }
};

// Throws std::invalid_argument with a clear reason when the objects cannot share a grid, when a
// selected segment does not exist, or when the slice positions are not regular.
SegGrid seg_masks_on_common_grid(const std::vector<SegMaskInput>& inputs);

}  // namespace analysis
