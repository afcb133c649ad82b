#define BOOST_TEST_MODULE conformance_statement
#include <boost/test/unit_test.hpp>

// docs/conformance-statement.md against the code, so that the document cannot drift. Its tables
// are marked <!-- conformance:NAME --> ... <!-- /conformance:NAME -->, and each is compared with
// what the code uses, taken from the code itself (never a copy in this file):
//   * the Storage SCP's transfer syntaxes, in order of preference (scp::accepted_transfer_syntaxes)
//     and abstract syntaxes (scp::known_abstract_syntaxes, scp::kStorageSopClassRoot);
//   * the Storage SCU's transfer syntaxes (dicom::native_transfer_syntaxes);
//   * what the builders write, run over a small synthetic CT: the SOP classes of the SEG, the SR
//     and a key image, the SR's templates, every code and coding scheme in the three objects,
//     the implementation identification in their meta header, no private attribute, and the
//     Specific Character Set copied from the source;
//   * every code of dicom::codes and every private coding scheme the builders declare;
//   * every configuration key the document names exists in config/pacsnode.toml.
#include <algorithm>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <toml++/toml.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/dimse.h>

#include "dicom/codes.h"
#include "dicom/key_images.h"
#include "dicom/seg_builder.h"
#include "dicom/sr_builder.h"
#include "dicom/store_scu.h"
#include "scp/negotiation.h"
#include "support/files.h"
#include "support/paths.h"
#include "support/seg_sources.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;

namespace {

const fs::path& document_path() {
  static const fs::path p = testsupport::source_dir() / "docs/conformance-statement.md";
  return p;
}

const std::string& document() {
  static const std::string text = testsupport::read_text(document_path());
  BOOST_TEST_REQUIRE(!text.empty(), "cannot read " << document_path());
  return text;
}

// The text between <!-- conformance:NAME --> and <!-- /conformance:NAME -->.
std::string section(const std::string& name) {
  const std::string open = "<!-- conformance:" + name + " -->", close = "<!-- /conformance:" + name + " -->";
  const auto& doc = document();
  const auto a = doc.find(open);
  const auto b = a == std::string::npos ? std::string::npos : doc.find(close, a);
  BOOST_TEST_REQUIRE((a != std::string::npos && b != std::string::npos),
                     document_path().filename() << " has no section marked " << open << " ... " << close);
  BOOST_TEST_REQUIRE(doc.find(open, a + open.size()) == std::string::npos, "section " << name << " is marked twice");
  return doc.substr(a + open.size(), b - a - open.size());
}

// UIDs written in backticks, in the order of the text.
std::vector<std::string> uids_in(const std::string& text) {
  static const std::regex uid("`([0-9]+(\\.[0-9]+)+)`");
  std::vector<std::string> out;
  for (std::sregex_iterator it(text.begin(), text.end(), uid), end; it != end; ++it) out.push_back((*it)[1].str());
  return out;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// Cells of the body rows of the Markdown tables in `text` (header and delimiter rows left out),
// trimmed, without backticks.
std::vector<std::vector<std::string>> table_rows(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  std::string line;
  bool header = true;  // the first row of each table is its header
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line.front() != '|') {
      header = true;
      continue;
    }
    if (line.find_first_not_of("|-: ") == std::string::npos) continue;  // | --- | --- |
    if (header) {
      header = false;
      continue;
    }
    std::vector<std::string> cells;
    std::string cell;
    for (std::size_t i = 1; i < line.size(); ++i) {
      if (line[i] == '|' && line[i - 1] != '\\') {
        cells.push_back(trim(cell));
        cell.clear();
      } else if (line[i] != '`') {
        cell += line[i];
      }
    }
    rows.push_back(cells);
  }
  return rows;
}

template <class Range>
std::string joined(const Range& r) {
  std::string out;
  for (const auto& s : r) out += (out.empty() ? "" : ", ") + std::string(s);
  return out.empty() ? "(none)" : out;
}

// Both directions: what the code has that the document lacks, and the reverse.
void expect_same_set(const std::set<std::string>& code, const std::set<std::string>& doc, const std::string& what) {
  std::vector<std::string> missing, extra;
  std::set_difference(code.begin(), code.end(), doc.begin(), doc.end(), std::back_inserter(missing));
  std::set_difference(doc.begin(), doc.end(), code.begin(), code.end(), std::back_inserter(extra));
  BOOST_TEST(missing.empty(), what << ": in the code but not in the document: " << joined(missing));
  BOOST_TEST(extra.empty(), what << ": in the document but not in the code: " << joined(extra));
}

