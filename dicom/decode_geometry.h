#pragma once
// Pure geometry planning (no I/O): which image planes of one series form which volume. Planes are
// grouped by size/orientation/spacing/frame of reference, sorted along the slice normal, split
// into temporal phases when several share a position, and split at gaps; gantry tilt (positions
// not along the normal) and one-position time series are rejected. Every plane ends up in exactly
// one volume plan or one rejection, with a reason.
#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "dicom/volume.h"

namespace dicom {

struct PlaneRef {
  std::size_t id = 0;  // caller's handle, returned in the plans
  Vec3 position{};
  std::array<double, 6> orientation{1, 0, 0, 0, 1, 0};
  double spacing_row = 1, spacing_col = 1;  // Pixel Spacing [0], [1]
  int rows = 0, cols = 0;
  std::string frame_of_reference_uid;
  std::array<double, 6> temporal_key{};  // orders planes at one position (see FrameHeader)
  double thickness = 0;                  // Spacing Between Slices or Slice Thickness, for 1 slice
};

struct VolumePlan {
  std::vector<std::size_t> ids;  // sorted along geom.normal
  Geometry geom;
};

struct PlanRejection {
  std::vector<std::size_t> ids;
  std::string reason;
};

struct PlanResult {
  std::vector<VolumePlan> volumes;
  std::vector<PlanRejection> rejected;
  std::vector<std::string> notes;  // splits made (phases, orientations, gaps), for the log
};

struct PlanOptions {
  double position_tolerance_mm = 0.01;  // planes closer than this along the normal share a position
  double spacing_tolerance = 0.02;      // relative deviation of one step from the median step
  double max_tilt_deg = 0.1;            // beyond this the stack is sheared (gantry tilt): rejected
  double orientation_tolerance = 1e-3;  // per direction-cosine component
};

PlanResult plan_volumes(const std::vector<PlaneRef>& planes, const PlanOptions& opt = {});

}  // namespace dicom
