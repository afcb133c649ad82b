#include "analysis/roi_input.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrds.h>

#include "analysis/kernels/nifti.h"
#include "dicom/error.h"
#include "dicom/scan.h"
#include "dicom/seg_reader.h"

namespace analysis {
namespace fs = std::filesystem;
namespace {

using dicom::Vec3;

double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
Vec3 minus(const Vec3& a, const Vec3& b) { return {a[0] - b[0], a[1] - b[1], a[2] - b[2]}; }
bool same_dir(const Vec3& a, const Vec3& b) {
  return std::abs(a[0] - b[0]) < 1e-4 && std::abs(a[1] - b[1]) < 1e-4 && std::abs(a[2] - b[2]) < 1e-4;
}
bool within(double a, double b, double rel) { return std::abs(a - b) <= rel * std::abs(b); }
std::string vec(const Vec3& v) { return fmt::format("({:g}, {:g}, {:g})", v[0], v[1], v[2]); }
std::string quoted(const fs::path& p) { return p.string(); }

[[noreturn]] void mismatch(const fs::path& f, const std::string& why) {
  throw std::invalid_argument(quoted(f) + ": " + why);
}

// ---------------------------------------------------------------------------------------------
// What a file is, from its first bytes.

enum class Kind { nifti, dicom, unknown };

Kind sniff(const fs::path& f) {
  std::ifstream in(f, std::ios::binary);
  unsigned char b[352] = {};
  in.read(reinterpret_cast<char*>(b), sizeof b);
  const auto n = static_cast<std::size_t>(in.gcount());
  if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) return Kind::nifti;  // gzip: only .nii.gz is read compressed
  if (n >= 132 && std::memcmp(b + 128, "DICM", 4) == 0) return Kind::dicom;
  if (n >= 4) {
    const std::uint32_t le = b[0] | b[1] << 8 | b[2] << 16 | static_cast<std::uint32_t>(b[3]) << 24;
    const std::uint32_t be = b[3] | b[2] << 8 | b[1] << 16 | static_cast<std::uint32_t>(b[0]) << 24;
    if (le == 348 || be == 348) return Kind::nifti;  // sizeof_hdr of NIfTI-1
  }
  // A bare data set (no preamble) starts with a group 0002 or 0008 tag, as dicom::looks_like_dicom
  // tells them; anything else is not handed to DCMTK.
  if (n >= 2) {
    const bool le = b[1] == 0 && (b[0] == 0x02 || b[0] == 0x08), be = b[0] == 0 && (b[1] == 0x02 || b[1] == 0x08);
    if (le || be) return Kind::dicom;
  }
  return Kind::unknown;
}

std::string str(DcmItem& item, const DcmTagKey& tag) {
  OFString v;
  if (item.findAndGetOFStringArray(tag, v).bad()) return {};
  return v.c_str();
}

// Items of a sequence of `item`, in order (walking the list: getItem(i) is linear in i).
template <typename F>
void for_items(DcmItem& item, const DcmTagKey& tag, F&& f) {
  DcmSequenceOfItems* seq = nullptr;
  if (item.findAndGetSequence(tag, seq).bad() || !seq) return;
  for (DcmObject* o = seq->nextInContainer(nullptr); o != nullptr; o = seq->nextInContainer(o))
    if (auto* it = dynamic_cast<DcmItem*>(o)) f(*it);
}

// ---------------------------------------------------------------------------------------------
// The volume's slices along its normal.

struct SliceGrid {
  std::vector<double> pos;     // position of slice z along the normal, mm
  std::vector<Vec3> origin;    // Image Position (Patient) of slice z
  std::vector<std::pair<double, int>> sorted;  // (pos, z) ascending
  double spacing = 1;