// Everything of interest in one written object, collected over all nesting levels.
struct Contents {
  std::string sop_class, charset, implementation_uid, implementation_version;
  std::set<std::pair<std::string, std::string>> codes;  // (Code Value, Coding Scheme Designator)
  std::set<std::string> templates;                      // Template Identifier
  std::vector<std::string> private_tags;
};

void walk(DcmItem& item, Contents& c) {
  OFString value, scheme;
  if (item.findAndGetOFString(DCM_CodeValue, value).good() &&
      item.findAndGetOFString(DCM_CodingSchemeDesignator, scheme).good())
    c.codes.insert({value.c_str(), scheme.c_str()});
  if (item.findAndGetOFString(DCM_TemplateIdentifier, value).good()) c.templates.insert(value.c_str());
  for (unsigned long i = 0; i < item.card(); ++i) {
    DcmElement* e = item.getElement(i);
    if (e->getTag().isPrivate()) c.private_tags.push_back(e->getTag().toString().c_str());
    if (e->ident() != EVR_SQ) continue;
    auto* seq = static_cast<DcmSequenceOfItems*>(e);
    for (unsigned long k = 0; k < seq->card(); ++k) walk(*seq->getItem(k), c);
  }
}

Contents read(const fs::path& file) {
  DcmFileFormat ff;
  BOOST_TEST_REQUIRE(ff.loadFile(file.c_str()).good(), "cannot read " << file);
  Contents c;
  OFString v;
  DcmDataset& d = *ff.getDataset();
  d.findAndGetOFString(DCM_SOPClassUID, v);
  c.sop_class = v.c_str();
  d.findAndGetOFStringArray(DCM_SpecificCharacterSet, v);
  c.charset = v.c_str();
  ff.getMetaInfo()->findAndGetOFString(DCM_ImplementationClassUID, v);
  c.implementation_uid = v.c_str();
  ff.getMetaInfo()->findAndGetOFString(DCM_ImplementationVersionName, v);
  c.implementation_version = v.c_str();
  walk(d, c);
  return c;
}

// The character set the synthetic source declares: the results must carry it.
constexpr const char* kSourceCharset = "ISO_IR 192";

// A SEG, a TID 1500 SR and a key image written by the builders over a small synthetic CT, with
// the codes and options the daemon's analysis uses (analysis/results.cpp): every segment code
// of dicom::codes, every SR concept and unit.
struct Written {
  testsupport::TempDir dir{"conformance"};
  Contents seg, sr, key;

