#pragma once
// Files -> Volumes. Headers are read first (no pixels), files are grouped by Series Instance UID,
// the planes of a series are planned into volumes (dicom/decode_geometry.h), and only then are
// pixels decoded, straight into one allocation per volume (single-frame files) or per file
// (multi-frame files). Nothing here throws for bad input: every file that does not end up in a
// volume is listed in `rejected` with the reason.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "dicom/decode_header.h"
#include "dicom/volume.h"

namespace dicom {

// A file, or a group of planes of a series, that was skipped.
struct Rejected {
  std::string path;                // the file, or the folder holding the series' files
  std::string reason;
  std::vector<std::string> files;  // every file concerned (just `path` for a single file)
};

struct LoadResult {
  std::vector<Volume> volumes;
  std::vector<Rejected> rejected;
  std::vector<std::string> notes;  // splits that were made (phases, orientations, gaps)
};

// Runs body(0) .. body(n - 1), in any order, possibly several at once, and returns when all have
// returned. dicom/ starts no threads: a caller that wants files read in parallel passes one (the
// analysis passes OpenCV's pool). Each body call reads one file and writes only its own slots, and
// catches its own exceptions.
using ParallelFor = std::function<void(std::size_t n, const std::function<void(std::size_t)>& body)>;

// Loads any mix of files: groups them by series, splits each series into volumes. Headers and the
// pixels of single-frame files go through `parallel` (default: one after another); the result does
// not depend on it.
LoadResult load_files(const std::vector<std::filesystem::path>& files, const ParallelFor& parallel = {});

// load_files over every regular file below `dir` (recursive, any layout); non-DICOM files are
// rejected with their reason.
LoadResult load_folder(const std::filesystem::path& dir, const ParallelFor& parallel = {});

// Why a file whose header was read cannot give a greyscale image volume (colour, no pixel data,
// segmentation, unsupported pixel format, ...); empty when it can.
std::string screen_header(const ImageHeader& h);

}  // namespace dicom
