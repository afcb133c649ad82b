#include "analysis/kernels/render_common.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <set>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

namespace analysis::kernels {
namespace {

const cv::Scalar kTextShadow(0, 0, 0);
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

dicom::Vec3 negate(const dicom::Vec3& d) { return {-d[0], -d[1], -d[2]}; }

}  // namespace

cv::Scalar bgr(const Rgb& c) { return cv::Scalar(c.b, c.g, c.r); }

std::string ascii(std::string_view s) {
  std::string out;
  for (unsigned char c : s) out.push_back(c >= 32 && c < 127 ? static_cast<char>(c) : '?');
  return out;
}

void put_text(cv::Mat& img, const std::string& text, cv::Point org, double scale, const cv::Scalar& colour,
              bool shadow) {
  if (shadow) cv::putText(img, text, org + cv::Point(1, 1), kFont, scale, kTextShadow, 2, cv::LINE_AA);
  cv::putText(img, text, org, kFont, scale, colour, 1, cv::LINE_AA);
}

std::string direction_letters(const dicom::Vec3& d) {
  static const char pos[] = {'L', 'P', 'H'}, neg[] = {'R', 'A', 'F'};
  std::array<int, 3> axes{0, 1, 2};
  std::stable_sort(axes.begin(), axes.end(), [&](int a, int b) { return std::abs(d[a]) > std::abs(d[b]); });
  std::string out;
  for (int axis : axes) {
    if (std::abs(d[axis]) >= 0.25 || out.empty()) out.push_back(d[axis] >= 0 ? pos[axis] : neg[axis]);
  }
  return out;
}

void put_direction_letters(cv::Mat& slice, const dicom::Geometry& g, double scale, int inset) {
  int baseline = 0;
  const int th = cv::getTextSize("H", kFont, scale, 1, &baseline).height;
  const int w = slice.cols, h = slice.rows;
  const auto letter = [](const dicom::Vec3& d) { return std::string(1, direction_letters(d).front()); };
  put_text(slice, letter(negate(g.row_dir)), {inset, h / 2 + th / 2}, scale, kText, true);
  put_text(slice, letter(g.row_dir), {w - th - inset, h / 2 + th / 2}, scale, kText, true);
  put_text(slice, letter(negate(g.col_dir)), {w / 2 - th / 2, th + inset}, scale, kText, true);
  put_text(slice, letter(g.col_dir), {w / 2 - th / 2, h - inset - 2}, scale, kText, true);
}

Legend::Legend(std::string header, std::vector<Item> items, double text_scale, std::vector<std::string> lines)
    : header_(std::move(header)), items_(std::move(items)), lines_(std::move(lines)), scale_(text_scale) {
  const int text_h = cv::getTextSize("Ag", kFont, scale_, 1, &baseline_).height;
  line_h_ = text_h + baseline_ + 8;
  swatch_ = text_h + baseline_;
  int b = 0;
  header_width_ = cv::getTextSize(header_, kFont, scale_, 1, &b).width;
  for (const auto& item : items_)
    item_width_.push_back(swatch_ + 6 + cv::getTextSize(item.text, kFont, scale_, 1, &b).width + 16);
}

int Legend::widest_item() const {
  return item_width_.empty() ? 0 : *std::max_element(item_width_.begin(), item_width_.end());
}

int Legend::widest_line() const {
  int w = 0, b = 0;
  for (const auto& l : lines_) w = std::max(w, cv::getTextSize(l, kFont, scale_, 1, &b).width);
  return w;
}

std::vector<std::vector<Legend::Placed>> Legend::rows(int width) const {
  std::vector<std::vector<Placed>> out;
  int x = 0;
  for (std::size_t i = 0; i < items_.size(); ++i) {
    if (out.empty() || (x > 0 && x + item_width_[i] > width)) out.emplace_back(), x = 0;
    out.back().push_back({&items_[i], item_width_[i]});
    x += item_width_[i];
  }
  return out;
}

int Legend::height(int width) const {
  return line_h_ * (1 + static_cast<int>(rows(width).size()) + static_cast<int>(lines_.size())) + 6;
}

void Legend::draw(cv::Mat& canvas, cv::Point at, int width, bool shadow) const {
  int y = at.y + line_h_ - 6;
  put_text(canvas, header_, {at.x, y}, scale_, kText, shadow);
  for (const auto& row : rows(width)) {
    y += line_h_;
    int x = at.x;
    for (const Placed& p : row) {
      const cv::Rect sw(x, y - swatch_ + baseline_, swatch_, swatch_);
      cv::rectangle(canvas, sw, bgr(p.item->colour), cv::FILLED);
      cv::rectangle(canvas, sw, kText, 1);
      put_text(canvas, p.item->text, {x + swatch_ + 6, y}, scale_, kText, shadow);
      x += p.width;
    }
  }
  for (const auto& l : lines_) {
    y += line_h_;
    put_text(canvas, l, {at.x, y}, scale_, kText, shadow);
  }
}

cv::Mat style_mask(const cv::Mat& labels, const SegmentStyle& s) {
  cv::Mat mask;
  if (s.also.empty()) {
    cv::compare(labels, s.label, mask, cv::CMP_EQ);
    return mask;
  }
  cv::Mat lut(1, 256, CV_8U, cv::Scalar(0));
  lut.at<std::uint8_t>(s.label) = 255;
  for (auto l : s.also) lut.at<std::uint8_t>(l) = 255;
  cv::LUT(labels, lut, mask);
  return mask;
}

std::string slice_position_text(const dicom::Volume& v, int z) {
  const auto& g = v.geom;
  if (g.has_frame_of_reference && std::abs(g.normal[2]) >= 0.8) {
    const double cz = g.origin[2] + z * g.spacing_slice * g.normal[2] + 0.5 * (v.cols() - 1) * g.spacing_col * g.row_dir[2] +
                      0.5 * (v.rows() - 1) * g.spacing_row * g.col_dir[2];
    return fmt::format("z {:.1f} mm", cz);
  }
  return fmt::format("slice {}/{}", z + 1, v.depth());
}

void validate_styles(std::string_view what, std::span<const SegmentStyle> segments) {
  std::set<int> seen;
  for (const auto& s : segments) {
    if (s.label == 0) throw std::invalid_argument(fmt::format("{}: segment '{}' has label 0 (background)", what, s.name));
    if (!seen.insert(s.label).second) throw std::invalid_argument(fmt::format("{}: label {} styled twice", what, s.label));
    if (s.name.empty()) throw std::invalid_argument(fmt::format("{}: segment {} has no name", what, s.label));
    if (!(s.fill_opacity <= 1)) throw std::invalid_argument(fmt::format("{}: segment '{}' fill opacity > 1", what, s.name));
  }
}

void validate_volume_and_labels(std::string_view what, const dicom::Volume& v, const std::vector<cv::Mat>& labels) {
  if (v.slices.empty()) throw std::invalid_argument(fmt::format("{}: volume has no slices", what));
  const cv::Size size = v.slices.front().size();
  const int type = v.slices.front().type();
  if (type != CV_16SC1 && type != CV_32FC1)
    throw std::invalid_argument(fmt::format("{}: slice type {} (need CV_16SC1 or CV_32FC1)", what, type));
  if (size.area() == 0) throw std::invalid_argument(fmt::format("{}: empty slices", what));
  for (int z = 0; z < v.depth(); ++z) {
    if (v.slices[z].size() != size || v.slices[z].type() != type)
      throw std::invalid_argument(fmt::format("{}: slice {} differs in size or type from slice 0", what, z));
  }
  if (static_cast<int>(labels.size()) != v.depth())
    throw std::invalid_argument(fmt::format("{}: {} label slices for {} volume slices", what, labels.size(), v.depth()));
  for (std::size_t z = 0; z < labels.size(); ++z) {
    if (labels[z].type() != CV_8UC1 || labels[z].size() != size)
      throw std::invalid_argument(
          fmt::format("{}: label slice {} is not CV_8UC1 {}x{}", what, z, size.width, size.height));
  }
  for (double s : {v.geom.spacing_row, v.geom.spacing_col}) {
    if (!(std::isfinite(s) && s > 0)) throw std::invalid_argument(fmt::format("{}: pixel spacing {} <= 0", what, s));
  }
}

}  // namespace analysis::kernels