  Written() {
    const auto files =
        testsupport::write_synthetic_ct(dir.path / "ct", 16, 20, 3, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, 0.8, 0.8, 2.0);
    for (const auto& f : files) {  // a source in UTF-8
      DcmFileFormat ff;
      BOOST_TEST_REQUIRE(ff.loadFile(f.c_str()).good());
      ff.getDataset()->putAndInsertString(DCM_SpecificCharacterSet, kSourceCharset);
      BOOST_TEST_REQUIRE(ff.saveFile(f.c_str(), EXS_LittleEndianExplicit).good());
    }
    const auto src = testsupport::load_series(files);

    using namespace dicom;
    const std::vector<std::string> names{"body",      "lungs",   "left_lung", "right_lung", "bone", "tissue", "organ",
                                         "emphysema", "airways", "dense",     "lesion_candidate_1"};
    SegSpec seg_spec = testsupport::seg_spec_over(src);
    seg_spec.label_map.resize(src.frames.size());
    for (auto& lm : seg_spec.label_map) {
      lm = cv::Mat(16, 20, CV_8U, cv::Scalar(0));
      for (std::size_t k = 0; k < names.size(); ++k) lm.at<std::uint8_t>(static_cast<int>(k), 1) = static_cast<std::uint8_t>(k + 1);
    }
    for (const auto& n : names) {
      const auto c = codes::segment_codes(n);
      BOOST_TEST_REQUIRE(c.has_value(), "no codes for segment " << n);
      SegmentSpec s;
      s.label = n;
      s.category = c->category;
      s.type = c->type;
      s.anatomic_region = c->anatomic_region;
      seg_spec.segments.push_back(s);
    }
    const WrittenObject seg_written = write_seg(seg_spec, dir.path / "seg.dcm");

    SrSpec sr_spec;
    sr_spec.source_file = src.first_file;
    sr_spec.sources = src.frames;
    sr_spec.seg = seg_written;
    sr_spec.procedure_reported = codes::procedure_for_modality("CT");
    sr_spec.performed_procedure = codes::ct_chest();
    sr_spec.algorithm = AlgorithmId{"pacsnode ct-chest", "0.1.0", {"values measured on the original HU"}};
    for (std::size_t k = 1; k <= names.size(); ++k) {
      const auto& segment = seg_spec.segments[k - 1];
      MeasurementGroupSpec g;
      g.tracking_id = segment.label;
      g.segment_number = static_cast<int>(k);
      g.finding = segment.type;
      g.finding_site = segment.anatomic_region;
      g.measurements.push_back({codes::volume(), 12.5, codes::unit_ml(), std::nullopt, codes::sum_of_voxel_volumes(), 1});
      g.measurements.push_back({codes::attenuation_coefficient(), -850, codes::unit_hu(), codes::mean(), std::nullopt, 0, true});
      g.measurements.push_back({codes::emphysema_index(), 3.2, codes::unit_percent(), std::nullopt, std::nullopt, 1, true});
      g.measurements.push_back({codes::attenuation_coefficient(), -930, codes::unit_hu(), codes::percentile_15(), std::nullopt, 0, true});
      g.measurements.push_back({codes::diameter(), 7.5, codes::unit_mm(), codes::maximum(), std::nullopt, 1});
      g.qualitative.push_back({codes::emphysema(), codes::absent()});
      g.text.push_back({codes::comment(), "RESEARCH USE ONLY."});
      sr_spec.groups.push_back(g);
    }
    sr_spec.qualitative.push_back({codes::emphysema(), codes::present()});
    sr_spec.qualitative.push_back({codes::lung_coverage(), codes::incomplete()});
    sr_spec.text_evaluations.push_back({codes::comment(), "RESEARCH USE ONLY."});
    const WrittenObject sr_written = write_sr(sr_spec, dir.path / "sr.dcm");

    KeyImageSpec key_spec;
    key_spec.source_file = src.first_file;
    key_spec.sources = src.frames;
    key_spec.images = {cv::Mat(16, 20, CV_8UC3, cv::Scalar(10, 20, 30))};
    key_spec.slice_index = {0};
    const auto key_written = write_key_images(key_spec, dir.path / "key");
    BOOST_TEST_REQUIRE(key_written.size() == 1u);

    seg = read(seg_written.path);
    sr = read(sr_written.path);
    key = read(key_written.front().path);
    // What the builders report is what they wrote.
    BOOST_TEST(seg.sop_class == seg_written.sop_class_uid);
    BOOST_TEST(sr.sop_class == sr_written.sop_class_uid);
    BOOST_TEST(key.sop_class == key_written.front().sop_class_uid);
  }
  std::vector<const Contents*> all() const { return {&seg, &sr, &key}; }
};

const Written& written() {
  static const Written w;
  return w;
}

}  // namespace

BOOST_AUTO_TEST_CASE(scp_transfer_syntaxes_are_the_documented_ones_in_order) {
  const auto code = scp::accepted_transfer_syntaxes();
  const std::vector<std::string> expected(code.begin(), code.end());
  const auto doc = uids_in(section("scp-transfer-syntaxes"));
  expect_same_set({expected.begin(), expected.end()}, {doc.begin(), doc.end()}, "SCP transfer syntaxes");
  BOOST_TEST(doc == expected, "the SCP's order of preference differs from the document's: code "
                                  << joined(expected) << "; document " << joined(doc));
}

