#include "dicom/acquisition.h"

#include "dicom/scan.h"

#include <algorithm>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcxfer.h>

namespace dicom {
namespace {

std::string text(DcmItem& d, const DcmTagKey& tag) {
  OFString v;
  d.findAndGetOFStringArray(tag, v);
  return v.c_str();
}

}  // namespace

std::string lossy_method_of_transfer_syntax(std::string_view ts) {
  if (ts == "1.2.840.10008.1.2.4.50" || ts == "1.2.840.10008.1.2.4.51") return "ISO_10918_1";  // JPEG baseline/extended
  if (ts == "1.2.840.10008.1.2.4.81") return "ISO_14495_1";                                     // JPEG-LS near-lossless
  if (ts == "1.2.840.10008.1.2.4.91" || ts == "1.2.840.10008.1.2.4.93" || ts == "1.2.840.10008.1.2.4.203")
    return "ISO_15444_1";  // JPEG 2000 (lossy or either), HTJ2K
  if (ts == "1.2.840.10008.1.2.4.111") return "ISO_18181_1";  // JPEG XL
  return "";
}

AcquisitionInfo read_acquisition(const std::vector<SourceFrame>& sources) {
  AcquisitionInfo out;
  std::vector<std::string> files;
  for (std::size_t i : {std::size_t{0}, sources.size() / 2, sources.size() ? sources.size() - 1 : 0}) {
    if (i >= sources.size() || sources[i].path.empty()) continue;
    if (std::find(files.begin(), files.end(), sources[i].path) == files.end()) files.push_back(sources[i].path);
  }
  bool any_read = false, all_00 = true;
  for (const auto& f : files) {
    DcmFileFormat ff;
    // The bounded structural scan first, as before every DCMTK parse of an untrusted file.
    if (!scan_file(f, default_scan_limits()).ok) continue;
    // Elements longer than 4 KiB (pixel data) stay on disk; the file was decoded before.
    if (ff.loadFile(f.c_str(), EXS_Unknown, EGL_noChange, 4096).bad()) continue;
    DcmDataset& d = *ff.getDataset();
    any_read = true;
    if (out.slice_thickness_mm <= 0) {
      Float64 t = 0;
      if (d.findAndGetFloat64(DCM_SliceThickness, t).good() && t > 0) out.slice_thickness_mm = t;
    }
    if (out.kernel.empty()) out.kernel = text(d, DCM_ConvolutionKernel);
    if (out.contrast_agent.empty()) out.contrast_agent = text(d, DCM_ContrastBolusAgent);
    if (out.contrast_route.empty()) out.contrast_route = text(d, DCM_ContrastBolusRoute);
    if (out.study_description.empty()) out.study_description = text(d, DCM_StudyDescription);
    OFString ts;
    if (ff.getMetaInfo()) ff.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, ts);
    const std::string ts_method = lossy_method_of_transfer_syntax(ts.c_str());
    const std::string flag = text(d, DCM_LossyImageCompression);
    if ((flag == "01" || !ts_method.empty()) && out.lossy_compression != "01") {
      // Ratio and method pair up per compression step: take the first lossy file's as recorded,
      // and name the transfer syntax's method when the file does not.
      out.lossy_compression = "01";
      out.lossy_ratio = text(d, DCM_LossyImageCompressionRatio);
      out.lossy_method = text(d, DCM_LossyImageCompressionMethod);
      if (out.lossy_method.empty()) out.lossy_method = ts_method;
    }
    if (flag != "00") all_00 = false;
  }
  if (out.lossy_compression.empty() && any_read && all_00) out.lossy_compression = "00";
  return out;
}

}  // namespace dicom
