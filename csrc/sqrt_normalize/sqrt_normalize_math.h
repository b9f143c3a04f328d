#pragma once
// The signed square root and its derivative (docs/semantics.md §2), shared by the CPU and CUDA
// kernels of sqrt_normalize: s(y) = sign(y) (sqrt(|y| + eps) - sqrt(eps)), whose derivative
// 1 / (2 sqrt(|y| + eps)) is finite at 0 (the plain sign(y) sqrt(|y|)'s is not: cbp #1).

#include <math.h>  // ::sqrt and ::fabs overloaded for float and double, on the host as on the device

#include <stdint.h>

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

// One row of d values y_k = value(k) (in T) to z_k = s(y_k) / max(||s(y)||, kNormEps), passed
// to store(k, z_k): a fixed-order sum of squares, then the scaled roots. The CPU row of
// sqrt_normalize and of kernel pooling's finish; CUDA reduces a row across a block instead.
template <typename T, typename Value, typename Store>
inline void signed_sqrt_normalize_row(int64_t d, T eps, const Value& value, const Store& store) {
  const T root = ::sqrt(eps);
  T squares = 0;
  for (int64_t k = 0; k < d; ++k) {
    const T s = signed_sqrt(value(k), eps, root);
    squares += s * s;
  }
  const T norm = ::sqrt(squares);
  const T inverse = T(1) / (norm > T(kNormEps) ? norm : T(kNormEps));
  for (int64_t k = 0; k < d; ++k) store(k, signed_sqrt(value(k), eps, root) * inverse);
}

}  // namespace sqrt_norm
}  // namespace fgo
