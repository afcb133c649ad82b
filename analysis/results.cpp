#include "analysis/results.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <stdexcept>

#include "dicom/codes.h"
#include "dicom/seg_builder.h"
#include "dicom/sr_builder.h"

namespace analysis {
namespace {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20)
          out += fmt::format("\\u{:04x}", c);
        else
          out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  return fmt::format("{}", v);  // shortest round-trip representation
}

std::string json_code(const kernels::Code& c) {
  return fmt::format("{{\"value\": {}, \"scheme\": {}, \"meaning\": {}}}", json_string(c.value), json_string(c.scheme),
                     json_string(c.meaning));
}

std::string json_overlap(const kernels::OverlapMetrics& m) {
  return fmt::format(
      "{{\"dice\": {}, \"jaccard\": {}, \"reference_voxels\": {}, \"test_voxels\": {}, \"intersection_voxels\": {}, "
      "\"reference_volume_mm3\": {}, \"test_volume_mm3\": {}, \"volume_difference_mm3\": {}, "
      "\"relative_volume_difference\": {}, \"hausdorff_mm\": {}, \"hausdorff95_mm\": {}, "
      "\"mean_surface_distance_mm\": {}}}",
      json_number(m.dice), json_number(m.jaccard), m.reference_voxels, m.test_voxels, m.intersection_voxels,
      json_number(m.reference_volume_mm3), json_number(m.test_volume_mm3), json_number(m.volume_difference_mm3),
      json_number(m.relative_volume_difference), json_number(m.hausdorff_mm), json_number(m.hausdorff95_mm),
      json_number(m.mean_surface_distance_mm));
}

std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : std::string(); }

// Column order: the headline measures first, then alphabetical.
int column_rank(const std::string& name) {
  static const std::vector<std::string> first{"volume_ml", "mean_hu", "mean_au", "laa950_percent", "std_hu", "std_au",
                                              "min_hu",    "min_au",  "max_hu",  "max_au",         "voxels"};
  const auto it = std::find(first.begin(), first.end(), name);
  return it == first.end() ? static_cast<int>(first.size()) : static_cast<int>(it - first.begin());
}

dicom::Code to_dicom(const kernels::Code& c) { return {c.value, c.scheme, c.meaning}; }

std::array<std::uint16_t, 3> cielab_of(const kernels::Rgb& rgb) {
  cv::Mat3f px(1, 1, cv::Vec3f(rgb.r / 255.f, rgb.g / 255.f, rgb.b / 255.f));
  cv::Mat3f lab;
  cv::cvtColor(px, lab, cv::COLOR_RGB2Lab);
  const cv::Vec3f v = lab(0, 0);  // L 0..100, a/b about -127..127
  auto scale = [](double x, double lo, double hi) {
    return static_cast<std::uint16_t>(std::lround(std::clamp((x - lo) / (hi - lo), 0.0, 1.0) * 65535.0));
  };
  return {scale(v[0], 0, 100), scale(v[1], -128, 127), scale(v[2], -128, 127)};
}

}  // namespace

SeriesSummary summarize(const SeriesContext& c) {
  SeriesSummary s;
  s.key = c.key;
  s.profile = c.profile ? c.profile->name : std::string();
  s.info = c.volume.info;
  s.depth = c.volume.depth();
  s.rows = c.volume.rows();
  s.cols = c.volume.cols();
  s.spacing = spacing_of(c.volume.geom);
  s.segments = c.segments;
  s.timings = c.timings;
  s.preview = c.preview;
  s.notes = c.notes;
  return s;
}

