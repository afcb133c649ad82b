#include "dicom/volume.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace dicom {
namespace {

constexpr std::size_t kCachedFrom = std::size_t{4} << 20;  // smaller blocks are not kept

std::size_t mapped_size(std::size_t bytes) {
  static const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

constexpr std::size_t kHugePage = std::size_t{2} << 20;  // x86-64 and arm64 (4 KiB base pages)

// A fresh zero mapping of `len` bytes (a multiple of the page size). Blocks of kCachedFrom and up
// start on a 2 MiB boundary and are advised as transparent huge pages (the kernel's THP mode is
// usually `madvise`, so it takes the advice): a volume is then faulted in 2 MiB at a time instead
// of 4 KiB, which on a virtual machine made faulting in a fresh 150 MiB volume several times
// cheaper (the numbers are in bench/bench_pipeline's fault lines). Advice only: where the kernel
// lacks THP the block is still good, with small pages.
void* map_fresh(std::size_t len) {
  const bool huge = len >= kCachedFrom;
  const std::size_t span = huge ? len + kHugePage : len;
  void* p = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  if (!huge) return p;
  // Trim the mapping to [aligned, aligned + len): munmap(block, len) then releases all of it.
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const auto aligned = (start + kHugePage - 1) & ~(std::uintptr_t{kHugePage} - 1);
  if (aligned > start) ::munmap(p, aligned - start);
  if (const auto tail = start + span - (aligned + len); tail > 0) ::munmap(reinterpret_cast<void*>(aligned + len), tail);
  ::madvise(reinterpret_cast<void*>(aligned), len, MADV_HUGEPAGE);  // advice: ignored without THP
  return reinterpret_cast<void*>(aligned);
}

// Freed large blocks by mapped size.
class BlockCache {
 public:
  // A block of `len` mapped bytes or more: a cached one (`reused`), else a fresh zero mapping, after
  // the cached blocks have been returned (none of them fits, so holding them only adds memory).
  void* take(std::size_t len, std::size_t& capacity, bool& reused) {
    if (len >= kCachedFrom) {
      std::vector<std::pair<void*, std::size_t>> drop;
      {
        const std::lock_guard lock(mutex_);
        limit_ = std::max(limit_, len);
        if (auto it = free_.lower_bound(len); it != free_.end() && it->first <= 2 * len) {
          capacity = it->first;
          void* p = it->second;
          bytes_ -= it->first;
          free_.erase(it);
          reused = true;
          return p;
        }
        drop = take_all();
      }
      unmap(drop);
    }
    capacity = len;
    reused = false;
    return map_fresh(len);
  }

  // Keeps a freed block; beyond the limit (the largest block asked for since the last release(),
  // i.e. about one volume) the smallest blocks go back to the system.
  void give(void* p, std::size_t capacity) {
    if (capacity < kCachedFrom) {
      ::munmap(p, capacity);
      return;
    }
    std::vector<std::pair<void*, std::size_t>> drop;
    {
      const std::lock_guard lock(mutex_);
      free_.emplace(capacity, p);
      bytes_ += capacity;
      while (bytes_ > limit_ && !free_.empty()) {
        const auto smallest = free_.begin();
        drop.emplace_back(smallest->second, smallest->first);
        bytes_ -= smallest->first;
        free_.erase(smallest);
      }
    }
    unmap(drop);
  }

  void release() {
    std::vector<std::pair<void*, std::size_t>> drop;
    {
      const std::lock_guard lock(mutex_);
      drop = take_all();
      limit_ = 0;
    }
    unmap(drop);
  }

  std::size_t bytes() {
    const std::lock_guard lock(mutex_);
    return bytes_;
  }

 private:
  std::vector<std::pair<void*, std::size_t>> take_all() {
    std::vector<std::pair<void*, std::size_t>> all;
    for (const auto& [capacity, p] : free_) all.emplace_back(p, capacity);
    free_.clear();
    bytes_ = 0;
    return all;
  }

  static void unmap(const std::vector<std::pair<void*, std::size_t>>& blocks) {
    for (const auto& [p, capacity] : blocks) ::munmap(p, capacity);
  }

  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::size_t bytes_ = 0;
  std::size_t limit_ = 0;  // largest block asked for since the last release()
};

BlockCache& cache() {
  static auto* c = new BlockCache;  // never destroyed: Mats may outlive static destruction
  return *c;
}

// Marks a UMatData whose memory is a fresh mapping (all zero); reused blocks hold left-overs, and
// OpenCV's fallback allocator (used if ours throws) gives uninitialised memory.
char fresh_marker;
void* const kFreshMapping = &fresh_marker;

// cv::MatAllocator over the cache; Mats that wrap caller memory go to OpenCV's own allocator.
// UMatData::size is the mapped capacity, so that deallocate returns the whole block.
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
    std::size_t capacity = 0;
    bool reused = false;
    auto* p = static_cast<uchar*>(cache().take(mapped_size(total), capacity, reused));
    auto* u = new (std::nothrow) cv::UMatData(this);
    if (u == nullptr) {
      cache().give(p, capacity);
      throw std::bad_alloc();
    }
    u->data = u->origdata = p;
    u->size = capacity;
    u->userdata = reused ? nullptr : kFreshMapping;
    return u;
  }

  bool allocate(cv::UMatData* u, cv::AccessFlag, cv::UMatUsageFlags) const override { return u != nullptr; }

  void deallocate(cv::UMatData* u) const override {
    if (u == nullptr) return;
    cache().give(u->origdata, u->size);
    delete u;
  }
};

}  // namespace

cv::Mat allocate_planes(int planes, int rows, int cols, int type, bool zeroed) {
  static auto* allocator = new PlaneAllocator;  // never destroyed: outlives every Mat
  cv::Mat block;
  block.allocator = allocator;
  block.create(planes * rows, cols, type);
  if (zeroed && (block.u == nullptr || block.u->userdata != kFreshMapping)) block.setTo(0);
  return block;
}

void prefault_rows(const cv::Mat& rows) {
  if (rows.u == nullptr || rows.u->userdata != kFreshMapping || !rows.isContinuous()) return;
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(rows.data) & ~(page - 1);
  const auto end = reinterpret_cast<std::uintptr_t>(rows.data) + rows.total() * rows.elemSize();
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);  // advice only
}

void release_cached_planes() { cache().release(); }

std::size_t cached_plane_bytes() { return cache().bytes(); }

}  // namespace dicom
