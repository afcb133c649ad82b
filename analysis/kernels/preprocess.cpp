#include "analysis/kernels/preprocess.h"

#include <cmath>
#include <deque>
#include <stdexcept>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

namespace analysis::kernels {

void median_filter(std::vector<cv::Mat>& slices, int ksize) {
  check_stack(slices, -1, "median_filter");
  if (ksize != 3 && ksize != 5) throw std::invalid_argument(fmt::format("median_filter: ksize {} (3 or 5)", ksize));
  const int type = slices.front().type();
  if (type != CV_8U && type != CV_16U && type != CV_16S && type != CV_32F)
    throw std::invalid_argument("median_filter: type must be CV_8U, CV_16U, CV_16S or CV_32F");
  cv::Mat tmp;
  for (auto& s : slices) {
    if (type == CV_16S) {
      cv::Mat u(s.rows, s.cols, CV_16U, s.data, s.step);  // same bits, viewed as unsigned
      cv::bitwise_xor(u, cv::Scalar(0x8000), u);          // int16 x -> uint16 x + 32768
      cv::medianBlur(u, tmp, ksize);
      cv::bitwise_xor(tmp, cv::Scalar(0x8000), u);
    } else {
      cv::medianBlur(s, tmp, ksize);
      tmp.copyTo(s);
    }
  }
}

namespace {

// Along-z 1D convolution with a symmetric kernel, in place, keeping only radius+1 original slices.
void convolve_z(std::vector<cv::Mat>& slices, const std::vector<double>& w) {
  const int radius = static_cast<int>(w.size() / 2);
  const int depth = static_cast<int>(slices.size());
  const int type = slices.front().type();
  std::deque<cv::Mat> before;  // originals of slices z-radius .. z-1
  cv::Mat acc, tmp;
  for (int z = 0; z < depth; ++z) {
    acc = cv::Mat::zeros(slices[z].size(), CV_64F);
    for (int k = -radius; k <= radius; ++k) {
      const int zz = std::clamp(z + k, 0, depth - 1);
      const cv::Mat* src = nullptr;
      if (zz >= z) src = &slices[zz];
      else src = &before[before.size() - static_cast<std::size_t>(z - zz)];
      src->convertTo(tmp, CV_64F);
      cv::scaleAdd(tmp, w[static_cast<std::size_t>(k + radius)], acc, acc);
    }
    before.push_back(slices[z].clone());
    if (static_cast<int>(before.size()) > radius) before.pop_front();
    acc.convertTo(slices[z], type);  // rounds and saturates for integer types
  }
}

}  // namespace

void gaussian_filter(std::vector<cv::Mat>& slices, const Spacing& spacing, double sigma_inplane_mm,
                     double sigma_slice_mm) {
  check_stack(slices, -1, "gaussian_filter");
  check_spacing(spacing, "gaussian_filter");
  if (!(sigma_inplane_mm >= 0) || !(sigma_slice_mm >= 0))
    throw std::invalid_argument("gaussian_filter: sigma must be >= 0");
  if (sigma_inplane_mm > 0) {
    const double sx = sigma_inplane_mm / spacing.col, sy = sigma_inplane_mm / spacing.row;
    const cv::Size k(2 * static_cast<int>(std::ceil(3 * sx)) + 1, 2 * static_cast<int>(std::ceil(3 * sy)) + 1);
    for (auto& s : slices) cv::GaussianBlur(s, s, k, sx, sy, cv::BORDER_REFLECT_101);
  }
  if (sigma_slice_mm > 0 && slices.size() > 1) {
    const double sz = sigma_slice_mm / spacing.slice;
    const int radius = static_cast<int>(std::ceil(3 * sz));
    std::vector<double> w(static_cast<std::size_t>(2 * radius + 1));
    double sum = 0;
    for (int k = -radius; k <= radius; ++k) sum += w[static_cast<std::size_t>(k + radius)] = std::exp(-0.5 * k * k / (sz * sz));
    for (auto& v : w) v /= sum;
    convolve_z(slices, w);
  }
}

void resample_inplane(std::vector<cv::Mat>& slices, Spacing& spacing, double target_col_mm, double target_row_mm,
                      Interpolation interp) {
  check_stack(slices, -1, "resample_inplane");
  check_spacing(spacing, "resample_inplane");
  if (!(target_col_mm > 0) || !(target_row_mm > 0) || !std::isfinite(target_col_mm) || !std::isfinite(target_row_mm))
    throw std::invalid_argument("resample_inplane: target spacing must be finite and > 0");
  const int cols = slices.front().cols, rows = slices.front().rows;
  const int new_cols = std::max(1, static_cast<int>(std::lround(cols * spacing.col / target_col_mm)));
  const int new_rows = std::max(1, static_cast<int>(std::lround(rows * spacing.row / target_row_mm)));
  int flag = cv::INTER_LINEAR;
  switch (interp) {
    case Interpolation::nearest: flag = cv::INTER_NEAREST_EXACT; break;
    case Interpolation::linear: flag = cv::INTER_LINEAR; break;
    case Interpolation::cubic: flag = cv::INTER_CUBIC; break;
    case Interpolation::area: flag = cv::INTER_AREA; break;
  }
  if (new_cols != cols || new_rows != rows) {
    cv::Mat out;
    for (auto& s : slices) {
      cv::resize(s, out, cv::Size(new_cols, new_rows), 0, 0, flag);
      s = out.clone();
    }
  }
  spacing.col = spacing.col * cols / new_cols;
  spacing.row = spacing.row * rows / new_rows;
}

void resample_inplane(dicom::Volume& volume, double target_col_mm, double target_row_mm, Interpolation interp) {
  Spacing sp = spacing_of(volume.geom);
  const Spacing old = sp;
  resample_inplane(volume.slices, sp, target_col_mm, target_row_mm, interp);
  auto& g = volume.geom;
  const double dc = 0.5 * (sp.col - old.col), dr = 0.5 * (sp.row - old.row);
  for (int i = 0; i < 3; ++i) g.origin[i] += dc * g.row_dir[i] + dr * g.col_dir[i];
  g.spacing_col = sp.col;
  g.spacing_row = sp.row;
}

}  // namespace analysis::kernels