std::string features_json(const std::vector<SeriesSummary>& series, const std::vector<dicom::Rejected>& rejected) {
  std::string o = "{\n  \"series\": [";
  for (std::size_t i = 0; i < series.size(); ++i) {
    const SeriesSummary& s = series[i];
    o += i ? ",\n    {" : "\n    {";
    o += fmt::format(
        "\"key\": {}, \"series_uid\": {}, \"modality\": {}, \"body_part\": {}, \"series_description\": {}, "
        "\"profile\": {}, \"dims\": [{}, {}, {}], \"spacing_mm\": [{}, {}, {}], ",
        json_string(s.key), json_string(s.info.series_uid), json_string(s.info.modality), json_string(s.info.body_part),
        json_string(s.info.series_description), json_string(s.profile), s.depth, s.rows, s.cols,
        json_number(s.spacing.slice), json_number(s.spacing.row), json_number(s.spacing.col));
    o += "\"timings_ms\": {";
    for (std::size_t t = 0; t < s.timings.size(); ++t)
      o += fmt::format("{}{}: {}", t ? ", " : "", json_string(s.timings[t].stage), json_number(s.timings[t].ms));
    o += "}, ";
    o += fmt::format("\"preview\": {}, \"seg\": {}, \"sr\": {}, \"error\": {}, \"notes\": [",
                     json_string(s.preview.filename().string()), json_string(s.seg_file.filename().string()),
                     json_string(s.sr_file.filename().string()), s.error.empty() ? "null" : json_string(s.error));
    for (std::size_t n = 0; n < s.notes.size(); ++n) o += (n ? ", " : "") + json_string(s.notes[n]);
    o += "],\n     \"segments\": [";
    for (std::size_t k = 0; k < s.segments.size(); ++k) {
      const SegmentResult& g = s.segments[k];
      o += k ? ",\n       {" : "\n       {";
      o += fmt::format("\"label\": {}, \"name\": {}, \"voxels\": {}, ", g.label, json_string(g.name), g.voxels);
      if (g.codes)
        o += fmt::format("\"type\": {}, ",
                         json_code({g.codes->type.value, g.codes->type.scheme, g.codes->type.meaning}));
      o += "\"features\": {";
      bool first = true;
      for (const auto& [name, v] : g.features) {
        o += fmt::format("{}{}: {}", first ? "" : ", ", json_string(name), json_number(v));
        first = false;
      }
      o += "}, \"findings\": [";
      for (std::size_t f = 0; f < g.findings.size(); ++f) {
        const auto& r = g.findings[f];
        o += fmt::format("{}{{\"rule_set\": {}, \"fired_rule\": {}, ", f ? ", " : "", json_string(r.rule_set),
                         json_string(r.fired_rule));
        if (r.finding)
          o += fmt::format("\"name\": {}, \"value\": {}}}", json_code(r.finding->name), json_code(r.finding->value));
        else
          o += "\"name\": null, \"value\": null}";
      }
      o += "]";
      if (g.prediction)
        o += fmt::format(", \"prediction\": {{\"label\": {}, \"probability\": {}, \"positive_probability\": {}}}",
                         json_string(g.prediction->label), json_number(g.prediction->probability),
                         json_number(g.prediction->positive_probability));
      if (g.overlap) o += ", \"overlap\": " + json_overlap(*g.overlap);
      o += "}";
    }
    o += "]}";
  }
  o += "\n  ],\n  \"rejected\": [";
  for (std::size_t i = 0; i < rejected.size(); ++i)
    o += fmt::format("{}\n    {{\"path\": {}, \"reason\": {}, \"files\": {}}}", i ? "," : "",
                     json_string(rejected[i].path), json_string(rejected[i].reason), rejected[i].files.size());
  o += "\n  ]\n}\n";
  return o;
}

std::string features_csv(const std::vector<SeriesSummary>& series) {
  std::set<std::string> feature_set, rule_sets;
  bool any_prediction = false, any_overlap = false;
  for (const auto& s : series)
    for (const auto& g : s.segments) {
      for (const auto& [name, v] : g.features) feature_set.insert(name);
      for (const auto& r : g.findings) rule_sets.insert(r.rule_set);
      any_prediction |= g.prediction.has_value();
      any_overlap |= g.overlap.has_value();
    }
  std::vector<std::string> features(feature_set.begin(), feature_set.end());
  std::stable_sort(features.begin(), features.end(),
                   [](const std::string& a, const std::string& b) { return column_rank(a) < column_rank(b); });
  std::string o = "series,series_uid,modality,profile,segment_label,segment";
  for (const auto& f : features) o += "," + csv_field(f);
  for (const auto& r : rule_sets) o += "," + csv_field(r + "_finding");
  if (any_prediction) o += ",model_label,model_probability";
  if (any_overlap) o += ",dice,hausdorff95_mm,mean_surface_distance_mm";
  o += "\n";
  for (const auto& s : series) {
    if (!s.error.empty()) continue;
    for (const auto& g : s.segments) {
      o += fmt::format("{},{},{},{},{},{}", csv_field(s.key), csv_field(s.info.series_uid), csv_field(s.info.modality),
                       csv_field(s.profile), g.label, csv_field(g.name));
      for (const auto& f : features) {
        const auto it = g.features.find(f);
        o += "," + (it == g.features.end() ? std::string() : csv_number(it->second));
      }
      for (const auto& r : rule_sets) {
        std::string v;
        for (const auto& f : g.findings)
          if (f.rule_set == r && f.finding) v = f.finding->value.meaning;
        o += "," + csv_field(v);
      }
      if (any_prediction)
        o += g.prediction
                 ? fmt::format(",{},{}", csv_field(g.prediction->label), csv_number(g.prediction->positive_probability))
                 : std::string(",,");
      if (any_overlap)
        o += g.overlap ? fmt::format(",{},{},{}", csv_number(g.overlap->dice), csv_number(g.overlap->hausdorff95_mm),
                                     csv_number(g.overlap->mean_surface_distance_mm))
                       : std::string(",,,");
      o += "\n";
    }
  }
  return o;
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  const auto tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(fmt::format("cannot write {}", tmp.string()));
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(fmt::format("cannot write {}", tmp.string()));
  }
  std::filesystem::rename(tmp, path);
}

