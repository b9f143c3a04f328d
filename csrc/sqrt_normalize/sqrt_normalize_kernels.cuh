#pragma once
// CUDA kernels of sqrt_normalize: a block per row, its sums by common/reduce.cuh (bitwise
// reproducible). Raw pointers and a stream only (no torch header;
// `make cuda-check` compiles it alone). scalar_t is the storage type, acc_t the computed one.

#include <cuda_runtime.h>

#include <cstdint>

#include "common/reduce.cuh"
#include "sqrt_normalize/sqrt_normalize_math.h"

namespace fgo {
namespace sqrt_norm {
namespace cuda {


template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    sqrt_normalize_kernel(const scalar_t* y, int64_t d, acc_t eps, scalar_t* z) {
  const scalar_t* in = y + int64_t(blockIdx.x) * d;
  scalar_t* out = z + int64_t(blockIdx.x) * d;
  const acc_t root = sqrt(eps);
  acc_t squares = 0;
  for (int64_t k = threadIdx.x; k < d; k += kBlockThreads) {
    const acc_t s = signed_sqrt(static_cast<acc_t>(in[k]), eps, root);
    squares += s * s;
  }
  const acc_t norm = sqrt(block_sum<kBlockThreads>(squares));
  const acc_t inverse = acc_t(1) / (norm > acc_t(kNormEps) ? norm : acc_t(kNormEps));
  for (int64_t k = threadIdx.x; k < d; k += kBlockThreads) {
    out[k] = static_cast<scalar_t>(signed_sqrt(static_cast<acc_t>(in[k]), eps, root) * inverse);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    sqrt_normalize_backward_kernel(const scalar_t* grad_z, const scalar_t* y, const scalar_t* z,
                                   int64_t d, acc_t eps, scalar_t* grad_y) {
  const int64_t base = int64_t(blockIdx.x) * d;
  const acc_t root = sqrt(eps);
  acc_t squares = 0, dot = 0;
  for (int64_t k = threadIdx.x; k < d; k += kBlockThreads) {
    const acc_t s = signed_sqrt(static_cast<acc_t>(y[base + k]), eps, root);
    squares += s * s;
    dot += static_cast<acc_t>(z[base + k]) * static_cast<acc_t>(grad_z[base + k]);
  }
  const acc_t norm = sqrt(block_sum<kBlockThreads>(squares));
  dot = block_sum<kBlockThreads>(dot);
  const bool unit = norm > acc_t(kNormEps);
  const acc_t inverse = acc_t(1) / (unit ? norm : acc_t(kNormEps));
  for (int64_t k = threadIdx.x; k < d; k += kBlockThreads) {
    const acc_t ds = inverse * (static_cast<acc_t>(grad_z[base + k]) -
                                (unit ? static_cast<acc_t>(z[base + k]) * dot : acc_t(0)));
    grad_y[base + k] =
        static_cast<scalar_t>(ds * signed_sqrt_slope(static_cast<acc_t>(y[base + k]), eps));
  }
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_sqrt_normalize(const scalar_t* y, int64_t rows, int64_t d, acc_t eps,
                                  scalar_t* z, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7fffffff) return cudaErrorInvalidConfiguration;
  sqrt_normalize_kernel<scalar_t, acc_t><<<unsigned(rows), kBlockThreads, 0, stream>>>(y, d, eps, z);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_sqrt_normalize_backward(const scalar_t* grad_z, const scalar_t* y,
                                           const scalar_t* z, int64_t rows, int64_t d,
                                           acc_t eps, scalar_t* grad_y, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7fffffff) return cudaErrorInvalidConfiguration;
  sqrt_normalize_backward_kernel<scalar_t, acc_t><<<unsigned(rows), kBlockThreads, 0, stream>>>(
      grad_z, y, z, d, eps, grad_y);
  return cudaGetLastError();
}

#ifdef FGO_CUDA_CHECK
inline void* const kInstantiated[] = {
    reinterpret_cast<void*>(&launch_sqrt_normalize<float, float>),
    reinterpret_cast<void*>(&launch_sqrt_normalize<double, double>),
    reinterpret_cast<void*>(&launch_sqrt_normalize_backward<float, float>),
    reinterpret_cast<void*>(&launch_sqrt_normalize_backward<double, double>)};
#endif

}  // namespace cuda
}  // namespace sqrt_norm
}  // namespace fgo
