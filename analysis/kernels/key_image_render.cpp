#include "analysis/kernels/key_image_render.h"
#include "analysis/kernels/types.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <opencv2/imgproc.hpp>

#include "dicom/log.h"

namespace analysis::kernels {

namespace {

std::shared_ptr<spdlog::logger> logger() { return pacsnode::component_logger("keyimages"); }

const cv::Scalar kLegendBackground(24, 24, 24);  // BGR
const cv::Scalar kText(235, 235, 235);
const cv::Scalar kTextShadow(0, 0, 0);
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr int kPad = 6;

cv::Scalar bgr(const Rgb& c) { return cv::Scalar(c.b, c.g, c.r); }

std::string ascii(std::string_view s) {
  std::string out;
  for (unsigned char c : s) out.push_back(c >= 32 && c < 127 ? static_cast<char>(c) : '?');
  return out;
}

void validate_styles(std::span<const SegmentStyle> segments) {
  std::set<int> seen;
  for (const auto& s : segments) {
    if (s.label == 0) throw std::invalid_argument(fmt::format("key images: segment '{}' has label 0 (background)", s.name));
    if (!seen.insert(s.label).second) throw std::invalid_argument(fmt::format("key images: label {} styled twice", s.label));
    if (s.name.empty()) throw std::invalid_argument(fmt::format("key images: segment {} has no name", s.label));
  }
}

void validate_labels(const std::vector<cv::Mat>& labels) {
  for (std::size_t z = 0; z < labels.size(); ++z) {
    if (labels[z].type() != CV_8UC1 || labels[z].empty())
      throw std::invalid_argument(fmt::format("key images: label slice {} is not a non-empty CV_8UC1", z));
  }
}

void validate_volume(const dicom::Volume& v, const std::vector<cv::Mat>& labels) {
  if (v.slices.empty()) throw std::invalid_argument("key images: volume has no slices");
  const cv::Size size = v.slices.front().size();
  const int type = v.slices.front().type();
  if (type != CV_16SC1 && type != CV_32FC1)
    throw std::invalid_argument(fmt::format("key images: slice type {} (need CV_16SC1 or CV_32FC1)", type));
  if (size.area() == 0) throw std::invalid_argument("key images: empty slices");
  for (int z = 0; z < v.depth(); ++z) {
    if (v.slices[z].size() != size || v.slices[z].type() != type)
      throw std::invalid_argument(fmt::format("key images: slice {} differs in size or type from slice 0", z));
  }
  if (static_cast<int>(labels.size()) != v.depth())
    throw std::invalid_argument(fmt::format("key images: {} label slices for {} volume slices", labels.size(), v.depth()));
  validate_labels(labels);
  for (std::size_t z = 0; z < labels.size(); ++z) {
    if (labels[z].size() != size)
      throw std::invalid_argument(fmt::format("key images: label slice {} is not {}x{}", z, size.width, size.height));
  }
  for (double s : {v.geom.spacing_row, v.geom.spacing_col}) {
    if (!(std::isfinite(s) && s > 0)) throw std::invalid_argument(fmt::format("key images: pixel spacing {} <= 0", s));
  }
}

void validate_params(const KeyImageParams& p) {
  if (p.max_images < 1 || p.max_images > 64)
    throw std::invalid_argument(fmt::format("key images: max_images {} not in 1..64", p.max_images));
  if (p.long_side < 64 || p.long_side > 2048)
    throw std::invalid_argument(fmt::format("key images: long_side {} not in 64..2048", p.long_side));
  if (!(p.fill_opacity >= 0 && p.fill_opacity <= 1)) throw std::invalid_argument("key images: fill_opacity not in [0, 1]");
  if (p.outline_thickness < 0 || p.outline_thickness > 16)
    throw std::invalid_argument("key images: outline_thickness not in 0..16");
  if (p.window && !(std::isfinite(p.window->width) && p.window->width > 0 && std::isfinite(p.window->center)))
    throw std::invalid_argument("key images: window width must be > 0 and finite");
}

std::vector<int> select(const std::vector<std::array<std::int64_t, 256>>& counts, std::span<const SegmentStyle> segments,
                        int max_images) {
  // Per segment, its slices by decreasing area (ties: lower slice first).
  std::vector<std::vector<int>> ranked;
  for (const auto& s : segments) {
    std::vector<int> zs;
    for (int z = 0; z < static_cast<int>(counts.size()); ++z)
      if (counts[z][s.label] > 0) zs.push_back(z);
    std::stable_sort(zs.begin(), zs.end(), [&](int a, int b) { return counts[a][s.label] > counts[b][s.label]; });
    ranked.push_back(std::move(zs));
  }
  std::set<int> picked;
  for (std::size_t rank = 0; static_cast<int>(picked.size()) < max_images; ++rank) {
    bool any_left = false;
    for (const auto& zs : ranked) {
      if (rank >= zs.size()) continue;
      any_left = true;
      if (static_cast<int>(picked.size()) < max_images) picked.insert(zs[rank]);
    }
    if (!any_left) break;
  }
  return {picked.begin(), picked.end()};
}

// Letters of a direction in LPS: every axis with |cosine| >= 0.25, largest first.
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

dicom::Vec3 negate(const dicom::Vec3& d) { return {-d[0], -d[1], -d[2]}; }

void put_text(cv::Mat& img, const std::string& text, cv::Point org, double scale, const cv::Scalar& colour, bool shadow) {
  if (shadow) cv::putText(img, text, org + cv::Point(1, 1), kFont, scale, kTextShadow, 2, cv::LINE_AA);
  cv::putText(img, text, org, kFont, scale, colour, 1, cv::LINE_AA);
}

// The slice, windowed, resized to `size`, with the segments drawn.

}  // namespace

std::vector<int> select_key_slices(const std::vector<cv::Mat>& labels, std::span<const SegmentStyle> segments,
                                   int max_images) {
  validate_labels(labels);
  validate_styles(segments);
  if (max_images < 1) throw std::invalid_argument("key images: max_images < 1");
  return select(label_counts(labels), segments, max_images);
}

std::string patient_orientation(const dicom::Geometry& g) {
  if (!g.has_frame_of_reference) return {};
  return direction_letters(g.row_dir) + "\\" + direction_letters(g.col_dir);
}

KeyImages render_key_images(const dicom::Volume& v, const std::vector<cv::Mat>& labels,
                            std::span<const SegmentStyle> segments, const KeyImageParams& p) {
  validate_volume(v, labels);
  validate_styles(segments);
  validate_params(p);
  const auto counts = label_counts(labels);
  KeyImages out;
  out.window = p.window ? *p.window : choose_window(v);
  out.slice_index = select(counts, segments, p.max_images);
  if (out.slice_index.empty()) {
    logger()->debug("key images: no styled segment present, nothing to render");
    return out;
  }

  // Slice size from the physical extent.
  const double w_mm = v.cols() * v.geom.spacing_col, h_mm = v.rows() * v.geom.spacing_row;
  const double px_per_mm = p.long_side / std::max(w_mm, h_mm);
  const cv::Size size(std::max(1, static_cast<int>(std::lround(w_mm * px_per_mm))),
                      std::max(1, static_cast<int>(std::lround(h_mm * px_per_mm))));
  const double text_scale = std::clamp(std::max(size.width, 320) / 1024.0, 0.4, 1.0);
  int baseline = 0;
  const int text_h = cv::getTextSize("Ag", kFont, text_scale, 1, &baseline).height;
  const int line_h = text_h + baseline + 8;
  const int swatch = text_h + baseline;
  const double cm2_per_pixel = v.geom.spacing_row * v.geom.spacing_col / 100.0;
  const char left = direction_letters(negate(v.geom.row_dir)).front(), right = direction_letters(v.geom.row_dir).front();
  const char top = direction_letters(negate(v.geom.col_dir)).front(), bottom = direction_letters(v.geom.col_dir).front();
  const double letter_scale = std::clamp(size.height / 600.0, 0.4, 1.0);

  for (int z : out.slice_index) {
    // Legend text first: its width decides the canvas width.
    std::vector<std::string_view> parts;
    for (std::string_view part : {std::string_view(v.info.modality), std::string_view(v.info.series_description).substr(0, 32)})
      if (!part.empty()) parts.push_back(part);
    const std::string header = ascii(fmt::format("{}{}W{:g} L{:g}  slice {}/{}", fmt::join(parts, " "),
                                                 parts.empty() ? "" : "  ", out.window.width, out.window.center, z + 1,
                                                 v.depth()));
    struct Entry {
      std::string text;
      Rgb colour;
      int width;
    };
    std::vector<Entry> entries;
    for (const auto& s : segments) {
      const std::int64_t px = counts[z][s.label];
      if (px == 0) continue;
      std::string text = ascii(fmt::format("{} {:.1f} cm2", s.name, static_cast<double>(px) * cm2_per_pixel));
      const int w = swatch + 6 + cv::getTextSize(text, kFont, text_scale, 1, &baseline).width + 16;
      entries.push_back({std::move(text), s.colour, w});
    }
    const int inner_w = std::max(size.width - 2 * kPad, 1);
    std::vector<std::vector<const Entry*>> lines(1);
    int x = 0;
    for (const auto& e : entries) {
      if (x > 0 && x + e.width > inner_w) lines.emplace_back(), x = 0;
      lines.back().push_back(&e);
      x += e.width;
    }
    const int legend_h = line_h * (1 + static_cast<int>(lines.size())) + kPad;
    cv::Mat canvas(size.height + legend_h, size.width, CV_8UC3, kLegendBackground);
    out.slice_area = cv::Rect(0, 0, size.width, size.height);

    cv::Mat tile = render_overlay(v.slices[z], labels[z], out.window, size, segments, p.fill_opacity, p.outline_thickness);
    if (p.orientation_letters && v.geom.has_frame_of_reference) {
      const int th = cv::getTextSize("H", kFont, letter_scale, 1, &baseline).height;
      put_text(tile, std::string(1, left), {4, size.height / 2 + th / 2}, letter_scale, kText, true);
      put_text(tile, std::string(1, right), {size.width - th - 4, size.height / 2 + th / 2}, letter_scale, kText, true);
      put_text(tile, std::string(1, top), {size.width / 2 - th / 2, th + 4}, letter_scale, kText, true);
      put_text(tile, std::string(1, bottom), {size.width / 2 - th / 2, size.height - 6}, letter_scale, kText, true);
    }
    tile.copyTo(canvas(out.slice_area));

    int y = size.height + line_h - 4;
    put_text(canvas, header, {kPad, y}, text_scale, kText, false);
    for (const auto& line : lines) {
      if (line.empty()) continue;
      y += line_h;
      int lx = kPad;
      for (const Entry* e : line) {
        const cv::Rect sw(lx, y - swatch + baseline, swatch, swatch);
        cv::rectangle(canvas, sw, bgr(e->colour), cv::FILLED);
        cv::rectangle(canvas, sw, kText, 1);
        put_text(canvas, e->text, {lx + swatch + 6, y}, text_scale, kText, false);
        lx += e->width;
      }
    }
    out.images.push_back(std::move(canvas));
  }
  logger()->debug("key images: {} of {}x{} px, W{} L{}", out.images.size(), out.images.front().cols,
                  out.images.front().rows, out.window.width, out.window.center);
  return out;
}

dicom::KeyImageSpec key_image_spec(const dicom::Volume& v, const std::vector<cv::Mat>& labels,
                                   std::span<const SegmentStyle> segments, const KeyImageParams& p) {
  if (static_cast<int>(v.sources.size()) != v.depth())
    throw std::invalid_argument(fmt::format("key images: {} sources for {} slices", v.sources.size(), v.depth()));
  KeyImages k = render_key_images(v, labels, segments, p);
  dicom::KeyImageSpec spec;
  spec.sources = v.sources;
  spec.patient_orientation = patient_orientation(v.geom);
  if (k.slice_index.empty()) {
    if (!v.sources.empty()) spec.source_file = v.sources.front().path;
    return spec;  // nothing to write
  }
  spec.source_file = v.sources[k.slice_index.front()].path;
  if (spec.source_file.empty()) throw std::invalid_argument("key images: the volume's sources have no file path");
  const std::string overlay =
      p.fill_opacity > 0 ? fmt::format("outline and {:.0f}% fill", p.fill_opacity * 100) : std::string("outline");
  for (int z : k.slice_index) {
    spec.derivation_descriptions.push_back(
        fmt::format("Key image: source slice {} of {}, window W{:g} L{:g}, segmentation overlay ({}) and legend "
                    "burned in; resampled, not for measurement.",
                    z + 1, v.depth(), k.window.width, k.window.center, overlay));
  }
  spec.images = std::move(k.images);
  spec.slice_index = std::move(k.slice_index);
  return spec;
}

}  // namespace analysis::kernels
