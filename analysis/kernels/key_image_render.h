#pragma once
// Key images: a few single slices rendered for people, with each segment's outline and
// semi-transparent fill burned in and a small legend, for dicom::write_key_images (Secondary
// Capture for PACS viewers without SEG support). Pure OpenCV, like display.h, whose segment
// styles, window/level and choose_window() it shares.
//
// Which slices (select_key_slices): for every styled segment, its slices ordered by area (voxels
// of that label, largest first; ties: lower slice first). Picks go round-robin over the segments
// in style order: every segment's largest slice, then every segment's second largest, ... skipping
// slices already picked, until max_images are picked or no segment has slices left. The result is
// in ascending slice order. One segment and max_images 3 gives its three largest slices; three
// segments give each one's largest. No styled segment present: no slices (nothing to show).
//
// What an image shows:
//  * The slice as stored (row 0 at the top, column 0 at the left, no flips), resized to its
//    physical extent (cols*spacing_col by rows*spacing_row) so that the longer side gets
//    long_side pixels: anisotropic pixels don't look squashed.
//  * Window/level: params.window, else choose_window(volume) (the same default as the preview).
//  * Every styled segment on that slice: fill blended with fill_opacity, and its boundary drawn in
//    exactly its colour, outline_thickness px wide.
//  * Patient-direction letters (LPS: R/L, A/P, H/F) at the slice's edges when the volume has a
//    frame of reference.
//  * Below the slice, a legend band: "[<caption>: ]<modality> | <study> | <series>  W<w> L<l>
//    <table position>" and, for every styled segment present on the slice, a colour swatch, its
//    name and its area on this slice in cm2, the LAA swatch when set, then params.lines.
//    ASCII text (Hershey fonts); other bytes print as '?'.
//    No patient identifiers are drawn.
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/display.h"
#include "dicom/key_images.h"
#include "dicom/volume.h"

namespace analysis::kernels {

struct KeyImageParams {
  // Explicit slices with a caption each (e.g. {apex, "Apex"}, {carina, "Carina"}): rendered instead
  // of the area-based choice, in slice order (a slice named twice keeps its first caption).
  std::vector<std::pair<int, std::string>> slices;
  std::optional<LowAttenuationOverlay> laa;  // painted over the fills when set
  std::string study_description;             // legend header: after the modality
  std::vector<std::string> lines;            // legend lines below the segments (findings)
  int max_images = 3;                 // 1..64
  std::optional<WindowLevel> window;  // the profile's window; empty: choose_window(volume)
  int long_side = 512;                // px given to the slice's longer physical side, 64..2048
  double fill_opacity = 0.35;         // 0 = outlines only, 1 = opaque fill
  int outline_thickness = 2;          // px in the rendered image, 0..16
  bool orientation_letters = true;    // R/L, A/P, H/F at the slice edges (with a frame of reference)
};

struct KeyImages {
  std::vector<cv::Mat> images;    // CV_8UC3, OpenCV (BGR) channel order, one per slice_index
  std::vector<int> slice_index;   // ascending
  std::vector<std::string> captions;  // per image: params.slices' caption, or empty
  cv::Rect slice_area;            // where the slice is drawn in every image; the legend is below
  WindowLevel window;             // the one applied
};

// The slices shown, as described at the top of this file. Throws std::invalid_argument for label
// slices that are not CV_8UC1, bad styles (label 0, duplicated, empty name) or max_images < 1.
std::vector<int> select_key_slices(const std::vector<cv::Mat>& labels, std::span<const SegmentStyle> segments,
                                   int max_images);

// Validates (throws std::invalid_argument: empty volume, slice type not CV_16S/CV_32F or sizes
// differ, labels not one CV_8UC1 slice of the same size per slice, non-positive spacing, bad
// styles, bad params), selects the slices and renders them. Label values without a style are not
// drawn. No segment present: empty result (window still set).
KeyImages render_key_images(const dicom::Volume& volume, const std::vector<cv::Mat>& labels,
                            std::span<const SegmentStyle> segments, const KeyImageParams& params = {});

// Patient Orientation (0020,0020) of a slice shown as stored: "row\column" direction letters,
// e.g. "L\P" for a usual axial slice; each value has the letters of every axis whose direction
// cosine is at least 0.25 in magnitude, largest first. Empty without a frame of reference.
std::string patient_orientation(const dicom::Geometry& geom);

// render_key_images, packaged for dicom::write_key_images: sources and source_file (the source of
// the first key image) from the volume, patient orientation from its geometry, a derivation
// description per image naming the slice, window and overlay. Series description/number and
// device keep their defaults for the caller to set. Throws std::invalid_argument when the volume
// lacks a source per slice or a source path.
dicom::KeyImageSpec key_image_spec(const dicom::Volume& volume, const std::vector<cv::Mat>& labels,
                                   std::span<const SegmentStyle> segments, const KeyImageParams& params = {});

}  // namespace analysis::kernels