BOOST_AUTO_TEST_CASE(scp_abstract_syntaxes_are_the_documented_ones) {
  const auto& known = scp::known_abstract_syntaxes();
  const auto doc = uids_in(section("scp-abstract-syntaxes"));
  const std::set<std::string> doc_set(doc.begin(), doc.end());
  BOOST_TEST(doc.size() == doc_set.size(), "a UID is listed twice in the SCP's SOP class table");
  expect_same_set(known, doc_set, "SOP classes the Storage SCP accepts");
  for (const auto& uid : doc) BOOST_TEST(scp::accepts_abstract_syntax(uid), uid << " is listed but refused");

  // The count the document states, and the rule for storage classes newer than DCMTK.
  const std::size_t storage = known.size() - known.count(UID_VerificationSOPClass);
  const std::string count = fmt::format("{} storage SOP classes", storage);
  BOOST_TEST(document().find(count) != std::string::npos, "the document does not say \"" << count << "\"");
  BOOST_TEST(section("scp-sop-classes").find("`" + std::string(scp::kStorageSopClassRoot) + "`") != std::string::npos,
             "the SCP section does not name the storage root " << scp::kStorageSopClassRoot);
  BOOST_TEST(scp::accepts_abstract_syntax(std::string(scp::kStorageSopClassRoot) + "99999.1"));

  // Verification in the SCP's and the SCU's summary.
  for (const char* s : {"scp-sop-classes", "scu-sop-classes"}) {
    const auto uids = uids_in(section(s));
    BOOST_TEST((std::find(uids.begin(), uids.end(), UID_VerificationSOPClass) != uids.end()),
               s << " lacks the Verification SOP class");
  }
}

BOOST_AUTO_TEST_CASE(scu_transfer_syntaxes_are_the_documented_ones_in_order) {
  const auto& expected = dicom::native_transfer_syntaxes();
  const auto doc = uids_in(section("scu-transfer-syntaxes"));
  BOOST_TEST(doc == expected, "SCU transfer syntaxes: code " << joined(expected) << "; document " << joined(doc));
}

