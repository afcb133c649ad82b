#pragma once
// analysis::Pipeline: runs a profile's stages on one series.
//
//   decode (decode_study)  >  preprocess > segment > features > classify > evaluate > display
//
// Pipeline is immutable after construction and run() is const, so one instance can serve the
// daemon's bounded pool (one series per task; stages keep no state between runs).
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/profile.h"
#include "analysis/stage.h"

namespace analysis {

class Pipeline {
 public:
  // Validates every profile (throws std::invalid_argument naming the profile and field).
  explicit Pipeline(std::vector<Profile> profiles = builtin_profiles());

  const std::vector<Profile>& profiles() const { return profiles_; }

  // The profile named `forced` (throws std::invalid_argument listing the known names when there is
  // none), or when `forced` is empty the first profile matching the series (nullptr if none).
  const Profile* select(const dicom::SeriesInfo& info, std::string_view forced = {}) const;

  // Runs preprocess..display on `c` (c.profile must be set; c.key is derived from the series UID
  // when empty). Throws StageError naming the failed stage; c.timings holds what ran.
  // `after_segmentation`, when given, runs right after the segment stage (the daemon starts
  // writing the SEG there, beside the later stages).
  void run(SeriesContext& c, const std::function<void(SeriesContext&)>& after_segmentation = {}) const;

  // Convenience: a context for `volume` with `profile`, run.
  SeriesContext run(dicom::Volume volume, const Profile& profile, const std::filesystem::path& out_dir = {},
                    std::optional<Reference> reference = std::nullopt) const;

 private:
  std::vector<Profile> profiles_;
};

// Decode stage on a folder (every file below it, any layout) or a list of files.
StudyContext decode_folder(const std::filesystem::path& folder);
StudyContext decode_files(const std::vector<std::filesystem::path>& files);

// Regular files below `folder` (recursive, any layout), sorted. Throws std::runtime_error when
// the folder cannot be listed.
std::vector<std::filesystem::path> files_below(const std::filesystem::path& folder);

// `files` grouped by Series Instance UID from their headers (no pixels are read), groups in
// order of first appearance; files whose header cannot be read form one last group, so that
// decoding it lists each with its reason. Lets a caller decode and analyse one series at a time,
// so memory holds one series' volumes, not the whole input.
std::vector<std::vector<std::filesystem::path>> series_batches(const std::vector<std::filesystem::path>& files);

// For a process that analyses (the worker, `pacsnode analyze`, the benchmark): glibc keeps freed
// blocks of up to 32 MiB for reuse and never trims its heaps, instead of returning them to the
// kernel and faulting fresh pages in on the next slice's temporaries. Each stage allocates and
// frees per-slice buffers of 0.25-1 MiB by the hundred; on VMs where a fresh page costs 1-1.5 us
// (150 MiB in 210 ms, as bench/pipeline.sh prints) that was 4-5 % of the ct-chest profile. Peak
// RSS is unchanged (the blocks are reused, not added); a short-lived worker gives it all back
// when it exits. Blocks above 32 MiB (a volume, the IBSI features' per-voxel arrays) come from the
// heap too (M_MMAP_MAX 0), so a lung's 150 MiB of levels reuse what decode freed. Idempotent.
void keep_freed_memory_for_reuse();

// Key of a series in logs and file names: short_hash of its Series Instance UID, with "-<n>"
// appended for the n-th (n >= 2) volume of a series that was split (phases, orientations).
std::string series_key(const dicom::SeriesInfo& info, int volume_index_in_series = 1);

}  // namespace analysis
