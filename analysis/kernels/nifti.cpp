#include "analysis/kernels/nifti.h"

#include "analysis/kernels/gzip.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace analysis::kernels {
namespace {

constexpr int kHeaderSize = 348;

enum : int {
  DT_UINT8 = 2, DT_INT16 = 4, DT_INT32 = 8, DT_FLOAT32 = 16, DT_FLOAT64 = 64,
  DT_INT8 = 256, DT_UINT16 = 512, DT_UINT32 = 768,
};

[[noreturn]] void fail(const std::filesystem::path& p, const std::string& why) {
  throw std::runtime_error(fmt::format("NIfTI {}: {}", p.string(), why));
}

std::string read_all(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail(p, "cannot open");
  std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (is_gzip(raw)) {
    try {
      return gunzip(raw);
    } catch (const std::exception& e) {
      fail(p, e.what());
    }
  }
  return raw;
}

template <typename T>
T get(const std::string& b, std::size_t off, bool swap) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  if (swap) {
    auto* c = reinterpret_cast<unsigned char*>(&v);
    std::reverse(c, c + sizeof(T));
  }
  return v;
}

template <typename T>
void put(std::string& b, std::size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}

template <typename T>
double sample(const char* p, bool swap) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if (swap) {
    auto* c = reinterpret_cast<unsigned char*>(&v);
    std::reverse(c, c + sizeof(T));
  }
  return static_cast<double>(v);
}

}  // namespace

NiftiImage read_nifti(const std::filesystem::path& path) {
  const std::string b = read_all(path);
  if (b.size() < kHeaderSize) fail(path, "shorter than a NIfTI-1 header");
  bool swap = false;
  if (get<int32_t>(b, 0, false) != kHeaderSize) {
    if (get<int32_t>(b, 0, true) != kHeaderSize) fail(path, "sizeof_hdr is not 348 (not NIfTI-1)");
    swap = true;
  }
  if (std::memcmp(b.data() + 344, "n+1", 4) != 0) fail(path, "magic is not \"n+1\" (only single-file NIfTI-1)");
  int16_t dim[8];
  for (int i = 0; i < 8; ++i) dim[i] = get<int16_t>(b, 40 + 2 * i, swap);
  if (dim[0] < 2 || dim[0] > 7) fail(path, fmt::format("bad dim[0] = {}", dim[0]));
  for (int i = 4; i <= dim[0]; ++i)
    if (dim[i] > 1) fail(path, "only 3D images are supported");
  const int nx = dim[1], ny = dim[2], nz = dim[0] >= 3 ? dim[3] : 1;
  if (nx <= 0 || ny <= 0 || nz <= 0) fail(path, "non-positive dimension");
  const int datatype = get<int16_t>(b, 70, swap);
  const int bitpix = get<int16_t>(b, 72, swap);
  float pixdim[4];
  for (int i = 0; i < 4; ++i) pixdim[i] = get<float>(b, 76 + 4 * i, swap);
  const float vox_offset = get<float>(b, 108, swap);
  float slope = get<float>(b, 112, swap);
  const float inter = get<float>(b, 116, swap);
  const int xyzt_units = static_cast<unsigned char>(b[123]);

  int bytes = 0;
  switch (datatype) {
    case DT_UINT8: case DT_INT8: bytes = 1; break;
    case DT_INT16: case DT_UINT16: bytes = 2; break;
    case DT_INT32: case DT_UINT32: case DT_FLOAT32: bytes = 4; break;
    case DT_FLOAT64: bytes = 8; break;
    default: fail(path, fmt::format("unsupported datatype {}", datatype));
  }
  if (bitpix != 8 * bytes) fail(path, fmt::format("bitpix {} does not match datatype {}", bitpix, datatype));
  // vox_offset is a float: checked against the file before it becomes an offset (a cast of NaN or
  // of a value beyond size_t is undefined; a huge one made offset + size wrap past the check).
  if (!(vox_offset >= kHeaderSize && vox_offset <= static_cast<float>(b.size())))
    fail(path, fmt::format("vox_offset {} outside the file ({} bytes)", vox_offset, b.size()));
  const auto offset = static_cast<std::size_t>(vox_offset);
  const std::size_t count = static_cast<std::size_t>(nx) * ny * nz;  // < 2^45: no overflow below
  if (offset > b.size() || (b.size() - offset) / bytes < count) fail(path, "truncated voxel data");

  // Units: 1 = m, 2 = mm, 3 = um; 0 (unknown) is taken as mm.
  double unit = 1.0;
  switch (xyzt_units & 0x07) {
    case 1: unit = 1000.0; break;
    case 3: unit = 0.001; break;
    default: break;
  }
  NiftiImage img;
  img.datatype = datatype;
  auto sp = [&](float v) { return (std::isfinite(v) && v != 0.0f) ? std::abs(v) * unit : 1.0; };
  img.spacing = {sp(pixdim[1]), sp(pixdim[2]), nz > 1 || dim[0] >= 3 ? sp(pixdim[3]) : 1.0};

  const bool scaled = std::isfinite(slope) && slope != 0.0f && !(slope == 1.0f && inter == 0.0f);
  if (!scaled) slope = 1.0f;
  const double off = scaled ? inter : 0.0;

  auto value = [&](std::size_t i) -> double {
    const char* p = b.data() + offset + i * bytes;
    double v = 0;
    switch (datatype) {
      case DT_UINT8: v = sample<uint8_t>(p, false); break;
      case DT_INT8: v = sample<int8_t>(p, false); break;
      case DT_INT16: v = sample<int16_t>(p, swap); break;
      case DT_UINT16: v = sample<uint16_t>(p, swap); break;
      case DT_INT32: v = sample<int32_t>(p, swap); break;
      case DT_UINT32: v = sample<uint32_t>(p, swap); break;
      case DT_FLOAT32: v = sample<float>(p, swap); break;
      case DT_FLOAT64: v = sample<double>(p, swap); break;
    }
    return v * slope + off;
  };

  int type = CV_16S;
  if (datatype == DT_UINT8 && !scaled) {
    type = CV_8U;
  } else {
    for (std::size_t i = 0; i < count; ++i) {
      const double v = value(i);
      if (!(v == std::floor(v) && v >= std::numeric_limits<int16_t>::min() && v <= std::numeric_limits<int16_t>::max())) {
        type = CV_32F;
        break;
      }
    }
  }
  img.slices.reserve(static_cast<std::size_t>(nz));
  std::size_t i = 0;
  for (int z = 0; z < nz; ++z) {
    cv::Mat s(ny, nx, type);
    for (int r = 0; r < ny; ++r)
      for (int c = 0; c < nx; ++c, ++i) {
        const double v = value(i);
        if (type == CV_8U) s.at<uint8_t>(r, c) = static_cast<uint8_t>(v);
        else if (type == CV_16S) s.at<int16_t>(r, c) = static_cast<int16_t>(v);
        else s.at<float>(r, c) = static_cast<float>(v);
      }
    img.slices.push_back(std::move(s));
  }
  return img;
}