dicom::SegSpec seg_spec_for(SeriesContext& c, bool keep_empty_frames) {
  if (c.resampled)
    throw std::invalid_argument("volume was resampled: the label map no longer matches the source frames");
  if (c.segments.empty()) throw std::invalid_argument("no segment to write");
  const auto& vol = c.volume;
  if (vol.sources.size() != c.labels.size() || vol.sources.empty())
    throw std::invalid_argument("volume has no source frames");

  // Renumber labels to the SEG's segment numbers 1..N.
  cv::Mat lut(1, 256, CV_8U, cv::Scalar(0));
  for (std::size_t i = 0; i < c.segments.size(); ++i)
    lut.at<std::uint8_t>(c.segments[i].label) = static_cast<std::uint8_t>(i + 1);
  for (auto& s : c.labels) cv::LUT(s, lut, s);
  for (std::size_t i = 0; i < c.segments.size(); ++i) c.segments[i].label = static_cast<int>(i + 1);

  dicom::SegSpec seg;
  seg.source_file = vol.sources.front().path;
  seg.source_series_uid = vol.info.series_uid;
  seg.geom = vol.geom;
  seg.sources = vol.sources;
  seg.label_map = c.labels;  // shallow: shares the slices
  seg.series_description = fmt::format("pacsnode {} segmentation", c.profile->name);
  seg.keep_empty_frames = keep_empty_frames;
  seg.content_description = fmt::format("profile {}", c.profile->name);
  for (const auto& g : c.segments) {
    dicom::SegmentSpec s;
    s.label = g.name;
    const auto codes = g.codes ? *g.codes : *dicom::codes::segment_codes("tissue");
    s.category = codes.category;
    s.type = codes.type;
    s.anatomic_region = codes.anatomic_region;
    s.cielab = cielab_of(g.colour);
    seg.segments.push_back(std::move(s));
  }
  return seg;
}

dicom::WrittenObject write_sr_for(const SeriesContext& c, const dicom::SegSpec& seg, const dicom::WrittenObject& written,
                                  const std::filesystem::path& dir, const std::optional<dicom::DocumentRef>& replaces) {
  const auto& vol = c.volume;
  dicom::SrSpec sr;
  sr.predecessor = replaces;
  sr.source_file = seg.source_file;
  sr.source_series_uid = vol.info.series_uid;
  sr.sources = vol.sources;
  sr.seg = written;
  sr.procedure_reported = dicom::codes::procedure_for_modality(vol.info.modality);
  sr.series_description = fmt::format("pacsnode {} measurements", c.profile->name);
  const bool hu = vol.info.units == "HU";
  std::map<std::string, dicom::QualitativeEvaluation> document;  // per concept: Present wins
  for (std::size_t i = 0; i < c.segments.size(); ++i) {
    const SegmentResult& g = c.segments[i];
    dicom::MeasurementGroupSpec grp;
    grp.tracking_id = g.name;
    if (i < written.tracking_uids.size()) grp.tracking_uid = written.tracking_uids[i];
    grp.finding = seg.segments[i].type;
    grp.finding_site = seg.segments[i].anatomic_region;
    grp.segment_number = static_cast<int>(i + 1);
    if (const auto it = g.features.find("volume_ml"); it != g.features.end())
      grp.measurements.push_back({dicom::codes::volume(), it->second, dicom::codes::unit_ml(), std::nullopt,
                                  dicom::codes::sum_of_voxel_volumes()});
    if (hu)
      if (const auto it = g.features.find("mean_hu"); it != g.features.end())
        grp.measurements.push_back({dicom::codes::attenuation_coefficient(), it->second, dicom::codes::unit_hu(),
                                    dicom::codes::mean(), std::nullopt});
    if (const auto it = g.features.find(kernels::kLaa950PercentFeature); it != g.features.end())
      grp.measurements.push_back(
          {dicom::codes::emphysema_index(), it->second, dicom::codes::unit_percent(), std::nullopt, std::nullopt});
    for (const auto& f : g.findings) {
      if (!f.finding) continue;
      const dicom::QualitativeEvaluation q{to_dicom(f.finding->name), to_dicom(f.finding->value)};
      grp.qualitative.push_back(q);
      auto [it, fresh] = document.try_emplace(f.finding->name.value + "^" + f.finding->name.scheme, q);
      if (!fresh && q.value == dicom::codes::present()) it->second = q;
    }
    if (grp.measurements.empty()) continue;
    sr.groups.push_back(std::move(grp));
  }
  for (auto& [k, q] : document) sr.qualitative.push_back(q);
  return dicom::write_sr(sr, dir / (c.key + "_sr.dcm"));
}

DicomOutputs write_seg_and_sr(SeriesContext& c, const std::filesystem::path& dir,
                              const std::optional<dicom::DocumentRef>& replaces, bool keep_empty_frames) {
  const dicom::SegSpec seg = seg_spec_for(c, keep_empty_frames);
  DicomOutputs out;
  out.seg = dir / (c.key + "_seg.dcm");
  const dicom::WrittenObject written = dicom::write_seg(seg, out.seg);
  out.sr = write_sr_for(c, seg, written, dir, replaces).path;
  return out;
}

}  // namespace analysis
