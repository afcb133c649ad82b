// pacsnode-gdcm.so: GDCM's image reader behind the C interface of dicom/gdcm_module.h. Loaded with
// dlopen by pixel_decoder.cpp, only when a JPEG 2000 frame is decoded.
#include "dicom/gdcm_module.h"

#include <cstdio>
#include <exception>
#include <mutex>
#include <sstream>
#include <string>

#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmTrace.h>

namespace {

int fail(char* error, std::size_t error_size, const std::string& why) {
  if (error != nullptr && error_size > 0) std::snprintf(error, error_size, "%s", why.c_str());
  return 2;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int pacsnode_gdcm_decode_v1(
    const char* part10, std::size_t length, PacsnodeGdcmAlloc alloc, void* context, char* error,
    std::size_t error_size) {
  static std::once_flag quiet;
  std::call_once(quiet, [] {  // GDCM prints to stderr otherwise; our caller reports the failure
    gdcm::Trace::DebugOff();
    gdcm::Trace::WarningOff();
    gdcm::Trace::ErrorOff();
  });
  try {
    std::istringstream in(std::string(part10, length));
    gdcm::ImageReader reader;
    reader.SetStream(in);
    if (!reader.Read()) return fail(error, error_size, "GDCM cannot read the image");
    const gdcm::Image& img = reader.GetImage();
    const gdcm::PixelFormat& pf = img.GetPixelFormat();
    PacsnodeGdcmImage image{};
    image.cols = static_cast<int>(img.GetDimension(0));
    image.rows = static_cast<int>(img.GetDimension(1));
    image.frames = img.GetNumberOfDimensions() > 2 ? static_cast<int>(img.GetDimension(2)) : 1;
    image.bits_allocated = pf.GetBitsAllocated();
    image.samples_per_pixel = pf.GetSamplesPerPixel();
    image.buffer_length = img.GetBufferLength();
    void* dst = alloc(context, &image);
    if (dst == nullptr) return 1;
    if (!img.GetBuffer(static_cast<char*>(dst))) return fail(error, error_size, "pixel data could not be decoded");
    return 0;
  } catch (const std::exception& e) {
    return fail(error, error_size, std::string("GDCM: ") + e.what());
  } catch (...) {
    return fail(error, error_size, "GDCM: unknown exception");
  }
}
