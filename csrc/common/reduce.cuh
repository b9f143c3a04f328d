#pragma once
// Reductions over a warp and over a CUDA block, in one fixed order: a butterfly (xor shuffle)
// in each warp, so that every lane ends with the same bits, then the warps' partial results in
// warp order. The bits do not depend on the schedule; every thread gets the result. No torch
// header.

#include <cuda_runtime.h>

namespace fgo {

// Threads per block of the kernels that do not size their blocks themselves.
constexpr int kBlockThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;  // every lane of a warp

struct Sum {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Over a block of kThreads threads (one warp, or a multiple of 32 with every thread calling).
template <int kThreads, typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op) {
  static_assert(kThreads % 32 == 0, "whole warps");
  v = warp_reduce(v, op);
  if constexpr (kThreads == 32) {
    return v;
  } else {
    __shared__ T partial[kThreads / 32];
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    T total = partial[0];
    for (int i = 1; i < kThreads / 32; ++i) total = op(total, partial[i]);
    __syncthreads();  // `partial` is reused by the next reduction
    return total;
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) { return warp_reduce(v, Sum()); }

template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v) { return block_reduce<kThreads>(v, Sum()); }

}  // namespace fgo