  double first() const { return sorted.front().first; }
  double last() const { return sorted.back().first; }
  // Beyond the first or last slice by more than half a slice spacing.
  bool beyond(double p) const { return p < first() - 0.5 * spacing || p > last() + 0.5 * spacing; }
  // The slice nearest to p and its distance.
  std::pair<int, double> nearest(double p) const {
    auto it = std::lower_bound(sorted.begin(), sorted.end(), std::make_pair(p, std::numeric_limits<int>::min()));
    int best = -1;
    double d = std::numeric_limits<double>::infinity();
    for (auto c : {it, it == sorted.begin() ? it : std::prev(it)}) {
      if (c == sorted.end()) continue;
      if (std::abs(c->first - p) < d) d = std::abs(c->first - p), best = c->second;
    }
    return {best, d};
  }
};

SliceGrid grid_of(const dicom::Volume& v) {
  SliceGrid g;
  g.spacing = v.geom.spacing_slice > 0 ? v.geom.spacing_slice : 1.0;
  const bool per_slice = static_cast<int>(v.sources.size()) == v.depth();
  for (int z = 0; z < v.depth(); ++z) {
    Vec3 o = v.geom.origin;
    if (per_slice) {
      o = v.sources[static_cast<std::size_t>(z)].position;
    } else {
      for (int i = 0; i < 3; ++i) o[i] += z * g.spacing * v.geom.normal[i];
    }
    g.origin.push_back(o);
    g.pos.push_back(dot(o, v.geom.normal));
    g.sorted.emplace_back(g.pos.back(), z);
  }
  std::sort(g.sorted.begin(), g.sorted.end());
  return g;
}

void check_volume(const dicom::Volume& v) {
  if (v.depth() == 0 || v.rows() == 0 || v.cols() == 0) throw std::invalid_argument("ROI mask: the image volume is empty");
}

std::size_t finish(const fs::path& f, const Mask& m, const std::string& what_is_empty) {
  const std::size_t n = kernels::count_nonzero(m);
  if (n == 0) mismatch(f, "the mask is empty on this volume: " + what_is_empty);
  return n;
}

// ---------------------------------------------------------------------------------------------
// NIfTI

std::string values_present(const std::vector<cv::Mat>& slices) {
  std::set<double> seen;
  for (const auto& s : slices) {
    cv::Mat d;
    s.convertTo(d, CV_64F);
    for (int r = 0; r < d.rows && seen.size() <= 20; ++r) {
      const double* p = d.ptr<double>(r);
      for (int c = 0; c < d.cols && seen.size() <= 20; ++c)
        if (p[c] != 0) seen.insert(p[c]);
    }
  }
  if (seen.empty()) return "no non-zero value";
  std::string out = "non-zero values present: ";
  int k = 0;
  for (double x : seen) {
    if (k++ == 20) {
      out += ", ...";
      break;
    }
    out += fmt::format("{}{:g}", k > 1 ? ", " : "", x);
  }
  return out;
}

Mask nifti_mask(const dicom::Volume& v, const fs::path& f, std::optional<int> label, std::string& desc) {
  const kernels::NiftiImage img = kernels::read_nifti(f);  // runtime_error naming the file
  const int nz = static_cast<int>(img.slices.size());
  const int ny = nz ? img.slices.front().rows : 0, nx = nz ? img.slices.front().cols : 0;
  if (nx != v.cols() || ny != v.rows() || nz != v.depth()) {
    std::string hint;
    if (nx == v.rows() && ny == v.cols() && nz == v.depth() && nx != ny)
      hint = "; its i and j look swapped (rows for columns)";
    mismatch(f, fmt::format("the NIfTI mask is {}x{}x{} (i x j x k), the image volume is {}x{}x{} (columns x rows x "
                            "slices): NIfTI i is read as the column, j as the row and k as the slice in the volume's "
                            "order along its normal (the qform/sform is not read){}",
                            nx, ny, nz, v.cols(), v.rows(), v.depth(), hint));
  }
  const Spacing want = spacing_of(v.geom);
  if (!within(img.spacing.col, want.col, 0.01) || !within(img.spacing.row, want.row, 0.01) ||
      !within(img.spacing.slice, want.slice, 0.01))
    mismatch(f, fmt::format("the NIfTI voxel spacing is {:g} x {:g} x {:g} mm (pixdim i, j, k), the image volume's "
                            "{:g} x {:g} x {:g} mm (columns, rows, slices): they must agree within 1%",
                            img.spacing.col, img.spacing.row, img.spacing.slice, want.col, want.row, want.slice));
  Mask m = kernels::make_mask(v.depth(), v.rows(), v.cols());
  for (int z = 0; z < nz; ++z) {
    const cv::Mat& s = img.slices[static_cast<std::size_t>(z)];
    cv::Mat& out = m[static_cast<std::size_t>(z)];
    if (label)
      cv::compare(s, static_cast<double>(*label), out, cv::CMP_EQ);
    else
      cv::compare(s, 0.0, out, cv::CMP_NE);
    cv::bitwise_and(out, cv::Scalar(1), out);
  }
  const std::size_t n =
      finish(f, m, label ? fmt::format("no voxel has the value {} ({})", *label, values_present(img.slices))
                         : "no voxel is non-zero");
  desc = fmt::format("NIfTI {}: {}, {} voxels", f.filename().string(),
                     label ? fmt::format("label {}", *label) : std::string("every non-zero voxel"), n);
  return m;
}

// ---------------------------------------------------------------------------------------------
// DICOM SEG

std::string segment_list(const dicom::SegObject& seg) {
  std::string out;
  for (const auto& s : seg.segments) out += fmt::format("{}{} '{}'", out.empty() ? "" : ", ", s.number, s.label);
  return out;
}

Mask seg_mask(const dicom::Volume& v, const fs::path& f, std::optional<int> label, std::string& desc) {
  const dicom::SegObject seg = dicom::read_seg(f);
  if (label && !seg.segment(*label))
    mismatch(f, fmt::format("the SEG has no segment {} (segments: {})", *label, segment_list(seg)));
  if (seg.rows != v.rows() || seg.cols != v.cols())
    mismatch(f, fmt::format("the SEG's frames are {}x{} (rows x columns), the image volume's slices {}x{}", seg.rows,
                            seg.cols, v.rows(), v.cols()));
  Mask m = kernels::make_mask(v.depth(), v.rows(), v.cols());
  int used = 0, skipped = 0, selected = 0;
  const bool physical = v.geom.has_frame_of_reference && seg.has_frame_of_reference;
  if (physical) {
    if (seg.frame_of_reference_uid != v.info.frame_of_reference_uid)
      mismatch(f, fmt::format("the SEG's Frame of Reference UID is {}, the image volume's {}: they are not in the same "
                              "patient space",
                              seg.frame_of_reference_uid, v.info.frame_of_reference_uid.empty()
                                                              ? std::string("missing")
                                                              : v.info.frame_of_reference_uid));
    if (!same_dir(seg.row_dir, v.geom.row_dir) || !same_dir(seg.col_dir, v.geom.col_dir))
      mismatch(f, fmt::format("the SEG's Image Orientation (Patient) {} {} is not the image volume's {} {}",
                              vec(seg.row_dir), vec(seg.col_dir), vec(v.geom.row_dir), vec(v.geom.col_dir)));
    if (seg.has_pixel_spacing &&
        (!within(seg.spacing_row, v.geom.spacing_row, 1e-3) || !within(seg.spacing_col, v.geom.spacing_col, 1e-3)))
      mismatch(f, fmt::format("the SEG's Pixel Spacing {:g}\\{:g} is not the image volume's {:g}\\{:g}", seg.spacing_row,
                              seg.spacing_col, v.geom.spacing_row, v.geom.spacing_col));
    const SliceGrid g = grid_of(v);
    for (std::size_t i = 0; i < seg.frames.size(); ++i) {
      const dicom::SegFrame& fr = seg.frames[i];
      if (label && fr.segment != *label) continue;
      ++selected;
      const double p = dot(fr.position, v.geom.normal);
      if (g.beyond(p)) {
        ++skipped;
        continue;
      }
      const auto [z, d] = g.nearest(p);
      if (d > 0.1 * g.spacing)
        mismatch(f, fmt::format("SEG frame {} lies at {:g} mm along the slice normal, {:g} mm from the nearest slice "
                                "({} at {:g} mm): off the image volume's slice grid (tolerance 10% of the slice "
                                "spacing {:g} mm)",
                                i + 1, p, d, z, g.pos[static_cast<std::size_t>(z)], g.spacing));
      const Vec3 off = minus(fr.position, g.origin[static_cast<std::size_t>(z)]);
      const double dc = dot(off, v.geom.row_dir) / v.geom.spacing_col, dr = dot(off, v.geom.col_dir) / v.geom.spacing_row;
      if (std::abs(dc) > 0.05 || std::abs(dr) > 0.05)
        mismatch(f, fmt::format("SEG frame {} is shifted in plane by {:.3g} columns and {:.3g} rows against slice {} of "
                                "the image volume (Image Position (Patient) {} vs {})",
                                i + 1, dc, dr, z, vec(fr.position), vec(g.origin[static_cast<std::size_t>(z)])));
      cv::Mat& out = m[static_cast<std::size_t>(z)];
      cv::bitwise_or(out, fr.mask, out);
      ++used;
    }
  } else if (!v.geom.has_frame_of_reference && !seg.has_frame_of_reference) {
    // 2D images: frames are identified by the source image they were derived from.
    std::map<std::pair<std::string, int>, int> slice_of;
    for (int z = 0; z < static_cast<int>(v.sources.size()); ++z)
      slice_of[{v.sources[static_cast<std::size_t>(z)].sop_instance_uid, v.sources[static_cast<std::size_t>(z)].frame_number}] = z;
    for (const auto& fr : seg.frames) {
      if (label && fr.segment != *label) continue;
      ++selected;
      auto it = slice_of.find({fr.source_sop_instance_uid, fr.source_frame});
      if (it == slice_of.end() && fr.source_frame == 1) it = slice_of.find({fr.source_sop_instance_uid, 0});
      if (it == slice_of.end() || it->second >= v.depth()) {
        ++skipped;
        continue;
      }
      cv::Mat& out = m[static_cast<std::size_t>(it->second)];
      cv::bitwise_or(out, fr.mask, out);
      ++used;
    }
  } else {
    mismatch(f, v.geom.has_frame_of_reference
                    ? "the SEG has no frame of reference (plane positions and orientation), the image volume has one"
                    : "the SEG has a frame of reference, the image volume (2D projection images) has none");
  }
  const std::string which = label ? fmt::format("segment {} '{}'", *label, seg.segment(*label)->label)
                                  : fmt::format("all {} segments ({})", seg.segments.size(), segment_list(seg));
  const std::size_t n =
      finish(f, m,
             skipped == selected && selected > 0
                 ? fmt::format("all {} frames of {} lie beyond the volume's slices (or reference other images)", selected, which)
                 : fmt::format("{} has no pixel set on the volume's slices", which));
  desc = fmt::format("SEG {}: {}, {} of {} frames on this volume's slices{}, {} voxels", f.filename().string(), which,
                     used, selected, skipped ? fmt::format(" ({} beyond them)", skipped) : std::string(), n);
  return m;
}

// ---------------------------------------------------------------------------------------------
// DICOM RTSTRUCT

struct RtContour {
  int index = 0;  // 1-based item of the ROI's Contour Sequence
  std::string type;
  std::vector<Vec3> points;
};

struct RtRoi {
  int number = 0;
  std::string name, frame_of_reference_uid;
  std::vector<RtContour> contours;
};

std::vector<RtRoi> read_rois(const fs::path& f, DcmDataset& ds) {
  std::vector<RtRoi> rois;
  std::map<int, std::size_t> at;
  for_items(ds, DCM_StructureSetROISequence, [&](DcmItem& it) {
    RtRoi r;
    Sint32 no = 0;
    if (it.findAndGetSint32(DCM_ROINumber, no).bad())
      throw dicom::DicomError("RTSTRUCT " + quoted(f) + ": a Structure Set ROI Sequence item has no ROI Number");
    r.number = no;
    r.name = str(it, DCM_ROIName);
    r.frame_of_reference_uid = str(it, DCM_ReferencedFrameOfReferenceUID);
    if (!at.emplace(r.number, rois.size()).second)
      throw dicom::DicomError("RTSTRUCT " + quoted(f) + ": ROI Number " + std::to_string(no) + " defined twice");
    rois.push_back(std::move(r));
  });
  for_items(ds, DCM_ROIContourSequence, [&](DcmItem& it) {
    Sint32 no = 0;
    if (it.findAndGetSint32(DCM_ReferencedROINumber, no).bad() || !at.count(no)) return;  // refers to no ROI
    RtRoi& r = rois[at.at(no)];
    int index = 0;
    for_items(it, DCM_ContourSequence, [&](DcmItem& c) {
      RtContour rc;
      rc.index = ++index;
      rc.type = str(c, DCM_ContourGeometricType);
      DcmElement* el = nullptr;
      if (c.findAndGetElement(DCM_ContourData, el).good() && el) {
        auto* ds_el = dynamic_cast<DcmDecimalString*>(el);
        if (!ds_el)
          throw dicom::DicomError(fmt::format("RTSTRUCT {}: ROI {} contour {}: Contour Data is not DS", quoted(f), no, index));
        OFVector<Float64> v;
        if (ds_el->getFloat64Vector(v).bad() || v.size() % 3 != 0)
          throw dicom::DicomError(fmt::format("RTSTRUCT {}: ROI {} contour {}: Contour Data is not a list of x\\y\\z "
                                              "triplets ({} values)",
                                              quoted(f), no, index, v.size()));
        for (std::size_t k = 0; k < v.size(); k += 3) {
          if (!std::isfinite(v[k]) || !std::isfinite(v[k + 1]) || !std::isfinite(v[k + 2]))
            throw dicom::DicomError(
                fmt::format("RTSTRUCT {}: ROI {} contour {}: Contour Data is not finite", quoted(f), no, index));
          rc.points.push_back({v[k], v[k + 1], v[k + 2]});
        }
      }
      r.contours.push_back(std::move(rc));
    });
  });
  return rois;
}

std::string roi_list(const std::vector<RtRoi>& rois) {
  std::string out;
  for (const auto& r : rois) out += fmt::format("{}{} '{}'", out.empty() ? "" : ", ", r.number, r.name);
  return out;
}

Mask rtstruct_mask(const dicom::Volume& v, const fs::path& f, std::optional<int> label, std::string& desc) {
  DcmFileFormat ff;
  if (const OFCondition c = ff.loadFile(f.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect); c.bad())
    throw dicom::DicomError("RTSTRUCT " + quoted(f) + ": cannot read as DICOM: " + c.text());
  DcmDataset& ds = *ff.getDataset();
  const std::vector<RtRoi> rois = read_rois(f, ds);
  if (rois.empty()) mismatch(f, "the RTSTRUCT defines no ROI (empty Structure Set ROI Sequence)");
  const RtRoi* roi = nullptr;
  if (label) {
    for (const auto& r : rois)
      if (r.number == *label) roi = &r;
    if (!roi) mismatch(f, fmt::format("the RTSTRUCT has no ROI number {} (ROIs: {})", *label, roi_list(rois)));
  } else if (rois.size() == 1) {
    roi = &rois.front();
  } else {
    mismatch(f, fmt::format("the RTSTRUCT has {} ROIs; choose one by its ROI Number with --label: {}", rois.size(),
                            roi_list(rois)));
  }

  std::string for_uid = roi->frame_of_reference_uid;
  if (for_uid.empty()) {  // else the structure set's only referenced frame of reference
    std::vector<std::string> fors;
    for_items(ds, DCM_ReferencedFrameOfReferenceSequence, [&](DcmItem& it) { fors.push_back(str(it, DCM_FrameOfReferenceUID)); });
    if (fors.size() == 1) for_uid = fors.front();
  }
  if (!v.geom.has_frame_of_reference || v.info.frame_of_reference_uid.empty())
    mismatch(f, "the image volume has no frame of reference (2D projection images): RTSTRUCT contours are in patient "
                "coordinates");
  if (for_uid != v.info.frame_of_reference_uid)
    mismatch(f, fmt::format("ROI {} '{}' is in the Frame of Reference UID {}, the image volume in {}: they are not "
                            "in the same patient space",
                            roi->number, roi->name, for_uid.empty() ? std::string("(none given)") : for_uid,
                            v.info.frame_of_reference_uid));

  const SliceGrid g = grid_of(v);
  const dicom::Geometry& geo = v.geom;
  std::vector<std::vector<std::vector<cv::Point2d>>> per_slice(static_cast<std::size_t>(v.depth()));
  std::vector<std::pair<double, double>> span(static_cast<std::size_t>(v.depth()),
                                              {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()});
  int used = 0, beyond = 0, not_closed = 0, too_short = 0;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const RtContour& c : roi->contours) {
    if (c.type != "CLOSED_PLANAR" && c.type != "CLOSED_PLANAR_XOR") {
      ++not_closed;
      continue;
    }
    if (c.points.size() < 3) {
      ++too_short;
      continue;
    }
    double mean = 0;
    for (const auto& p : c.points) mean += dot(p, geo.normal);
    mean /= static_cast<double>(c.points.size());
    double spread = 0;
    for (const auto& p : c.points) spread = std::max(spread, std::abs(dot(p, geo.normal) - mean));
    lo = std::min(lo, mean), hi = std::max(hi, mean);
    if (spread > 0.5 * g.spacing)
      mismatch(f, fmt::format("ROI {} contour {} is off the slice grid: its points lie up to {:g} mm off their mean "
                              "plane along the slice normal (more than half the slice spacing {:g} mm), so it is not "
                              "parallel to the image slices",
                              roi->number, c.index, spread, g.spacing));
    if (g.beyond(mean)) {
      ++beyond;
      continue;
    }
    const auto [z, d] = g.nearest(mean);
    const auto zi = static_cast<std::size_t>(z);
    if (d > 0.5 * g.spacing)
      mismatch(f, fmt::format("ROI {} contour {} is off the slice grid: it lies at {:g} mm along the slice normal, "
                              "{:g} mm from the nearest slice ({} at {:g} mm), more than half the slice spacing {:g} mm",
                              roi->number, c.index, mean, d, z, g.pos[zi], g.spacing));
    auto& [smin, smax] = span[zi];
    smin = std::min(smin, mean), smax = std::max(smax, mean);
    if (smax - smin > 0.25 * g.spacing)
      mismatch(f, fmt::format("ROI {} contours at {:g} and {:g} mm along the slice normal both fall on slice {} "
                              "({:g} mm): the structure set was drawn on a finer slice grid than this volume's "
                              "(slice spacing {:g} mm), so it is off the slice grid",
                              roi->number, smin, smax, z, g.pos[zi], g.spacing));
    std::vector<cv::Point2d> poly;
    poly.reserve(c.points.size());
    for (const auto& p : c.points) {
      const Vec3 off = minus(p, g.origin[zi]);
      poly.emplace_back(dot(off, geo.row_dir) / geo.spacing_col, dot(off, geo.col_dir) / geo.spacing_row);
    }
    per_slice[zi].push_back(std::move(poly));
    ++used;
  }
  Mask m = kernels::make_mask(v.depth(), v.rows(), v.cols());
  kernels::parallel_slices(0, v.depth(), [&](int z) {
    const auto& polys = per_slice[static_cast<std::size_t>(z)];
    if (!polys.empty()) fill_contours_even_odd(polys, v.rows(), v.cols()).copyTo(m[static_cast<std::size_t>(z)]);
  });
  const std::string which = fmt::format("ROI {} '{}'", roi->number, roi->name);
  const int closed = static_cast<int>(roi->contours.size()) - not_closed - too_short;
  std::string empty_why;
  if (closed == 0)
    empty_why = fmt::format("{} has no CLOSED_PLANAR contour of three points or more ({} contours)", which,
                            roi->contours.size());
  else if (used == 0)
    empty_why = fmt::format("none of the {} contours of {} lies on the volume's slices (contours from {:g} to {:g} mm "
                            "along the slice normal, slices from {:g} to {:g} mm)",
                            closed, which, lo, hi, g.first(), g.last());
  else
    empty_why = fmt::format("the {} contours of {} on the volume's slices enclose no pixel centre of the image", used, which);
  const std::size_t n = finish(f, m, empty_why);
  std::string notes;
  if (beyond) notes += fmt::format(", {} beyond its first or last slice", beyond);
  if (not_closed) notes += fmt::format(", {} not CLOSED_PLANAR skipped", not_closed);
  if (too_short) notes += fmt::format(", {} with fewer than 3 points skipped", too_short);
  desc = fmt::format("RTSTRUCT {}: {}, {} of {} contours on this volume's slices{}, {} voxels", f.filename().string(),
                     which, used, roi->contours.size(), notes.empty() ? "" : " (" + notes.substr(2) + ")", n);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Folder search

bool references_series(const fs::path& f, const std::string& series_uid) noexcept {
  try {
    if (sniff(f) != Kind::dicom) return false;
    if (!dicom::scan_file(f, dicom::default_scan_limits()).ok) return false;
    DcmFileFormat ff;
    if (ff.loadFile(f.c_str(), EXS_Unknown, EGL_noChange, 1024, ERM_autoDetect).bad()) return false;
    DcmDataset& ds = *ff.getDataset();
    const std::string cls = str(ds, DCM_SOPClassUID);
    const bool rt = cls == UID_RTStructureSetStorage;
    if (cls != UID_SegmentationStorage && !rt) return false;
    bool found = false;
    const auto series = [&](DcmItem& it) { found = found || str(it, DCM_SeriesInstanceUID) == series_uid; };
    for_items(ds, DCM_ReferencedSeriesSequence, series);
    if (rt)
      for_items(ds, DCM_ReferencedFrameOfReferenceSequence, [&](DcmItem& fr) {
        for_items(fr, DCM_RTReferencedStudySequence,
                  [&](DcmItem& st) { for_items(st, DCM_RTReferencedSeriesSequence, series); });
      });
    return found;
  } catch (...) {
    return false;
  }
}

// [lo, hi] of integers, clamped to [0, n - 1] in double first (coordinates may be huge).
int clamp_index(double v, int n) { return static_cast<int>(std::clamp(v, -1.0, static_cast<double>(n))); }

}  // namespace

