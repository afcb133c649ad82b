#pragma once
// The concrete stages. Each is a thin wrapper: it reads its parameters from the context's
// Profile and calls pure kernels (analysis/kernels) or recipes built on them (stages/recipes.h).
#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

#include "analysis/kernels/key_image_render.h"
#include "analysis/stage.h"

namespace analysis::stages {

// Files (or every file below a folder) -> Volumes; bad files land in StudyContext::rejected.
class DecodeStage final : public StudyStage {
 public:
  std::string_view name() const override { return "decode"; }

 protected:
  void run_(StudyContext& c) override;
};

// Header-only grouping of files by Series Instance UID (see analysis::series_batches).
std::vector<std::vector<std::filesystem::path>> group_by_series(const std::vector<std::filesystem::path>& files);

// Median / Gaussian / in-plane resampling, in place on the volume.
class PreprocessStage final : public Stage {
 public:
  std::string_view name() const override { return "preprocess"; }

 protected:
  void run_(SeriesContext& c) override;
};

// The profile's recipe -> label map and segment list (display names; for ct-chest the body covers
// every label, and SeriesContext::chest gets the coverage check, protocol check and landmarks).
class SegmentStage final : public Stage {
 public:
  std::string_view name() const override { return "segment"; }

 protected:
  void run_(SeriesContext& c) override;
};

// Per segment (its label and also_labels): voxels, volume_ml, mean/std/min/max_<unit> (unit "hu"
// for CT in HU, else "au"), for ct-chest lungs laa950_percent (share of voxels strictly below
// the LAA threshold) and perc15_hu (15th percentile, linear interpolation), and unless the
// profile lists the segment as basic_only the IBSI features (mesh morphology, intensity
// statistics, intensity histogram, 3D merged GLCM) on the segment's bounding box; for ct-chest
// the same density figures for both lungs together (SeriesContext::chest->both_lungs).
// Intensities are those of the volume as decoded, unless Preprocess filtered the volume itself
// (SeriesContext::measured_on_filtered: profiles other than ct-chest with a filter, or ct-chest
// with measure_on_original_hu off, resampling or z smoothing).
class FeaturesStage final : public Stage {
 public:
  std::string_view name() const override { return "features"; }

 protected:
  void run_(SeriesContext& c) override;
};

// The IBSI features of the segments Features left in SeriesContext::radiomics_pending (all of
// them, at once, unless SeriesContext::defer_radiomics). Rethrows the first segment's error.
void measure_radiomics(SeriesContext& c);
// Whether the profile's findings (rule sets, a trained model) may read IBSI features, so that they
// cannot be measured after the SR.
bool needs_radiomics_for_findings(const Profile& p);

// Rule sets and the optional trained model, per segment. ct-chest: no rule on the lungs (no
// emphysema conclusion) when the lung coverage is not complete.
class ClassifyStage final : public Stage {
 public:
  std::string_view name() const override { return "classify"; }

 protected:
  void run_(SeriesContext& c) override;
};

// Overlap with the reference segmentation, when the context has one (else nothing).
class EvaluateStage final : public Stage {
 public:
  std::string_view name() const override { return "evaluate"; }

 protected:
  void run_(SeriesContext& c) override;
};

// How the preview and the key images draw the segments: every segment with voxels of its own
// (not the virtual "lungs" one), the body as its outline only (the mediastinum stays readable),
// dense structures outlined, lungs and airways lightly filled, lesion candidates filled and
// outlined; legend texts with volume and, for lungs, LAA%-950, Perc15 and the finding.
std::vector<kernels::SegmentStyle> segment_styles(const SeriesContext& c);

// Legend lines for people: findings (with the research label), lung coverage, protocol check,
// how values were measured. Empty for profiles without findings.
std::vector<std::string> finding_lines(const SeriesContext& c);

// Preview parameters of a series: the profile's window and tiles, the LAA overlay on the lungs
// (ct-chest in HU), the study description and finding_lines.
kernels::PreviewParams preview_params(const SeriesContext& c);

// Key images of a series: for ct-chest the apex, carina, the largest slice of the largest lesion
// candidate and the base (those found), with captions; else the area-based choice.
kernels::KeyImageParams key_image_params(const SeriesContext& c);

// One PNG preview per series into the context's out_dir (nothing when it is empty).
class DisplayStage final : public Stage {
 public:
  std::string_view name() const override { return "display"; }

 protected:
  void run_(SeriesContext& c) override;
};

// Reconstruction kernel sharpness from its name (Convolution Kernel): "sharp" for lung/bone/edge
// kernels (GE LUNG, BONE, BONEPLUS, EDGE; Siemens B/I/Q/Br with number >= 50, e.g. B70f; Canon
// FC5x/FC8x; Philips D, E, L, Y*), "smooth" for standard/soft ones (STANDARD, SOFT; Siemens
// number <= 45; Canon FC0x-FC2x; Philips B, C), else unknown.
enum class KernelClass { smooth, sharp, unknown };
KernelClass classify_kernel(std::string_view kernel);

// The ct-chest protocol check: what in the headers argues against reading LAA%-950 and Perc15
// as densitometry (slices thicker than densitometry_max_slice_mm, a sharp kernel, IV contrast),
// and what is not recorded. `suitable` is false when something argues against it.
std::vector<std::string> protocol_remarks(const dicom::AcquisitionInfo& a, const dicom::Geometry& g,
                                          const ChestParams& p, bool& suitable);

// preprocess, segment, features, classify, evaluate, display.
std::vector<std::unique_ptr<Stage>> series_stages();

}  // namespace analysis::stages
