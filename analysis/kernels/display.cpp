#include "analysis/kernels/display.h"
#include "analysis/kernels/png.h"
#include "analysis/kernels/render_common.h"
#include "analysis/kernels/types.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <set>
#include <stdexcept>
#include <system_error>
#include <unistd.h>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include "dicom/log.h"

namespace analysis::kernels {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> logger() { return pacsnode::component_logger("display"); }

constexpr int kMargin = 6, kGap = 4;

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

void validate_inputs(const dicom::Volume& v, const std::vector<cv::Mat>& labels,
                     std::span<const SegmentStyle> segments) {
  validate_volume_and_labels("preview", v, labels);
  validate_styles("preview", segments);
}

void validate_params(const PreviewParams& p) {
  if (p.max_tiles < 1 || p.max_tiles > 64) throw std::invalid_argument(fmt::format("preview: max_tiles {} not in 1..64", p.max_tiles));
  if (p.columns < 0) throw std::invalid_argument("preview: columns < 0");
  if (p.tile_long_side < 32 || p.tile_long_side > 2048) {
    throw std::invalid_argument(fmt::format("preview: tile_long_side {} not in 32..2048", p.tile_long_side));
  }
  if (!(p.fill_opacity >= 0 && p.fill_opacity <= 1)) throw std::invalid_argument("preview: fill_opacity not in [0, 1]");
  if (p.outline_thickness < 0 || p.outline_thickness > 16) throw std::invalid_argument("preview: outline_thickness not in 0..16");
  if (!(p.auto_low_percentile >= 0 && p.auto_low_percentile < p.auto_high_percentile && p.auto_high_percentile <= 100)) {
    throw std::invalid_argument("preview: need 0 <= auto_low_percentile < auto_high_percentile <= 100");
  }
  if (p.window && !(std::isfinite(p.window->width) && p.window->width > 0 && std::isfinite(p.window->center))) {
    throw std::invalid_argument("preview: window width must be > 0 and finite");
  }
}

std::vector<int> evenly_spaced(int first, int last, int max_tiles) {
  const int len = last - first + 1, n = std::min(max_tiles, len);
  std::vector<int> z;
  for (int i = 0; i < n; ++i) z.push_back(first + static_cast<int>(std::floor((i + 0.5) * len / n)));
  return z;
}

std::set<int> coverage(const std::vector<int>& picked, const std::vector<std::array<std::int64_t, 256>>& counts,
                       std::span<const SegmentStyle> segments) {
  std::set<int> shown;
  for (int z : picked) {
    for (const auto& s : segments) {
      if (counts[z][s.label] > 0) shown.insert(s.label);
    }
  }
  return shown;
}

std::vector<int> select_slices(const dicom::Volume& v, const std::vector<std::array<std::int64_t, 256>>& counts,
                               std::span<const SegmentStyle> segments, int max_tiles) {
  const int depth = v.depth();
  int first = -1, last = -1;
  for (int z = 0; z < depth; ++z) {
    const bool any = std::any_of(segments.begin(), segments.end(), [&](const SegmentStyle& s) { return counts[z][s.label] > 0; });
    if (any) {
      if (first < 0) first = z;
      last = z;
    }
  }
  if (first < 0) {  // no segment: skip constant (padding) slices at both ends
    for (int z = 0; z < depth; ++z) {
      double lo = 0, hi = 0;
      cv::minMaxLoc(v.slices[z], &lo, &hi);
      if (hi > lo) {
        if (first < 0) first = z;
        last = z;
      }
    }
    if (first < 0) first = 0, last = depth - 1;
    return evenly_spaced(first, last, max_tiles);
  }
  std::vector<int> picked = evenly_spaced(first, last, max_tiles);
  // Every present segment on at least one tile: swap its largest slice in for the nearest pick,
  // unless that would hide a segment shown so far.
  for (const auto& s : segments) {
    std::int64_t best = 0;
    int best_z = -1;
    for (int z = 0; z < depth; ++z) {
      if (counts[z][s.label] > best) best = counts[z][s.label], best_z = z;
    }
    if (best_z < 0 || coverage(picked, counts, segments).count(s.label)) continue;
    std::vector<int> by_distance = picked;
    std::sort(by_distance.begin(), by_distance.end(),
              [&](int a, int b) { return std::abs(a - best_z) < std::abs(b - best_z); });
    const auto before = coverage(picked, counts, segments);
    for (int candidate : by_distance) {
      std::vector<int> trial = picked;
      *std::find(trial.begin(), trial.end(), candidate) = best_z;
      const auto after = coverage(trial, counts, segments);
      if (after.count(s.label) && std::includes(after.begin(), after.end(), before.begin(), before.end())) {
        picked = trial;
        break;
      }
    }
  }
  std::sort(picked.begin(), picked.end());
  picked.erase(std::unique(picked.begin(), picked.end()), picked.end());
  return picked;
}

}  // namespace

