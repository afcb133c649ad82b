#include "analysis/pipeline.h"

#include <fmt/format.h>
#include <malloc.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "analysis/stages/stages.h"
#include "dicom/log.h"

namespace analysis {

Pipeline::Pipeline(std::vector<Profile> profiles) : profiles_(std::move(profiles)) {
  for (const auto& p : profiles_) p.validate();
}

const Profile* Pipeline::select(const dicom::SeriesInfo& info, std::string_view forced) const {
  if (forced.empty()) return match_profile(profiles_, info);
  if (const Profile* p = find_profile(profiles_, forced)) return p;
  std::string names;
  for (const auto& p : profiles_) names += (names.empty() ? "" : ", ") + p.name;
  throw std::invalid_argument(fmt::format("unknown profile '{}' (known: {})", forced, names));
}

void Pipeline::run(SeriesContext& c, const std::function<void(SeriesContext&)>& after_segmentation) const {
  if (!c.profile) throw std::invalid_argument("Pipeline::run: no profile");
  if (c.volume.depth() == 0) throw std::invalid_argument("Pipeline::run: empty volume");
  if (c.key.empty()) c.key = series_key(c.volume.info);
  const Stopwatch sw;
  for (const auto& stage : stages::series_stages()) {
    stage->run(c);
    if (after_segmentation && stage->name() == "segment") after_segmentation(c);
  }
  pacsnode::component_logger("pipeline")
      ->info("series {} {} profile {}: {} segments, {:.0f} ms", c.key, c.volume.info.modality, c.profile->name,
             c.segments.size(), sw.ms());
}

SeriesContext Pipeline::run(dicom::Volume volume, const Profile& profile, const std::filesystem::path& out_dir,
                            std::optional<Reference> reference) const {
  SeriesContext c;
  c.profile = &profile;
  c.volume = std::move(volume);
  c.out_dir = out_dir;
  c.reference = std::move(reference);
  run(c);
  return c;
}

StudyContext decode_folder(const std::filesystem::path& folder) {
  StudyContext c;
  c.folder = folder;
  c.key = short_hash(folder.string());
  stages::DecodeStage().run(c);
  return c;
}

StudyContext decode_files(const std::vector<std::filesystem::path>& files) {
  StudyContext c;
  c.files = files;
  c.key = short_hash(files.empty() ? std::string() : files.front().string());
  stages::DecodeStage().run(c);
  return c;
}

std::vector<std::filesystem::path> files_below(const std::filesystem::path& folder) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(folder, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back(it->path());
  if (ec) throw std::runtime_error(fmt::format("cannot list {}: {}", folder.string(), ec.message()));
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::vector<std::filesystem::path>> series_batches(const std::vector<std::filesystem::path>& files) {
  return stages::group_by_series(files);
}

std::string series_key(const dicom::SeriesInfo& info, int volume_index_in_series) {
  std::string k = short_hash(info.series_uid);
  if (volume_index_in_series >= 2) k += fmt::format("-{}", volume_index_in_series);
  return k;
}

void keep_freed_memory_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // glibc's largest; fixes it (no dynamic raise)
  mallopt(M_MMAP_MAX, 0);  // ... and blocks above it from the heap too, so that they are reused
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
}

}  // namespace analysis
