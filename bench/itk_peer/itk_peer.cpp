// The C++ ITK peer of bench/pipeline.sh: the like-for-like steps of bench_pipeline, written as an
// ITK user would write them, with ITK's default multithreading.
//   read       GDCMSeriesFileNames + ImageSeriesReader<int16 3D> + GDCMImageIO (rescaled to HU)
//   median     MedianImageFilter, radius {1, 1, 0} (3x3 in-plane; ZeroFluxNeumann = replicated edge,
//              as OpenCV's medianBlur)
//   threshold  BinaryThresholdImageFilter: HU < -400 (integer HU: [min, -401]) -> 1
//   components ConnectedComponentImageFilter, 6-connected (FullyConnected off), then every
//              component touching the in-plane border (first/last row or column of any slice;
//              the first and last slice do not count, as in bench_pipeline and the SciPy peer)
//              is dropped: labels on the four border faces are collected, and a multithreaded
//              UnaryGeneratorImageFilter maps labels to the kept mask.
//
// usage: itk_peer SERIES_DIR [MASK_FILE]
// Prints "@ itk.<step>_ms <ms>" lines and the kept voxel and component counts. With MASK_FILE,
// writes the kept mask as raw uint8 0/1, slices in ascending position along the slice normal
// (row_dir x col_dir), each slice rows x columns row-major: the layout bench_pipeline --mask-out
// writes, so that `cmp` shows whether both keep the same voxels.
#include <itkBinaryThresholdImageFilter.h>
#include <itkConnectedComponentImageFilter.h>
#include <itkGDCMImageIO.h>
#include <itkGDCMSeriesFileNames.h>
#include <itkImage.h>
#include <itkImageSeriesReader.h>
#include <itkMedianImageFilter.h>
#include <itkMultiThreaderBase.h>
#include <itkUnaryGeneratorImageFilter.h>
#include <itkVersion.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <vector>

namespace {

using Image = itk::Image<std::int16_t, 3>;
using Mask = itk::Image<std::uint8_t, 3>;
using Labels = itk::Image<std::uint32_t, 3>;

class Stopwatch {
 public:
  double ms() const { return std::chrono::duration<double, std::milli>(clock::now() - t0_).count(); }

