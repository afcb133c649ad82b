#pragma once
// Airway tree growing with leak control (front propagation with branch tracking).
//
// The tree is grown from seed voxels through "passable" voxels (for CT: air of the lumen, e.g.
// <= -950 HU after a median filter), 6-connected, one geodesic layer at a time. The voxels added
// in one layer (the front) are split into 26-connected components; each component belongs to a
// branch, and a branch whose front splits in two becomes two child branches. A branch's
// reference size is the median front size of its first `reference_layers` layers; from then on
// it is "established". The seed branches are established from the start: their reference is the
// number of seed voxels given, passable or not (a lumen's cross-section, of which coarse pixels
// leave only the core passable), shared among the seed's components by their passable voxels.
// Where the lumen opens into low-density lung (emphysema, or any air below the threshold) the
// front stops looking like a tube's cross-section and grows: that is a leak.
//
//   * an established branch whose front exceeds leak_ratio x its reference, or
//   * the young branches (not yet established) descending from one established branch whose
//     fronts together exceed leak_ratio x that branch's reference, or
//   * any front component larger than max_front_mm2
// are stopped: the voxels they added after their last normal-sized front (for young branches:
// all of them) are given back as "blocked" so that no other branch grows into them again.
// When the whole tree exceeds max_volume_ml the growing stops (overflow): the caller should
// retry with a stricter threshold or give up.
//
// Memory: the state volume (CV_8U, one byte per voxel, the caller's) plus the voxel indices of
// the tree (int32 each); no int32 volume. Indices are linear in the state volume, so the volume
// must have fewer than 2^31 voxels.
#include <cstdint>
#include <vector>

#include "analysis/kernels/types.h"

namespace analysis::kernels {

// Values of the state volume.
inline constexpr std::uint8_t kAirwayClosed = 0;    // not passable
inline constexpr std::uint8_t kAirwayOpen = 1;      // passable, not (yet) in the tree
inline constexpr std::uint8_t kAirwayTree = 2;      // in the tree
inline constexpr std::uint8_t kAirwayBlocked = 3;   // passable but given back after a leak

struct AirwayParams {
  double leak_ratio = 2.5;        // front size / reference size that counts as a leak (> 1)
  int reference_layers = 4;       // layers that set a new branch's reference size (>= 1)
  double max_front_mm2 = 900;     // one front component larger than this (in mm2) is a leak
  double max_volume_ml = 400;     // the whole tree; growing stops beyond (overflow)
};

struct AirwayResult {
  std::int64_t voxels = 0;  // in the tree after leaks were given back
  int layers = 0;           // geodesic layers grown
  int branches = 0;         // branches created (the seed components included)
  int leaks = 0;            // leak events (each rolled back)
  bool overflow = false;    // max_volume_ml was reached
};

// Grows the tree in `state` (CV_8U slices, values above) from the seeds, given as linear indices
// (z * rows * cols + r * cols + c): those that are kAirwayOpen start the tree, the others only
// count towards the seed's reference (see above); no passable seed, no tree. Writes kAirwayTree
// into the tree and kAirwayBlocked into leaked voxels. `spacing` gives the front area in mm2 (voxel count
// times the mean face area) and the volume. Throws std::invalid_argument for bad input.
AirwayResult grow_airway_tree(Mask& state, const std::vector<std::int32_t>& seeds, const Spacing& spacing,
                              const AirwayParams& params = {});

}  // namespace analysis::kernels
