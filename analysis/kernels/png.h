#pragma once
// PNG files from 8-bit images with libpng, for the preview and the key-image PNGs. Not OpenCV's
// imgcodecs: on Debian that library pulls in GDAL and over a hundred other shared libraries, which
// cost about 115 ms of dynamic loading at every start of `pacsnode` (each worker, each `analyze`).
#include <filesystem>

#include <opencv2/core.hpp>

namespace analysis::kernels {

// Writes `image` (CV_8UC1 grey, or CV_8UC3 in OpenCV's BGR order) to `path` as an 8-bit PNG
// (grey or RGB), zlib level `compression` (0..9; 6 is OpenCV's and libpng's default). With
// `row_filters` libpng picks a PNG filter per row (its default: pays for photographs and CT
// slices); without, rows go to zlib as they are, which for a rendered picture of flat colours is
// faster and no larger. Throws std::runtime_error naming the file when it cannot be written (a
// partial file may remain), std::invalid_argument for another type or an empty image.
void write_png(const std::filesystem::path& path, const cv::Mat& image, int compression = 6, bool row_filters = true);

}  // namespace analysis::kernels
