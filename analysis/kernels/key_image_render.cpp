#include "analysis/kernels/key_image_render.h"
#include "analysis/kernels/render_common.h"
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

constexpr int kPad = 6;

void validate_labels(const std::vector<cv::Mat>& labels) {
  for (std::size_t z = 0; z < labels.size(); ++z) {
    if (labels[z].type() != CV_8UC1 || labels[z].empty())
      throw std::invalid_argument(fmt::format("key images: label slice {} is not a non-empty CV_8UC1", z));
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

}  // namespace

std::vector<int> select_key_slices(const std::vector<cv::Mat>& labels, std::span<const SegmentStyle> segments,
                                   int max_images) {
  validate_labels(labels);
  validate_styles("key images", segments);
  if (max_images < 1) throw std::invalid_argument("key images: max_images < 1");
  return select(label_counts(labels), segments, max_images);
}

std::string patient_orientation(const dicom::Geometry& g) {
  if (!g.has_frame_of_reference) return {};
  return direction_letters(g.row_dir) + "\\" + direction_letters(g.col_dir);
}

KeyImages render_key_images(const dicom::Volume& v, const std::vector<cv::Mat>& labels,
                            std::span<const SegmentStyle> segments, const KeyImageParams& p) {
  validate_volume_and_labels("key images", v, labels);
  validate_styles("key images", segments);
  validate_params(p);
  const auto counts = label_counts(labels);
  KeyImages out;
  out.window = p.window ? *p.window : choose_window(v);
  if (p.slices.empty()) {
    out.slice_index = select(counts, segments, p.max_images);
    out.captions.assign(out.slice_index.size(), std::string());
  } else {
    std::vector<std::pair<int, std::string>> named;
    for (const auto& [z, caption] : p.slices) {
      if (z < 0 || z >= v.depth())
        throw std::invalid_argument(fmt::format("key images: slice {} outside 0..{}", z, v.depth() - 1));
      const int slice = z;  // clang 14 cannot capture a structured binding
      if (std::none_of(named.begin(), named.end(), [slice](const auto& n) { return n.first == slice; }))
        named.push_back({z, caption});
    }
    std::stable_sort(named.begin(), named.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    if (static_cast<int>(named.size()) > p.max_images) named.resize(static_cast<std::size_t>(p.max_images));
    for (auto& [z, caption] : named) out.slice_index.push_back(z), out.captions.push_back(caption);
  }
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
  const double cm2_per_pixel = v.geom.spacing_row * v.geom.spacing_col / 100.0;
  const double letter_scale = std::clamp(size.height / 600.0, 0.4, 1.0);
  const int inner_w = std::max(size.width - 2 * kPad, 1);

  for (std::size_t k = 0; k < out.slice_index.size(); ++k) {
    const int z = out.slice_index[k];
    // Legend first: its height decides the canvas height.
    std::vector<std::string_view> parts;
    for (std::string_view part : {std::string_view(v.info.modality), std::string_view(p.study_description).substr(0, 32),
                                  std::string_view(v.info.series_description).substr(0, 32)})
      if (!part.empty()) parts.push_back(part);
    std::vector<Legend::Item> items;
    for (const auto& s : segments) {
      std::int64_t px = counts[z][s.label];
      for (auto l : s.also) px += counts[z][l];
      if (px > 0)
        items.push_back({ascii(fmt::format("{} {:.1f} cm2", s.name, static_cast<double>(px) * cm2_per_pixel)), s.colour});
    }
    if (p.laa) items.push_back({ascii(p.laa->legend), p.laa->colour});
    std::vector<std::string> lines;
    for (const auto& l : p.lines) lines.push_back(ascii(l));
    const std::string caption = out.captions[k].empty() ? std::string() : out.captions[k] + ": ";
    const Legend legend(ascii(fmt::format("{}{}{}W{:g} L{:g}  {}", caption, fmt::join(parts, " | "),
                                          parts.empty() ? "" : "  ", out.window.width, out.window.center,
                                          slice_position_text(v, z))),
                        std::move(items), text_scale, std::move(lines));
    cv::Mat canvas(size.height + legend.height(inner_w), size.width, CV_8UC3, kBackground);
    out.slice_area = cv::Rect(0, 0, size.width, size.height);

    cv::Mat tile = render_overlay(v.slices[z], labels[z], out.window, size, segments, p.fill_opacity, p.outline_thickness,
                                  p.laa ? &*p.laa : nullptr);
    if (p.orientation_letters && v.geom.has_frame_of_reference) put_direction_letters(tile, v.geom, letter_scale, 4);
    tile.copyTo(canvas(out.slice_area));
    legend.draw(canvas, {kPad, size.height}, inner_w, false);
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
  spec.lossy_compression = v.acquisition.lossy_compression;
  spec.lossy_ratio = v.acquisition.lossy_ratio;
  spec.lossy_method = v.acquisition.lossy_method;
  spec.patient_orientation = patient_orientation(v.geom);
  if (k.slice_index.empty()) {
    if (!v.sources.empty()) spec.source_file = v.sources.front().path;
    return spec;  // nothing to write
  }
  spec.source_file = v.sources[k.slice_index.front()].path;
  if (spec.source_file.empty()) throw std::invalid_argument("key images: the volume's sources have no file path");
  const std::string overlay =
      p.fill_opacity > 0 ? fmt::format("outline and {:.0f}% fill", p.fill_opacity * 100) : std::string("outline");
  for (std::size_t i = 0; i < k.slice_index.size(); ++i) {
    const int z = k.slice_index[i];
    spec.derivation_descriptions.push_back(
        fmt::format("Key image{}: source slice {} of {}, window W{:g} L{:g}, segmentation overlay ({}) and legend "
                    "burned in; resampled, not for measurement.",
                    k.captions[i].empty() ? "" : " (" + k.captions[i] + ")", z + 1, v.depth(), k.window.width,
                    k.window.center, overlay));
  }
  spec.images = std::move(k.images);
  spec.slice_index = std::move(k.slice_index);
  return spec;
}

}  // namespace analysis::kernels
