#include "analysis/results.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <opencv2/core.hpp>
#include <set>
#include <stdexcept>

#include "analysis/kernels/ibsi/radiomics.h"
#include "dicom/codes.h"
#include "dicom/seg_builder.h"
#include "dicom/sr_builder.h"

namespace analysis {
namespace {

std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : std::string(); }

// Column order: the headline measures first, then the IBSI features in catalogue order, then the
// rest alphabetically.
int column_rank(const std::string& name) {
  static const std::vector<std::string> first{"volume_ml", "mean_hu", "mean_au", "laa950_percent", "perc15_hu", "std_hu", "std_au",
                                              "min_hu",    "min_au",  "max_hu",  "max_au",         "voxels"};
  const auto it = std::find(first.begin(), first.end(), name);
  if (it != first.end()) return static_cast<int>(it - first.begin());
  // IBSI features in catalogue order (family by family), anything else after them
  const auto& cat = kernels::ibsi::catalogue();
  if (const auto* e = kernels::ibsi::find_in_catalogue(name)) return static_cast<int>(first.size() + (e - cat.data()));
  return static_cast<int>(first.size() + cat.size());
}

dicom::Code to_dicom(const kernels::Code& c) { return {c.value, c.scheme, c.meaning}; }

}  // namespace

// sRGB (IEC 61966-2-1) to CIE L*a*b* under D65, in double precision, then DICOM's encoding
// (PS3.3 C.10.7.1.1: L* 0..100 and a*, b* -128..127 onto 0..65535). OpenCV's cvtColor did this
// before; its first call builds lookup tables in software floating point, ~150 ms on one core
// while the rest of the analysis waited (its float path also approximates the sRGB curve: up to
// 123/65535 away from these values).
std::array<std::uint16_t, 3> cielab_of(const kernels::Rgb& rgb) {
  const auto linear = [](std::uint8_t v) {
    const double c = v / 255.0;
    return c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4);
  };
  const double r = linear(rgb.r), g = linear(rgb.g), b = linear(rgb.b);
  // XYZ relative to the D65 white point (Xn 0.950456, Yn 1, Zn 1.088754).
  const double x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.950456;
  const double y = 0.212671 * r + 0.715160 * g + 0.072169 * b;
  const double z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.088754;
  constexpr double eps = 216.0 / 24389.0, kappa = 24389.0 / 27.0;
  const auto f = [](double t) { return t > eps ? std::cbrt(t) : (kappa * t + 16.0) / 116.0; };
  const double l = 116.0 * f(y) - 16.0, a = 500.0 * (f(x) - f(y)), bb = 200.0 * (f(y) - f(z));
  const auto scale = [](double v, double lo, double hi) {
    return static_cast<std::uint16_t>(std::lround(std::clamp((v - lo) / (hi - lo), 0.0, 1.0) * 65535.0));
  };
  return {scale(l, 0, 100), scale(a, -128, 127), scale(bb, -128, 127)};
}

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
  s.chest = c.chest;
  s.measured_on_filtered = c.measured_on_filtered;
  return s;
}