BOOST_AUTO_TEST_CASE(scu_sop_classes_are_those_of_the_objects_written) {
  const auto& w = written();
  const std::set<std::string> code{w.seg.sop_class, w.sr.sop_class, w.key.sop_class, UID_VerificationSOPClass};
  const auto doc = uids_in(section("scu-sop-classes"));
  expect_same_set(code, {doc.begin(), doc.end()}, "SOP classes the Storage SCU sends");
  // The node's own results sent back to it are stored (and recognised, not analysed).
  for (const auto* c : w.all()) BOOST_TEST(scp::accepts_abstract_syntax(c->sop_class), c->sop_class);
  // The annex of each created object names its SOP class.
  BOOST_TEST(section("annex-seg").find("`" + w.seg.sop_class + "`") != std::string::npos);
  BOOST_TEST(section("annex-sr").find("`" + w.sr.sop_class + "`") != std::string::npos);
  BOOST_TEST(section("annex-key-images").find("`" + w.key.sop_class + "`") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(sr_templates_are_documented) {
  const auto& tids = written().sr.templates;
  BOOST_TEST_REQUIRE(!tids.empty(), "the SR names no template");
  BOOST_TEST(tids.count("1500") == 1u, "the SR's root template is not TID 1500: " << joined(tids));
  std::set<std::string> doc;  // first cell of each row: "TID 1500"
  for (const auto& row : table_rows(section("templates")))
    if (!row.empty()) doc.insert(row[0]);
  for (const auto& t : tids) BOOST_TEST(doc.count("TID " + t) == 1u, "TID " << t << " is not in the templates table");
}

BOOST_AUTO_TEST_CASE(every_code_is_documented) {
  // Rows: | Code Value | Coding Scheme Designator | Code Meaning | ... |
  std::set<std::pair<std::string, std::string>> ours, others;
  for (const auto& row : table_rows(section("codes")))
    if (row.size() >= 2) ours.insert({row[0], row[1]});
  for (const auto& row : table_rows(section("template-codes")))
    if (row.size() >= 2) others.insert({row[0], row[1]});
  BOOST_TEST_REQUIRE(!ours.empty(), "the codes table is empty or not a table");

  std::set<std::pair<std::string, std::string>> code;
  for (const auto* c : dicom::codes::all()) code.insert({c->value, c->scheme});
  auto name = [](const std::pair<std::string, std::string>& c) { return "(" + c.first + ", " + c.second + ")"; };
  for (const auto& c : code) BOOST_TEST(ours.count(c) == 1u, "code " << name(c) << " of dicom::codes is not documented");
  for (const auto& c : ours) BOOST_TEST(code.count(c) == 1u, "documented code " << name(c) << " is not in dicom::codes");

  // Every code in the objects written, also those DCMTK's templates put there.
  for (const auto* obj : written().all())
    for (const auto& c : obj->codes)
      BOOST_TEST((ours.count(c) || others.count(c)), "code " << name(c) << " in a " << dcmFindNameOfUID(obj->sop_class.c_str(), "?")
                                                              << " written by the builders is not documented");
}

BOOST_AUTO_TEST_CASE(every_coding_scheme_is_documented) {
  std::set<std::string> code;
  for (const auto* c : dicom::codes::all()) code.insert(c->scheme);
  for (const auto& s : dicom::codes::known_private_schemes()) code.insert(s.designator);
  for (const auto* obj : written().all())
    for (const auto& c : obj->codes) code.insert(c.second);
  std::set<std::string> doc;
  for (const auto& row : table_rows(section("coding-schemes")))
    if (!row.empty()) doc.insert(row[0]);
  expect_same_set(code, doc, "coding scheme designators");
  // The private ones are declared in the objects (Coding Scheme Identification Sequence): say so.
  const auto text = section("coding-schemes");
  for (const auto& s : dicom::codes::known_private_schemes())
    BOOST_TEST(text.find(s.name) != std::string::npos, "the name of the private scheme " << s.designator << " is not given");
}

BOOST_AUTO_TEST_CASE(implementation_identification_is_documented) {
  const auto text = section("implementation");
  for (const auto* obj : written().all()) {
    BOOST_TEST(!obj->implementation_uid.empty());
    BOOST_TEST(text.find("`" + obj->implementation_uid + "`") != std::string::npos,
               "Implementation Class UID " << obj->implementation_uid << " is not documented");
    BOOST_TEST(text.find("`" + obj->implementation_version + "`") != std::string::npos,
               "Implementation Version Name " << obj->implementation_version << " is not documented");
  }
}

BOOST_AUTO_TEST_CASE(no_private_attributes_as_documented) {
  for (const auto* obj : written().all())
    BOOST_TEST(obj->private_tags.empty(), obj->sop_class << " has private attributes: " << joined(obj->private_tags));
  BOOST_TEST(section("private-attributes").find("None") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(specific_character_set_is_copied_from_the_source) {
  // The document says the SEG, SR and key images take the source's Specific Character Set.
  for (const auto* obj : written().all()) BOOST_TEST(obj->charset == kSourceCharset, obj->sop_class);
  BOOST_TEST(section("character-sets").find("copied") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(store_statuses_are_documented) {
  // The statuses scp/store_provider.cpp answers C-STORE with (the DCMTK constants it uses).
  const auto text = section("scp-store-status");
  for (const Uint16 s : {Uint16(STATUS_Success), Uint16(STATUS_STORE_Refused_OutOfResources),
                         Uint16(STATUS_STORE_Error_CannotUnderstand)})
    BOOST_TEST(text.find(fmt::format("0x{:04X}", s)) != std::string::npos, fmt::format("status 0x{:04X}", s));
}

BOOST_AUTO_TEST_CASE(configuration_keys_exist) {
  const auto file = testsupport::source_dir() / "config/pacsnode.toml";
  const auto config = toml::parse_file(file.string());
  // [[destination]] has no default: the file shows its keys in a commented-out example.
  const std::string raw = testsupport::read_text(file);
  const auto example = raw.find("# [[destination]]");
  BOOST_TEST_REQUIRE(example != std::string::npos);
  static const std::regex key("`([a-z]+)\\.([a-z_]+)`");
  const auto text = section("configuration");
  int n = 0;
  for (std::sregex_iterator it(text.begin(), text.end(), key), end; it != end; ++it, ++n) {
    const std::string table = (*it)[1].str(), name = (*it)[2].str();
    const bool found = table == "destination" ? raw.find("# " + name + " = ", example) != std::string::npos
                                              : config[table][name].node() != nullptr;
    BOOST_TEST(found, "configuration key " << table << "." << name << " is not in config/pacsnode.toml");
  }
  BOOST_TEST(n >= 10, "the configuration section names only " << n << " keys");
}
