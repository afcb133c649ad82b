#include "analysis/kernels/gzip.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <stdexcept>

namespace analysis::kernels {
namespace {

[[noreturn]] void fail(const char* why) { throw std::runtime_error(std::string("gzip: ") + why); }

constexpr int kGzipWindow = 15 + 16;  // 32 KiB window, gzip wrapper
constexpr std::size_t kMaxAvail = std::numeric_limits<uInt>::max();

// A z_stream over one input buffer and a growing output string.
struct Pump {
  z_stream z{};
  std::string_view in;
  std::string out;

  std::size_t consumed() const { return z.next_in ? reinterpret_cast<const char*>(z.next_in) - in.data() : 0; }
  std::size_t produced() const { return z.next_out ? reinterpret_cast<char*>(z.next_out) - out.data() : 0; }

  // Hands zlib the unread input (avail_in is 32 bits, so at most 4 GiB at a time) and the free
  // space at the end of `out`, doubling it when full, up to `max_out` (one byte more, so that an
  // output beyond the limit is noticed).
  void prepare(std::size_t max_out = std::numeric_limits<std::size_t>::max() - 1) {
    const std::size_t pos = consumed(), used = produced();
    if (z.avail_in == 0) {
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + pos));
      z.avail_in = static_cast<uInt>(std::min(in.size() - pos, kMaxAvail));
    }
    if (used == out.size())
      out.resize(std::min(std::max<std::size_t>(2 * out.size(), 1 << 18), std::max(max_out + 1, used + 1)));
    z.next_out = reinterpret_cast<Bytef*>(out.data() + used);
    z.avail_out = static_cast<uInt>(std::min(out.size() - used, kMaxAvail));
  }

  std::string take() {
    out.resize(produced());
    return std::move(out);
  }
};

}  // namespace

bool is_gzip(std::string_view d) {
  return d.size() >= 2 && static_cast<unsigned char>(d[0]) == 0x1f && static_cast<unsigned char>(d[1]) == 0x8b;
}

std::string gunzip(std::string_view data, std::size_t max_output) {
  if (!is_gzip(data)) fail("not a gzip stream");
  Pump p;
  p.in = data;
  if (inflateInit2(&p.z, kGzipWindow) != Z_OK) fail("inflateInit2 failed");
  const std::unique_ptr<z_stream, int (*)(z_streamp)> end(&p.z, inflateEnd);
  while (true) {
    p.prepare(max_output);
    const int rc = inflate(&p.z, Z_NO_FLUSH);
    if (p.produced() > max_output)
      throw std::runtime_error("gzip: inflates to more than " + std::to_string(max_output) + " bytes");
    if (rc == Z_STREAM_END) {  // CRC and length verified; continue if another member follows
      if (!is_gzip(data.substr(p.consumed()))) break;
      inflateReset(&p.z);
    } else if (rc == Z_BUF_ERROR) {  // output space was given, so the input ran out
      fail("truncated stream");
    } else if (rc != Z_OK) {
      fail(p.z.msg ? p.z.msg : zError(rc));
    }
  }
  return p.take();
}

std::string gzip(std::string_view data) {
  Pump p;
  p.in = data;
  if (deflateInit2(&p.z, 6, Z_DEFLATED, kGzipWindow, 8, Z_DEFAULT_STRATEGY) != Z_OK) fail("deflateInit2 failed");
  const std::unique_ptr<z_stream, int (*)(z_streamp)> end(&p.z, deflateEnd);
  p.out.resize(deflateBound(&p.z, data.size()));  // enough for one pass unless over 4 GiB
  for (int rc = Z_OK; rc != Z_STREAM_END;) {
    p.prepare();
    rc = deflate(&p.z, p.consumed() + p.z.avail_in == data.size() ? Z_FINISH : Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) fail(p.z.msg ? p.z.msg : zError(rc));
  }
  return p.take();
}

}  // namespace analysis::kernels