namespace {

// JSON numbers: non-finite values are null (and read back as NaN).
Json number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }
double number_of(const nlohmann::json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }
std::string text_of(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Json code_json(const std::string& value, const std::string& scheme, const std::string& meaning) {
  return Json{{"value", value}, {"scheme", scheme}, {"meaning", meaning}};
}
template <typename C>
C code_of(const nlohmann::json& j) {
  return C{text_of(j, "value"), text_of(j, "scheme"), text_of(j, "meaning")};
}

Json overlap_json(const kernels::OverlapMetrics& m) {
  return Json{{"dice", number(m.dice)},
              {"jaccard", number(m.jaccard)},
              {"reference_voxels", m.reference_voxels},
              {"test_voxels", m.test_voxels},
              {"intersection_voxels", m.intersection_voxels},
              {"reference_surface_voxels", m.reference_surface_voxels},
              {"test_surface_voxels", m.test_surface_voxels},
              {"reference_volume_mm3", number(m.reference_volume_mm3)},
              {"test_volume_mm3", number(m.test_volume_mm3)},
              {"volume_difference_mm3", number(m.volume_difference_mm3)},
              {"relative_volume_difference", number(m.relative_volume_difference)},
              {"hausdorff_mm", number(m.hausdorff_mm)},
              {"hausdorff95_mm", number(m.hausdorff95_mm)},
              {"mean_surface_distance_mm", number(m.mean_surface_distance_mm)}};
}

kernels::OverlapMetrics overlap_of(const nlohmann::json& j) {
  kernels::OverlapMetrics m;
  m.dice = number_of(j.at("dice"));
  m.jaccard = number_of(j.at("jaccard"));
  m.reference_voxels = j.value("reference_voxels", std::int64_t{0});
  m.test_voxels = j.value("test_voxels", std::int64_t{0});
  m.intersection_voxels = j.value("intersection_voxels", std::int64_t{0});
  m.reference_surface_voxels = j.value("reference_surface_voxels", std::int64_t{0});
  m.test_surface_voxels = j.value("test_surface_voxels", std::int64_t{0});
  m.reference_volume_mm3 = number_of(j.at("reference_volume_mm3"));
  m.test_volume_mm3 = number_of(j.at("test_volume_mm3"));
  m.volume_difference_mm3 = number_of(j.at("volume_difference_mm3"));
  m.relative_volume_difference = number_of(j.at("relative_volume_difference"));
  m.hausdorff_mm = number_of(j.at("hausdorff_mm"));
  m.hausdorff95_mm = number_of(j.at("hausdorff95_mm"));
  m.mean_surface_distance_mm = number_of(j.at("mean_surface_distance_mm"));
  return m;
}

Json features_of_json(const kernels::FeatureMap& f) {
  Json o = Json::object();
  for (const auto& [name, v] : f) o[name] = number(v);
  return o;
}
kernels::FeatureMap feature_map_of(const nlohmann::json& j) {
  kernels::FeatureMap f;
  for (const auto& [name, v] : j.items()) f[name] = number_of(v);
  return f;
}

Json segment_json(const SegmentResult& g) {
  Json o{{"label", g.label}, {"name", g.name}, {"voxels", g.voxels}};
  if (!g.also_labels.empty()) o["also_labels"] = g.also_labels;
  if (!g.display_name.empty()) o["display_name"] = g.display_name;
  if (!g.description.empty()) o["description"] = g.description;
  if (g.codes) {
    o["type"] = code_json(g.codes->type.value, g.codes->type.scheme, g.codes->type.meaning);
    o["category"] = code_json(g.codes->category.value, g.codes->category.scheme, g.codes->category.meaning);
    if (g.codes->anatomic_region)
      o["anatomic_region"] = code_json(g.codes->anatomic_region->value, g.codes->anatomic_region->scheme,
                                       g.codes->anatomic_region->meaning);
  }
  o["colour"] = {g.colour.r, g.colour.g, g.colour.b};
  o["features"] = features_of_json(g.features);
  Json findings = Json::array();
  for (const auto& r : g.findings) {
    Json f{{"rule_set", r.rule_set}, {"fired_rule", r.fired_rule}};
    f["name"] = r.finding ? code_json(r.finding->name.value, r.finding->name.scheme, r.finding->name.meaning) : Json();
    f["value"] = r.finding ? code_json(r.finding->value.value, r.finding->value.scheme, r.finding->value.meaning) : Json();
    f["evidence"] = features_of_json(r.evidence);
    findings.push_back(std::move(f));
  }
  o["findings"] = std::move(findings);
  if (g.prediction)
    o["prediction"] = Json{{"label", g.prediction->label},
                           {"probability", number(g.prediction->probability)},
                           {"positive_probability", number(g.prediction->positive_probability)}};
  if (g.overlap) o["overlap"] = overlap_json(*g.overlap);
  return o;
}

SegmentResult segment_of(const nlohmann::json& j) {
  SegmentResult g;
  g.label = j.at("label").get<int>();
  g.name = j.at("name").get<std::string>();
  g.voxels = j.value("voxels", std::int64_t{0});
  g.also_labels = j.value("also_labels", std::vector<int>{});
  g.display_name = text_of(j, "display_name");
  g.description = text_of(j, "description");
  if (j.contains("type") && j.contains("category")) {
    dicom::codes::SegmentCodes c;
    c.type = code_of<dicom::Code>(j.at("type"));
    c.category = code_of<dicom::Code>(j.at("category"));
    if (j.contains("anatomic_region")) c.anatomic_region = code_of<dicom::Code>(j.at("anatomic_region"));
    g.codes = c;
  }
  if (const auto it = j.find("colour"); it != j.end() && it->is_array() && it->size() == 3)
    g.colour = {(*it)[0].get<std::uint8_t>(), (*it)[1].get<std::uint8_t>(), (*it)[2].get<std::uint8_t>()};
  if (j.contains("features")) g.features = feature_map_of(j.at("features"));
  for (const auto& f : j.value("findings", nlohmann::json::array())) {
    kernels::RuleOutcome r;
    r.rule_set = text_of(f, "rule_set");
    r.fired_rule = text_of(f, "fired_rule");
    if (f.contains("name") && f.at("name").is_object() && f.contains("value") && f.at("value").is_object())
      r.finding = kernels::Finding{code_of<kernels::Code>(f.at("name")), code_of<kernels::Code>(f.at("value"))};
    if (f.contains("evidence")) r.evidence = feature_map_of(f.at("evidence"));
    g.findings.push_back(std::move(r));
  }
  if (const auto it = j.find("prediction"); it != j.end() && it->is_object())
    g.prediction = kernels::Prediction{text_of(*it, "label"), number_of(it->at("probability")),
                                       number_of(it->at("positive_probability"))};
  if (const auto it = j.find("overlap"); it != j.end() && it->is_object()) g.overlap = overlap_of(*it);
  return g;
}

Json chest_json(const ChestReport& r) {
  Json o{{"coverage", r.coverage}, {"coverage_note", r.coverage_note}, {"protocol_remarks", r.protocol_remarks},
         {"densitometry_protocol", r.densitometry_protocol}};
  if (r.both_lungs)
    o["both_lungs"] = Json{{"voxels", r.both_lungs->voxels},
                           {"volume_ml", number(r.both_lungs->volume_ml)},
                           {"laa950_percent", number(r.both_lungs->laa_percent)},
                           {"perc15_hu", number(r.both_lungs->perc15_hu)}};
  Json lm = Json::object();
  for (const auto& [k, v] : r.landmarks) lm[k] = v;
  o["landmarks"] = std::move(lm);
  return o;
}

ChestReport chest_of(const nlohmann::json& j) {
  ChestReport r;
  r.coverage = text_of(j, "coverage");
  r.coverage_note = text_of(j, "coverage_note");
  for (const auto& t : j.value("protocol_remarks", nlohmann::json::array()))
    if (t.is_string()) r.protocol_remarks.push_back(t.get<std::string>());
  r.densitometry_protocol = j.value("densitometry_protocol", true);
  if (const auto it = j.find("both_lungs"); it != j.end() && it->is_object())
    r.both_lungs = LungDensity{it->value("voxels", std::int64_t{0}), number_of(it->at("volume_ml")),
                               number_of(it->at("laa950_percent")), number_of(it->at("perc15_hu"))};
  const nlohmann::json landmarks = j.value("landmarks", nlohmann::json::object());
  for (const auto& [k, v] : landmarks.items())
    if (v.is_number_integer()) r.landmarks[k] = v.get<int>();
  return r;
}

}  // namespace

