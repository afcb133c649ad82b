#include "analysis/kernels/png.h"

#include <png.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace analysis::kernels {

namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// libpng reports errors by longjmp to the setjmp in write_rows, with its message kept here.
struct ErrorSink {
  std::string message;
};

void on_error(png_structp png, png_const_charp msg) {
  if (auto* sink = static_cast<ErrorSink*>(png_get_error_ptr(png))) sink->message = msg;
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // nothing we write can warn usefully

// The libpng part, without C++ objects whose destructors a longjmp would skip. Returns false with
// sink.message set when libpng failed.
bool write_rows(std::FILE* f, const png_bytep* rows, png_uint_32 width, png_uint_32 height, int colour,
                int compression, bool row_filters, ErrorSink& sink) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, on_error, on_warning);
  if (png == nullptr) {
    sink.message = "out of memory";
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    sink.message = "out of memory";
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_init_io(png, f);
  png_set_compression_level(png, compression);
  if (!row_filters) png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
  png_set_IHDR(png, info, width, height, 8, colour, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, const_cast<png_bytepp>(rows));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

void write_png(const std::filesystem::path& path, const cv::Mat& image, int compression, bool row_filters) {
  if (image.empty() || (image.type() != CV_8UC1 && image.type() != CV_8UC3))
    throw std::invalid_argument(fmt::format("write_png: '{}': CV_8UC1 or CV_8UC3 image needed", path.string()));
  if (compression < 0 || compression > 9)
    throw std::invalid_argument(fmt::format("write_png: compression {} (0..9)", compression));
  cv::Mat rgb;  // PNG stores RGB; OpenCV's colour images are BGR
  if (image.channels() == 3) {
    const int from_to[] = {0, 2, 1, 1, 2, 0};
    rgb.create(image.size(), image.type());
    cv::mixChannels(&image, 1, &rgb, 1, from_to, 3);
  }
  const cv::Mat& src = image.channels() == 3 ? rgb : image;
  std::vector<png_bytep> rows(static_cast<std::size_t>(src.rows));
  for (int r = 0; r < src.rows; ++r) rows[static_cast<std::size_t>(r)] = const_cast<png_bytep>(src.ptr<png_byte>(r));
  const std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
  if (!f) throw std::runtime_error(fmt::format("cannot write '{}': {}", path.string(), std::strerror(errno)));
  ErrorSink sink;
  if (!write_rows(f.get(), rows.data(), static_cast<png_uint_32>(src.cols), static_cast<png_uint_32>(src.rows),
                  image.channels() == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, compression, row_filters, sink))
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path.string(), sink.message));
  if (std::fflush(f.get()) != 0 || std::ferror(f.get()))
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path.string(), std::strerror(errno)));
}

}  // namespace analysis::kernels
