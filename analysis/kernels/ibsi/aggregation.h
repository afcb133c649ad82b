#pragma once
// Texture aggregation methods of IBSI 1 (the manual, section 3.6.1 and its figure of methods), with
// the tag suffixes of the IBSI reference tables.
//
//  matrix per direction (GLCM, GLRLM):        one matrix per slice or volume (GLSZM, GLDZM, NGTDM, NGLDM):
//    2D_avg    BTW3  per slice and direction, averaged     2D    8QNN  per slice, averaged
//    2D_comb   SUJT  per slice directions merged, averaged   2_5D  62GR  slices merged
//    2_5D_avg  JJUI  per direction slices merged, averaged   3D    KOBO  the volume
//    2_5D_comb ZW7Z  all merged
//    3D_avg    ITBB  per 3D direction, averaged
//    3D_comb   IAZD  all 13 directions merged
#include <span>
#include <string>
#include <string_view>

#include "analysis/kernels/ibsi/image.h"

namespace analysis::kernels::ibsi {

enum class Aggregation { d2_avg, d2_comb, d25_avg, d25_comb, d3_avg, d3_comb, d2, d25, d3 };

constexpr std::string_view suffix(Aggregation a) {
  switch (a) {
    case Aggregation::d2_avg: return "2D_avg";
    case Aggregation::d2_comb: return "2D_comb";
    case Aggregation::d25_avg: return "2_5D_avg";
    case Aggregation::d25_comb: return "2_5D_comb";
    case Aggregation::d3_avg: return "3D_avg";
    case Aggregation::d3_comb: return "3D_comb";
    case Aggregation::d2: return "2D";
    case Aggregation::d25: return "2_5D";
    case Aggregation::d3: return "3D";
  }
  return "";
}

constexpr std::string_view code(Aggregation a) {
  switch (a) {
    case Aggregation::d2_avg: return "BTW3";
    case Aggregation::d2_comb: return "SUJT";
    case Aggregation::d25_avg: return "JJUI";
    case Aggregation::d25_comb: return "ZW7Z";
    case Aggregation::d3_avg: return "ITBB";
    case Aggregation::d3_comb: return "IAZD";
    case Aggregation::d2: return "8QNN";
    case Aggregation::d25: return "62GR";
    case Aggregation::d3: return "KOBO";
  }
  return "";
}

// The tag of a feature in an aggregation: "cm_joint_max" + "_" + "3D_comb".
inline std::string aggregated_tag(std::string_view base_tag, Aggregation a) {
  std::string t(base_tag);
  t += '_';
  t += suffix(a);
  return t;
}

// Appends one aggregation's features: defs[k] with values[k], for every def (values may hold more).
inline void emit(std::span<const FeatureDef> defs, std::span<const double> values, Aggregation a, Features& out) {
  for (std::size_t k = 0; k < defs.size(); ++k) out.push_back({aggregated_tag(defs[k].base_tag, a), values[k]});
}

// Which aggregations a texture family computes: the 2D ones (2D, 2.5D) and/or the 3D ones.
// IBSI's CT phantom configurations A and B are 2D, C to E 3D; the digital phantom has all.
struct TextureScope {
  bool two_d = true;
  bool three_d = true;
};

}  // namespace analysis::kernels::ibsi