cv::Mat fill_contours_even_odd(const std::vector<std::vector<cv::Point2d>>& contours, int rows, int cols) {
  if (rows <= 0 || cols <= 0) throw std::invalid_argument("fill_contours_even_odd: empty slice");
  cv::Mat out = cv::Mat::zeros(rows, cols, CV_8U), scratch(rows, cols, CV_8U);
  std::vector<std::vector<double>> xs;
  for (const auto& poly : contours) {
    if (poly.empty()) continue;
    double xmin = poly[0].x, xmax = xmin, ymin = poly[0].y, ymax = ymin;
    for (const auto& p : poly) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) throw std::invalid_argument("fill_contours_even_odd: a point is not finite");
      xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x), ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
    }
    // Pixels whose centre may lie inside or on the contour, within the image.
    const int r0 = std::max(0, clamp_index(std::ceil(ymin), rows)), r1 = std::min(rows - 1, clamp_index(std::floor(ymax), rows));
    const int c0 = std::max(0, clamp_index(std::ceil(xmin), cols)), c1 = std::min(cols - 1, clamp_index(std::floor(xmax), cols));
    if (r0 > r1 || c0 > c1) continue;
    const cv::Rect box(c0, r0, c1 - c0 + 1, r1 - r0 + 1);
    cv::Mat fill = scratch(box);
    fill.setTo(0);
    xs.resize(static_cast<std::size_t>(box.height));
    for (auto& x : xs) x.clear();
    const auto set = [&](int r, int c) {
      if (r >= r0 && r <= r1 && c >= c0 && c <= c1) fill.at<std::uint8_t>(r - r0, c - c0) = 1;
    };
    const std::size_t n = poly.size();
    for (std::size_t i = 0, j = n - 1; i < n; j = i++) {
      const cv::Point2d a = poly[i], b = poly[j];  // the edge from the previous point j to point i
      if (a.y == b.y) {  // horizontal: its pixel centres are on the boundary when it runs along a row of centres
        if (a.y == std::floor(a.y) && a.y >= r0 && a.y <= r1) {
          const int r = static_cast<int>(a.y);
          const int cs = std::max(c0, clamp_index(std::ceil(std::min(a.x, b.x)), cols));
          const int ce = std::min(c1, clamp_index(std::floor(std::max(a.x, b.x)), cols));
          for (int c = cs; c <= ce; ++c) set(r, c);
        }
        continue;
      }
      const double lo = std::min(a.y, b.y), hi = std::max(a.y, b.y);
      const int rs = std::max(r0, clamp_index(std::ceil(lo), rows)), re = std::min(r1, clamp_index(std::floor(hi), rows));
      for (int r = rs; r <= re; ++r) {
        const double x = (b.x - a.x) * (r - a.y) / (b.y - a.y) + a.x;
        if (r < hi) xs[static_cast<std::size_t>(r - r0)].push_back(x);  // crossings: lo <= r < hi (half-open)
        if (x == std::floor(x) && x >= c0 && x <= c1) set(r, static_cast<int>(x));  // centre on the edge
      }
    }
    // Inside: an odd number of crossings right of the centre, i.e. x[2k] <= c < x[2k+1].
    for (int r = r0; r <= r1; ++r) {
      auto& row = xs[static_cast<std::size_t>(r - r0)];
      std::sort(row.begin(), row.end());
      std::uint8_t* p = fill.ptr<std::uint8_t>(r - r0);
      for (std::size_t k = 0; k + 1 < row.size(); k += 2) {
        const int cs = std::max(c0, clamp_index(std::ceil(row[k]), cols));
        const int ce = std::min(c1, clamp_index(std::ceil(row[k + 1]) - 1, cols));
        for (int c = cs; c <= ce; ++c) p[c - c0] = 1;
      }
    }
    cv::Mat dst = out(box);
    cv::bitwise_xor(dst, fill, dst);
  }
  return out;
}

