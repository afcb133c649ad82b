#pragma once
// What the preview montage (display.h) and the key images (key_image_render.h) draw alike: text in
// OpenCV's Hershey font, patient-direction letters at a slice's edges, the legend band (a header
// line, then a colour swatch and text per segment, wrapped), and the checks of their inputs.
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <opencv2/core.hpp>

#include "analysis/kernels/display.h"
#include "dicom/volume.h"

namespace analysis::kernels {

inline const cv::Scalar kBackground(24, 24, 24);  // BGR: canvas around tiles, legend band
inline const cv::Scalar kText(235, 235, 235);

cv::Scalar bgr(const Rgb& c);

// `s` with every byte outside printable ASCII as '?' (Hershey fonts have nothing else).
std::string ascii(std::string_view s);

// Text with its baseline at `org`, optionally over a 1 px black shadow.
void put_text(cv::Mat& img, const std::string& text, cv::Point org, double scale, const cv::Scalar& colour,
              bool shadow);

// Mask (CV_8U 0/255) of the voxels of `labels` (a CV_8U slice) that belong to the style: its
// label or one of its also_labels.
cv::Mat style_mask(const cv::Mat& labels, const SegmentStyle& s);

// "z -49.0 mm" (patient z of the slice centre, LPS: + is head) for an axial slice, else "slice 12/150".
std::string slice_position_text(const dicom::Volume& v, int z);

// Letters of a direction in LPS: every axis with |cosine| >= 0.25, largest first (at least one).
std::string direction_letters(const dicom::Vec3& d);

// The dominant direction letter at each edge of a slice drawn as stored (row 0 on top), `inset`
// px from the edge, with a shadow.
void put_direction_letters(cv::Mat& slice, const dicom::Geometry& g, double scale, int inset);

// A legend laid out for a text scale; its band height depends on the width it is wrapped to.
class Legend {
 public:
  struct Item {
    std::string text;  // ASCII
    Rgb colour;
  };
  // `lines`: further text lines below the items (findings, qualifications), one row each.
  Legend(std::string header, std::vector<Item> items, double text_scale, std::vector<std::string> lines = {});

  int header_width() const { return header_width_; }
  int widest_item() const;  // swatch, text and spacing of the widest item
  int widest_line() const;  // the widest of `lines`
  // Height of the band (header line, one line per row of items, one per text line) wrapped to
  // `width` px.
  int height(int width) const;
  // Draws the band with its top-left corner at `at`, wrapped to `width` px.
  void draw(cv::Mat& canvas, cv::Point at, int width, bool shadow) const;

 private:
  struct Placed {
    const Item* item;
    int width;
  };
  std::vector<std::vector<Placed>> rows(int width) const;  // greedy line breaking

  std::string header_;
  std::vector<Item> items_;
  std::vector<std::string> lines_;
  std::vector<int> item_width_;
  double scale_;
  int baseline_ = 0, line_h_ = 0, swatch_ = 0, header_width_ = 0;
};

// Throws std::invalid_argument "<what>: ..." unless every segment has a non-zero label, a name,
// a label no other segment has, and a fill opacity of at most 1.
void validate_styles(std::string_view what, std::span<const SegmentStyle> segments);

// Throws std::invalid_argument "<what>: ..." unless the volume has slices of one size and type
// (CV_16SC1 or CV_32FC1), positive pixel spacing, and one CV_8UC1 label slice of that size per
// slice.
void validate_volume_and_labels(std::string_view what, const dicom::Volume& v, const std::vector<cv::Mat>& labels);

}  // namespace analysis::kernels
