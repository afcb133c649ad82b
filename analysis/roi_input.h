#pragma once
// Masks given from outside for `pacsnode analyze` (`--mask FILE [--label N]`, or a DICOM SEG or
// RTSTRUCT lying next to the images): the file is read and mapped onto the voxel grid of one image
// volume. Pure loading and mapping; the caller (the CLI, the worker) decides where files come from.
//
// The format is told by the content, never by the name:
//   * NIfTI-1 single file (.nii, or gzip-compressed .nii.gz; analysis/kernels/nifti.h). The NIfTI
//     must have the volume's dimensions with NIfTI i = column, j = row, k = slice in the volume's
//     order (slices sorted along the normal, dicom::Geometry), i.e. the layout write_nifti writes;
//     its qform/sform is not read, so a file in another axis order (e.g. RAS-flipped by a converter)
//     cannot be recognised and must be brought to this order first. Its voxel spacing (pixdim 1..3)
//     must be the volume's (column, row, slice) spacing within 1%. Label N selects the voxels whose
//     value equals N; without a label every non-zero voxel is inside.
//   * DICOM SEG (dicom/seg_reader.h; BINARY, or FRACTIONAL thresholded at half the maximum). With
//     a frame of reference on both sides the SEG's Frame of Reference UID must be the volume's, its
//     Rows/Columns, orientation (within 1e-4) and Pixel Spacing (within 0.1%) the volume's; each
//     frame goes to the slice whose position along the normal is within 10% of the slice spacing of
//     the frame's Image Position (Patient) projected on the normal, and the frame's in-plane origin
//     (its position projected on the row and column directions) must be that slice's within 5% of a
//     pixel. Frames beyond the volume's first or last slice (by more than half a slice spacing)
//     are skipped and counted in the description. Without a frame of reference (2D images) a frame
//     goes to the slice whose source SOP Instance UID and frame number it references. Label N is
//     the Segment Number; without a label the union of all segments.
//   * DICOM RTSTRUCT (plain dcmdata after the structural scan of dicom/scan.h): Structure Set ROI
//     Sequence (ROI Number, ROI Name, Referenced Frame of Reference UID), ROI Contour Sequence,
//     Contour Sequence. Label N is the ROI Number; without a label the only ROI, or an error that
//     lists the ROI numbers and names when there are several. The ROI's frame of reference must be
//     the volume's. Only CLOSED_PLANAR contours (and CLOSED_PLANAR_XOR, which means the same under
//     the rule below) are drawn; POINT and OPEN_* contours are skipped and counted.
//     Slice rule: a contour's position is the mean of its points projected on the volume's normal;
//     it lies on the slice whose position is nearest, when within half a slice spacing. A contour
//     beyond the volume's first or last slice by more than that is skipped and counted (an
//     RTSTRUCT usually spans more slices than a cropped series). Errors ("off the slice grid"):
//     a contour whose points spread more than half a slice spacing along the normal (not parallel
//     to the slices), and contours at positions more than a quarter slice spacing apart that fall
//     on the same slice (drawn on a finer slice grid than this volume's).
//     Raster rule, in pixel coordinates (x = column, y = row; the centre of pixel (c, r) is at
//     (c, r), as Image Position (Patient) gives the centre of the first pixel): each contour,
//     closed from its last point to its first, fills the pixels whose centre lies inside it or on
//     its boundary (crossing number); the contours of one slice are combined by XOR, so a contour
//     inside another is a hole and one inside a hole is an island again (even-odd). This is what
//     skimage.draw.polygon per contour, XOR-ed, gives; cv::fillPoly is not used because it draws
//     every pixel its edges touch and rounds the vertices. Parts outside the image are clipped.
// Every mismatch throws std::invalid_argument (a file that does not fit the volume: other frame
// of reference, no such label, dimensions or spacing differ, a contour off the slice grid, an empty
// mask) or std::runtime_error / dicom::DicomError (a file that cannot be read), each naming the
// file.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/types.h"
#include "dicom/volume.h"

namespace analysis {

// The mask of one region on the voxel grid of `volume`: depth x rows x cols, CV_8U 0/1, never
// empty. `description` (when given) receives one line for the user, e.g. "RTSTRUCT RS.dcm: ROI 1
// 'GTV', 8 of 32 contours on this volume's slices (24 beyond its first or last slice), 4321 voxels".
Mask roi_mask_for_volume(const dicom::Volume& volume, const std::filesystem::path& mask_file,
                         std::optional<int> label, std::string* description = nullptr);

// The DICOM SEG and RTSTRUCT files below `folder` (recursive) that reference `series`: a SEG or
// RTSTRUCT whose Referenced Series Sequence names its Series Instance UID, or an RTSTRUCT whose
// Referenced Frame of Reference Sequence > RT Referenced Study Sequence > RT Referenced Series
// Sequence does. Every file is untrusted: only files that start like DICOM and pass the bounded
// structural scan (dicom/scan.h, the default limits) are parsed, and only their headers (values
// longer than 1 KiB stay on disk). Unreadable files are skipped. Sorted by path.
std::vector<std::filesystem::path> find_masks_next_to(const std::filesystem::path& folder,
                                                      const dicom::SeriesInfo& series);

// The raster rule of RTSTRUCT contours above on one rows x cols slice: `contours` in pixel
// coordinates (x = column, y = row), each closed; CV_8U 0/1. Exposed for tests.
cv::Mat fill_contours_even_odd(const std::vector<std::vector<cv::Point2d>>& contours, int rows, int cols);

}  // namespace analysis