Mask read_nifti_mask(const std::filesystem::path& path, Spacing* spacing) {
  NiftiImage img = read_nifti(path);
  Mask m;
  m.reserve(img.slices.size());
  for (const auto& s : img.slices) {
    cv::Mat out = (s != 0);  // 255 where non-zero
    out &= 1;
    m.push_back(out);
  }
  if (spacing) *spacing = img.spacing;
  return m;
}

void write_nifti(const std::filesystem::path& path, const std::vector<cv::Mat>& slices, const Spacing& spacing) {
  check_stack(slices, -1, "write_nifti");
  check_spacing(spacing, "write_nifti");
  const int type = slices.front().type();
  int16_t datatype = 0, bitpix = 0;
  switch (type) {
    case CV_8U: datatype = DT_UINT8; bitpix = 8; break;
    case CV_16S: datatype = DT_INT16; bitpix = 16; break;
    case CV_32F: datatype = DT_FLOAT32; bitpix = 32; break;
    default: throw std::invalid_argument("write_nifti: slices must be CV_8U, CV_16S or CV_32F");
  }
  const int nx = slices.front().cols, ny = slices.front().rows, nz = static_cast<int>(slices.size());
  std::string h(352, '\0');  // header + 4-byte empty extension block
  put<int32_t>(h, 0, kHeaderSize);
  const int16_t dim[8] = {3, static_cast<int16_t>(nx), static_cast<int16_t>(ny), static_cast<int16_t>(nz), 1, 1, 1, 1};
  if (nx > 32767 || ny > 32767 || nz > 32767) throw std::invalid_argument("write_nifti: dimension too large");
  for (int i = 0; i < 8; ++i) put<int16_t>(h, 40 + 2 * i, dim[i]);
  put<int16_t>(h, 70, datatype);
  put<int16_t>(h, 72, bitpix);
  const float pixdim[8] = {1.0f, static_cast<float>(spacing.col), static_cast<float>(spacing.row),
                           static_cast<float>(spacing.slice), 1, 1, 1, 1};
  for (int i = 0; i < 8; ++i) put<float>(h, 76 + 4 * i, pixdim[i]);
  put<float>(h, 108, 352.0f);  // vox_offset
  put<float>(h, 112, 1.0f);    // scl_slope
  h[123] = 2;                  // xyzt_units: mm
  put<int16_t>(h, 254, 1);     // sform_code: scanner
  const float srow[3][4] = {{pixdim[1], 0, 0, 0}, {0, pixdim[2], 0, 0}, {0, 0, pixdim[3], 0}};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) put<float>(h, 280 + 16 * r + 4 * c, srow[r][c]);
  std::memcpy(h.data() + 344, "n+1", 4);

  std::string data;
  const std::size_t row_bytes = static_cast<std::size_t>(nx) * slices.front().elemSize();
  data.reserve(row_bytes * ny * nz);
  for (const auto& s : slices)
    for (int r = 0; r < ny; ++r) data.append(reinterpret_cast<const char*>(s.ptr(r)), row_bytes);

  std::string bytes = h + data;
  const std::string name = path.filename().string();
  if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) bytes = gzip(bytes);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(path, "cannot create");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) fail(path, "write failed");
}

}  // namespace analysis::kernels
