#include "dicom/decode_geometry.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace dicom {
namespace {

constexpr double kPi = 3.14159265358979323846;

Vec3 sub(const Vec3& a, const Vec3& b) { return {a[0] - b[0], a[1] - b[1], a[2] - b[2]}; }
double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }
Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
Vec3 unit(const Vec3& a) {
  const double n = norm(a);
  return n > 0 ? Vec3{a[0] / n, a[1] / n, a[2] / n} : a;
}

bool compatible(const PlaneRef& a, const PlaneRef& b, const PlanOptions& opt) {
  if (a.rows != b.rows || a.cols != b.cols || a.frame_of_reference_uid != b.frame_of_reference_uid) return false;
  for (int i = 0; i < 6; ++i)
    if (std::abs(a.orientation[i] - b.orientation[i]) > opt.orientation_tolerance) return false;
  auto close = [](double x, double y) { return std::abs(x - y) <= 1e-3 * std::max(std::abs(x), std::abs(y)) + 1e-6; };
  return close(a.spacing_row, b.spacing_row) && close(a.spacing_col, b.spacing_col);
}

std::string describe(const PlaneRef& p) {
  return fmt::format("{}x{}, IOP [{:.3f} {:.3f} {:.3f} {:.3f} {:.3f} {:.3f}], spacing {:.4g}x{:.4g}", p.rows, p.cols,
                     p.orientation[0], p.orientation[1], p.orientation[2], p.orientation[3], p.orientation[4],
                     p.orientation[5], p.spacing_row, p.spacing_col);
}

struct Placed {
  const PlaneRef* plane;
  double d;  // position along the normal
};

std::vector<std::size_t> ids_of(const std::vector<Placed>& v) {
  std::vector<std::size_t> ids;
  for (const auto& p : v) ids.push_back(p.plane->id);
  return ids;
}

Geometry make_geometry(const std::vector<Placed>& run, const Vec3& row, const Vec3& col, const Vec3& normal) {
  Geometry g;
  const PlaneRef& first = *run.front().plane;
  g.origin = first.position;
  g.row_dir = row;
  g.col_dir = col;
  g.normal = normal;
  g.spacing_row = first.spacing_row;
  g.spacing_col = first.spacing_col;
  if (run.size() > 1) {
    g.spacing_slice = (run.back().d - run.front().d) / static_cast<double>(run.size() - 1);
  } else {
    g.spacing_slice = first.thickness > 0 ? first.thickness : 1.0;
  }
  g.has_frame_of_reference = true;
  return g;
}

// One phase: planes sorted along the normal, all at distinct positions.
void plan_phase(const std::vector<Placed>& phase, const Vec3& row, const Vec3& col, const Vec3& normal,
                const std::string& label, const PlanOptions& opt, PlanResult& out) {
  if (phase.size() == 1) {
    out.volumes.push_back({ids_of(phase), make_geometry(phase, row, col, normal)});
    return;
  }
  // Gantry tilt / shear: the step between positions must be along the normal.
  double worst_deg = 0, worst_mm = 0;
  for (std::size_t i = 1; i < phase.size(); ++i) {
    const Vec3 v = sub(phase[i].plane->position, phase.front().plane->position);
    const double along = dot(v, normal);
    const Vec3 across{v[0] - along * normal[0], v[1] - along * normal[1], v[2] - along * normal[2]};
    const double off = norm(across);
    const double deg = std::atan2(off, std::abs(along)) * 180.0 / kPi;
    if (off > 0.01 && deg > worst_deg) {
      worst_deg = deg;
      worst_mm = off;
    }
  }
  if (worst_deg > opt.max_tilt_deg) {
    out.rejected.push_back({ids_of(phase), fmt::format("{}slice positions are not along the slice normal (gantry tilt or "
                                                       "sheared stack: {:.2f} deg, {:.2f} mm off-axis); not a volume",
                                                       label, worst_deg, worst_mm)});
    return;
  }
  std::vector<double> steps;
  for (std::size_t i = 1; i < phase.size(); ++i) steps.push_back(phase[i].d - phase[i - 1].d);
  std::vector<double> sorted = steps;
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  const double step = sorted[sorted.size() / 2];
  // Split into runs of equal spacing.
  std::vector<std::vector<Placed>> runs{{phase.front()}};
  for (std::size_t i = 1; i < phase.size(); ++i) {
    const double s = steps[i - 1];
    if (std::abs(s - step) > opt.spacing_tolerance * step + 1e-3) {
      const double ratio = s / step;
      const double k = std::round(ratio);
      if (k >= 2 && std::abs(ratio - k) <= opt.spacing_tolerance * k) {
        out.notes.push_back(fmt::format("{}gap of {} missing slice(s) between {:.3f} and {:.3f} mm (spacing {:.3f} mm): "
                                        "volume split",
                                        label, static_cast<int>(k) - 1, phase[i - 1].d, phase[i].d, step));
      } else {
        out.notes.push_back(fmt::format("{}irregular slice step {:.3f} mm (expected {:.3f} mm) at {:.3f} mm: volume split",
                                        label, s, step, phase[i].d));
      }
      runs.emplace_back();
    }
    runs.back().push_back(phase[i]);
  }
  for (const auto& run : runs) {
    if (run.size() == 1 && runs.size() > 1) {
      out.rejected.push_back({ids_of(run), fmt::format("{}isolated slice at {:.3f} mm: a gap or irregular spacing separates "
                                                       "it from the rest of the stack",
                                                       label, run.front().d)});
    } else {
      out.volumes.push_back({ids_of(run), make_geometry(run, row, col, normal)});
    }
  }
}

