#pragma once
// Preview of an analysed series for people: one PNG montage of evenly spaced slices with each
// segment's outline and semi-transparent fill in its own colour, a legend, and a window/level.
// Pure OpenCV: takes a decoded dicom::Volume and the label map, never reads DICOM.
//
// What the picture shows:
//  * Slices: if any listed segment is present, evenly spaced slices between the first and last
//    slice holding one (bin centres, so the thin caps at either end are skipped); then every
//    present segment that no chosen slice shows gets its largest slice swapped in for the nearest
//    chosen one. With no segment present: evenly spaced over the non-constant slices (constant
//    padding slices are skipped). At most max_tiles, in slice order.
//  * Orientation as stored: row 0 at the top, column 0 at the left, no flips. The first tile
//    carries patient-direction letters (LPS: R/L, A/P, H/F) at its edges, from the geometry.
//  * Aspect: a tile is resized to the physical extent cols*spacing_col by rows*spacing_row, so
//    anisotropic pixels don't look squashed; the longer side gets tile_long_side pixels.
//  * Window: PreviewParams::window if set (the profile's), else choose_window().
//  * Each segment is filled at its own or the default opacity (0: outline only, e.g. a body drawn
//    as its outline so that the mediastinum stays readable) and outlined; a segment may cover
//    several labels (SegmentStyle::also). Optionally the low-attenuation voxels of some labels
//    (LowAttenuationOverlay, e.g. lung voxels below -950 HU) are painted over the fills.
//  * Legend below the tiles: a header (modality, study and series description, W/L, table
//    positions of the first and last tile) and a colour swatch with name and volume (mL) or the
//    style's legend text per segment, "(absent)" when the label map lacks it, the LAA swatch, then
//    PreviewParams::lines (findings, coverage, protocol, research label).
//    Text is ASCII (OpenCV Hershey fonts); other bytes print as '?'.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "dicom/volume.h"

namespace analysis::kernels {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

struct SegmentStyle {
  std::uint8_t label = 1;  // its value in the label map (1..255)
  std::string name;        // legend text
  Rgb colour;
  std::vector<std::uint8_t> also;  // further label values the segment covers (e.g. the body: all)
  double fill_opacity = -1;        // < 0: the params' fill_opacity; 0: outline only
  std::string legend;              // legend text instead of "<name> <volume> mL" (preview)
};

// Voxels of some labels whose value is below a threshold, painted over the fills: e.g. the
// low-attenuation areas (< -950 HU) of the lungs, the emphysema index's voxels.
struct LowAttenuationOverlay {
  double below = -950;                 // strictly below, in the volume's values
  std::vector<std::uint8_t> labels;    // where (label values)
  Rgb colour{255, 200, 0};
  double opacity = 0.75;
  std::string legend = "LAA < -950 HU";
};

struct WindowLevel {
  double width = 0;   // > 0
  double center = 0;  // a.k.a. level
};

// Defaults for CT in HU when the profile gives no window.
inline constexpr WindowLevel kLungWindow{1500.0, -600.0};         // chest CT: parenchyma, airways
inline constexpr WindowLevel kMediastinumWindow{350.0, 40.0};     // alternative for chest soft tissue
inline constexpr WindowLevel kSoftTissueWindow{400.0, 40.0};      // CT of other body parts

struct PreviewParams {
  std::optional<WindowLevel> window;  // the profile's window; empty: choose_window()
  int max_tiles = 12;                 // 1..64
  int columns = 4;                    // tiles per montage row (fewer if fewer tiles); 0 = ceil(sqrt(n))
  int tile_long_side = 256;           // px given to a tile's longer physical side, 32..2048
  double fill_opacity = 0.35;         // 0 = outlines only, 1 = opaque fill
  int outline_thickness = 1;          // px, drawn on the segment's boundary pixels
  double auto_low_percentile = 1.0;   // choose_window() for non-CT: window spans these percentiles
  double auto_high_percentile = 99.0;
  bool annotate_slices = true;        // table position ("z -49.0 mm") in each tile, direction letters on the first
  std::optional<LowAttenuationOverlay> laa;  // drawn over the fills when set
  std::string study_description;             // header: after the modality
  std::vector<std::string> lines;            // legend lines below the segments (findings, notes)
};

// One slice windowed to 8 bits, resized to `size` (area for shrinking, linear for enlarging), as
// BGR, each segment of `label_slice` (resized nearest-neighbour) filled with its colour at
// `fill_opacity` and outlined `outline_thickness` px wide. Used by the previews and the key images.
// `laa`, when given, is painted after the fills and before the outlines.
cv::Mat render_overlay(const cv::Mat& slice, const cv::Mat& label_slice, const WindowLevel& wl, cv::Size size,
                       std::span<const SegmentStyle> segments, double fill_opacity, int outline_thickness,
                       const LowAttenuationOverlay* laa = nullptr);

// The window used when params.window is empty:
//  * CT (modality "CT"): chest (body part, series description or protocol mentioning CHEST,
//    THORAX or LUNG) -> kLungWindow W1500/L-600, the usual lung window, since the ct-chest
//    analysis is about parenchyma (emphysema); any other CT -> kSoftTissueWindow W400/L40.
//    The mediastinum window W350/L40 is available as kMediastinumWindow for profiles.
//  * anything else (MR, ...): from the auto_low/high percentiles of the voxel values (sampled
//    evenly, at most ~1M voxels); a constant volume gets width 1.
WindowLevel choose_window(const dicom::Volume& volume, const PreviewParams& params = {});

// The slice indices shown, as described at the top of this file.
std::vector<int> select_preview_slices(const dicom::Volume& volume, const std::vector<cv::Mat>& labels,
                                       std::span<const SegmentStyle> segments, int max_tiles);

struct PreviewLayout {
  std::vector<int> slices;       // slice index of each tile, in tile order
  std::vector<cv::Rect> tiles;   // where each tile is in the image (row-major)
  cv::Size tile_size;            // same for all tiles
  int columns = 0, rows = 0;
  cv::Rect legend;               // header and segment legend, below the tiles
  WindowLevel window;            // the one applied
  double px_per_mm = 0;          // tile pixels per mm, both directions
};

struct Preview {
  cv::Mat bgr;  // CV_8UC3, OpenCV channel order
  PreviewLayout layout;
};

// Validates (throws std::invalid_argument: empty volume, slice type not CV_16S/CV_32F or sizes
// differ, labels not one CV_8U slice of the same size per slice, non-positive spacing, segment
// label 0 or duplicated, empty name, bad params) and renders. Label values without a style are
// not drawn.
Preview render_preview(const dicom::Volume& volume, const std::vector<cv::Mat>& labels,
                       std::span<const SegmentStyle> segments, const PreviewParams& params = {});

// render_preview, then write_png (kernels/png.h) to `png` (must end in .png) via a temporary file
// in the same folder and a rename. zlib level 2 without PNG row filters: on a 1048x1028 chest
// preview 3 % smaller than level 6 with libpng's per-row filters and ~4.5x faster (26 against 122
// ms; level 3 with filters, used before: 62 ms), which is on the one-shot analysis's path.
// Throws std::runtime_error if it cannot be written. Returns the layout.
PreviewLayout write_preview(const std::filesystem::path& png, const dicom::Volume& volume,
                            const std::vector<cv::Mat>& labels, std::span<const SegmentStyle> segments,
                            const PreviewParams& params = {});

}  // namespace analysis::kernels
