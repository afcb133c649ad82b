#define BOOST_TEST_MODULE decode_corpus
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dicom/series_loader.h"
#include "support/paths.h"

// The loader over every file of ../shared/data (real DICOM from many tools, malformed ones
// included): nothing crashes, every file ends up in a volume or with a reason, and every volume
// is self-consistent.

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> all_files() {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(testsupport::shared_data()))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

double dot(const dicom::Vec3& a, const dicom::Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

void check_volume(const dicom::Volume& v) {
  const std::string where = v.sources.empty() ? std::string("?") : v.sources.front().path;
  BOOST_TEST_CONTEXT(where) {
    BOOST_REQUIRE(v.depth() >= 1);
    BOOST_TEST(v.sources.size() == v.slices.size());
    const int type = v.slices.front().type();
    BOOST_TEST((type == CV_16S || type == CV_32F));
    for (const auto& s : v.slices) {
      BOOST_TEST(s.type() == type);
      BOOST_TEST(s.rows == v.rows());
      BOOST_TEST(s.cols == v.cols());
      if (type == CV_32F) BOOST_TEST(cv::checkRange(s));  // no NaN/inf
    }
    const auto& g = v.geom;
    BOOST_TEST((g.spacing_row > 0 && g.spacing_col > 0 && g.spacing_slice > 0));
    BOOST_TEST(std::isfinite(g.spacing_slice));
    BOOST_TEST(std::abs(dot(g.normal, g.normal) - 1) < 1e-6);
    BOOST_TEST(std::abs(dot(g.normal, g.row_dir)) < 1e-3);
    BOOST_TEST(std::abs(dot(g.normal, g.col_dir)) < 1e-3);
    BOOST_TEST(!v.info.units.empty());
    if (!g.has_frame_of_reference) {
      BOOST_TEST(v.depth() == 1);
      return;
    }
    // Every plane sits where the geometry says: origin + z * spacing * normal (within 2% of a step).
    for (int z = 0; z < v.depth(); ++z) {
      const auto& p = v.sources[static_cast<std::size_t>(z)].position;
      for (int i = 0; i < 3; ++i) {
        const double want = g.origin[i] + z * g.spacing_slice * g.normal[i];
        BOOST_TEST(std::abs(p[i] - want) <= 0.02 * g.spacing_slice + 0.01, "slice " << z << " axis " << i);
      }
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(whole_folder_loads_without_crash_and_accounts_for_every_file) {
  const auto files = all_files();
  BOOST_REQUIRE(files.size() > 500);
  const auto r = dicom::load_folder(testsupport::shared_data());
  std::set<std::string> seen;
  for (const auto& v : r.volumes) {
    check_volume(v);
    for (const auto& s : v.sources) seen.insert(fs::path(s.path).lexically_normal().string());
  }
  for (const auto& j : r.rejected) {
    BOOST_TEST(!j.reason.empty());
    BOOST_TEST(!j.files.empty());
    for (const auto& f : j.files) seen.insert(fs::path(f).lexically_normal().string());
  }
  for (const auto& f : files) BOOST_TEST(seen.count(f.lexically_normal().string()) == 1u, f);
  // The real series of the data set are among the volumes.
  std::map<std::string, int> depth_by_modality;
  for (const auto& v : r.volumes) depth_by_modality[v.info.modality] = std::max(depth_by_modality[v.info.modality], v.depth());
  BOOST_TEST(depth_by_modality["CT"] >= 41);
  BOOST_TEST(depth_by_modality["MR"] >= 60);
  BOOST_TEST(depth_by_modality["PT"] >= 59);
  BOOST_TEST(r.volumes.size() > 50u);
}

BOOST_AUTO_TEST_CASE(every_file_alone_gives_a_volume_or_a_reason) {
  // Alone, each file is decoded (in the folder run duplicates are never decoded).
  int volumes = 0, rejected = 0;
  for (const auto& f : all_files()) {
    BOOST_TEST_CONTEXT(f) {
      const auto r = dicom::load_files({f});
      BOOST_TEST(r.volumes.size() + r.rejected.size() >= 1u);
      for (const auto& v : r.volumes) check_volume(v);
      for (const auto& j : r.rejected) BOOST_TEST(!j.reason.empty());
      volumes += static_cast<int>(r.volumes.size());
      rejected += static_cast<int>(r.rejected.size());
    }
  }
  BOOST_TEST_MESSAGE(volumes << " volumes, " << rejected << " rejections");
  BOOST_TEST(volumes > 100);
}
