#pragma once
// CUDA kernels of triplet mining / loss. Raw pointers, sizes and a stream only: this file
// needs no torch header, so `make cuda-check` compiles it on machines without a CUDA torch.
//
// The launcher sorts every anchor's positives with ATen's segmented sort; then one thread
// runs one anchor through triplet_math.h, the same code as the CPU. An anchor costs
// O(N log P + P), each writes only its own outputs: no atomics, bitwise reproducible.

#include <cuda_runtime.h>

#include <cstdint>

#include "triplet/triplet_math.h"

namespace fgo {
namespace triplet {
namespace cuda {

constexpr int kThreads = 128;

// Row a's candidates are pos_*[a * stride .. ), its P positives first in (distance, index)
// order; the kernel counts P and keeps the nearest kept_positives(P, fraction) of them.
template <typename T>
struct SortedRows {
  const T* pos_dist;
  const int64_t* pos_index;
  const T* dist;                // (rows, stride)
  const int64_t* labels;        // (stride,) candidates' labels
  const int64_t* query_labels;  // (rows,)
  const int64_t* query_indices;  // (rows,)
  int64_t rows, stride, num_labelled;
  double positive_fraction;
};

template <typename T>
__global__ void triplet_rows_kernel(SortedRows<T> s, RowsParams<T> p) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a >= s.rows) return;
  const int64_t row = a * s.stride;
  AnchorCandidates<T> c{s.pos_dist + row, s.pos_index + row, 0,           s.dist + row,
                        s.labels,         s.num_labelled,    s.stride,    s.query_labels[a]};
  int64_t num_positives = 0;
  for (int64_t n = 0; n < s.num_labelled; ++n) {
    num_positives += c.positive(n, s.query_indices[a]);
  }
  c.num_pos = kept_positives(num_positives, s.positive_fraction);
  run_anchor(p, a, c);
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
