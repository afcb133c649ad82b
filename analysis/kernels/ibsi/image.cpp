#include "analysis/kernels/ibsi/image.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include <sys/mman.h>

#include <fmt/format.h>

namespace analysis::kernels::ibsi {
namespace {
void check_grid(const Grid& g, const char* what) {
  if (g.nx <= 0 || g.ny <= 0 || g.nz <= 0 || !(g.sx > 0) || !(g.sy > 0) || !(g.sz > 0))
    throw std::invalid_argument(fmt::format("{}: bad grid {}x{}x{} spacing {}x{}x{}", what, g.nx, g.ny, g.nz, g.sx, g.sy, g.sz));
}
}  // namespace

void advise_huge_pages(const void* data, std::size_t bytes) {
  constexpr std::uintptr_t huge = std::uintptr_t{1} << 21;
  if (bytes < 4 * huge) return;  // small: not worth a system call
  const auto begin = (reinterpret_cast<std::uintptr_t>(data) + huge - 1) & ~(huge - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(huge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice: failure is harmless
}

void check_roi(const RoiImage& roi, const char* what) {
  check_grid(roi.grid, what);
  const std::size_t n = roi.grid.size();
  if (roi.intensity.size() != n || roi.morph.size() != n || roi.mask.size() != n)
    throw std::invalid_argument(fmt::format("{}: intensity and masks must have one value per voxel of the grid", what));
  if (std::none_of(roi.mask.begin(), roi.mask.end(), [](std::uint8_t v) { return v != 0; }))
    throw std::invalid_argument(fmt::format("{}: empty intensity mask", what));
}

void check_levels(const Levels& levels, const char* what) {
  check_grid(levels.grid, what);
  if (levels.level.size() != levels.grid.size())
    throw std::invalid_argument(fmt::format("{}: one grey level per voxel of the grid expected", what));
  if (levels.ng < 1) throw std::invalid_argument(fmt::format("{}: no grey levels", what));
  if (levels.ng > kMaxGreyLevels)
    throw std::invalid_argument(fmt::format("{}: {} grey levels, more than {} (a bin width too small for the intensities?)",
                                            what, levels.ng, kMaxGreyLevels));
  // One branch-free (vectorised) pass: as unsigned, a negative level is above ng too. The first
  // bad level is looked for only when there is one.
  const auto ng = static_cast<unsigned>(levels.ng);
  unsigned bad = 0, any = 0;
  for (int v : levels.level) {
    bad |= static_cast<unsigned>(static_cast<unsigned>(v) > ng);
    any |= static_cast<unsigned>(v);
  }
  if (bad)
    for (int v : levels.level)
      if (v < 0 || v > levels.ng) throw std::invalid_argument(fmt::format("{}: grey level {} outside 0..{}", what, v, levels.ng));
  if (!any) throw std::invalid_argument(fmt::format("{}: empty intensity mask", what));
}

}  // namespace analysis::kernels::ibsi