Json to_json(const SeriesSummary& s) {
  Json o{{"key", s.key},
         {"series_uid", s.info.series_uid},
         {"study_uid", s.info.study_uid},
         {"modality", s.info.modality},
         {"body_part", s.info.body_part},
         {"series_description", s.info.series_description},
         {"protocol_name", s.info.protocol_name},
         {"frame_of_reference_uid", s.info.frame_of_reference_uid},
         {"units", s.info.units},
         {"photometric", s.info.photometric},
         {"profile", s.profile},
         {"dims", {s.depth, s.rows, s.cols}},
         {"spacing_mm", {number(s.spacing.slice), number(s.spacing.row), number(s.spacing.col)}},
         {"measured_on", s.measured_on_filtered ? "filtered image" : "original values"}};
  Json timings = Json::object();
  for (const auto& t : s.timings) timings[t.stage] = number(t.ms);
  o["timings_ms"] = std::move(timings);
  o["preview"] = s.preview.filename().string();
  o["seg"] = s.seg_file.filename().string();
  o["sr"] = s.sr_file.filename().string();
  o["error"] = s.error.empty() ? Json() : Json(s.error);
  o["notes"] = s.notes;
  if (s.chest) o["chest"] = chest_json(*s.chest);
  Json segments = Json::array();
  for (const auto& g : s.segments) segments.push_back(segment_json(g));
  o["segments"] = std::move(segments);
  return o;
}