Mask roi_mask_for_volume(const dicom::Volume& volume, const fs::path& mask_file, std::optional<int> label,
                         std::string* description) {
  check_volume(volume);
  if (!fs::is_regular_file(mask_file)) throw std::runtime_error(quoted(mask_file) + ": no such file");
  std::string desc;
  Mask m;
  switch (sniff(mask_file)) {
    case Kind::nifti:
      m = nifti_mask(volume, mask_file, label, desc);
      break;
    case Kind::dicom: {
      dicom::require_scan(mask_file, dicom::default_scan_limits(), quoted(mask_file));
      DcmFileFormat ff;  // the header only, to tell SEG from RTSTRUCT
      if (const OFCondition c = ff.loadFile(mask_file.c_str(), EXS_Unknown, EGL_noChange, 1024, ERM_autoDetect); c.bad())
        throw dicom::DicomError(quoted(mask_file) + ": cannot read as DICOM: " + c.text());
      const std::string cls = str(*ff.getDataset(), DCM_SOPClassUID);
      if (cls == UID_SegmentationStorage)
        m = seg_mask(volume, mask_file, label, desc);
      else if (cls == UID_RTStructureSetStorage)
        m = rtstruct_mask(volume, mask_file, label, desc);
      else
        throw std::runtime_error(quoted(mask_file) + ": a DICOM file of SOP class '" + cls +
                                 "', neither a Segmentation (" UID_SegmentationStorage ") nor an RT Structure Set (" +
                                 UID_RTStructureSetStorage + ")");
      break;
    }
    case Kind::unknown:
      throw std::runtime_error(quoted(mask_file) +
                               ": neither a NIfTI-1 file (.nii, .nii.gz) nor DICOM (a SEG or an RTSTRUCT)");
  }
  if (description) *description = std::move(desc);
  return m;
}

std::vector<fs::path> find_masks_next_to(const fs::path& folder, const dicom::SeriesInfo& series) {
  if (!fs::is_directory(folder)) throw std::invalid_argument(quoted(folder) + ": not a folder");
  std::vector<fs::path> out;
  if (series.series_uid.empty()) return out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(folder, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code fec;
    if (it->is_regular_file(fec) && references_series(it->path(), series.series_uid)) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace analysis
