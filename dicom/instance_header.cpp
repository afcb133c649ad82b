#include "dicom/instance_header.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include "dicom/check.h"

namespace dicom {
namespace {

// A buffer stream that leaves long values (pixel data) where they are, as a file stream does:
// DCMTK asks the stream for a factory to read them later; a plain buffer stream has none, so
// every value would be copied out while parsing.
class BufferFactory : public DcmInputStreamFactory {
 public:
  BufferFactory(const void* data, offile_off_t size) : data_(data), size_(size) {}
  DcmInputStream* create() const override {
    auto* s = new DcmInputBufferStream();
    s->setBuffer(data_, size_);
    s->setEos();
    return s;
  }
  DcmInputStreamFactory* clone() const override { return new BufferFactory(*this); }
  DcmInputStreamFactoryType ident() const override { return DFT_DcmInputTempFileStreamFactory; }

 private:
  const void* data_;
  offile_off_t size_;
};

class DeferringBufferStream : public DcmInputBufferStream {
 public:
  DeferringBufferStream(const void* data, offile_off_t size) : data_(data), size_(size) {
    setBuffer(data, size);
    setEos();
  }
  DcmInputStreamFactory* newFactory() const override { return new BufferFactory(data_, size_); }

 private:
  const void* data_;
  offile_off_t size_;
};

std::string get_string(DcmItem& item, const DcmTagKey& tag) {
  OFString v;
  if (item.findAndGetOFStringArray(tag, v).good()) return std::string(v.c_str());
  return {};
}

std::optional<long> get_long(DcmItem& item, const DcmTagKey& tag) {
  Sint32 v = 0;
  if (item.findAndGetSint32(tag, v).good()) return v;
  return std::nullopt;
}

std::string required(DcmItem& item, const DcmTagKey& tag, const char* name) {
  auto v = get_string(item, tag);
  if (v.empty()) throw DicomError(std::string("missing ") + name);
  return v;
}

InstanceHeader header_of(DcmFileFormat& ff) {
  DcmDataset& ds = *ff.getDataset();
  InstanceHeader h;
  h.sop_class_uid = required(ds, DCM_SOPClassUID, "SOP Class UID");
  h.sop_instance_uid = required(ds, DCM_SOPInstanceUID, "SOP Instance UID");
  h.study_uid = required(ds, DCM_StudyInstanceUID, "Study Instance UID");
  h.series_uid = required(ds, DCM_SeriesInstanceUID, "Series Instance UID");
  h.modality = get_string(ds, DCM_Modality);
  h.transfer_syntax_uid = get_string(*ff.getMetaInfo(), DCM_TransferSyntaxUID);
  if (h.transfer_syntax_uid.empty()) h.transfer_syntax_uid = DcmXfer(ds.getOriginalXfer()).getXferID();
  h.acquisition_number = get_long(ds, DCM_AcquisitionNumber);
  h.images_in_acquisition = get_long(ds, DCM_ImagesInAcquisition);
  h.number_of_study_related_instances = get_long(ds, DCM_NumberOfStudyRelatedInstances);
  h.body_part = get_string(ds, DCM_BodyPartExamined);
  h.series_description = get_string(ds, DCM_SeriesDescription);
  h.protocol_name = get_string(ds, DCM_ProtocolName);
  h.study_description = get_string(ds, DCM_StudyDescription);
  h.study_date = get_string(ds, DCM_StudyDate);
  h.accession_number = get_string(ds, DCM_AccessionNumber);
  h.manufacturer = get_string(ds, DCM_Manufacturer);
  h.manufacturer_model_name = get_string(ds, DCM_ManufacturerModelName);
  h.series_number = get_long(ds, DCM_SeriesNumber);
  if (const auto frames = get_long(ds, DCM_NumberOfFrames); frames && *frames > 0) h.frames = *frames;
  return h;
}

}  // namespace

InstanceHeader read_instance_header(const std::filesystem::path& file, const ScanLimits& limits) {
  require_scan(file, limits);  // before DCMTK's recursive reader sees the bytes
  DcmFileFormat ff;
  // Values longer than 4 KiB (pixel data) stay on disk; the structure is parsed to the end, so a
  // truncated file fails here.
  check(ff.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect), "cannot parse DICOM file");
  return header_of(ff);
}

InstanceHeader read_instance_header(const std::uint8_t* data, std::size_t size, const ScanLimits& limits) {
  const ScanResult scan = scan_buffer(data, size, limits);  // before DCMTK's recursive reader sees the bytes
  if (!scan.ok) throw DicomError(scan.reason);
  DeferringBufferStream in(data, static_cast<offile_off_t>(size));  // values over 4 KiB stay in the buffer
  DcmFileFormat ff;
  ff.transferInit();
  const OFCondition c = ff.read(in, EXS_Unknown, EGL_noChange, 4096);
  ff.transferEnd();
  // Anything but a whole parse (EC_StreamNotifyClient: it ended inside an element) is a failure.
  check(c, "cannot parse DICOM data");
  return header_of(ff);
}

}  // namespace dicom
