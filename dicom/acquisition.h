#pragma once
// Acquisition attributes of a volume that qualify its measurements and that derived objects must
// carry: slice thickness, reconstruction kernel, contrast, study description, lossy compression.
// Header-only reads (pixel data stays on disk) of a few of the volume's source files.
#include <string>
#include <string_view>
#include <vector>

#include "dicom/volume.h"

namespace dicom {

// Reads the first, middle and last source file of `sources` (fewer when they share files) and
// merges them: the first non-empty value of each attribute; lossy_compression "01" when any of them
// was lossily compressed (Lossy Image Compression 01 or a lossy transfer syntax), with the Ratio
// and Method of the first such file (the transfer syntax's method, e.g. ISO_10918_1, when the file
// names none), "00" when all say 00. Files that cannot be read are skipped; never throws for them.
AcquisitionInfo read_acquisition(const std::vector<SourceFrame>& sources);

// The Lossy Image Compression Method of a lossy transfer syntax ("" for a lossless or native one).
std::string lossy_method_of_transfer_syntax(std::string_view ts_uid);

}  // namespace dicom