cv::Mat render_overlay(const cv::Mat& slice, const cv::Mat& label_slice, const WindowLevel& wl, cv::Size size,
                       std::span<const SegmentStyle> segments, double fill_opacity, int outline_thickness,
                       const LowAttenuationOverlay* laa) {
  // v' = (v - (c - w/2)) * 255 / w, saturated to 0..255
  const double alpha = 255.0 / wl.width, beta = -(wl.center - wl.width / 2.0) * alpha;
  cv::Mat grey;
  slice.convertTo(grey, CV_8U, alpha, beta);
  const bool shrinking = size.width < grey.cols || size.height < grey.rows;
  cv::resize(grey, grey, size, 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
  cv::Mat out;
  cv::cvtColor(grey, out, cv::COLOR_GRAY2BGR);
  cv::Mat lab;
  cv::resize(label_slice, lab, size, 0, 0, cv::INTER_NEAREST);
  const auto blend = [&](const cv::Mat& mask, const Rgb& c, double opacity) {
    cv::Mat colour(out.size(), out.type(), bgr(c)), blended;
    cv::addWeighted(out, 1.0 - opacity, colour, opacity, 0.0, blended);
    blended.copyTo(out, mask);
  };
  std::vector<cv::Mat> masks;
  for (const auto& s : segments) {
    masks.push_back(style_mask(lab, s));
    const double opacity = s.fill_opacity >= 0 ? s.fill_opacity : fill_opacity;
    if (opacity > 0 && cv::countNonZero(masks.back())) blend(masks.back(), s.colour, opacity);
  }
  if (laa && !laa->labels.empty()) {
    cv::Mat low, where, in_labels = cv::Mat::zeros(label_slice.size(), CV_8U), m;
    cv::compare(slice, laa->below, low, cv::CMP_LT);
    for (auto l : laa->labels) {
      cv::compare(label_slice, l, m, cv::CMP_EQ);
      cv::bitwise_or(in_labels, m, in_labels);
    }
    cv::bitwise_and(low, in_labels, where);
    if (cv::countNonZero(where)) {
      cv::resize(where, where, size, 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_NEAREST);
      cv::threshold(where, where, 96, 255, cv::THRESH_BINARY);  // area-shrunk: mostly low-attenuation
      blend(where, laa->colour, laa->opacity);
    }
  }
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (outline_thickness <= 0 || cv::countNonZero(masks[i]) == 0) continue;
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(masks[i], contours, cv::RETR_LIST, cv::CHAIN_APPROX_NONE);
    cv::drawContours(out, contours, -1, bgr(segments[i].colour), outline_thickness, cv::LINE_8);
  }
  return out;
}

