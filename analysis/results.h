#pragma once
// What is left of an analysed series once its volume is released, and its outputs:
// features.json, features.csv (one row per series and segment, units in the column names),
// and the DICOM SEG + TID 1500 SR (dicom/seg_builder.h, dicom/sr_builder.h).
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "analysis/kernels/ibsi/radiomics.h"
#include "analysis/stage.h"
#include "dicom/seg_builder.h"
#include "dicom/sr_builder.h"
#include "dicom/series_loader.h"

namespace analysis {

struct SeriesSummary {
  std::string key;      // series_key()
  std::string profile;  // profile name
  dicom::SeriesInfo info;
  int depth = 0, rows = 0, cols = 0;
  Spacing spacing;
  std::vector<SegmentResult> segments;
  std::vector<StageTiming> timings;
  std::filesystem::path preview, seg_file, sr_file;
  std::vector<std::string> notes;
  std::optional<ChestReport> chest;   // ct-chest: coverage, protocol, both lungs, landmarks
  bool measured_on_filtered = false;  // the features were measured on the filtered image
  std::string error;  // non-empty: the series failed ("<stage>: <reason>")
};

SeriesSummary summarize(const SeriesContext& c);

// JSON objects keep their keys in insertion order (features.json reads top to bottom).
using Json = nlohmann::ordered_json;

// One series of features.json (file names only for preview/seg/sr; non-finite numbers as null),
// and its inverse: analysis workers hand their summaries to the parent this way.
Json to_json(const SeriesSummary& s);
SeriesSummary summary_from_json(const nlohmann::json& j);
// A rejected input as features.json lists it (with the number of files), and as a worker
// reports it (with the files), and back.
Json to_json(const dicom::Rejected& r);
Json rejected_event_json(const dicom::Rejected& r);
dicom::Rejected rejected_from_json(const nlohmann::json& j);

// features.json: {"series": [{key, series_uid, modality, body_part, series_description, profile,
// dims, spacing_mm, measured_on, timings_ms, preview, seg, sr, notes, error, chest{coverage,
// coverage_note, protocol_remarks, densitometry_protocol, both_lungs{voxels, volume_ml,
// laa950_percent, perc15_hu}, landmarks{apex, carina, base}} (ct-chest), segments: [{label,
// also_labels, name, display_name, description, features{...}, findings[...], prediction,
// overlap}]}], "rejected": [{path, reason}]}.
// Non-finite numbers are written as null.
std::string features_json(const std::vector<SeriesSummary>& series, const std::vector<dicom::Rejected>& rejected);

// features.csv: header `series,series_uid,modality,profile,segment_label,segment,<features...>,
// <rule set>_finding...,model_label,model_probability`, one row per series and segment (failed
// series get no row). Feature columns are the union over all rows (empty where absent), volume,
// intensity and emphysema columns first, then the rest alphabetically. Units are in the names:
// _ml, _mm, _mm2, _mm3, _hu (Hounsfield), _au (arbitrary intensity unit), _percent, _bits.
std::string features_csv(const std::vector<SeriesSummary>& series);

// The IBSI features that occur in `series`, in catalogue order (analysis/kernels/ibsi/radiomics.h),
// and as feature_catalogue.csv: tag,ibsi_code,name,family,unit (the key to features.csv's columns).
std::vector<const kernels::ibsi::CatalogueEntry*> catalogue_of(const std::vector<SeriesSummary>& series);
std::string feature_catalogue_csv(const std::vector<SeriesSummary>& series);

// Writes `text` to `path` via a temporary file in the same folder and a rename.
void write_text_file(const std::filesystem::path& path, const std::string& text);

// A display colour as DICOM Recommended Display CIELab Value: sRGB to L*a*b* (D65), L* 0..100 and
// a*, b* -128..127 scaled to 0..65535.
std::array<std::uint16_t, 3> cielab_of(const kernels::Rgb& rgb);

struct DicomOutputs {
  std::filesystem::path seg, sr;
};

// Writes <dir>/<key>_seg.dcm and <dir>/<key>_sr.dcm for an analysed series: one SEG segment per
// segment with voxels (its display name as label; codes from dicom::codes::segment_codes, tissue
// codes for unknown names; the body covering every label), an algorithm family and name that
// say what the method is, the sources' lossy compression; and a TID 1500 SR (procedure: chest CT
// for ct-chest, an Image Library of the sources) with one measurement group per segment (volume
// ml, mean HU for CT; for lungs the emphysema index LAA%-950 and Perc15; for lesion candidates
// the longest diameter; values rounded, UCUM units; the rule findings as qualitative evaluations
// with a comment carrying the research label and the protocol check), a group for both lungs
// together, and document-level evaluations (emphysema: "Present" when any lung's is; lung
// coverage; a comment saying how values were measured). Series descriptions carry the profile's
// research label. Renumbers c.labels in place to
// 1..N (the SEG's segment numbers), so run it after every stage. Throws on failure; throws
// std::invalid_argument when the series cannot have a SEG (resampled grid, no segment).
// Needs the label map, geometry and source frames, not the pixels: callers that are done with
// the image may clear c.volume.slices first to lower the peak memory.
// `replaces`: the SR of an earlier analysis of the same series, listed in the new SR's
// Predecessor Documents Sequence (a study reopened by late instances is reported again).
// The two halves of write_seg_and_sr, so that the SEG can be written while the later stages run:
// seg_spec_for needs only the segment stage's output; it renumbers c.labels and c.segments to
// 1..N (the SEG's segment numbers) and returns the SEG spec, whose label map shares c.labels.
// write_sr_for writes <dir>/<key>_sr.dcm from c's features and findings for a SEG already written.
dicom::SegSpec seg_spec_for(SeriesContext& c, bool keep_empty_frames = false);
// `placement`: the SR's series (empty UID: a new one), series and instance number (0: defaults).
dicom::WrittenObject write_sr_for(const SeriesContext& c, const dicom::SegSpec& seg, const dicom::WrittenObject& written,
                                  const std::filesystem::path& dir,
                                  const std::optional<dicom::DocumentRef>& replaces = std::nullopt,
                                  const dicom::SeriesPlacement& placement = {});
// `keep_empty_frames`: also write the SEG frames whose mask is empty (default: omitted).
// `text` prefixed with the research label ("<label> - <text>"), cut to 64 characters (LO).
std::string labelled_description(std::string_view research_label, std::string_view text);

DicomOutputs write_seg_and_sr(SeriesContext& c, const std::filesystem::path& dir,
                              const std::optional<dicom::DocumentRef>& replaces = std::nullopt,
                              bool keep_empty_frames = false);

}  // namespace analysis
