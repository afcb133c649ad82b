#pragma once
// Synthetic masks for kernel tests.
#include <random>

#include "analysis/kernels/types.h"

namespace testsupport {

// d x r x c mask whose voxels are set with probability p (reproducible for a seed).
inline analysis::Mask random_mask(int d, int r, int c, double p, unsigned seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution b(p);
  analysis::Mask m = analysis::kernels::make_mask(d, r, c);
  for (auto& s : m)
    for (int y = 0; y < r; ++y)
      for (int x = 0; x < c; ++x) s.at<uchar>(y, x) = b(rng) ? 1 : 0;
  return m;
}

}  // namespace testsupport
