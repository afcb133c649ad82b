#pragma once
// The common interface of the analysis stages and the state they pass along.
//
//   decode (StudyStage: files -> Volumes; the only stage that sees DICOM)
//   > preprocess > segment > features > classify > evaluate > display (Stage: one series)
//
// Stage uses the non-virtual interface idiom: the public run() times the protected run_() (which
// calls the pure kernels of analysis/kernels), appends the milliseconds to the context and logs
// them at debug; a failure propagates as an exception naming the stage (caught once per series by
// the pipeline's caller).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/kernels/classify.h"
#include "analysis/kernels/display.h"
#include "analysis/kernels/evaluate.h"
#include "analysis/kernels/types.h"
#include "analysis/profile.h"
#include "dicom/codes.h"
#include "dicom/series_loader.h"
#include "dicom/volume.h"

namespace analysis {

struct StageTiming {
  std::string stage;
  double ms = 0;
};

// One labelled segment of a series and everything measured on it.
struct SegmentResult {
  int label = 0;                                    // value in SeriesContext::labels
  std::vector<int> also_labels;                     // further label values the segment covers (body: all)
  std::string name;                                 // e.g. "left_lung"; key of dicom::codes::segment_codes
  std::string display_name;                         // e.g. "Left lung": SEG label, SR tracking id, legends
  std::string description;                          // optional, e.g. what a candidate is
  std::optional<dicom::codes::SegmentCodes> codes;  // SNOMED category/type for the SEG
  kernels::Rgb colour;
  std::int64_t voxels = 0;
  kernels::FeatureMap features;                    // name (unit in the name) -> value
  std::vector<kernels::RuleOutcome> findings;      // rule sets of the profile
  std::optional<kernels::Prediction> prediction;   // trained model of the profile
  std::optional<kernels::OverlapMetrics> overlap;  // against the reference (Evaluate)
  bool covers(int value) const {
    return value == label || std::find(also_labels.begin(), also_labels.end(), value) != also_labels.end();
  }
};

// Lung density of a lung or of both: volume, emphysema index, Perc15 (all on the original HU).
struct LungDensity {
  std::int64_t voxels = 0;
  double volume_ml = 0;
  double laa_percent = 0;  // share of voxels strictly below the LAA threshold
  double perc15_hu = 0;    // 15th percentile (linear interpolation, as numpy.percentile)
};

// What the ct-chest profile found beyond the segments: coverage, protocol, landmarks.
struct ChestReport {
  std::string coverage = "not assessed";  // "complete", "incomplete" or "not assessed"
  std::string coverage_note;              // e.g. "lung apices not in the scan"
  std::vector<std::string> protocol_remarks;  // what argues against densitometry, e.g. "3 mm slices"
  bool densitometry_protocol = true;          // nothing in the headers argues against it
  std::optional<LungDensity> both_lungs;
  std::map<std::string, int> landmarks;  // "apex", "carina", "base" -> slice index
  bool emphysema_conclusion() const { return coverage == "complete"; }
};

// A reference segmentation for the Evaluate stage, on the grid of the (unresampled) volume.
struct Reference {
  LabelVolume labels;  // CV_8U; 0 = background
  // Segment name -> reference label. Empty: every segment is compared with "reference != 0".
  std::map<std::string, int> label_of_segment;
};

struct SeriesContext {
  std::string key;  // short hash of the Series Instance UID: for logs and file names
  const Profile* profile = nullptr;
  dicom::Volume volume;
  LabelVolume labels;  // CV_8U label map, one slice per volume slice (after Segment)
  std::vector<SegmentResult> segments;
  std::vector<StageTiming> timings;
  std::optional<Reference> reference;  // Evaluate runs only when given
  std::filesystem::path out_dir;       // Display writes <out_dir>/<key>_preview.png; empty: no preview
  std::filesystem::path preview;       // written preview
  bool resampled = false;              // Preprocess changed the grid (labels no longer match sources)
  // The filtered image as a level map (kernels::level_map) for the Segment stage, when the
  // profile measures on the original HU (ct-chest): Preprocess leaves the volume as decoded and
  // puts the median/Gaussian result here; Segment releases it. Empty: segment the volume itself.
  LabelVolume seg_levels;
  std::vector<double> seg_level_breaks;
  bool measured_on_filtered = false;  // Preprocess filtered the volume itself: features see the filtered image
  // The values as decoded (resampled like the volume when Preprocess resamples) when Preprocess
  // filtered the volume itself for the masks: Features measures on these. Empty: on the volume.
  std::vector<cv::Mat> original_slices;
  // The segments whose IBSI features are still to be measured (stages::measure_radiomics), with
  // the box (segment bounding box plus the local intensity margin, inclusive) to measure them on.
  // Features fills it and measures at once, unless defer_radiomics: then the daemon's worker
  // writes the SEG and SR first (they need none of the IBSI features) and measures afterwards.
  struct RadiomicsRoi {
    std::size_t segment = 0;
    int x0 = 0, x1 = -1, y0 = 0, y1 = -1, z0 = 0, z1 = -1;
  };
  std::vector<RadiomicsRoi> radiomics_pending;
  bool defer_radiomics = false;
  // A mask given from outside (`pacsnode analyze --mask`): Preprocess does nothing, Segment makes
  // it the one segment "roi" (label 1) instead of running the profile's recipe.
  std::optional<Mask> external_mask;
  std::optional<ChestReport> chest;   // ct-chest only
  std::vector<std::string> notes;  // what a stage chose to report (e.g. "lungs split at mid-plane")

  double total_ms() const {
    double t = 0;
    for (const auto& s : timings) t += s.ms;
    return t;
  }
  SegmentResult* segment(std::string_view name) {
    for (auto& s : segments)
      if (s.name == name) return &s;
    return nullptr;
  }
  const SegmentResult* segment(std::string_view name) const {
    for (const auto& s : segments)
      if (s.name == name) return &s;
    return nullptr;
  }
};

// Decoding of a study's files (DICOM stays inside stages/decode).
struct StudyContext {
  std::string key;                           // short hash of the folder or study
  std::vector<std::filesystem::path> files;  // input, any layout
  std::filesystem::path folder;              // alternative input: every file below it
  std::vector<dicom::Volume> volumes;        // output of decode
  std::vector<dicom::Rejected> rejected;     // files skipped, with the reason
  std::vector<std::string> notes;
  std::vector<StageTiming> timings;
};

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double ms() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// One step on one series.
class Stage {
 public:
  virtual ~Stage() = default;
  void run(SeriesContext& c);  // times run_(), records it in c.timings, rethrows with the stage name
  virtual std::string_view name() const = 0;

 protected:
  virtual void run_(SeriesContext& c) = 0;
};

// One step on a whole study (decode).
class StudyStage {
 public:
  virtual ~StudyStage() = default;
  void run(StudyContext& c);
  virtual std::string_view name() const = 0;

 protected:
  virtual void run_(StudyContext& c) = 0;
};

// Thrown by Stage::run when run_() fails: what() is "<stage>: <reason>".
class StageError : public std::runtime_error {
 public:
  StageError(std::string stage, const std::string& what)
      : std::runtime_error(stage + ": " + what), stage_(std::move(stage)) {}
  const std::string& stage() const { return stage_; }

 private:
  std::string stage_;
};

// FNV-1a 64 of `text` as 16 hex digits: a stable, non-reversible key for logs and file names.
std::string short_hash(std::string_view text);

}  // namespace analysis