void plan_group(const std::vector<const PlaneRef*>& group, const PlanOptions& opt, PlanResult& out) {
  const auto& o = group.front()->orientation;
  const Vec3 row = unit({o[0], o[1], o[2]});
  const Vec3 col = unit({o[3], o[4], o[5]});
  const Vec3 normal = unit(cross(row, col));
  std::vector<Placed> placed;
  for (const auto* p : group) placed.push_back({p, dot(p->position, normal)});
  std::stable_sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) { return a.d < b.d; });

  // Positions: runs of planes closer than the tolerance along the normal.
  std::vector<std::vector<Placed>> positions;
  for (const auto& p : placed) {
    if (positions.empty() || p.d - positions.back().front().d > opt.position_tolerance_mm) positions.emplace_back();
    positions.back().push_back(p);
  }
  std::size_t min_count = placed.size(), max_count = 0;
  for (auto& pos : positions) {
    std::stable_sort(pos.begin(), pos.end(),
                     [](const Placed& a, const Placed& b) { return a.plane->temporal_key < b.plane->temporal_key; });
    min_count = std::min(min_count, pos.size());
    max_count = std::max(max_count, pos.size());
  }
  if (max_count == 1) {
    plan_phase(placed, row, col, normal, "", opt, out);
    return;
  }
  if (positions.size() == 1) {
    out.rejected.push_back({ids_of(placed), fmt::format("all {} planes lie at one position (a time series of a single "
                                                        "slice); not a volume",
                                                        placed.size())});
    return;
  }
  if (min_count != max_count) {
    out.rejected.push_back(
        {ids_of(placed), fmt::format("{} positions hold unequal numbers of planes ({} to {}): duplicate or missing "
                                     "temporal phases; cannot form volumes",
                                     positions.size(), min_count, max_count)});
    return;
  }
  out.notes.push_back(fmt::format("{} temporal phases at each of {} positions: split into {} volumes", max_count,
                                  positions.size(), max_count));
  for (std::size_t k = 0; k < max_count; ++k) {
    std::vector<Placed> phase;
    for (const auto& pos : positions) phase.push_back(pos[k]);
    plan_phase(phase, row, col, normal, fmt::format("phase {}: ", k + 1), opt, out);
  }
}

}  // namespace

PlanResult plan_volumes(const std::vector<PlaneRef>& planes, const PlanOptions& opt) {
  PlanResult out;
  std::vector<std::vector<const PlaneRef*>> groups;
  for (const auto& p : planes) {
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return compatible(*g.front(), p, opt); });
    if (it == groups.end()) {
      groups.push_back({&p});
    } else {
      it->push_back(&p);
    }
  }
  if (groups.size() > 1) {
    std::string sizes;
    for (const auto& g : groups) sizes += fmt::format("{}{} ({} planes)", sizes.empty() ? "" : "; ", describe(*g.front()), g.size());
    out.notes.push_back(fmt::format("planes differ in size, orientation, spacing or frame of reference: split into {} "
                                    "groups: {}",
                                    groups.size(), sizes));
  }
  for (const auto& g : groups) {
    if (g.size() == 1 && groups.size() > 1) {
      out.rejected.push_back({{g.front()->id}, fmt::format("single plane ({}) whose size/orientation differs from the rest "
                                                           "of the series (e.g. a localizer)",
                                                           describe(*g.front()))});
      continue;
    }
    plan_group(g, opt, out);
  }
  return out;
}

}  // namespace dicom
