#include "dicom/volume.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <new>

namespace dicom {
namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

std::size_t page_size() {
  static const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// Anonymous mapping of `bytes` (rounded up to pages); from 2 MiB on, aligned to 2 MiB and advised
// for huge pages.
void* map_block(std::size_t bytes) {
  const std::size_t len = round_up(bytes, page_size());
  if (len < kHugePage) {
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return p;
  }
  const std::size_t span = len + kHugePage;  // room to slide to a 2 MiB boundary
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto begin = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = round_up(begin, kHugePage);
  if (aligned > begin) ::munmap(raw, aligned - begin);
  if (const std::uintptr_t end = begin + span, used = aligned + len; end > used)
    ::munmap(reinterpret_cast<void*>(used), end - used);
  auto* p = reinterpret_cast<void*>(aligned);
  ::madvise(p, len, MADV_HUGEPAGE);  // advice only: EINVAL where THP is compiled out
  return p;
}

// cv::MatAllocator over map_block; Mats that wrap caller memory go to OpenCV's own allocator.
class PlaneAllocator final : public cv::MatAllocator {
 public:
  cv::UMatData* allocate(int dims, const int* sizes, int type, void* data, std::size_t* step, cv::AccessFlag flags,
                         cv::UMatUsageFlags usage) const override {
    if (data != nullptr) return cv::Mat::getStdAllocator()->allocate(dims, sizes, type, data, step, flags, usage);
    std::size_t total = CV_ELEM_SIZE(type);
    for (int i = dims - 1; i >= 0; --i) {
      if (step != nullptr) step[i] = total;
      total *= static_cast<std::size_t>(sizes[i]);
    }
    auto* u = new cv::UMatData(this);
    try {
      u->data = u->origdata = static_cast<uchar*>(map_block(total));
    } catch (...) {
      delete u;
      throw;
    }
    u->size = total;
    return u;
  }

  bool allocate(cv::UMatData* u, cv::AccessFlag, cv::UMatUsageFlags) const override { return u != nullptr; }

  void deallocate(cv::UMatData* u) const override {
    if (u == nullptr) return;
    ::munmap(u->origdata, round_up(u->size, page_size()));
    delete u;
  }
};

}  // namespace

cv::Mat allocate_planes(int planes, int rows, int cols, int type) {
  static const auto* allocator = new PlaneAllocator;  // never destroyed: outlives every Mat
  cv::Mat block;
  block.allocator = const_cast<PlaneAllocator*>(allocator);
  block.create(planes * rows, cols, type);
  return block;
}

}  // namespace dicom