SeriesSummary summary_from_json(const nlohmann::json& j) {
  SeriesSummary s;
  s.key = j.at("key").get<std::string>();
  s.info.series_uid = text_of(j, "series_uid");
  s.info.study_uid = text_of(j, "study_uid");
  s.info.modality = text_of(j, "modality");
  s.info.body_part = text_of(j, "body_part");
  s.info.series_description = text_of(j, "series_description");
  s.info.protocol_name = text_of(j, "protocol_name");
  s.info.frame_of_reference_uid = text_of(j, "frame_of_reference_uid");
  s.info.units = text_of(j, "units");
  s.info.photometric = text_of(j, "photometric");
  s.profile = text_of(j, "profile");
  if (const auto& d = j.at("dims"); d.is_array() && d.size() == 3) {
    s.depth = d[0].get<int>();
    s.rows = d[1].get<int>();
    s.cols = d[2].get<int>();
  }
  if (const auto& sp = j.at("spacing_mm"); sp.is_array() && sp.size() == 3)
    s.spacing = Spacing{number_of(sp[2]), number_of(sp[1]), number_of(sp[0])};
  const nlohmann::json timings = j.value("timings_ms", nlohmann::json::object());
  for (const auto& [stage, ms] : timings.items()) s.timings.push_back({stage, number_of(ms)});
  s.preview = text_of(j, "preview");
  s.seg_file = text_of(j, "seg");
  s.sr_file = text_of(j, "sr");
  s.error = text_of(j, "error");
  for (const auto& n : j.value("notes", nlohmann::json::array()))
    if (n.is_string()) s.notes.push_back(n.get<std::string>());
  if (const auto it = j.find("chest"); it != j.end() && it->is_object()) s.chest = chest_of(*it);
  s.measured_on_filtered = text_of(j, "measured_on") == "filtered image";
  for (const auto& g : j.value("segments", nlohmann::json::array())) s.segments.push_back(segment_of(g));
  return s;
}

Json to_json(const dicom::Rejected& r) {
  return Json{{"path", r.path}, {"reason", r.reason}, {"files", r.files.size()}};
}

Json rejected_event_json(const dicom::Rejected& r) {
  return Json{{"path", r.path}, {"reason", r.reason}, {"files", r.files}};
}

dicom::Rejected rejected_from_json(const nlohmann::json& j) {
  dicom::Rejected r;
  r.path = text_of(j, "path");
  r.reason = text_of(j, "reason");
  if (const auto it = j.find("files"); it != j.end() && it->is_array())
    for (const auto& f : *it)
      if (f.is_string()) r.files.push_back(f.get<std::string>());
  if (r.files.empty()) r.files.push_back(r.path);
  return r;
}

std::string features_json(const std::vector<SeriesSummary>& series, const std::vector<dicom::Rejected>& rejected) {
  Json o{{"series", Json::array()}, {"rejected", Json::array()}};
  for (const auto& s : series) o["series"].push_back(to_json(s));
  for (const auto& r : rejected) o["rejected"].push_back(to_json(r));
  o["feature_catalogue"] = Json::object();  // each IBSI tag present: its code, name, family and unit
  for (const auto& e : catalogue_of(series))
    o["feature_catalogue"][e->tag] = Json{{"ibsi_code", e->code}, {"name", e->name}, {"family", e->family}, {"unit", e->unit}};
  return o.dump(2) + "\n";
}

std::vector<const kernels::ibsi::CatalogueEntry*> catalogue_of(const std::vector<SeriesSummary>& series) {
  std::set<const kernels::ibsi::CatalogueEntry*> seen;
  for (const auto& s : series)
    for (const auto& g : s.segments)
      for (const auto& [name, v] : g.features)
        if (const auto* e = kernels::ibsi::find_in_catalogue(name)) seen.insert(e);
  std::vector<const kernels::ibsi::CatalogueEntry*> out(seen.begin(), seen.end());
  std::sort(out.begin(), out.end());  // catalogue order: the entries are one vector
  return out;
}

