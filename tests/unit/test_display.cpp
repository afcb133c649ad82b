#define BOOST_TEST_MODULE display
#include <boost/test/unit_test.hpp>

#include "support/temp_dir.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "analysis/kernels/display.h"

namespace k = analysis::kernels;
namespace fs = std::filesystem;

namespace {

using TempDir = testsupport::TempDir;

struct Sphere {
  double x_mm, y_mm, z_mm, radius_mm;
  std::int16_t hu;
  std::uint8_t label;
};

// Chest-like CT: 40 slices of 128 rows x 96 cols, anisotropic pixels (0.5 mm rows, 1.0 mm
// columns: 96 x 64 mm), 2 mm slices; air outside an elliptic "body" of -850 HU, two spheres.
// Coordinates are of voxel centres: x = (c + 0.5) * spacing_col, ...
struct Phantom {
  dicom::Volume volume;
  std::vector<cv::Mat> labels;
  std::vector<Sphere> spheres{{30.0, 30.0, 31.0, 12.0, 40, 1}, {68.0, 36.0, 51.0, 9.0, -120, 2}};
};

Phantom make_phantom() {
  Phantom p;
  auto& v = p.volume;
  v.info.modality = "CT";
  v.info.body_part = "CHEST";
  v.info.series_description = "synthetic chest";
  v.info.units = "HU";
  v.geom.spacing_row = 0.5;
  v.geom.spacing_col = 1.0;
  v.geom.spacing_slice = 2.0;
  const int depth = 40, rows = 128, cols = 96;
  for (int z = 0; z < depth; ++z) {
    cv::Mat img(rows, cols, CV_16S, cv::Scalar(-1000)), lab(rows, cols, CV_8U, cv::Scalar(0));
    const double zm = (z + 0.5) * v.geom.spacing_slice;
    for (int r = 0; r < rows; ++r) {
      const double ym = (r + 0.5) * v.geom.spacing_row;
      for (int c = 0; c < cols; ++c) {
        const double xm = (c + 0.5) * v.geom.spacing_col;
        if (std::pow((xm - 48) / 45, 2) + std::pow((ym - 32) / 30, 2) < 1) {
          img.at<std::int16_t>(r, c) = static_cast<std::int16_t>(-850 + (r + c) % 7);
        }
        for (const auto& s : p.spheres) {
          if (std::pow(xm - s.x_mm, 2) + std::pow(ym - s.y_mm, 2) + std::pow(zm - s.z_mm, 2) < s.radius_mm * s.radius_mm) {
            img.at<std::int16_t>(r, c) = s.hu;
            lab.at<std::uint8_t>(r, c) = s.label;
          }
        }
      }
    }
    v.slices.push_back(img);
    p.labels.push_back(lab);
  }
  v.sources.resize(depth);
  return p;
}

const std::vector<k::SegmentStyle> kStyles{{1, "nodule", {230, 40, 40}}, {2, "cyst", {40, 220, 60}}};

// Slices where label `l` occurs.
std::set<int> slices_with(const Phantom& p, std::uint8_t l) {
  std::set<int> z;
  for (int i = 0; i < p.volume.depth(); ++i) {
    if (cv::countNonZero(p.labels[i] == l) > 0) z.insert(i);
  }
  return z;
}

int count_colour(const cv::Mat& bgr, const k::Rgb& c) {
  cv::Mat m;
  cv::inRange(bgr, cv::Scalar(c.b, c.g, c.r), cv::Scalar(c.b, c.g, c.r), m);
  return cv::countNonZero(m);
}

}  // namespace

