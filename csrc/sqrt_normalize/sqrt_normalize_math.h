#pragma once
// The signed square root and its derivative (docs/semantics.md §2), shared by the CPU and CUDA
// kernels of sqrt_normalize: s(y) = sign(y) (sqrt(|y| + eps) - sqrt(eps)), whose derivative
// 1 / (2 sqrt(|y| + eps)) is finite at 0 (the plain sign(y) sqrt(|y|)'s is not: cbp #1).

#include <math.h>  // ::sqrt and ::fabs overloaded for float and double, on the host as on the device

#include "common/host_device.h"

namespace fgo {
namespace sqrt_norm {

// Rows are divided by max(||s||, kNormEps), as F.normalize does.
constexpr double kNormEps = 1e-12;

template <typename T>
FGO_HOST_DEVICE T signed_sqrt(T y, T eps, T sqrt_eps) {
  const T r = ::sqrt(::fabs(y) + eps) - sqrt_eps;
  return y < T(0) ? -r : r;
}

template <typename T>
FGO_HOST_DEVICE T signed_sqrt_slope(T y, T eps) {
  return T(0.5) / ::sqrt(::fabs(y) + eps);
}

}  // namespace sqrt_norm
}  // namespace fgo