WindowLevel choose_window(const dicom::Volume& v, const PreviewParams& p) {
  if (p.window) return *p.window;
  if (upper(v.info.modality) == "CT") {
    const std::string where = upper(v.info.body_part + " " + v.info.series_description + " " + v.info.protocol_name);
    for (const char* chest : {"CHEST", "THORAX", "LUNG"}) {
      if (where.find(chest) != std::string::npos) return kLungWindow;
    }
    return kSoftTissueWindow;
  }
  // Percentiles of an even sample of the voxels.
  std::size_t total = 0;
  for (const auto& s : v.slices) total += s.total();
  const std::size_t step = std::max<std::size_t>(1, total / 1'000'000);
  std::vector<float> sample;
  sample.reserve(total / step + 1);
  std::size_t i = 0;
  for (const auto& s : v.slices) {
    cv::Mat f;
    s.convertTo(f, CV_32F);
    for (int r = 0; r < f.rows; ++r) {
      const float* row = f.ptr<float>(r);
      for (int c = 0; c < f.cols; ++c, ++i) {
        if (i % step == 0 && std::isfinite(row[c])) sample.push_back(row[c]);
      }
    }
  }
  if (sample.empty()) return WindowLevel{1.0, 0.0};
  const auto at = [&](double pct) {
    const auto k = static_cast<std::size_t>(std::llround(pct / 100.0 * static_cast<double>(sample.size() - 1)));
    std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(k), sample.end());
    return static_cast<double>(sample[k]);
  };
  const double lo = at(p.auto_low_percentile), hi = at(p.auto_high_percentile);
  if (!(hi > lo)) return WindowLevel{1.0, lo};
  return WindowLevel{hi - lo, (hi + lo) / 2.0};
}

std::vector<int> select_preview_slices(const dicom::Volume& v, const std::vector<cv::Mat>& labels,
                                       std::span<const SegmentStyle> segments, int max_tiles) {
  validate_inputs(v, labels, segments);
  if (max_tiles < 1) throw std::invalid_argument("preview: max_tiles < 1");
  return select_slices(v, label_counts(labels), segments, max_tiles);
}

