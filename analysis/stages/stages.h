#pragma once
// The concrete stages. Each is a thin wrapper: it reads its parameters from the context's
// Profile and calls pure kernels (analysis/kernels) or recipes built on them (stages/recipes.h).
#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

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

// The profile's recipe -> label map and segment list.
class SegmentStage final : public Stage {
 public:
  std::string_view name() const override { return "segment"; }

 protected:
  void run_(SeriesContext& c) override;
};

// Per segment: voxels, volume_ml, mean/std/min/max_<unit> (unit "hu" for CT in HU, else "au"),
// for ct-chest lungs laa950_percent (on the unsmoothed HU when Preprocess recorded them), and
// unless the profile lists the segment as basic_only the IBSI features (mesh morphology,
// intensity statistics, intensity histogram, 3D merged GLCM) on the segment's bounding box.
// Intensities are those of the volume after Preprocess (e.g. median-filtered).
class FeaturesStage final : public Stage {
 public:
  std::string_view name() const override { return "features"; }

 protected:
  void run_(SeriesContext& c) override;
};

// Rule sets and the optional trained model, per segment.
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

// One PNG preview per series into the context's out_dir (nothing when it is empty).
class DisplayStage final : public Stage {
 public:
  std::string_view name() const override { return "display"; }

 protected:
  void run_(SeriesContext& c) override;
};

// preprocess, segment, features, classify, evaluate, display.
std::vector<std::unique_ptr<Stage>> series_stages();

}  // namespace analysis::stages
