#include "dicom/codes.h"

namespace dicom::codes {

// Function-local statics: safe to use from other translation units' static initialisers.
#define PACSNODE_CODE(fn, v, s, m)   \
  const Code& fn() {                 \
    static const Code c{v, s, m};    \
    return c;                        \
  }

PACSNODE_CODE(category_tissue, "85756007", "SCT", "Tissue")
PACSNODE_CODE(category_anatomical_structure, "91723000", "SCT", "Anatomical Structure")
PACSNODE_CODE(category_morphologically_abnormal, "49755003", "SCT", "Morphologically Abnormal Structure")

PACSNODE_CODE(entire_body, "38266002", "SCT", "Entire body")
PACSNODE_CODE(lung, "39607008", "SCT", "Lung")
PACSNODE_CODE(left_lung, "44029006", "SCT", "Left lung")
PACSNODE_CODE(right_lung, "3341006", "SCT", "Right lung")
PACSNODE_CODE(bone, "272673000", "SCT", "Bone")
PACSNODE_CODE(tissue, "85756007", "SCT", "Tissue")
PACSNODE_CODE(thorax, "43799004", "SCT", "Thorax")
PACSNODE_CODE(emphysema, "87433001", "SCT", "Pulmonary emphysema")
PACSNODE_CODE(airway, "89187006", "SCT", "Airway structure")
PACSNODE_CODE(lesion, "52988006", "SCT", "Lesion")
PACSNODE_CODE(dense_structure, "DENSE-HU", "99PACSNODE", "Bone, calcification or contrast")
PACSNODE_CODE(bilateral, "51440002", "SCT", "Bilateral")

PACSNODE_CODE(algorithm_family_ai, "123110", "DCM", "Artificial Intelligence")
PACSNODE_CODE(algorithm_family_morphological_operations, "123104", "DCM", "Morphological Operations")
PACSNODE_CODE(algorithm_family_histogram_analysis, "123105", "DCM", "Histogram Analysis")

PACSNODE_CODE(imaging_procedure, "363679005", "SCT", "Imaging procedure")
PACSNODE_CODE(ct_unspecified_body_region, "25045-6", "LN", "CT unspecified body region")
PACSNODE_CODE(mri_unspecified_body_region, "25056-3", "LN", "MRI unspecified body region")
PACSNODE_CODE(ct_chest, "24627-2", "LN", "CT Chest")
PACSNODE_CODE(finding_site, "363698007", "SCT", "Finding Site")
PACSNODE_CODE(volume, "118565006", "SCT", "Volume")
PACSNODE_CODE(attenuation_coefficient, "112031", "DCM", "Attenuation Coefficient")
PACSNODE_CODE(mean, "373098007", "SCT", "Mean")
PACSNODE_CODE(standard_deviation, "386136009", "SCT", "Standard Deviation")
PACSNODE_CODE(minimum, "255605001", "SCT", "Minimum")
PACSNODE_CODE(maximum, "56851009", "SCT", "Maximum")
PACSNODE_CODE(median, "373099004", "SCT", "Median")
PACSNODE_CODE(sum_of_voxel_volumes, "126030", "DCM", "Sum of segmented voxel volumes")
PACSNODE_CODE(emphysema_index, "EMPH-LAA950", "99PACSNODE", "Emphysema index (LAA-950)")
PACSNODE_CODE(diameter, "81827009", "SCT", "Diameter")
PACSNODE_CODE(percentile_15, "P15", "99PACSNODE", "15th percentile")
PACSNODE_CODE(comment, "121106", "DCM", "Comment")
PACSNODE_CODE(lung_coverage, "LUNGCOV", "99PACSNODE", "Lung coverage")
PACSNODE_CODE(complete, "255594003", "SCT", "Complete")
PACSNODE_CODE(incomplete, "255599008", "SCT", "Incomplete")
PACSNODE_CODE(present, "52101004", "SCT", "Present")
PACSNODE_CODE(absent, "2667000", "SCT", "Absent")

PACSNODE_CODE(unit_ml, "ml", "UCUM", "milliliter")
PACSNODE_CODE(unit_mm3, "mm3", "UCUM", "cubic millimeter")
PACSNODE_CODE(unit_mm, "mm", "UCUM", "millimeter")
PACSNODE_CODE(unit_hu, "[hnsf'U]", "UCUM", "Hounsfield unit")
PACSNODE_CODE(unit_percent, "%", "UCUM", "Percent")
PACSNODE_CODE(unit_none, "1", "UCUM", "no units")
PACSNODE_CODE(unit_arbitrary, "[arb'U]", "UCUM", "arbitrary unit")

#undef PACSNODE_CODE

const CodingScheme& private_scheme() {
  static const CodingScheme s{std::string(kPrivateScheme), "pacsnode private codes", "pacsnode", ""};
  return s;
}

std::optional<CodingScheme> known_private_scheme(std::string_view designator) {
  if (designator == kPrivateScheme) return private_scheme();
  if (designator == "IBSI")
    return CodingScheme{"IBSI", "Image Biomarker Standardisation Initiative", "IBSI", ""};
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
