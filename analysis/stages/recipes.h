#pragma once
// Segmentation recipes: sequences of segment kernels that turn a volume into a label map.
// Pure (no DICOM, no logging); the Segment stage calls them with the profile's parameters.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "analysis/kernels/segment.h"
#include "analysis/kernels/types.h"
#include "analysis/profile.h"
#include "dicom/volume.h"

namespace analysis::recipes {

// Labels of the ct-chest recipe. Label 1 holds the body's voxels that no other segment holds;
// the "body" segment is the union of all labels (the patient's outline with everything inside).
// Lesion candidates get kLesion, kLesion + 1, ... (largest first, at most ChestParams::max_lesions).
inline constexpr int kBody = 1, kRightLung = 2, kLeftLung = 3, kDense = 4, kAirways = 5, kLesion = 6;
// No voxel has this value: the "lungs" segment (both lungs together) uses it as its own label and
// covers kRightLung and kLeftLung (SegmentResult::also_labels).
inline constexpr int kBothLungs = 254;

struct RecipeResult {
  LabelVolume labels;               // CV_8U, one slice per volume slice
  std::vector<int> present_labels;  // labels with at least one voxel, ascending
  std::vector<std::string> notes;
  // ct-chest: slice indices of "apex", "carina", "base" (those found), and whether the lungs'
  // apices and bases lie inside the scan (empty: not assessed, e.g. a non-axial series).
  std::map<std::string, int> landmarks;
  std::optional<bool> apices_in_scan, bases_in_scan;
};

// Generic: threshold (window or Otsu) -> optional border drop -> keep largest k -> open/close ->
// 2D hole filling; label 1 = the foreground. `image`: CV_8U/16S/16U/32F slices.
RecipeResult segment_generic(const std::vector<cv::Mat>& image, const Spacing& spacing, const GenericSegmentParams& p);

// The HU thresholds the ct-chest recipe compares with, ascending: the `breaks` of the level map it
// segments (kernels::level_map). The Preprocess stage builds that map from the median-filtered
// image, so that masks come from the filtered image while the volume keeps the original HU.
std::vector<double> chest_level_breaks(const ChestParams& p);

// CT chest on a level map of the HU image (levels made with chest_level_breaks(p)):
//  1. Body: voxels >= body_min_hu, a 2D opening (body_open_mm) that cuts thin contacts such as
//     the CT couch's, the largest 3D component, its surface restored, 2D holes filled.
//  2. Airways: a seed where the trachea is, near the mid-sagittal plane in the cranial slices
//     (a round air region of airway_seed_min_mm2..max_mm2, continuing over a few slices), grown
//     through lumen air (<= airway_max_hu) with leak control (kernels::grow_airway_tree, the seed
//     blob's area as the trachea's reference; on overflow retried 20 and 40 HU lower; else
//     retried 25 and 50 HU higher, each kept while it does not overflow and has at most one leak
//     event more than the tree before it), then widened by airway_edge_mm into the partial-volume
//     voxels of the lumen (< airway_edge_hu). The carina is where it splits into two.
//  3. Lungs: air (<= air_max_hu) inside the body, airways excluded, components not touching the
//     in-plane border and >= min_lung_ml; the largest is one lung, the largest on the other side
//     of the mid-sagittal plane the other. A component holding both lungs (they touch at a
//     junction line, or the airways were not found) is split per slice: each 2D blob lying
//     (>= 85 %) on one side goes to that side; a shared blob is eroded until it falls apart
//     into parts on either side, and its voxels go to the nearest part; a blob that never falls
//     apart is cut at the mid-sagittal plane.
//  4. Per lung: in-plane closing (lung_close_radius_mm) and 2D hole filling with the airways
//     counted in, so vessels, bronchial walls and other dense structures inside the pleura
//     belong to the lung; the airway lumen stays airway; the mediastinum stays out.
//  5. Lesion candidates: solid tissue (>= lesion_min_hu) that a closing with lesion_close_mm
//     adds to a lung (a dense bump into the lung from the pleura), as 3D components of
//     lesion_min_ml..lesion_max_ml, at least lesion_min_thickness_mm thick, bordered by lung
//     (or the partial-volume band next to it) for at least lesion_min_lung_contact of their
//     in-plane border, lateral and meeting aerated lung: they stay out of the lung and become
//     labels kLesion.. (candidates for a reader to confirm, not diagnoses). Each candidate then
//     takes back its caps, the slices where its top or bottom is an island in the lung that hole
//     filling made lung.
//  6. Dense: voxels >= dense_min_hu inside the body that are no other segment (bone, calcium,
//     iodine or oral contrast alike: HU alone does not tell them apart), components >= min_dense_ml.
// Coverage: apices (bases) are inside the scan unless the lungs still cover more than
// coverage_edge_fraction of their largest cross-section in the cranial (caudal) end slice.
// Patient left is +x of DICOM LPS; sides and cranial direction come from `geom`.
// Memory: the label map and one working mask (CV_8U) besides the level map; no copy of the image.
RecipeResult segment_ct_chest(const std::vector<cv::Mat>& levels, const std::vector<double>& breaks,
                              const dicom::Geometry& geom, const ChestParams& p);

// The same on an HU image (no filter): builds the level map and calls the above.
RecipeResult segment_ct_chest(const std::vector<cv::Mat>& image_hu, const dicom::Geometry& geom, const ChestParams& p);

// Patient-space x (LPS, mm) of voxel (column c, row r, slice z).
double patient_x(const dicom::Geometry& g, double c, double r, double z);

}  // namespace analysis::recipes
