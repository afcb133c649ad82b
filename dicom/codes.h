#pragma once
// Coded concepts used by the result builders (SEG and TID 1500 SR). Plain data, no DCMTK types,
// so that scp/ and analysis/ can name them. SNOMED CT codes use the designator "SCT" (never the
// retired "SRT"); units are UCUM. Checked against PS3.16 (CID 7150, 7151 and its included groups,
// CID 7464, CID 7469, CID 7162) and the SEG/SR objects written by highdicom and dcmqi.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dicom {

struct Code {
  std::string value;    // Code Value
  std::string scheme;   // Coding Scheme Designator ("SCT", "DCM", "UCUM", "99PACSNODE", ...)
  std::string meaning;  // Code Meaning
  bool operator==(const Code& o) const { return value == o.value && scheme == o.scheme; }
};

// A coding scheme that is not in PS3.16 Table 8-1 and so must be declared in the SR's Coding
// Scheme Identification Sequence.
struct CodingScheme {
  std::string designator, name, responsible_organization, uid;  // uid may be empty
};

namespace codes {

// Private scheme for concepts that have no standard code (e.g. emphysema index). Declared in the
// Coding Scheme Identification Sequence of every SR that uses it.
inline constexpr std::string_view kPrivateScheme = "99PACSNODE";
const CodingScheme& private_scheme();
// Schemes the builders know and declare when a code uses them (99PACSNODE, IBSI).
std::optional<CodingScheme> known_private_scheme(std::string_view designator);
// All of them, private_scheme() first.
const std::vector<CodingScheme>& known_private_schemes();
// Every code this header names, in its order (docs/conformance-statement.md lists them;
// tests/unit/test_conformance_statement.cpp keeps the two in step).
const std::vector<const Code*>& all();

// ---- CID 7150 Segmentation Property Categories
const Code& category_tissue();                // (85756007, SCT, "Tissue")
const Code& category_anatomical_structure();  // (91723000, SCT, "Anatomical Structure")
const Code& category_morphologically_abnormal();  // (49755003, SCT, "Morphologically Abnormal Structure")

// ---- CID 7151 Segmentation Property Types (and anatomic regions / finding sites)
const Code& entire_body();  // (38266002, SCT, "Entire body")
const Code& lung();         // (39607008, SCT, "Lung")
const Code& left_lung();    // (44029006, SCT, "Left lung")
const Code& right_lung();   // (3341006, SCT, "Right lung")
const Code& bone();         // (272673000, SCT, "Bone")
const Code& tissue();       // (85756007, SCT, "Tissue")
const Code& thorax();       // (43799004, SCT, "Thorax"), anatomic region of the lung profile
const Code& emphysema();    // (87433001, SCT, "Pulmonary emphysema")
const Code& airway();       // (89187006, SCT, "Airway structure"): trachea and bronchi
const Code& lesion();       // (52988006, SCT, "Lesion"), category morphologically abnormal
// (DENSE-HU, 99PACSNODE, "Bone, calcification or contrast"): voxels above a HU threshold, which
// HU alone cannot split into bone, calcium and iodinated or oral contrast; named for what it is.
const Code& dense_structure();
const Code& bilateral();    // (51440002, SCT, "Bilateral"), laterality

// Category, type and anatomic region of one segment, as the profiles need them.
struct SegmentCodes {
  Code category, type;
  std::optional<Code> anatomic_region;
};
// Table lookup by profile segment name: "body", "lung", "lungs" (both), "left_lung", "right_lung", "bone",
// "tissue" (generic), "organ" (generic anatomical structure), "emphysema", "airways", "dense",
// "lesion_candidate" and "lesion_candidate_<n>". Returns nullopt for an unknown name.
std::optional<SegmentCodes> segment_codes(std::string_view name);

// ---- CID 7162 algorithm families (Segmentation Algorithm Identification Sequence)
const Code& algorithm_family_ai();  // (123110, DCM, "Artificial Intelligence")
// (123104, DCM, "Morphological Operations"): thresholds, connected components, region growing,
// closing and hole filling (the ct-chest recipe)
const Code& algorithm_family_morphological_operations();
const Code& algorithm_family_histogram_analysis();  // (123105, DCM, "Histogram Analysis"): Otsu

// ---- SR concepts
// CID 100 Quantitative Diagnostic Imaging Procedures (the only procedure codes TID 1500 allows)
const Code& imaging_procedure();   // (363679005, SCT, "Imaging procedure")
const Code& ct_unspecified_body_region();   // (25045-6, LN, "CT unspecified body region")
const Code& mri_unspecified_body_region();  // (25056-3, LN, "MRI unspecified body region")
// (24627-2, LN, "CT Chest"): CID 100 is extensible; the chest CT the ct-chest profile measures
const Code& ct_chest();
// CID 100 code for a modality: CT, MR, else "Imaging procedure".
const Code& procedure_for_modality(std::string_view modality);
const Code& finding_site();        // (363698007, SCT, "Finding Site")
const Code& volume();              // (118565006, SCT, "Volume"), CID 7469 via CID 7472
const Code& attenuation_coefficient();  // (112031, DCM, "Attenuation Coefficient"), CID 7469
const Code& mean();                // (373098007, SCT, "Mean"), CID 7464 derivation
const Code& standard_deviation();  // (386136009, SCT, "Standard Deviation")
const Code& minimum();             // (255605001, SCT, "Minimum")
const Code& maximum();             // (56851009, SCT, "Maximum")
const Code& median();              // (373099004, SCT, "Median")
const Code& sum_of_voxel_volumes();  // (126030, DCM, "Sum of segmented voxel volumes"), method
const Code& emphysema_index();     // (EMPH-LAA950, 99PACSNODE, "Emphysema index (LAA-950)")
const Code& diameter();            // (81827009, SCT, "Diameter"), CID 7470; with maximum(): longest
// (P15, 99PACSNODE, "15th percentile"), derivation of the lung density Perc15
const Code& percentile_15();
const Code& comment();             // (121106, DCM, "Comment"), TEXT qualifications of findings
// (LUNGCOV, 99PACSNODE, "Lung coverage"): complete() or incomplete() in the SR
const Code& lung_coverage();
const Code& complete();            // (255594003, SCT, "Complete")
const Code& incomplete();          // (255599008, SCT, "Incomplete")
const Code& present();             // (52101004, SCT, "Present")
const Code& absent();              // (2667000, SCT, "Absent")

// ---- UCUM units
const Code& unit_ml();         // (ml, UCUM, "milliliter")
const Code& unit_mm3();        // (mm3, UCUM, "cubic millimeter")
const Code& unit_mm();         // (mm, UCUM, "millimeter")
const Code& unit_hu();         // ([hnsf'U], UCUM, "Hounsfield unit")
const Code& unit_percent();    // (%, UCUM, "Percent")
const Code& unit_none();       // (1, UCUM, "no units")
const Code& unit_arbitrary();  // ([arb'U], UCUM, "arbitrary unit")
// Unit of voxel intensities from SeriesInfo::units: "HU" -> [hnsf'U], otherwise [arb'U].
const Code& intensity_unit(std::string_view series_units);

}  // namespace codes
}  // namespace dicom
