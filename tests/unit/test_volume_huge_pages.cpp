// dicom::allocate_planes: fresh blocks of 4 MiB and up start on a 2 MiB boundary and carry the
// transparent huge page advice (VmFlags "hg" in /proc/self/smaps), their mapping is exactly the
// block (nothing of the alignment slack stays mapped), they are zero when asked, and the whole
// mapping goes back to the system on release; smaller blocks get no advice.
#define BOOST_TEST_MODULE volume_huge_pages
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <opencv2/core.hpp>

#include "dicom/volume.h"

namespace {

struct Vma {
  std::uintptr_t begin = 0, end = 0;
  std::string flags;  // VmFlags
};

// The mapping of /proc/self/smaps that contains `p`, if any.
std::optional<Vma> vma_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  std::optional<Vma> found;
  bool inside = false;
  while (std::getline(smaps, line)) {
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    if (dash != std::string::npos && space != std::string::npos && dash < space &&
        line.find_first_not_of("0123456789abcdef") == dash) {  // a mapping's first line
      if (found) return found;
      const auto begin = std::stoull(line.substr(0, dash), nullptr, 16);
      const auto end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
      inside = a >= begin && a < end;
      if (inside) found = Vma{begin, end, {}};
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      found->flags = line.substr(8);
    }
  }
  return found;
}

bool has_flag(const std::string& flags, const std::string& f) {
  std::istringstream in(flags);
  std::string w;
  while (in >> w)
    if (w == f) return true;
  return false;
}

constexpr std::uintptr_t kTwoMiB = std::uintptr_t{2} << 20;

}  // namespace

BOOST_AUTO_TEST_CASE(large_fresh_blocks_are_aligned_advised_and_exact) {
  dicom::release_cached_planes();
  // 300 x 512 x 512 int16 (75 x 2 MiB) and an odd size (not a multiple of 2 MiB).
  for (const auto& [planes, rows, cols] : {std::tuple{300, 512, 512}, std::tuple{37, 333, 301}}) {
    const void* data = nullptr;
    {
      const cv::Mat block = dicom::allocate_planes(planes, rows, cols, CV_16S, /*zeroed=*/true);
      data = block.data;
      const auto a = reinterpret_cast<std::uintptr_t>(block.data);
      BOOST_TEST(a % kTwoMiB == 0u, "block at " << std::hex << a << " is not on a 2 MiB boundary");
      const auto vma = vma_of(block.data);
      BOOST_TEST_REQUIRE(vma.has_value());
      BOOST_TEST(has_flag(vma->flags, "hg"), "VmFlags:" << vma->flags);
      BOOST_TEST(vma->begin == a);
      const std::size_t bytes = block.total() * block.elemSize();
      BOOST_TEST(vma->end - vma->begin == (bytes + 4095) / 4096 * 4096);
      BOOST_TEST(cv::countNonZero(block) == 0);
      cv::Mat(block).setTo(7);  // the whole block is writable
      BOOST_TEST(cv::countNonZero(block) == static_cast<int>(block.total()));
    }
    dicom::release_cached_planes();  // the cached block goes back to the system
    BOOST_TEST(!vma_of(data).has_value(), planes << " planes: still mapped after release");
  }
}

BOOST_AUTO_TEST_CASE(small_blocks_get_no_huge_page_advice) {
  const cv::Mat block = dicom::allocate_planes(4, 256, 256, CV_16S, /*zeroed=*/true);  // 512 KiB
  const auto vma = vma_of(block.data);
  BOOST_TEST_REQUIRE(vma.has_value());
  BOOST_TEST(!has_flag(vma->flags, "hg"), "VmFlags:" << vma->flags);
  BOOST_TEST(cv::countNonZero(block) == 0);
}

BOOST_AUTO_TEST_CASE(reused_blocks_keep_the_advice) {
  dicom::release_cached_planes();
  const void* first = nullptr;
  {
    const cv::Mat v = dicom::allocate_planes(100, 512, 512, CV_16S);
    first = v.data;
  }
  const cv::Mat again = dicom::allocate_planes(100, 512, 512, CV_16S, /*zeroed=*/true);
  BOOST_TEST(again.data == first);  // the cached block
  const auto vma = vma_of(again.data);
  BOOST_TEST_REQUIRE(vma.has_value());
  BOOST_TEST(has_flag(vma->flags, "hg"));
  BOOST_TEST(cv::countNonZero(again) == 0);
  dicom::release_cached_planes();
}
