#pragma once
// The data every IBSI 1 feature family works on (Zwanenburg et al., "The Image Biomarker
// Standardisation Initiative", Radiology 2020; reference manual arXiv:1612.07003, "the manual").
//
// After the image processing chain (processing.h: interpolation, re-segmentation), a region of
// interest is an RoiImage: the intensities of every voxel of a regular grid, the morphological
// mask and the intensity mask (the morphological mask minus what re-segmentation removed). After
// discretisation it is a Levels volume: grey levels 1..ng inside the intensity mask, 0 outside.
//
// Axes: x = column (fastest), y = row, z = slice; spacing in mm. "2D" and "2.5D" features work
// slice by slice in the x-y plane (IBSI's axial plane).
//
// Each family appends Feature{tag, value} rows to a Features list. Tags are those of the IBSI
// reference tables (e.g. "morph_volume", "cm_joint_max_3D_comb"); `definitions()` of each family
// gives, per base tag, the IBSI code, a readable name and the unit, for features.json and the
// README's feature table.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// A function template also built for AVX2, the copy picked at load time where the CPU has it (GCC's
// target_clones). Clang, which builds the sanitizer and fuzzing variant, has no target_clones on
// templates: one build there.
#if defined(__clang__)
#define PACSNODE_TEMPLATE_AVX2_CLONES
#else
#define PACSNODE_TEMPLATE_AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#endif

namespace analysis::kernels::ibsi {

struct Grid {
  int nx = 0, ny = 0, nz = 0;     // columns, rows, slices
  double sx = 1, sy = 1, sz = 1;  // mm
  std::size_t size() const { return static_cast<std::size_t>(nx) * static_cast<std::size_t>(ny) * static_cast<std::size_t>(nz); }
  std::size_t index(int x, int y, int z) const {
    return (static_cast<std::size_t>(z) * static_cast<std::size_t>(ny) + static_cast<std::size_t>(y)) *
               static_cast<std::size_t>(nx) + static_cast<std::size_t>(x);
  }
  double voxel_volume() const { return sx * sy * sz; }
};

struct RoiImage {
  Grid grid;
  std::vector<float> intensity;     // every voxel of the grid, real-world values (e.g. HU)
  std::vector<std::uint8_t> morph;  // morphological mask, 0/1
  std::vector<std::uint8_t> mask;   // intensity mask, 0/1 (a subset of morph)
};

struct Levels {
  Grid grid;
  std::vector<int> level;  // 1..ng inside the intensity mask, 0 outside
  int ng = 0;              // number of grey levels (IBSI Ng): FBN -> the bin count; FBS and none -> highest level
};

struct Feature {
  std::string tag;
  double value = 0;
};
using Features = std::vector<Feature>;

// One feature of a family, without aggregation. The tag of an aggregated texture feature is
// base_tag + "_" + the aggregation suffix (aggregation.h), its IBSI code feature code + method code.
struct FeatureDef {
  std::string_view base_tag;  // "cm_joint_max"
  std::string_view code;      // "GYBY"
  std::string_view name;      // "Joint maximum"
  std::string_view unit;      // "" for dimensionless, "mm^3", "HU" (intensity unit), ...
};

// Sizes a large, new vector to n value-initialised elements, asking the kernel (madvise
// MADV_HUGEPAGE; transparent huge pages are "madvise" on Debian) to back it by 2 MiB pages before
// its first touch: one page fault per 2 MiB instead of per 4 KiB, which is most of the cost of a
// fresh volume-sized buffer on a virtual machine. The values are those of resize(n); a no-op
// advice where the kernel refuses.
void advise_huge_pages(const void* data, std::size_t bytes);
template <class T>
void resize_fresh(std::vector<T>& v, std::size_t n) {
  if (v.capacity() < n) {
    v.reserve(n);
    advise_huge_pages(v.data(), v.capacity() * sizeof(T));
  }
  v.resize(n);
}

// At most this many grey levels (texture matrices are Ng x Ng): IBSI's settings give tens to a few
// hundred; more means a bin width far too small for the intensities.
inline constexpr int kMaxGreyLevels = 4096;

// Throws std::invalid_argument when the sizes of the vectors do not match the grid, the mask is
// empty, or (check_levels) a level is outside 0..ng or ng exceeds kMaxGreyLevels.
void check_roi(const RoiImage& roi, const char* what);
void check_levels(const Levels& levels, const char* what);

// Levels that check_levels has accepted. compute_features checks once and passes this to the
// families it runs, whose overloads taking it skip their own check (a pass over the volume each);
// the overloads taking Levels check first.
class CheckedLevels {
 public:
  CheckedLevels(const Levels& levels, const char* what) : levels_(levels) { check_levels(levels, what); }
  const Levels& get() const { return levels_; }

 private:
  const Levels& levels_;
};

}  // namespace analysis::kernels::ibsi
