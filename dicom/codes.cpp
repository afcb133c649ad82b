#include "dicom/codes.h"

namespace dicom::codes {

// Every code of this file, once: the functions below and all() come from this one list.
#define PACSNODE_CODES(X) \
  X(category_tissue, "85756007", "SCT", "Tissue")                                               \
  X(category_anatomical_structure, "91723000", "SCT", "Anatomical Structure")                   \
  X(category_morphologically_abnormal, "49755003", "SCT", "Morphologically Abnormal Structure") \
  X(entire_body, "38266002", "SCT", "Entire body")                                              \
  X(lung, "39607008", "SCT", "Lung")                                                            \
  X(left_lung, "44029006", "SCT", "Left lung")                                                  \
  X(right_lung, "3341006", "SCT", "Right lung")                                                 \
  X(bone, "272673000", "SCT", "Bone")                                                           \
  X(tissue, "85756007", "SCT", "Tissue")                                                        \
  X(thorax, "43799004", "SCT", "Thorax")                                                        \
  X(emphysema, "87433001", "SCT", "Pulmonary emphysema")                                        \
  X(airway, "89187006", "SCT", "Airway structure")                                              \
  X(lesion, "52988006", "SCT", "Lesion")                                                        \
  X(dense_structure, "DENSE-HU", "99PACSNODE", "Bone, calcification or contrast")               \
  X(bilateral, "51440002", "SCT", "Bilateral")                                                  \
  X(algorithm_family_ai, "123110", "DCM", "Artificial Intelligence")                            \
  X(algorithm_family_morphological_operations, "123104", "DCM", "Morphological Operations")     \
  X(algorithm_family_histogram_analysis, "123105", "DCM", "Histogram Analysis")                 \
  X(imaging_procedure, "363679005", "SCT", "Imaging procedure")                                 \
  X(ct_unspecified_body_region, "25045-6", "LN", "CT unspecified body region")                  \
  X(mri_unspecified_body_region, "25056-3", "LN", "MRI unspecified body region")                \
  X(ct_chest, "24627-2", "LN", "CT Chest")                                                      \
  X(finding_site, "363698007", "SCT", "Finding Site")                                           \
  X(volume, "118565006", "SCT", "Volume")                                                       \
  X(attenuation_coefficient, "112031", "DCM", "Attenuation Coefficient")                        \
  X(mean, "373098007", "SCT", "Mean")                                                           \
  X(standard_deviation, "386136009", "SCT", "Standard Deviation")                               \
  X(minimum, "255605001", "SCT", "Minimum")                                                     \
  X(maximum, "56851009", "SCT", "Maximum")                                                      \
  X(median, "373099004", "SCT", "Median")                                                       \
  X(sum_of_voxel_volumes, "126030", "DCM", "Sum of segmented voxel volumes")                    \
  X(emphysema_index, "EMPH-LAA950", "99PACSNODE", "Emphysema index (LAA-950)")                  \
  X(diameter, "81827009", "SCT", "Diameter")                                                    \
  X(percentile_15, "P15", "99PACSNODE", "15th percentile")                                      \
  X(comment, "121106", "DCM", "Comment")                                                        \
  X(lung_coverage, "LUNGCOV", "99PACSNODE", "Lung coverage")                                    \
  X(complete, "255594003", "SCT", "Complete")                                                   \
  X(incomplete, "255599008", "SCT", "Incomplete")                                               \
  X(present, "52101004", "SCT", "Present")                                                      \
  X(absent, "2667000", "SCT", "Absent")                                                         \
  X(unit_ml, "ml", "UCUM", "milliliter")                                                        \
  X(unit_mm3, "mm3", "UCUM", "cubic millimeter")                                                \
  X(unit_mm, "mm", "UCUM", "millimeter")                                                        \
  X(unit_hu, "[hnsf'U]", "UCUM", "Hounsfield unit")                                             \
  X(unit_percent, "%", "UCUM", "Percent")                                                       \
  X(unit_none, "1", "UCUM", "no units")                                                         \
  X(unit_arbitrary, "[arb'U]", "UCUM", "arbitrary unit")

// Function-local statics: safe to use from other translation units' static initialisers.
#define PACSNODE_CODE(fn, v, s, m)   \
  const Code& fn() {                 \
    static const Code c{v, s, m};    \
    return c;                        \
  }
PACSNODE_CODES(PACSNODE_CODE)
#undef PACSNODE_CODE

const std::vector<const Code*>& all() {
#define PACSNODE_CODE_ADDRESS(fn, v, s, m) &fn(),
  static const std::vector<const Code*> codes{PACSNODE_CODES(PACSNODE_CODE_ADDRESS)};
#undef PACSNODE_CODE_ADDRESS
  return codes;
}

const CodingScheme& private_scheme() { return known_private_schemes().front(); }

const std::vector<CodingScheme>& known_private_schemes() {
  static const std::vector<CodingScheme> schemes{
      {std::string(kPrivateScheme), "pacsnode private codes", "pacsnode", ""},
      {"IBSI", "Image Biomarker Standardisation Initiative", "IBSI", ""}};
  return schemes;
}

std::optional<CodingScheme> known_private_scheme(std::string_view designator) {
  for (const auto& s : known_private_schemes())
    if (s.designator == designator) return s;
  return std::nullopt;
}

const Code& procedure_for_modality(std::string_view modality) {
  if (modality == "CT") return ct_unspecified_body_region();
  if (modality == "MR") return mri_unspecified_body_region();
  return imaging_procedure();
}

const Code& intensity_unit(std::string_view series_units) {
  return series_units == "HU" ? unit_hu() : unit_arbitrary();
}

std::optional<SegmentCodes> segment_codes(std::string_view name) {
  if (name == "body") return SegmentCodes{category_anatomical_structure(), entire_body(), std::nullopt};
  if (name == "lung" || name == "lungs") return SegmentCodes{category_anatomical_structure(), lung(), thorax()};
  if (name == "left_lung") return SegmentCodes{category_anatomical_structure(), left_lung(), thorax()};
  if (name == "right_lung") return SegmentCodes{category_anatomical_structure(), right_lung(), thorax()};
  if (name == "bone") return SegmentCodes{category_tissue(), bone(), std::nullopt};
  if (name == "tissue") return SegmentCodes{category_tissue(), tissue(), std::nullopt};
  if (name == "organ")
    return SegmentCodes{category_anatomical_structure(),
                        Code{"91723000", "SCT", "Anatomical Structure"}, std::nullopt};
  if (name == "emphysema")
    return SegmentCodes{category_morphologically_abnormal(), emphysema(), thorax()};
  if (name == "airways") return SegmentCodes{category_anatomical_structure(), airway(), thorax()};
  if (name == "dense") return SegmentCodes{category_tissue(), dense_structure(), std::nullopt};
  if (name == "lesion_candidate" || name.starts_with("lesion_candidate_"))
    return SegmentCodes{category_morphologically_abnormal(), lesion(), thorax()};
  return std::nullopt;
}

}  // namespace dicom::codes