BOOST_AUTO_TEST_CASE(png_has_expected_tiles_colours_and_legend) {
  TempDir tmp;
  const Phantom p = make_phantom();
  const fs::path png = tmp.path / "preview.png";
  const auto layout = k::write_preview(png, p.volume, p.labels, kStyles);
  BOOST_REQUIRE(fs::is_regular_file(png));
  const cv::Mat img = cv::imread(png.string(), cv::IMREAD_COLOR);
  BOOST_REQUIRE(!img.empty());
  if (const char* keep = std::getenv("PACSNODE_KEEP_PREVIEW")) fs::copy_file(png, keep, fs::copy_options::overwrite_existing);

  // 12 tiles (the segments span 22 slices) in 4 columns x 3 rows, aspect from the spacing:
  // 96 mm x 64 mm -> 256 x 171 px.
  BOOST_TEST(layout.slices.size() == 12u);
  BOOST_TEST(layout.tiles.size() == 12u);
  BOOST_TEST(layout.columns == 4);
  BOOST_TEST(layout.rows == 3);
  BOOST_TEST(layout.tile_size.width == 256);
  BOOST_TEST(layout.tile_size.height == 171);
  const cv::Rect whole(0, 0, img.cols, img.rows);
  for (const auto& r : layout.tiles) {
    BOOST_TEST((r & whole) == r);
    BOOST_TEST(r.size() == layout.tile_size);
    BOOST_TEST((r & layout.legend).area() == 0);
  }
  BOOST_TEST(layout.window.width == 1500.0);  // chest CT: lung window
  BOOST_TEST(layout.window.center == -600.0);

  // Each sphere's colour is drawn where the sphere is, and only there.
  for (std::size_t s = 0; s < p.spheres.size(); ++s) {
    const auto& sph = p.spheres[s];
    const auto has = slices_with(p, sph.label);
    int tiles_with_colour = 0;
    for (std::size_t t = 0; t < layout.slices.size(); ++t) {
      const cv::Mat tile = img(layout.tiles[t]);
      const int n = count_colour(tile, kStyles[s].colour);
      if (!has.count(layout.slices[t])) {
        BOOST_TEST(n == 0, "tile " << t << " slice " << layout.slices[t] << " shows label " << int(sph.label));
        continue;
      }
      if (n == 0) continue;  // a tiny cap may vanish in resampling
      ++tiles_with_colour;
      // Outline pixels lie on the sphere's cross-section circle, in tile pixels.
      const double zm = (layout.slices[t] + 0.5) * p.volume.geom.spacing_slice;
      const double rc = std::sqrt(std::max(0.0, sph.radius_mm * sph.radius_mm - std::pow(zm - sph.z_mm, 2)));
      const double cx = sph.x_mm * layout.px_per_mm, cy = sph.y_mm * layout.px_per_mm, rpx = rc * layout.px_per_mm;
      cv::Mat m;
      cv::inRange(tile, cv::Scalar(kStyles[s].colour.b, kStyles[s].colour.g, kStyles[s].colour.r),
                  cv::Scalar(kStyles[s].colour.b, kStyles[s].colour.g, kStyles[s].colour.r), m);
      std::vector<cv::Point> pts;
      cv::findNonZero(m, pts);
      for (const auto& q : pts) {
        const double d = std::hypot(q.x + 0.5 - cx, q.y + 0.5 - cy);
        BOOST_TEST(d < rpx + 3.0);
      }
      // The fill: the centre of a large cross-section is tinted towards the segment colour.
      if (rpx > 10) {
        const cv::Vec3b c = tile.at<cv::Vec3b>(static_cast<int>(cy), static_cast<int>(cx));
        const k::Rgb& want = kStyles[s].colour;
        if (want.r > want.g) BOOST_TEST(int(c[2]) > int(c[1]) + 30);
        else BOOST_TEST(int(c[1]) > int(c[2]) + 30);
      }
    }
    BOOST_TEST(tiles_with_colour >= 2, "label " << int(sph.label));
  }

  // The legend has text and both swatches.
  const cv::Mat legend = img(layout.legend);
  cv::Mat bg;
  cv::inRange(legend, cv::Scalar(24, 24, 24), cv::Scalar(24, 24, 24), bg);
  BOOST_TEST(legend.total() - static_cast<std::size_t>(cv::countNonZero(bg)) > 500u);
  for (const auto& st : kStyles) BOOST_TEST(count_colour(legend, st.colour) > 20);
}

BOOST_AUTO_TEST_CASE(slices_stay_within_the_segments_and_show_every_segment) {
  Phantom p = make_phantom();
  const auto a = slices_with(p, 1), b = slices_with(p, 2);
  const int first = std::min(*a.begin(), *b.begin()), last = std::max(*a.rbegin(), *b.rbegin());
  const auto z = k::select_preview_slices(p.volume, p.labels, kStyles, 12);
  BOOST_TEST(z.size() == 12u);
  BOOST_TEST(std::is_sorted(z.begin(), z.end()));
  BOOST_TEST(std::set<int>(z.begin(), z.end()).size() == z.size());
  for (int s : z) BOOST_TEST((s >= first && s <= last));
  // Bin centres: with few tiles the thin caps at both ends are not shown.
  const auto four = k::select_preview_slices(p.volume, p.labels, kStyles, 4);
  BOOST_TEST(four.size() == 4u);
  BOOST_TEST(four.front() > first + 1);
  BOOST_TEST(four.back() < last - 1);
  // Enough tiles: every segment slice.
  BOOST_TEST(k::select_preview_slices(p.volume, p.labels, kStyles, 64).size() == std::size_t(last - first + 1));

  // A one-slice segment between the picks still gets a tile.
  const std::vector<k::SegmentStyle> three{kStyles[0], kStyles[1], {3, "speck", {40, 40, 230}}};
  const auto picks2 = k::select_preview_slices(p.volume, p.labels, three, 2);
  int lonely = -1;
  for (int s = first; s <= last && lonely < 0; ++s) {
    if (std::find(picks2.begin(), picks2.end(), s) == picks2.end()) lonely = s;
  }
  p.labels[lonely].at<std::uint8_t>(5, 5) = 3;
  const auto with_speck = k::select_preview_slices(p.volume, p.labels, three, 2);
  BOOST_TEST(with_speck.size() == 2u);
  BOOST_TEST(std::count(with_speck.begin(), with_speck.end(), lonely) == 1);
}

