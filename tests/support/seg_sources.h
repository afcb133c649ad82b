#pragma once
// Test support for the SEG/SR builder tests: reads source images' geometry with DCMTK (in place
// of the series decoder), writes small synthetic CT series, runs external validators.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcsequen.h>

#include "dicom/seg_builder.h"
#include "dicom/volume.h"
#include "support/process.h"

namespace testsupport {

struct SourceSeries {
  dicom::Geometry geom;
  std::vector<dicom::SourceFrame> frames;  // sorted along geom.normal
  std::filesystem::path first_file;
  std::string series_uid;
  int rows = 0, cols = 0;
};

inline std::vector<std::filesystem::path> dicom_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

namespace detail {
inline bool get_doubles(DcmItem& item, const DcmTagKey& tag, double* out, int n) {
  for (int i = 0; i < n; ++i) {
    Float64 v = 0;
    if (item.findAndGetFloat64(tag, v, i).bad()) return false;
    out[i] = v;
  }
  return true;
}
// Looks for tag in item, or in the first item of seq inside item.
inline bool get_fg(DcmItem* item, const DcmTagKey& seq, const DcmTagKey& tag, double* out, int n) {
  if (!item) return false;
  DcmItem* fg = nullptr;
  if (item->findAndGetSequenceItem(seq, fg, 0).good() && fg && get_doubles(*fg, tag, out, n)) return true;
  return false;
}
inline dicom::Vec3 cross(const dicom::Vec3& a, const dicom::Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
inline double dot(const dicom::Vec3& a, const dicom::Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
}  // namespace detail

// Geometry and source frames of single-frame files of one series, or of one multi-frame file,
// or of one 2D projection image (no Image Position/Orientation).
inline SourceSeries load_series(const std::vector<std::filesystem::path>& files) {
  using namespace detail;
  SourceSeries s;
  if (files.empty()) throw std::runtime_error("load_series: no files");
  s.first_file = files.front();
  bool have_iop = false;
  for (const auto& f : files) {
    DcmFileFormat ff;
    if (ff.loadFile(f.c_str(), EXS_Unknown, EGL_noChange, 4096).bad()) throw std::runtime_error("cannot read " + f.string());
    DcmDataset& d = *ff.getDataset();
    OFString cls, inst, series;
    d.findAndGetOFString(DCM_SOPClassUID, cls);
    d.findAndGetOFString(DCM_SOPInstanceUID, inst);
    d.findAndGetOFString(DCM_SeriesInstanceUID, series);
    s.series_uid = series.c_str();
    Uint16 rows = 0, cols = 0;
    d.findAndGetUint16(DCM_Rows, rows);
    d.findAndGetUint16(DCM_Columns, cols);
    s.rows = rows, s.cols = cols;
    Sint32 nframes = 1;
    const bool multiframe = d.findAndGetSint32(DCM_NumberOfFrames, nframes).good() && d.tagExists(DCM_PerFrameFunctionalGroupsSequence);
    double iop[6], ps[2], thick = 0;
    DcmItem* shared = nullptr;
    d.findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
    if (multiframe) {
      have_iop = get_fg(shared, DCM_PlaneOrientationSequence, DCM_ImageOrientationPatient, iop, 6);
      if (get_fg(shared, DCM_PixelMeasuresSequence, DCM_PixelSpacing, ps, 2)) s.geom.spacing_row = ps[0], s.geom.spacing_col = ps[1];
      get_fg(shared, DCM_PixelMeasuresSequence, DCM_SliceThickness, &thick, 1);
      for (Sint32 i = 0; i < nframes; ++i) {
        DcmItem* pf = nullptr;
        d.findAndGetSequenceItem(DCM_PerFrameFunctionalGroupsSequence, pf, i);
        dicom::SourceFrame fr{cls.c_str(), inst.c_str(), f.string(), static_cast<int>(i + 1), {}};
        get_fg(pf, DCM_PlanePositionSequence, DCM_ImagePositionPatient, fr.position.data(), 3);
        if (!have_iop) have_iop = get_fg(pf, DCM_PlaneOrientationSequence, DCM_ImageOrientationPatient, iop, 6);
        s.frames.push_back(fr);
      }
    } else {
      dicom::SourceFrame fr{cls.c_str(), inst.c_str(), f.string(), 0, {}};
      const bool have_ipp = get_doubles(d, DCM_ImagePositionPatient, fr.position.data(), 3);
      have_iop = get_doubles(d, DCM_ImageOrientationPatient, iop, 6) && have_ipp;
      if (get_doubles(d, DCM_PixelSpacing, ps, 2) || get_doubles(d, DCM_ImagerPixelSpacing, ps, 2))
        s.geom.spacing_row = ps[0], s.geom.spacing_col = ps[1];
      get_doubles(d, DCM_SliceThickness, &thick, 1);
      s.frames.push_back(fr);
    }
    s.geom.has_frame_of_reference = have_iop && d.tagExists(DCM_FrameOfReferenceUID);
    if (have_iop) {
      s.geom.row_dir = {iop[0], iop[1], iop[2]};
      s.geom.col_dir = {iop[3], iop[4], iop[5]};
      s.geom.normal = cross(s.geom.row_dir, s.geom.col_dir);
    }
    s.geom.spacing_slice = thick > 0 ? thick : 1.0;
  }
  if (s.geom.has_frame_of_reference) {
    const auto n = s.geom.normal;
    std::stable_sort(s.frames.begin(), s.frames.end(),
                     [&](const auto& a, const auto& b) { return dot(a.position, n) < dot(b.position, n); });
    if (s.frames.size() > 1)
      s.geom.spacing_slice = (dot(s.frames.back().position, n) - dot(s.frames.front().position, n)) / (s.frames.size() - 1);
    s.geom.origin = s.frames.front().position;
  }
  return s;
}

// Writes `slices` single-frame CT images (int16, rows x cols) into dir with the given orientation
// (row direction, column direction), origin and spacings; returns their paths in slice order.
// Pixel values are a deterministic function of (z, r, c) so that files are not all alike.
inline std::vector<std::filesystem::path> write_synthetic_ct(const std::filesystem::path& dir, int rows, int cols,
                                                             int slices, dicom::Vec3 row_dir, dicom::Vec3 col_dir,
                                                             dicom::Vec3 origin, double spacing_row,
                                                             double spacing_col, double spacing_slice) {
  std::filesystem::create_directories(dir);
  char uid[100];
  const std::string study = dcmGenerateUniqueIdentifier(uid, SITE_STUDY_UID_ROOT);
  const std::string series = dcmGenerateUniqueIdentifier(uid, SITE_SERIES_UID_ROOT);
  const std::string frame = dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
  const auto normal = detail::cross(row_dir, col_dir);
  std::vector<std::filesystem::path> out;
  auto fmt = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6g", std::abs(v) < 1e-12 ? 0.0 : v);
    return std::string(b);
  };
  for (int z = 0; z < slices; ++z) {
    DcmFileFormat ff;
    DcmDataset& d = *ff.getDataset();
    const std::string sop = dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
    d.putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
    d.putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
    d.putAndInsertString(DCM_StudyInstanceUID, study.c_str());
    d.putAndInsertString(DCM_SeriesInstanceUID, series.c_str());
    d.putAndInsertString(DCM_FrameOfReferenceUID, frame.c_str());
    d.putAndInsertString(DCM_PositionReferenceIndicator, "");
    d.putAndInsertString(DCM_PatientName, "Phantom^Synthetic");
    d.putAndInsertString(DCM_PatientID, "SYN0001");
    d.putAndInsertString(DCM_PatientBirthDate, "19700101");
    d.putAndInsertString(DCM_PatientSex, "O");
    d.putAndInsertString(DCM_StudyDate, "20260101");
    d.putAndInsertString(DCM_StudyTime, "120000");
    d.putAndInsertString(DCM_StudyID, "1");
    d.putAndInsertString(DCM_AccessionNumber, "ACC1");
    d.putAndInsertString(DCM_ReferringPhysicianName, "");
    d.putAndInsertString(DCM_Modality, "CT");
    d.putAndInsertString(DCM_Manufacturer, "pacsnode tests");
    d.putAndInsertString(DCM_SeriesNumber, "1");
    d.putAndInsertString(DCM_InstanceNumber, std::to_string(z + 1).c_str());
    d.putAndInsertString(DCM_ImageType, "ORIGINAL\\PRIMARY\\AXIAL");
    d.putAndInsertString(DCM_KVP, "120");
    d.putAndInsertString(DCM_AcquisitionNumber, "1");
    dicom::Vec3 p;
    for (int i = 0; i < 3; ++i) p[i] = origin[i] + z * spacing_slice * normal[i];
    d.putAndInsertString(DCM_ImagePositionPatient, (fmt(p[0]) + "\\" + fmt(p[1]) + "\\" + fmt(p[2])).c_str());
    d.putAndInsertString(DCM_ImageOrientationPatient,
                         (fmt(row_dir[0]) + "\\" + fmt(row_dir[1]) + "\\" + fmt(row_dir[2]) + "\\" + fmt(col_dir[0]) + "\\" +
                          fmt(col_dir[1]) + "\\" + fmt(col_dir[2]))
                             .c_str());
    d.putAndInsertString(DCM_PixelSpacing, (fmt(spacing_row) + "\\" + fmt(spacing_col)).c_str());
    d.putAndInsertString(DCM_SliceThickness, fmt(spacing_slice).c_str());
    d.putAndInsertUint16(DCM_SamplesPerPixel, 1);
    d.putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
    d.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(rows));
    d.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(cols));
    d.putAndInsertUint16(DCM_BitsAllocated, 16);
    d.putAndInsertUint16(DCM_BitsStored, 16);
    d.putAndInsertUint16(DCM_HighBit, 15);
    d.putAndInsertUint16(DCM_PixelRepresentation, 1);
    d.putAndInsertString(DCM_RescaleIntercept, "0");
    d.putAndInsertString(DCM_RescaleSlope, "1");
    std::vector<Uint16> px(static_cast<size_t>(rows) * cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) px[static_cast<size_t>(r) * cols + c] = static_cast<Uint16>(static_cast<Sint16>(-1000 + 10 * (r + c + z)));
    d.putAndInsertUint16Array(DCM_PixelData, px.data(), static_cast<unsigned long>(px.size()));
    const auto path = dir / ("ct" + std::to_string(z + 1) + ".dcm");
    if (ff.saveFile(path.c_str(), EXS_LittleEndianExplicit).bad()) throw std::runtime_error("cannot write " + path.string());
    out.push_back(path);
  }
  return out;
}

