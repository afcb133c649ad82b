#pragma once
// Key images for viewers without SEG support: one Secondary Capture Image Storage instance
// (1.2.840.10008.5.1.4.1.1.7, the most widely supported SC class) per rendered slice, with the
// segmentation overlay burned in. Optional output (off by default in the daemon); the SEG and SR
// stay the results of record.
//
// What every instance holds:
//  * Patient, Clinical Trial Subject, General Study, Patient Study and Clinical Trial Study
//    attributes copied from source_file (and its Specific Character Set, when not empty); type 2
//    attributes the source lacks are written empty. Body Part Examined is copied too; Laterality
//    (General Series, type 2C) is the source's Laterality or Image Laterality when R or L, else
//    empty ("unknown") when the source has an empty one or names no body part, else absent (the
//    source's body part is unpaired).
//  * A new series (one per call, shared by its key images), Modality `modality` ("OT" by default;
//    see the field), instance numbers 1..N in the order of `images`.
//  * SC Equipment: Conversion Type WSD (workstation) and the SC device from `device`; General
//    Equipment from `device` as well.
//  * General Image: Image Type DERIVED\SECONDARY, Burned In Annotation YES, Lossy Image
//    Compression 00, Patient Orientation (type 2: empty when unknown), Derivation Description,
//    and a Source Image Sequence with one item: the source SOP instance (and Referenced Frame
//    Number when SourceFrame::frame_number > 0, i.e. only for a multi-frame source) the image shows, Purpose of Reference (121322, DCM, "Source image for
//    image processing operation") from CID 7202, and Spatial Locations Preserved NO (the slice is
//    resampled and a legend is added).
//  * Common Instance Reference: the same source instance in the Referenced Series Sequence (the
//    source series UID is read from source_file: every source is taken to be of that series).
//  * Image Pixel: Samples per Pixel 3, RGB, Planar Configuration 0 (interleaved), 8 bits.
//  * No Pixel Spacing: the renderings are resized and carry a legend band, so a distance measured
//    on them is not a patient distance (measure on the source or the SEG instead). Nominal Scanned
//    Pixel Spacing is for digitised film and does not apply either.
// Text written by us (series description, derivation description, device) is printable ASCII;
// other bytes become '?', so the copied Specific Character Set stays true.
#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "dicom/seg_builder.h"  // DeviceInfo, WrittenObject
#include "dicom/volume.h"       // SourceFrame

namespace dicom {

struct KeyImageSpec {
  std::filesystem::path source_file;  // one source instance: patient and study are copied from it
  std::vector<SourceFrame> sources;   // the source slices, e.g. Volume::sources
  std::vector<cv::Mat> images;        // CV_8UC3 in OpenCV (BGR) channel order, overlay burned in
  std::vector<int> slice_index;       // images[i] shows sources[slice_index[i]]; same size as images
  std::string series_description = "pacsnode key images";  // LO, <= 64 characters
  int series_number = 9003;
  int first_instance_number = 1;
  std::string series_uid;  // empty: a new series; else that of the key images these supersede
  DeviceInfo device;
  // General Series Modality. PS3.3 C.8.6.1 lets an SC carry the modality of the equipment whose
  // image was captured ("CT"); "OT" keeps key images out of PACS routing and hanging protocols
  // meant for the acquired CT/MR series. Either passes dciodvfy.
  std::string modality = "OT";
  // Patient Orientation of the rendered image ("row\column", e.g. "L\P" for a usual axial slice);
  // empty when unknown (2D sources without orientation). The renderer keeps the stored row and
  // column directions, so this is the source slice's orientation.
  std::string patient_orientation;
  // Derivation Description (ST, <= 1024 characters) of each image: empty, or one per image.
  // Default: "Key image: source slice <z+1> of <N> rendered with the segmentation overlay and
  // legend burned in by <device.model_name>; not for measurement."
  std::vector<std::string> derivation_descriptions;
  // Files are out_dir/<file_prefix>_<instance number>.dcm; an existing file of that name is
  // replaced.
  std::string file_prefix = "key_image";
};

// Validates the whole spec first (throws std::invalid_argument naming the problem), then writes
// one SC instance per image to out_dir (created if missing), each via a temporary file and a
// rename, Explicit VR Little Endian. If a later write fails, files already written by this call
// are removed before the exception (dicom::DicomError, or std::filesystem::filesystem_error)
// propagates. Returns one WrittenObject per image in the order of `images` (number_of_frames and
// tracking_uids unused). An empty `images` writes nothing and returns an empty vector.
std::vector<WrittenObject> write_key_images(const KeyImageSpec& spec, const std::filesystem::path& out_dir);

}  // namespace dicom
