#define BOOST_TEST_MODULE cli_analyze_ibsi
#include <boost/test/unit_test.hpp>

// `pacsnode analyze` as a radiomics tool (issue #13): a mask given from outside (NIfTI, RTSTRUCT
// next to the images), the IBSI options, the feature columns named by IBSI tags with their
// catalogue, and the refusal of bad options. The values features.csv holds are compared with the
// library's (analysis/kernels/ibsi/) computed here in the test process on the same inputs.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "analysis/cli.h"
#include "analysis/kernels/ibsi/processing.h"
#include "analysis/kernels/ibsi/radiomics.h"
#include "analysis/kernels/nifti.h"
#include "analysis/pipeline.h"
#include "analysis/profile.h"
#include "support/capture.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
namespace ib = analysis::kernels::ibsi;
using testsupport::capture_stderr;
using testsupport::TempDir;

namespace {

struct WorkerBinary {
  WorkerBinary() { ::setenv("PACSNODE_WORKER_BINARY", testsupport::daemon_binary().c_str(), 1); }
};
BOOST_TEST_GLOBAL_FIXTURE(WorkerBinary);

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) out.emplace_back();
    else out.back() += c;
  }
  return out;
}

// features.csv as rows of column -> text.
std::vector<std::map<std::string, std::string>> read_csv(const fs::path& p) {
  std::ifstream f(p);
  std::string line;
  std::getline(f, line);
  const auto header = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(f, line)) {
    const auto v = split(line);
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < header.size() && i < v.size(); ++i) row[header[i]] = v[i];
    rows.push_back(std::move(row));
  }
  return rows;
}