// A shell command line (pipes, redirections, environment assignments), run to completion.
inline RunResult run_command(const std::string& cmd) { return run({"/bin/sh", "-c", cmd}); }

// Lines of validator output that contain needle (e.g. "Error", "Warning").
inline std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.find(needle) != std::string::npos) out.push_back(line);
    start = end + 1;
  }
  return out;
}

inline RunResult dciodvfy(const std::filesystem::path& f) { return run_command("dciodvfy " + shell_quote(f.string())); }

// dciodvfy reports no error on f; its warnings (and errors) go to the test log.
inline void expect_dciodvfy_clean(const std::filesystem::path& f) {
  const auto r = dciodvfy(f);
  for (const auto& w : lines_with(r.output, "Warning")) BOOST_TEST_MESSAGE("dciodvfy " << f.filename() << ": " << w);
  const auto errors = lines_with(r.output, "Error");
  for (const auto& e : errors) BOOST_TEST_MESSAGE("dciodvfy " << f.filename() << ": " << e);
  BOOST_TEST(errors.empty(), "dciodvfy reports " << errors.size() << " error(s) for " << f);
}

inline RunResult pixelmed_sr_validator(const std::filesystem::path& f) {
  return run_command(
      "JAVA_TOOL_OPTIONS='-Djdk.xml.xpathExprOpLimit=0 -Djdk.xml.xpathExprGrpLimit=0 -Djdk.xml.xpathTotalOpLimit=0' "
      "java -cp /usr/share/java/pixelmed.jar com.pixelmed.validate.DicomSRValidator " +
      shell_quote(f.string()));
}

// A SEG spec over `src`: its first file, geometry and frames; segments, masks and the rest are the
// test's.
inline dicom::SegSpec seg_spec_over(const SourceSeries& src) {
  dicom::SegSpec s;
  s.source_file = src.first_file;
  s.geom = src.geom;
  s.sources = src.frames;
  return s;
}

}  // namespace testsupport
