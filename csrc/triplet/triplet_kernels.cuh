#pragma once
// CUDA kernels of triplet mining / loss. Raw pointers, sizes and a stream only: this file
// needs no torch header, so `make cuda-check` compiles it on machines without a CUDA torch.
//
// The launcher sorts every anchor's candidates with ATen's segmented sort; then one thread
// runs one anchor through triplet_anchor.h, the same code as the CPU. An anchor costs
// O(P log N + N), each writes only its own outputs: no atomics, bitwise reproducible.

#include <cuda_runtime.h>

#include <cstdint>

#include "triplet/triplet_anchor.h"

namespace fgo {
namespace triplet {
namespace cuda {

constexpr int kThreads = 128;

// Row a's positives are pos_*[a * stride .. + keep[a]) and its negatives
// neg_*[a * stride .. + num_neg[a]), each sorted by (distance, index).
template <typename T>
struct SortedRows {
  const T* pos_dist;
  const int64_t* pos_index;
  const int64_t* keep;
  const T* neg_dist;
  const int64_t* neg_index;
  const int64_t* num_neg;
  int64_t rows, stride;
};

template <typename T>
__global__ void triplet_rows_kernel(SortedRows<T> s, RowsParams<T> p) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a >= s.rows) return;
  const int64_t row = a * s.stride;
  run_anchor(p, a, AnchorCandidates<T>{s.pos_dist + row, s.pos_index + row, s.keep[a],
                                       s.neg_dist + row, s.neg_index + row, s.num_neg[a]});
}

template <typename T>
cudaError_t launch_triplet_rows(const SortedRows<T>& s, const RowsParams<T>& p,
                                cudaStream_t stream) {
  if (s.rows == 0) return cudaSuccess;
  const int64_t blocks = (s.rows + kThreads - 1) / kThreads;
  triplet_rows_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s, p);
  return cudaGetLastError();
}

#ifdef FGO_CUDA_CHECK
inline void* const kInstantiated[] = {
    reinterpret_cast<void*>(&launch_triplet_rows<float>),
    reinterpret_cast<void*>(&launch_triplet_rows<double>),
};
#endif

}  // namespace cuda
}  // namespace triplet
}  // namespace fgo
