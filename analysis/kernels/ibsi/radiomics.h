#pragma once
// Every IBSI 1 feature family on one region of interest, and the catalogue of their tags.
//
// compute_features() runs the families a FeatureSettings selects on an RoiImage (processing.h:
// prepare_roi) and its Levels (processing.h: discretise). The tags are those of the IBSI reference
// tables; catalogue() lists every tag with its IBSI code (feature code, plus the aggregation code for
// texture features), readable name, family and unit, for features.json, the features catalogue CSV
// and the README's feature table (`pacsnode features-catalogue`).
#include <string>
#include <vector>

#include "analysis/kernels/ibsi/aggregation.h"
#include "analysis/kernels/ibsi/image.h"
#include "analysis/kernels/ibsi/intensity.h"
#include "analysis/kernels/ibsi/processing.h"

namespace analysis::kernels::ibsi {

enum class Family { morphology, local_intensity, statistics, histogram, ivh, glcm, glrlm, glszm, gldzm, ngtdm, ngldm };
inline constexpr Family kAllFamilies[] = {Family::morphology, Family::local_intensity, Family::statistics,
                                          Family::histogram,  Family::ivh,             Family::glcm,
                                          Family::glrlm,      Family::glszm,           Family::gldzm,
                                          Family::ngtdm,      Family::ngldm};
std::string_view to_string(Family f);        // "morphology", "local_intensity", ..., "ngldm"
Family parse_family(std::string_view name);  // the same names; throws std::invalid_argument listing them

struct FeatureSettings {
  std::vector<Family> families{std::begin(kAllFamilies), std::end(kAllFamilies)};
  TextureScope scope;      // texture aggregations: 2D/2.5D and/or 3D
  IvhOptions ivh;          // the intensity-volume histogram's own discretisation
  bool has(Family f) const;
};

// The IVH options for an IVH discretisation as processing.h states it per configuration
// (ct_phantom_ivh_discretisation): none -> integer steps of 1 within the re-segmentation range (or
// the ROI's range); fixed bin size -> from the lower bound (else the range's minimum) to the range's
// maximum; fixed bin number -> over the ROI's range.
IvhOptions ivh_options_for(const Discretisation& d, const Resegmentation& r);

// Wall time of one step of compute_features (steps run side by side): a family's name, or "glszm+gldzm" / "ngtdm+ngldm"
// when both families of a pair are asked for (each pair shares one pass over the ROI).
struct FamilyTime {
  std::string step;
  double seconds = 0;
};

// The families (a step each, or one step for a pair that shares a pass: glszm+gldzm, ngtdm+ngldm)
// run side by side on OpenCV's threads, the longest first; inside a step the family's own parallel
// loops run serially (OpenCV runs nested parallel_for_ bodies inline).
// Throws std::invalid_argument on an empty ROI or inconsistent inputs. A family that refuses its
// input (std::invalid_argument, e.g. local intensity on voxels below 0.1 mm) throws too, unless
// `refused` is given: then its reason ("local_intensity: ...") goes there and the others' features
// are returned.
Features compute_features(const RoiImage& roi, const Levels& levels, const FeatureSettings& s,
                          std::vector<FamilyTime>* times = nullptr, std::vector<std::string>* refused = nullptr);

struct CatalogueEntry {
  std::string tag;     // "cm_joint_max_3D_comb"
  std::string code;    // "GYBY.IAZD" (feature.aggregation) or "RNU0"
  std::string name;    // "Joint maximum (3D, merged)"
  std::string family;  // to_string(Family)
  std::string unit;    // "" when dimensionless
};
const std::vector<CatalogueEntry>& catalogue();
const CatalogueEntry* find_in_catalogue(std::string_view tag);  // nullptr when unknown

// The catalogue as a Markdown page (docs/features.md; a test keeps the page current).
std::string feature_table_markdown();

}  // namespace analysis::kernels::ibsi