BOOST_AUTO_TEST_CASE(without_segments_constant_padding_slices_are_skipped) {
  Phantom p = make_phantom();
  for (auto& l : p.labels) l.setTo(0);
  for (int z : {0, 1, 2, 37, 38, 39}) p.volume.slices[z].setTo(-1000);
  const auto z = k::select_preview_slices(p.volume, p.labels, kStyles, 12);
  BOOST_TEST(z.size() == 12u);
  for (int s : z) BOOST_TEST((s >= 3 && s <= 36));
  // It still renders, with "(absent)" segments in the legend.
  const auto preview = k::render_preview(p.volume, p.labels, kStyles);
  BOOST_TEST(preview.layout.slices == z, boost::test_tools::per_element());
  for (const auto& st : kStyles) BOOST_TEST(count_colour(preview.bgr(preview.layout.legend), st.colour) > 20);
}

BOOST_AUTO_TEST_CASE(window_choice) {
  Phantom p = make_phantom();
  BOOST_TEST(k::choose_window(p.volume).width == k::kLungWindow.width);
  k::PreviewParams given;
  given.window = k::kMediastinumWindow;
  BOOST_TEST(k::choose_window(p.volume, given).center == 40.0);
  p.volume.info.body_part = "ABDOMEN";
  p.volume.info.series_description = "portal venous";
  BOOST_TEST(k::choose_window(p.volume).width == k::kSoftTissueWindow.width);

  // MR: percentiles 1..99 of a ramp 0..9999 in CV_32F.
  dicom::Volume mr;
  mr.info.modality = "MR";
  cv::Mat ramp(100, 100, CV_32F);
  for (int i = 0; i < 10000; ++i) ramp.at<float>(i / 100, i % 100) = static_cast<float>(i);
  mr.slices = {ramp};
  const auto wl = k::choose_window(mr);
  BOOST_TEST(std::abs((wl.center - wl.width / 2) - 100) <= 1.0);
  BOOST_TEST(std::abs((wl.center + wl.width / 2) - 9899) <= 1.0);
  // Renders a CV_32F volume without segments.
  const auto preview = k::render_preview(mr, {cv::Mat::zeros(100, 100, CV_8U)}, {});
  BOOST_TEST(preview.layout.slices.size() == 1u);
  BOOST_TEST(preview.layout.tile_size == cv::Size(256, 256));
}

BOOST_AUTO_TEST_CASE(invalid_inputs_are_rejected) {
  TempDir tmp;
  const Phantom p = make_phantom();
  auto fewer = p.labels;
  fewer.pop_back();
  BOOST_CHECK_THROW(k::render_preview(p.volume, fewer, kStyles), std::invalid_argument);
  auto wrong_type = p.labels;
  wrong_type[3] = cv::Mat::zeros(128, 96, CV_16U);
  BOOST_CHECK_THROW(k::render_preview(p.volume, wrong_type, kStyles), std::invalid_argument);
  const std::vector<k::SegmentStyle> dup{kStyles[0], kStyles[0]};
  BOOST_CHECK_THROW(k::render_preview(p.volume, p.labels, dup), std::invalid_argument);
  const std::vector<k::SegmentStyle> background{{0, "bg", {1, 2, 3}}};
  BOOST_CHECK_THROW(k::render_preview(p.volume, p.labels, background), std::invalid_argument);
  k::PreviewParams bad;
  bad.window = k::WindowLevel{0.0, 40.0};
  BOOST_CHECK_THROW(k::render_preview(p.volume, p.labels, kStyles, bad), std::invalid_argument);
  dicom::Volume u8 = p.volume;
  u8.slices[0] = cv::Mat::zeros(128, 96, CV_8U);
  BOOST_CHECK_THROW(k::render_preview(u8, p.labels, kStyles), std::invalid_argument);
  BOOST_CHECK_THROW(k::write_preview(tmp.path / "x.jpg", p.volume, p.labels, kStyles), std::invalid_argument);
  BOOST_CHECK_THROW(k::write_preview(tmp.path / "no_such_dir" / "x.png", p.volume, p.labels, kStyles),
                    std::runtime_error);
}