// A small CT phantom and a box mask over its middle, as NIfTI on the series' grid.
struct PhantomWithMask {
  TempDir tmp;
  fs::path in = tmp.path / "in", out = tmp.path / "out", mask = tmp.path / "mask.nii.gz";
  analysis::StudyContext study;
  analysis::Mask roi;
  PhantomWithMask() {
    fs::create_directories(in);
    const auto r = testsupport::run({testsupport::python(), testsupport::phantom_script().string(), in.string(),
                                     "--slices", "16", "--size", "64"});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
    study = analysis::decode_folder(in);
    BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
    const auto& v = study.volumes.front();
    for (std::size_t z = 0; z < v.slices.size(); ++z) {
      cv::Mat m(v.slices[z].size(), CV_8U, cv::Scalar(0));
      if (z >= 4 && z < 12) m(cv::Rect(20, 18, 24, 26)).setTo(1);
      roi.push_back(m);
    }
    analysis::kernels::write_nifti(mask, roi, analysis::spacing_of(v.geom));
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(nifti_mask_gives_the_library_values_under_ibsi_tags, PhantomWithMask) {
  const auto [rc, err] = capture_stderr([&] {
    return analysis::analyze_main({in.string(), "--out", out.string(), "--mask", mask.string(), "--texture", "all",
                                   "--bin-width", "20", "-q"});
  });
  BOOST_TEST_MESSAGE(err);
  BOOST_TEST_REQUIRE(rc == 0);
  const auto rows = read_csv(out / "features.csv");
  BOOST_TEST_REQUIRE(rows.size() == 1u);
  const auto& row = rows.front();
  BOOST_TEST(row.at("segment") == "roi");
  BOOST_TEST(!fs::exists(out / (row.at("series") + "_seg.dcm")), "a given mask is not ours: no SEG");

  // The same computation in this process: the profile's default chain with the options given.
  analysis::FeatureParams fp;
  fp.processing.discretisation.bin_width = 20;
  fp.ibsi.scope = {true, true};
  const auto& v = study.volumes.front();
  const ib::RoiImage r = ib::prepare_roi(v.slices, roi, analysis::spacing_of(v.geom), fp.processing);
  const auto want = ib::compute_features(r, ib::discretise(r, fp.processing.discretisation), fp.ibsi);
  BOOST_TEST(want.size() == ib::catalogue().size(), "every family, every aggregation");
  std::size_t compared = 0;
  for (const auto& f : want) {
    const auto it = row.find(f.tag);
    BOOST_TEST_REQUIRE((it != row.end()), "features.csv has no column " << f.tag);
    if (!std::isfinite(f.value)) {
      BOOST_TEST(it->second.empty(), f.tag);
      continue;
    }
    const double got = std::stod(it->second);
    BOOST_TEST(std::abs(got - f.value) <= 1e-9 * std::max(1.0, std::abs(f.value)), f.tag << ": " << got << " vs " << f.value);
    ++compared;
  }
  BOOST_TEST(compared > 450u);  // of 487: all but the few a small box leaves undefined

  // The catalogue beside it names each column's IBSI code.
  const auto cat = read_csv(out / "feature_catalogue.csv");
  BOOST_TEST(cat.size() == want.size());
  bool volume = false;
  for (const auto& e : cat)
    if (e.at("tag") == "morph_volume") volume = e.at("ibsi_code") == "RNU0" && e.at("family") == "morphology";
  BOOST_TEST(volume);
  std::ifstream j(out / "features.json");
  std::stringstream js;
  js << j.rdbuf();
  BOOST_TEST(js.str().find("\"cm_joint_max_3D_comb\": {") != std::string::npos, "features.json's feature_catalogue");
}

BOOST_FIXTURE_TEST_CASE(a_mask_of_another_grid_fails_the_series_with_the_reason, PhantomWithMask) {
  analysis::Mask small(roi.begin(), roi.begin() + 3);
  analysis::kernels::write_nifti(mask, small, {1, 1, 1});
  const auto [rc, err] = capture_stderr(
      [&] { return analysis::analyze_main({in.string(), "--out", out.string(), "--mask", mask.string(), "-q"}); });
  BOOST_TEST(rc == 1, err);  // nothing analysed
  const std::string json = [&] {
    std::ifstream f(out / "features.json");
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }();
  BOOST_TEST(json.find(mask.filename().string()) != std::string::npos, json);
}

BOOST_AUTO_TEST_CASE(rtstruct_next_to_the_images) {
  TempDir tmp;
  const fs::path in = tmp.path / "in", out = tmp.path / "out";
  const fs::path src = testsupport::test_data("ibsi-data_sets/ibsi_validation/dicom/STS_001/CT");
  fs::create_directories(in);
  fs::copy(src / "image", in / "image");
  fs::copy(src / "mask", in / "mask");
  const auto [rc, err] = capture_stderr([&] {
    return analysis::analyze_main({in.string(), "--out", out.string(), "--mask", "next-to", "--families",
                                   "morphology,statistics", "-q"});
  });
  BOOST_TEST_MESSAGE(err);
  BOOST_TEST_REQUIRE(rc == 0);
  const auto rows = read_csv(out / "features.csv");
  BOOST_TEST_REQUIRE(rows.size() == 1u);
  BOOST_TEST(rows[0].at("segment") == "roi");
  BOOST_TEST(std::stod(rows[0].at("morph_volume")) > 0);
  BOOST_TEST(std::stod(rows[0].at("stat_mean")) > -1000);
  BOOST_TEST(rows[0].count("cm_joint_max_3D_comb") == 0u, "only the families asked for");
}

BOOST_AUTO_TEST_CASE(bad_feature_options_are_refused_before_any_work) {
  TempDir tmp;
  fs::create_directories(tmp.path / "in");
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--families", "morphology,texture"}, {"--reseg", "400,-500"}}) {
    std::vector<std::string> args{(tmp.path / "in").string(), "--out", (tmp.path / "out").string()};
    args.insert(args.end(), bad.begin(), bad.end());
    const auto [rc, err] = capture_stderr([&] { return analysis::analyze_main(args); });
    BOOST_TEST(rc == 2, bad.front() << ": " << err);
    BOOST_TEST(err.find("invalid feature options") != std::string::npos, err);
  }
}

// `pacsnode train` on analyze's features.csv: the IBSI-tagged columns are features like any other.
BOOST_AUTO_TEST_CASE(train_uses_the_ibsi_columns_of_analyze) {
  TempDir tmp;
  const fs::path in = tmp.path / "in", out = tmp.path / "out", mask = tmp.path / "mask.nii.gz";
  for (int seed = 1; seed <= 6; ++seed) {
    const auto r = testsupport::run({testsupport::python(), testsupport::phantom_script().string(),
                                     (in / std::to_string(seed)).string(), "--slices", "8", "--size", "48", "--seed",
                                     std::to_string(seed)});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  }
  const auto study = analysis::decode_folder(in / "1");
  BOOST_TEST_REQUIRE(study.volumes.size() == 1u);
  analysis::Mask roi;
  for (const auto& s : study.volumes.front().slices) {
    cv::Mat m(s.size(), CV_8U, cv::Scalar(0));
    m(cv::Rect(12, 12, 24, 20)).setTo(1);
    roi.push_back(m);
  }
  analysis::kernels::write_nifti(mask, roi, analysis::spacing_of(study.volumes.front().geom));
  const auto [rc, err] = capture_stderr([&] {
    return analysis::analyze_main({in.string(), "--out", out.string(), "--mask", mask.string(), "--families",
                                   "statistics,histogram,glcm", "-q"});
  });
  BOOST_TEST_REQUIRE(rc == 0, err);
  const auto rows = read_csv(out / "features.csv");
  BOOST_TEST_REQUIRE(rows.size() == 6u);
  {
    std::ofstream labels(tmp.path / "labels.csv");
    labels << "label\n";
    for (std::size_t i = 0; i < rows.size(); ++i) labels << (i % 2) << "\n";
  }
  const auto r = testsupport::run({testsupport::daemon_binary().string(), "train", "--features",
                                   (out / "features.csv").string(), "--labels", (tmp.path / "labels.csv").string(),
                                   "--out", (tmp.path / "model.yml").string(), "--folds", "2", "--ignore",
                                   "series,series_uid,modality,profile,segment_label,segment"});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  BOOST_TEST(r.output.find("\"cm_joint_max_3D_comb\"") != std::string::npos, r.output);
  BOOST_TEST(r.output.find("\"stat_mean\"") != std::string::npos, r.output);
  BOOST_TEST(fs::exists(tmp.path / "model.yml"));
}
