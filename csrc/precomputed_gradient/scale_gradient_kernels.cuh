#pragma once
// The CUDA kernel of scale_gradient: out = grad * grad_loss[row or 0] / norm, a grid-stride
// loop. Raw pointers and a stream only (no torch header; `make cuda-check` compiles it alone).

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/reduce.cuh"

namespace fgo {
namespace scaled {
namespace cuda {

template <typename scalar_t, typename acc_t, typename loss_t>
__global__ void __launch_bounds__(kBlockThreads)
    scale_gradient_kernel(const scalar_t* grad, const loss_t* grad_loss, bool per_row,
                          const loss_t* norm, int64_t numel, int64_t width, scalar_t* out) {
  const acc_t inv_norm = acc_t(1) / static_cast<acc_t>(*norm);
  const int64_t stride = int64_t(gridDim.x) * kBlockThreads;
  for (int64_t i = int64_t(blockIdx.x) * kBlockThreads + threadIdx.x; i < numel; i += stride) {
    const acc_t g = static_cast<acc_t>(grad_loss[per_row ? i / width : 0]);
    out[i] = static_cast<scalar_t>(static_cast<acc_t>(grad[i]) * (g * inv_norm));
  }
}

template <typename scalar_t, typename acc_t, typename loss_t>
cudaError_t launch_scale_gradient(const scalar_t* grad, const loss_t* grad_loss, bool per_row,
                                  const loss_t* norm, int64_t numel, int64_t width,
                                  scalar_t* out, cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((numel + kBlockThreads - 1) / kBlockThreads, 65535);
  scale_gradient_kernel<scalar_t, acc_t, loss_t><<<unsigned(blocks), kBlockThreads, 0, stream>>>(
      grad, grad_loss, per_row, norm, numel, width, out);
  return cudaGetLastError();
}

#ifdef FGO_CUDA_CHECK
inline void* const kInstantiated[] = {
    reinterpret_cast<void*>(&launch_scale_gradient<float, float, float>),
    reinterpret_cast<void*>(&launch_scale_gradient<double, double, double>)};
#endif

}  // namespace cuda
}  // namespace scaled
}  // namespace fgo
