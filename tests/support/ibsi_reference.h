#pragma once
// IBSI 1 reference values and the digital phantom, for the feature tests (tests/unit/test_ibsi_*).
//
// The reference tables are mirp's copies of the values published in the IBSI reference manual
// (tests/data/mirp/ibsi_1_reference_values/*.csv: "value;tolerance;tag"). IBSI publishes values
// rounded to 3 significant digits, so a value passes when |x - ref| <= tolerance + half a unit in
// the last digit of the reference as printed.
#include <boost/test/unit_test.hpp>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "analysis/kernels/ibsi/image.h"
#include "analysis/kernels/nifti.h"
#include "support/paths.h"

namespace testsupport::ibsi {

struct Reference {
  double value = 0, tolerance = 0, half_ulp = 0;
};

inline double half_last_digit(const std::string& s) {
  const auto dot = s.find('.');
  const auto e = s.find_first_of("eE");
  const std::string mant = s.substr(0, e);
  int decimals = dot == std::string::npos || dot > mant.size() ? 0 : static_cast<int>(mant.size() - dot - 1);
  if (dot == std::string::npos) {  // an integer: trailing zeros beyond 3 digits are not significant
    std::string digits;
    for (char c : mant)
      if (std::isdigit(static_cast<unsigned char>(c))) digits += c;
    int trailing = 0;
    while (digits.size() > 3 && trailing < static_cast<int>(digits.size()) - 1 && digits[digits.size() - 1 - trailing] == '0')
      ++trailing;
    decimals = -trailing;
  }
  const int exp = e == std::string::npos ? 0 : std::stoi(s.substr(e + 1));
  return 0.5 * std::pow(10.0, exp - decimals);
}

// tag -> reference; rows without a value (features IBSI gives no reference for) are left out.
inline std::map<std::string, Reference> read_reference(const std::string& name) {
  const auto p = test_data("mirp/ibsi_1_reference_values/" + name);
  std::ifstream f(p);
  BOOST_TEST_REQUIRE(f.good(), "cannot read " << p);
  std::map<std::string, Reference> out;
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::stringstream ss(line);
    std::string v, t, tag;
    if (!std::getline(ss, v, ';') || !std::getline(ss, t, ';') || !std::getline(ss, tag, ';') || v.empty()) continue;
    out[tag] = {std::stod(v), std::stod(t), half_last_digit(v)};
  }
  return out;
}

// Computed features by tag (the last value of a tag computed twice).
inline std::map<std::string, double> by_tag(const analysis::kernels::ibsi::Features& features) {
  std::map<std::string, double> m;
  for (const auto& f : features) m[f.tag] = f.value;
  return m;
}

// Checks computed features against a reference table. Every computed feature with a reference
// must match; every reference tag starting with one of `prefixes` must have been computed (so a
// family cannot silently leave features out). Prints "<family>: <passed>/<total>" per prefix.
inline void check_features(const analysis::kernels::ibsi::Features& got, const std::map<std::string, Reference>& ref,
                           const std::vector<std::string>& prefixes) {
  std::map<std::string, double> by_tag;
  for (const auto& f : got) {
    BOOST_TEST(by_tag.count(f.tag) == 0u, "feature computed twice: " << f.tag);
    by_tag[f.tag] = f.value;
  }
  for (const auto& prefix : prefixes) {
    int total = 0, passed = 0;
    for (const auto& [tag, r] : ref) {
      if (tag.rfind(prefix, 0) != 0) continue;
      ++total;
      const auto it = by_tag.find(tag);
      BOOST_TEST((it != by_tag.end()), "not computed: " << tag);
      if (it == by_tag.end()) continue;
      const double x = it->second;
      const bool ok = std::isfinite(x) && std::abs(x - r.value) <= r.tolerance + r.half_ulp + 1e-12;
      BOOST_TEST(ok, tag << ": " << x << " vs reference " << r.value << " (tolerance " << r.tolerance << ", rounding " << r.half_ulp << ")");
      passed += ok;
    }
    BOOST_TEST_MESSAGE(prefix << ": " << passed << "/" << total << " within tolerance");
    BOOST_TEST(total > 0, "no reference values start with " << prefix);
  }
}

// The IBSI 1 digital phantom (5 x 4 x 4 voxels of 2 x 2 x 2 mm, grey levels 1..6, mask of 74
// voxels), as an RoiImage (intensity and morphological masks equal) and as Levels (IBSI: no
// discretisation, the intensities are the grey levels; Ng = 6).
struct DigitalPhantom {
  analysis::kernels::ibsi::RoiImage roi;
  analysis::kernels::ibsi::Levels levels;
  DigitalPhantom() {
    namespace k = analysis::kernels;
    const auto dir = test_data("ibsi-data_sets/ibsi_1_digital_phantom/nifti");
    const auto image = k::read_nifti(dir / "image/phantom.nii.gz");
    analysis::Spacing sp;
    const auto mask = k::read_nifti_mask(dir / "mask/mask.nii.gz", &sp);
    auto& g = roi.grid;
    g.nz = static_cast<int>(image.slices.size());
    g.ny = image.slices.front().rows;
    g.nx = image.slices.front().cols;
    g.sx = sp.col; g.sy = sp.row; g.sz = sp.slice;
    for (int z = 0; z < g.nz; ++z)
      for (int y = 0; y < g.ny; ++y)
        for (int x = 0; x < g.nx; ++x) {
          cv::Mat f;
          image.slices[static_cast<std::size_t>(z)].convertTo(f, CV_32F);
          roi.intensity.push_back(f.at<float>(y, x));
          roi.morph.push_back(mask[static_cast<std::size_t>(z)].at<uchar>(y, x) ? 1 : 0);
        }
    roi.mask = roi.morph;
    levels.grid = g;
    for (std::size_t i = 0; i < g.size(); ++i) {
      const int v = roi.mask[i] ? static_cast<int>(std::lround(roi.intensity[i])) : 0;
      levels.level.push_back(v);
      levels.ng = std::max(levels.ng, v);
    }
  }
};

}  // namespace testsupport::ibsi
