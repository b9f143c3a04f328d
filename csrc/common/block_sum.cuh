#pragma once
// The sum of a value over a CUDA block of kThreads threads (a multiple of 32), in one fixed
// order: a shuffle tree in each warp, then the warps' partial sums in warp order. The bits do
// not depend on the schedule; every thread gets the result. No torch header.

#include <cuda_runtime.h>

namespace fgo {

template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v) {
  static_assert(kThreads % 32 == 0, "whole warps");
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __shared__ T partial[kThreads / 32];
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  T total = partial[0];
  for (int i = 1; i < kThreads / 32; ++i) total += partial[i];
  __syncthreads();  // `partial` is reused by the next sum
  return total;
}

}  // namespace fgo