std::string feature_catalogue_csv(const std::vector<SeriesSummary>& series) {
  std::string o = "tag,ibsi_code,name,family,unit\n";
  for (const auto* e : catalogue_of(series))
    o += fmt::format("{},{},{},{},{}\n", csv_field(e->tag), csv_field(e->code), csv_field(e->name), csv_field(e->family),
                     csv_field(e->unit));
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
        o += ',';
        if (it != g.features.end()) o += csv_number(it->second);
      }
      for (const auto& r : rule_sets) {
        std::string v;
        for (const auto& f : g.findings)
          if (f.rule_set == r && f.finding) v = f.finding->value.meaning;
        o += ',';
        o += csv_field(v);
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

std::string labelled_description(std::string_view research_label, std::string_view text) {
  std::string out = research_label.empty() ? std::string(text) : fmt::format("{} - {}", research_label, text);
  if (out.size() > 64) out.resize(64);
  return out;
}

namespace {

std::string filters_text(const Profile& p) {
  std::vector<std::string> f;
  if (p.preprocess.median_ksize)
    f.push_back(fmt::format("{0}x{0} median-filtered", p.preprocess.median_ksize));
  if (p.preprocess.gaussian_sigma_mm > 0) f.push_back(fmt::format("Gaussian (sigma {:g} mm)", p.preprocess.gaussian_sigma_mm));
  if (f.empty()) return "unfiltered";
  std::string out = f.front();
  for (std::size_t i = 1; i < f.size(); ++i) out += " and " + f[i];
  return out;
}

// How the values were measured, for the SR and the SEG's algorithm parameters.
std::string measured_on_text(const SeriesContext& c) {
  const std::string filt = filters_text(*c.profile);
  if (c.measured_on_filtered) return fmt::format("values measured on the {} image (as the masks)", filt);
  if (filt == "unfiltered") return "values measured on the image as decoded (no filter)";
  return fmt::format("masks made on the {} image; every value measured on the original, unfiltered {}", filt,
                     c.volume.info.units == "HU" ? "HU" : "values");
}

int volume_decimals(double ml) { return ml < 10 ? 2 : ml < 1000 ? 1 : 0; }

}  // namespace

dicom::SegSpec seg_spec_for(SeriesContext& c, bool keep_empty_frames) {
  if (c.resampled)
    throw std::invalid_argument("volume was resampled: the label map no longer matches the source frames");
  if (c.segments.empty()) throw std::invalid_argument("no segment to write");
  const auto& vol = c.volume;
  if (vol.sources.size() != c.labels.size() || vol.sources.empty())
    throw std::invalid_argument("volume has no source frames");
  const Profile& prof = *c.profile;

  // Renumber labels to the SEG's segment numbers 1..N (the labels a segment also covers follow).
  cv::Mat lut(1, 256, CV_8U, cv::Scalar(0));
  for (std::size_t i = 0; i < c.segments.size(); ++i)
    lut.at<std::uint8_t>(c.segments[i].label) = static_cast<std::uint8_t>(i + 1);
  for (auto& s : c.labels) cv::LUT(s, lut, s);
  for (std::size_t i = 0; i < c.segments.size(); ++i) {
    auto& g = c.segments[i];
    std::vector<int> also;
    for (int l : g.also_labels)
      if (const int n = lut.at<std::uint8_t>(l); n > 0 && n != static_cast<int>(i + 1)) also.push_back(n);
    g.also_labels = std::move(also);
    g.label = static_cast<int>(i + 1);
  }

  dicom::SegSpec seg;
  seg.source_file = vol.sources.front().path;
  seg.source_series_uid = vol.info.series_uid;
  seg.geom = vol.geom;
  seg.sources = vol.sources;
  seg.label_map = c.labels;  // shallow: shares the slices
  seg.series_description = labelled_description(prof.research_label, fmt::format("pacsnode {} segmentation", prof.name));
  seg.keep_empty_frames = keep_empty_frames;
  seg.content_description = labelled_description(prof.research_label, fmt::format("pacsnode profile {}", prof.name));
  if (prof.recipe == Recipe::ct_chest) {
    const auto& ch = prof.chest;
    seg.algorithm_family = dicom::codes::algorithm_family_morphological_operations();
    seg.algorithm_name = "HU thresholds, airway region growing, closing, hole filling";
    seg.algorithm_parameters = fmt::format(
        "pacsnode ct-chest: masks from the {} image; body >= {:g} HU (couch cut by a {:g} mm opening); airways "
        "grown from the trachea through lumen air <= {:g} HU with leak control; lungs: air <= {:g} HU without the "
        "airways, closed ({:g} mm) and hole-filled; lesion candidates: tissue >= {:g} HU that a {:g} mm closing adds "
        "to a lung; dense >= {:g} HU. {}.",
        filters_text(prof), ch.body_min_hu, ch.body_open_mm, ch.airway_max_hu, ch.air_max_hu, ch.lung_close_radius_mm,
        ch.lesion_min_hu, ch.lesion_close_mm, ch.dense_min_hu, measured_on_text(c));
  } else if (prof.generic.window) {
    seg.algorithm_family = dicom::codes::algorithm_family_morphological_operations();
    seg.algorithm_name = "Window threshold, largest component, hole filling";
    seg.algorithm_parameters = fmt::format("pacsnode {}: window [{:g}, {:g}] on the {} image", prof.name,
                                           prof.generic.window->lo, prof.generic.window->hi, filters_text(prof));
  } else {
    seg.algorithm_family = dicom::codes::algorithm_family_histogram_analysis();
    seg.algorithm_name = "Otsu threshold, largest component, hole filling";
    seg.algorithm_parameters = fmt::format("pacsnode {}: Otsu threshold on the {} image", prof.name, filters_text(prof));
  }
  seg.lossy_compression = vol.acquisition.lossy_compression;
  seg.lossy_ratio = vol.acquisition.lossy_ratio;
  seg.lossy_method = vol.acquisition.lossy_method;
  for (const auto& g : c.segments) {
    dicom::SegmentSpec s;
    s.label = g.display_name.empty() ? g.name : g.display_name.substr(0, 64);
    s.tracking_id = s.label;
    s.description = g.description;
    const auto codes = g.codes ? *g.codes : *dicom::codes::segment_codes("tissue");
    s.category = codes.category;
    s.type = codes.type;
    s.anatomic_region = codes.anatomic_region;
    s.cielab = cielab_of(g.colour);
    s.also_labels = g.also_labels;
    seg.segments.push_back(std::move(s));
  }
  return seg;
}

dicom::WrittenObject write_sr_for(const SeriesContext& c, const dicom::SegSpec& seg, const dicom::WrittenObject& written,
                                  const std::filesystem::path& dir, const std::optional<dicom::DocumentRef>& replaces,
                                  const dicom::SeriesPlacement& placement) {
  const auto& vol = c.volume;
  const Profile& prof = *c.profile;
  const bool chest = prof.recipe == Recipe::ct_chest && vol.info.modality == "CT";
  dicom::SrSpec sr;
  sr.series_uid = placement.series_uid;
  if (placement.series_number > 0) sr.series_number = placement.series_number;
  if (placement.instance_number > 0) sr.instance_number = placement.instance_number;
  sr.predecessor = replaces;
  sr.source_file = seg.source_file;
  sr.source_series_uid = vol.info.series_uid;
  sr.sources = vol.sources;
  sr.seg = written;
  // Procedure Reported (TID 1500 row 4) stays in CID 100, which has no chest CT: pixelmed's
  // validator rejects a code from outside it ("not found in context group 100"). The chest CT is
  // the Performed Procedure Code Sequence, which viewers show with the document.
  sr.procedure_reported = dicom::codes::procedure_for_modality(vol.info.modality);
  if (chest) sr.performed_procedure = dicom::codes::ct_chest();
  sr.series_description = labelled_description(prof.research_label, fmt::format("pacsnode {} measurements", prof.name));
  sr.algorithm = dicom::AlgorithmId{fmt::format("pacsnode {}", prof.name), seg.algorithm_version,
                                    {measured_on_text(c)}};
  const bool hu = vol.info.units == "HU";
  // Qualification of every finding: the research label, the rule that gave it and, for ct-chest,
  // the protocol check.
  std::string protocol_note;
  if (c.chest) {
    const auto& r = *c.chest;
    std::string protocol = r.protocol_remarks.empty() ? std::string("nothing to remark") : r.protocol_remarks.front();
    for (std::size_t i = 1; i < r.protocol_remarks.size(); ++i) protocol += "; " + r.protocol_remarks[i];
    protocol_note = fmt::format(
        " Protocol check: {}. {}", protocol,
        r.densitometry_protocol
            ? "Nothing in the headers argues against densitometry (breath hold and calibration are not recorded)."
            : "Not a densitometry protocol: LAA%-950 and Perc15 are biased here; interpret with caution.");
  }
  const auto trim = [](std::string t) {
    while (!t.empty() && t.front() == ' ') t.erase(t.begin());
    return t;
  };
  const auto qualification = [&](const kernels::RuleOutcome& fd) {
    std::string rule = fd.fired_rule.empty() ? std::string("no rule fired") : "rule " + fd.fired_rule;
    return trim(fmt::format("{}{} {}: {}, on {}.{}", prof.research_label, prof.research_label.empty() ? "" : ".",
                            fd.finding->name.meaning, rule, hu ? "the original HU" : "the measured values",
                            protocol_note));
  };
  std::map<std::string, dicom::QualitativeEvaluation> document;  // per concept: Present wins
  for (std::size_t i = 0; i < c.segments.size(); ++i) {
    const SegmentResult& g = c.segments[i];
    dicom::MeasurementGroupSpec grp;
    grp.tracking_id = seg.segments[i].label;
    if (i < written.tracking_uids.size()) grp.tracking_uid = written.tracking_uids[i];
    grp.finding = seg.segments[i].type;
    grp.finding_site = seg.segments[i].anatomic_region;
    grp.segment_number = static_cast<int>(i + 1);
    const auto f = [&](std::string_view name) -> std::optional<double> {
      const auto it = g.features.find(std::string(name));
      if (it == g.features.end() || !std::isfinite(it->second)) return std::nullopt;
      return it->second;
    };
    if (const auto v = f("volume_ml"))
      grp.measurements.push_back({dicom::codes::volume(), *v, dicom::codes::unit_ml(), std::nullopt,
                                  dicom::codes::sum_of_voxel_volumes(), volume_decimals(*v)});
    if (hu)
      if (const auto v = f("mean_hu"))
        grp.measurements.push_back({dicom::codes::attenuation_coefficient(), *v, dicom::codes::unit_hu(),
                                    dicom::codes::mean(), std::nullopt, 0, true});
    if (const auto v = f(laa_feature_name(prof.chest.laa_threshold_hu)))
      grp.measurements.push_back(
          {dicom::codes::emphysema_index(), *v, dicom::codes::unit_percent(), std::nullopt, std::nullopt, 1, true});
    if (const auto v = f(kPerc15Feature))
      grp.measurements.push_back({dicom::codes::attenuation_coefficient(), *v, dicom::codes::unit_hu(),
                                  dicom::codes::percentile_15(), std::nullopt, 0, true});
    if (g.name.starts_with("lesion_candidate"))
      if (const auto v = f("morph_diam"))
        grp.measurements.push_back(
            {dicom::codes::diameter(), *v, dicom::codes::unit_mm(), dicom::codes::maximum(), std::nullopt, 1});
    for (const auto& fd : g.findings) {
      if (!fd.finding) continue;
      const dicom::QualitativeEvaluation q{to_dicom(fd.finding->name), to_dicom(fd.finding->value)};
      grp.qualitative.push_back(q);
      grp.text.push_back({dicom::codes::comment(), qualification(fd)});
      auto [it, fresh] = document.try_emplace(fd.finding->name.value + "^" + fd.finding->name.scheme, q);
      if (!fresh && q.value == dicom::codes::present()) it->second = q;
    }
    if (g.name.starts_with("lesion_candidate") && !g.description.empty())
      grp.text.push_back({dicom::codes::comment(), g.description});
    if (grp.measurements.empty()) continue;
    sr.groups.push_back(std::move(grp));
  }
  for (auto& [k, q] : document) sr.qualitative.push_back(q);
  if (c.chest) {
    const bool complete = c.chest->coverage == "complete";
    sr.qualitative.push_back({dicom::codes::lung_coverage(),
                              complete ? dicom::codes::complete() : dicom::codes::incomplete()});
    if (!complete)
      sr.text_evaluations.push_back(
          {dicom::codes::comment(),
           fmt::format("Lung coverage {}{}: volumes cover the scanned part only; no emphysema conclusion.",
                       c.chest->coverage, c.chest->coverage_note.empty() ? "" : " (" + c.chest->coverage_note + ")")});
  }
  sr.text_evaluations.push_back(
      {dicom::codes::comment(),
       trim(fmt::format("{} {}: {}.", prof.research_label, fmt::format("pacsnode {}", prof.name), measured_on_text(c)))});
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
