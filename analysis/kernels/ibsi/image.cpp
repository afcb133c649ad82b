#include "analysis/kernels/ibsi/image.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace analysis::kernels::ibsi {
namespace {
void check_grid(const Grid& g, const char* what) {
  if (g.nx <= 0 || g.ny <= 0 || g.nz <= 0 || !(g.sx > 0) || !(g.sy > 0) || !(g.sz > 0))
    throw std::invalid_argument(fmt::format("{}: bad grid {}x{}x{} spacing {}x{}x{}", what, g.nx, g.ny, g.nz, g.sx, g.sy, g.sz));
}
}  // namespace

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
  bool any = false;
  for (int v : levels.level) {
    if (v < 0 || v > levels.ng) throw std::invalid_argument(fmt::format("{}: grey level {} outside 0..{}", what, v, levels.ng));
    any |= v > 0;
  }
  if (!any) throw std::invalid_argument(fmt::format("{}: empty intensity mask", what));
}

}  // namespace analysis::kernels::ibsi