Preview render_preview(const dicom::Volume& v, const std::vector<cv::Mat>& labels,
                       std::span<const SegmentStyle> segments, const PreviewParams& p) {
  validate_inputs(v, labels, segments);
  validate_params(p);
  const auto counts = label_counts(labels);
  PreviewLayout L;
  L.window = choose_window(v, p);
  L.slices = select_slices(v, counts, segments, p.max_tiles);

  // Tile size from the physical extent.
  const double w_mm = v.cols() * v.geom.spacing_col, h_mm = v.rows() * v.geom.spacing_row;
  L.px_per_mm = p.tile_long_side / std::max(w_mm, h_mm);
  L.tile_size = cv::Size(std::max(1, static_cast<int>(std::lround(w_mm * L.px_per_mm))),
                         std::max(1, static_cast<int>(std::lround(h_mm * L.px_per_mm))));
  const int n = static_cast<int>(L.slices.size());
  L.columns = p.columns > 0 ? std::min(p.columns, n) : static_cast<int>(std::ceil(std::sqrt(n)));
  L.rows = (n + L.columns - 1) / L.columns;

  // Legend text, laid out before the canvas size is known.
  const double ml_per_voxel = v.voxel_volume_mm3() / 1000.0;
  std::vector<Legend::Item> items;
  for (const auto& s : segments) {
    std::int64_t voxels = 0;
    for (const auto& c : counts) {
      voxels += c[s.label];
      for (auto l : s.also) voxels += c[l];
    }
    std::string text = voxels <= 0 ? fmt::format("{} (absent)", s.name)
                       : s.legend.empty() ? fmt::format("{} {:.1f} mL", s.name, voxels * ml_per_voxel)
                                          : s.legend;
    items.push_back({ascii(text), s.colour});
  }
  if (p.laa) items.push_back({ascii(p.laa->legend), p.laa->colour});
  std::vector<std::string> lines;
  for (const auto& l : p.lines) lines.push_back(ascii(l));
  std::string what = v.info.modality;
  for (const std::string* d : {&p.study_description, &v.info.series_description})
    if (!d->empty()) what += (what.empty() ? "" : " | ") + *d;
  const Legend legend(ascii(fmt::format("{}  W{:g} L{:g}  {} .. {} ({} of {} slices)", what, L.window.width,
                                        L.window.center, slice_position_text(v, L.slices.front()),
                                        slice_position_text(v, L.slices.back()), L.slices.size(), v.depth())),
                      std::move(items), 0.45, std::move(lines));
  const int tiles_w = L.columns * L.tile_size.width + (L.columns - 1) * kGap;
  const int inner_w = std::max({tiles_w, 320, std::min(legend.header_width(), 1200), legend.widest_item(),
                                std::min(legend.widest_line(), 1200)});
  const int legend_h = legend.height(inner_w);

  const int tiles_h = L.rows * L.tile_size.height + (L.rows - 1) * kGap;
  cv::Mat canvas(kMargin + tiles_h + kGap + legend_h + kMargin, kMargin * 2 + inner_w, CV_8UC3, kBackground);
  L.legend = cv::Rect(kMargin, kMargin + tiles_h + kGap, inner_w, legend_h);

  const double small = std::clamp(L.tile_size.height / 400.0, 0.3, 0.6);
  for (int i = 0; i < n; ++i)
    L.tiles.emplace_back(kMargin + (i % L.columns) * (L.tile_size.width + kGap),
                         kMargin + (i / L.columns) * (L.tile_size.height + kGap), L.tile_size.width, L.tile_size.height);
  // Tiles on OpenCV's threads: each writes its own part of the canvas.
  parallel_slices(0, n, [&](int i) {
    const cv::Rect& r = L.tiles[static_cast<std::size_t>(i)];
    cv::Mat tile = render_overlay(v.slices[L.slices[i]], labels[L.slices[i]], L.window, L.tile_size, segments,
                                  p.fill_opacity, p.outline_thickness, p.laa ? &*p.laa : nullptr);
    if (p.annotate_slices) {
      // The first tile also gets direction letters: its position goes one line up, clear of the
      // letter at the bottom edge.
      const bool letters = i == 0 && v.geom.has_frame_of_reference;
      int baseline = 0;
      const int th = cv::getTextSize("Ag", cv::FONT_HERSHEY_SIMPLEX, small, 1, &baseline).height + baseline;
      put_text(tile, slice_position_text(v, L.slices[i]), {4, L.tile_size.height - 5 - (letters ? th + 4 : 0)}, small,
               kText, true);
      if (letters) put_direction_letters(tile, v.geom, small, 3);
    }
    tile.copyTo(canvas(r));
  });
  legend.draw(canvas, L.legend.tl(), inner_w, true);
  logger()->debug("preview: {} tiles of {}x{} px, W{} L{}", n, L.tile_size.width, L.tile_size.height,
                  L.window.width, L.window.center);
  return Preview{canvas, L};
}

PreviewLayout write_preview(const fs::path& png, const dicom::Volume& v, const std::vector<cv::Mat>& labels,
                            std::span<const SegmentStyle> segments, const PreviewParams& p) {
  if (png.extension() != ".png") {
    throw std::invalid_argument(fmt::format("preview: '{}' does not end in .png", png.string()));
  }
  const Preview preview = render_preview(v, labels, segments, p);
  const fs::path dir = png.has_parent_path() ? png.parent_path() : fs::path(".");
  const fs::path tmp = dir / fmt::format(".{}.tmp{}.png", png.stem().string(), ::getpid());
  try {
    try {
      write_png(tmp, preview.bgr, 2, /*row_filters=*/false);  // see display.h
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(fmt::format("preview: {}", e.what()));  // the temporary goes below
    }
    fs::rename(tmp, png);
  } catch (const cv::Exception& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw std::runtime_error(fmt::format("preview: cannot write '{}': {}", png.string(), e.what()));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  logger()->info("preview: {} tiles, {}x{} px, W{:g} L{:g}", preview.layout.slices.size(), preview.bgr.cols,
                 preview.bgr.rows, preview.layout.window.width, preview.layout.window.center);
  return preview.layout;
}

}  // namespace analysis::kernels