 private:
  using clock = std::chrono::steady_clock;
  clock::time_point t0_ = clock::now();
};

void emit(const char* key, double v) { std::printf("@ itk.%s %.3f\n", key, v); }

// Raw uint8 mask, slices in ascending position along row_dir x col_dir.
void write_mask(const Mask& mask, const char* path) {
  const auto size = mask.GetLargestPossibleRegion().GetSize();
  const auto& d = mask.GetDirection();
  const double n[3] = {d(1, 0) * d(2, 1) - d(2, 0) * d(1, 1), d(2, 0) * d(0, 1) - d(0, 0) * d(2, 1),
                       d(0, 0) * d(1, 1) - d(1, 0) * d(0, 1)};
  Mask::PointType first, last;
  mask.TransformIndexToPhysicalPoint({{0, 0, 0}}, first);
  mask.TransformIndexToPhysicalPoint({{0, 0, static_cast<Mask::IndexValueType>(size[2]) - 1}}, last);
  double along = 0;
  for (int i = 0; i < 3; ++i) along += (last[i] - first[i]) * n[i];
  const std::size_t plane = size[0] * size[1];
  const std::uint8_t* p = mask.GetBufferPointer();
  std::ofstream out(path, std::ios::binary);
  for (std::size_t k = 0; k < size[2]; ++k) {
    const std::size_t z = along >= 0 ? k : size[2] - 1 - k;
    out.write(reinterpret_cast<const char*>(p + z * plane), static_cast<std::streamsize>(plane));
  }
  if (!out) throw std::runtime_error(std::string("cannot write ") + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: itk_peer SERIES_DIR [MASK_FILE]\n");
    return 2;
  }
  std::printf("ITK %s, threads: %u\n", itk::Version::GetITKVersion(),
              itk::MultiThreaderBase::GetGlobalDefaultNumberOfThreads());
  const Stopwatch total;

  // read
  Stopwatch sw;
  auto names = itk::GDCMSeriesFileNames::New();
  names->SetUseSeriesDetails(true);
  names->SetDirectory(argv[1]);
  const auto& uids = names->GetSeriesUIDs();
  if (uids.empty()) {
    std::fprintf(stderr, "no DICOM series in %s\n", argv[1]);
    return 1;
  }
  auto reader = itk::ImageSeriesReader<Image>::New();
  reader->SetImageIO(itk::GDCMImageIO::New());
  reader->SetFileNames(names->GetFileNames(uids.front()));
  reader->MetaDataDictionaryArrayUpdateOff();  // no per-slice dictionaries: nothing here reads them
  reader->Update();
  Image::Pointer image = reader->GetOutput();
  image->DisconnectPipeline();
  reader = nullptr;
  const double read_ms = sw.ms();
  const auto size = image->GetLargestPossibleRegion().GetSize();

  // median 3x3 in-plane
  sw = Stopwatch();
  auto median = itk::MedianImageFilter<Image, Image>::New();
  median->SetInput(image);
  median->SetRadius({{1, 1, 0}});
  median->Update();
  image = median->GetOutput();
  image->DisconnectPipeline();
  median = nullptr;
  const double median_ms = sw.ms();

  // threshold: HU < -400
  sw = Stopwatch();
  auto threshold = itk::BinaryThresholdImageFilter<Image, Mask>::New();
  threshold->SetInput(image);
  threshold->SetLowerThreshold(itk::NumericTraits<std::int16_t>::NonpositiveMin());
  threshold->SetUpperThreshold(-401);
  threshold->SetInsideValue(1);
  threshold->SetOutsideValue(0);
  threshold->Update();
  Mask::Pointer air = threshold->GetOutput();
  air->DisconnectPipeline();
  threshold = nullptr;
  image = nullptr;
  const double threshold_ms = sw.ms();

  // 6-connected components, border-touching ones dropped
  sw = Stopwatch();
  auto cc = itk::ConnectedComponentImageFilter<Mask, Labels>::New();
  cc->SetInput(air);
  cc->SetFullyConnected(false);
  cc->Update();
  const std::size_t count = cc->GetObjectCount();
  const Labels* labels = cc->GetOutput();
  std::vector<std::uint8_t> keep(count + 1, 1);
  keep[0] = 0;
  {
    const std::uint32_t* l = labels->GetBufferPointer();
    const std::size_t cols = size[0], rows = size[1];
    for (std::size_t z = 0; z < size[2]; ++z) {
      const std::uint32_t* s = l + z * rows * cols;
      for (std::size_t c = 0; c < cols; ++c) keep[s[c]] = keep[s[(rows - 1) * cols + c]] = 0;
      for (std::size_t r = 0; r < rows; ++r) keep[s[r * cols]] = keep[s[r * cols + cols - 1]] = 0;
    }
  }
  auto select = itk::UnaryGeneratorImageFilter<Labels, Mask>::New();
  select->SetInput(labels);
  select->SetFunctor([&keep](std::uint32_t label) -> std::uint8_t { return keep[label]; });
  select->Update();
  const Mask* kept = select->GetOutput();
  const double components_ms = sw.ms();
  const double total_ms = total.ms();

  const std::uint8_t* k = kept->GetBufferPointer();
  const std::size_t voxels = kept->GetLargestPossibleRegion().GetNumberOfPixels();
  const std::int64_t kept_voxels = std::accumulate(k, k + voxels, std::int64_t{0});
  const auto sp = kept->GetSpacing();
  std::printf("volume %zu x %zu x %zu; read %.1f ms, median %.1f ms, threshold %.1f ms, "
              "components+border drop %.1f ms, total %.1f ms (%zu components, %lld voxels kept = %.1f ml)\n",
              size[2], size[1], size[0], read_ms, median_ms, threshold_ms, components_ms, total_ms, count,
              static_cast<long long>(kept_voxels), kept_voxels * sp[0] * sp[1] * sp[2] / 1000.0);
  emit("read_ms", read_ms);
  emit("median_ms", median_ms);
  emit("threshold_ms", threshold_ms);
  emit("components_ms", components_ms);
  emit("segment_ms", threshold_ms + components_ms);
  emit("total_ms", total_ms);
  emit("components", static_cast<double>(count));
  emit("kept_voxels", static_cast<double>(kept_voxels));
  if (argc > 2) write_mask(*kept, argv[2]);
  return 0;
}
