// The IBSI chain (analysis/kernels/ibsi/: prepare_roi, discretise, every family in every
// aggregation) on a small volume and ROI built from the input: any values a decoded image can hold
// (float incl. inf and NaN, int16, uint16, uint8), any spacing, interpolation, re-segmentation and
// discretisation setting. It may refuse input with std::invalid_argument; anything else escaping is
// a finding.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "analysis/kernels/ibsi/processing.h"
#include "analysis/kernels/ibsi/radiomics.h"
#include "fuzz/fuzz_quiet.h"

namespace {

class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  template <class T>
  T get() {  // zero once the input is used up
    T v{};
    const std::size_t k = std::min(sizeof(T), n_);
    std::memcpy(&v, p_, k);
    p_ += k, n_ -= k;
    return v;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  cv::setNumThreads(0);  // no worker threads: one input at a time, as libFuzzer measures it
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace k = analysis::kernels;
  Bytes in(data, size);
  const int nz = 1 + in.get<std::uint8_t>() % 4, ny = 1 + in.get<std::uint8_t>() % 12,
            nx = 1 + in.get<std::uint8_t>() % 12;
  static constexpr int kTypes[] = {CV_8U, CV_16S, CV_16U, CV_32F};
  const int type = kTypes[in.get<std::uint8_t>() % 4];
  namespace ib = k::ibsi;
  ib::ProcessingSettings ps;
  auto& d = ps.discretisation;
  d.method = static_cast<ib::Discretisation::Method>(in.get<std::uint8_t>() % 3);
  d.bin_width = in.get<double>();
  if (in.get<std::uint8_t>() & 1) d.lower_bound = in.get<double>();
  d.bins = in.get<std::int16_t>();
  const std::uint8_t flags = in.get<std::uint8_t>();
  if (flags & 1) ps.interpolation.spacing = std::array<double, 3>{in.get<float>(), in.get<float>(), in.get<float>()};
  ps.interpolation.in_plane_only = flags & 2;
  ps.interpolation.image_method = static_cast<ib::Interpolation::Method>((flags >> 2) % 3);
  ps.interpolation.round_intensities = flags & 16;
  if (flags & 32) ps.resegmentation.min = in.get<float>();
  if (flags & 64) ps.resegmentation.max = in.get<float>();
  ps.resegmentation.outlier_3sigma = flags & 128;
  ps.interpolation.margin_mm = in.get<std::uint8_t>() % 16;
  analysis::Spacing spacing{in.get<float>(), in.get<float>(), in.get<float>()};

  std::vector<cv::Mat> image;
  analysis::Mask roi = k::make_mask(nz, ny, nx);
  for (int z = 0; z < nz; ++z) {
    cv::Mat s(ny, nx, type);
    for (int r = 0; r < ny; ++r)
      for (int c = 0; c < nx; ++c) {
        switch (type) {
          case CV_8U: s.at<std::uint8_t>(r, c) = in.get<std::uint8_t>(); break;
          case CV_16S: s.at<std::int16_t>(r, c) = in.get<std::int16_t>(); break;
          case CV_16U: s.at<std::uint16_t>(r, c) = in.get<std::uint16_t>(); break;
          default: s.at<float>(r, c) = in.get<float>(); break;
        }
      }
    image.push_back(s);
  }
  for (int z = 0; z < nz; ++z)
    for (int r = 0; r < ny; ++r)
      for (int c = 0; c < nx; ++c) roi[z].at<std::uint8_t>(r, c) = in.get<std::uint8_t>() & 1;
  // Each kernel on its own (the pipeline calls them one by one too), so that one refusing the input
  // does not hide the next.
  const auto run = [](auto&& kernel) {
    try {
      kernel();
    } catch (const std::invalid_argument&) {
    }
  };
  ib::FeatureSettings fs;
  fs.scope = {true, true};
  fs.ivh = ib::ivh_options_for(d, ps.resegmentation);
  run([&] {
    const ib::RoiImage r = ib::prepare_roi(image, roi, spacing, ps);
    const ib::Levels levels = ib::discretise(r, d);
    // Each family on its own (one refusing the input must not hide the next).
    for (ib::Family f : ib::kAllFamilies) {
      ib::FeatureSettings one = fs;
      one.families = {f};
      run([&] { (void)ib::compute_features(r, levels, one); });
    }
  });
  return 0;
}
