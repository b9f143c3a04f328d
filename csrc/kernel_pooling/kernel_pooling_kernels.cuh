#pragma once
// CUDA kernels of kernel pooling. Raw pointers, sizes and a stream only: this file needs no
// torch header, so `make cuda-check` compiles it on machines without a CUDA torch. The FFTs
// between these kernels are cuFFT calls made by the launcher (kernel_pooling_cuda.cu).
//
// Locations ("rows" of the flattened (N * L, C) input) are processed in chunks. Every output
// element has exactly one writing thread and each sum runs in a fixed order: no atomics, so
// results are bitwise reproducible.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernel_pooling/kernel_pooling_math.h"

namespace fgo {
namespace kp {
namespace cuda {

constexpr int kBlockThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

template <typename T>
struct SketchParams {
  int64_t locations, channels, order, dim, bins;  // L, C, p, d, d / 2 + 1
  const int64_t* hash_index;                      // (order, C) in [0, dim)
  const T* hash_sign;                             // (order, C)
  // The hashes grouped by bin (CSR) so that sketching is a gather: bin j of sketch t holds
  // channels bin_channel[t][e] with sign bin_sign[t][e], e in [bin_start[t][j], bin_start[t][j+1]).
  const int64_t* bin_start;                       // (order, dim + 1)
  const int64_t* bin_channel;                     // (order, C)
  const T* bin_sign;                              // (order, C)
};

__device__ __forceinline__ int64_t grid_start() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

inline unsigned grid_for(int64_t work) {
  const int64_t blocks = (work + kBlockThreads - 1) / kBlockThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// sketch[r][t][j] = sum of s_t(k) x[r][k] over the channels k hashed to bin j by h_t.
template <typename T>
__global__ void __launch_bounds__(kBlockThreads)
count_sketch_kernel(SketchParams<T> p, const T* x, int64_t rows, T* sketch) {
  const int64_t total = rows * p.order * p.dim;
  for (int64_t i = grid_start(); i < total; i += grid_stride()) {
    const int64_t j = i % p.dim, t = (i / p.dim) % p.order, r = i / (p.dim * p.order);
    const int64_t* start = p.bin_start + t * (p.dim + 1);
    const int64_t* channel = p.bin_channel + t * p.channels;
    const T* sign = p.bin_sign + t * p.channels;
    const T* xr = x + r * p.channels;
    T acc = 0;
    for (int64_t e = start[j]; e < start[j + 1]; ++e) acc += sign[e] * xr[channel[e]];
    sketch[i] = acc;
  }
}

// pooled[n][i][k] += sum over the chunk's locations of image n of (F_1 ... F_i)[k].
// A block owns kProductBins consecutive bins of one image (blockIdx.x = image * tiles + tile);
// its `groups` warps split the image's locations (group g takes every groups-th one, in
// order), each lane one bin, running the product chain in registers and adding to its own
// partial sums in shared memory. The partial sums are then added in group order: one writer
// per output and a fixed order, so no atomics and bitwise reproducible.
constexpr int kProductBins = 32;

template <typename T>
__global__ void __launch_bounds__(kBlockThreads)
accumulate_products_kernel(SketchParams<T> p, const T* __restrict__ spectra, int64_t first_row,
                           int64_t rows, T* __restrict__ pooled) {
  extern __shared__ unsigned char shared_bytes[];
  T* partial = reinterpret_cast<T*>(shared_bytes);  // [group][order - 1][kProductBins][2]
  const int64_t tiles = (p.bins + kProductBins - 1) / kProductBins;
  const int64_t n = first_row / p.locations + blockIdx.x / tiles;
  const int64_t k = (blockIdx.x % tiles) * kProductBins + threadIdx.x % kProductBins;
  const int groups = static_cast<int>(blockDim.x) / kProductBins;
  const int group = static_cast<int>(threadIdx.x) / kProductBins;
  const int64_t products = p.order - 1;
  T* mine = partial + (group * products * kProductBins + threadIdx.x % kProductBins) * 2;
  for (int64_t t = 0; t < products; ++t) {
    mine[t * kProductBins * 2] = T(0);
    mine[t * kProductBins * 2 + 1] = T(0);
  }
  const int64_t begin = n * p.locations > first_row ? n * p.locations : first_row;
  const int64_t end = (n + 1) * p.locations < first_row + rows ? (n + 1) * p.locations
                                                                : first_row + rows;
  if (k < p.bins) {
    for (int64_t r = begin + group; r < end; r += groups) {
      const T* f = spectra + ((r - first_row) * p.order * p.bins + k) * 2;
      accumulate_products<ScalarBins<T>>(f, 2 * p.bins, p.order, mine, 2 * kProductBins);
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < products * kProductBins; i += blockDim.x) {
    const int64_t t = i / kProductBins, bin = (blockIdx.x % tiles) * kProductBins + i % kProductBins;
    if (bin >= p.bins) continue;
    Complex<T> sum{T(0), T(0)};
    for (int g = 0; g < groups; ++g) {
      sum = sum + ScalarBins<T>::load(partial + ((g * products + t) * kProductBins + i % kProductBins) * 2);
    }
    T* q = pooled + ((n * products + t) * p.bins + bin) * 2;
    ScalarBins<T>::store(q, ScalarBins<T>::load(q) + sum);
  }
}

// Location groups of a product block: as many as the shared memory holds, up to a full block.
template <typename T>
int product_groups(int64_t order) {
  const int64_t per_group = (order - 1) * kProductBins * 2 * static_cast<int64_t>(sizeof(T));
  const int64_t groups = (int64_t(48) << 10) / per_group;
  const int64_t most = kBlockThreads / kProductBins;
  return static_cast<int>(groups < most ? groups : most);
}

// adjoint = d(loss)/d(spectra) of every location and bin of the chunk, from grad (the
// per-image gradient w.r.t. the pooled spectra, (N, order - 1, bins)).
template <typename T>
__global__ void __launch_bounds__(kBlockThreads)
backprop_products_kernel(SketchParams<T> p, const T* spectra, int64_t first_row, int64_t rows,
                         const T* grad, T* adjoint) {
  for (int64_t i = grid_start(); i < rows * p.bins; i += grid_stride()) {
    const int64_t k = i % p.bins, r = i / p.bins, n = (first_row + r) / p.locations;
    const int64_t offset = (r * p.order * p.bins + k) * 2;
    backprop_products<ScalarBins<T>>(spectra + offset, 2 * p.bins, p.order,
                                     grad + (n * (p.order - 1) * p.bins + k) * 2, 2 * p.bins,
                                     adjoint + offset);
  }
}

// dx[r][k] = sum_t s_t(k) dsketch[r][t][h_t(k)]: the count-sketch adjoint, a gather.
template <typename T>
__global__ void __launch_bounds__(kBlockThreads)
sketch_adjoint_kernel(SketchParams<T> p, const T* dsketch, int64_t rows, T* dx) {
  for (int64_t i = grid_start(); i < rows * p.channels; i += grid_stride()) {
    const int64_t k = i % p.channels, r = i / p.channels;
    const T* d = dsketch + r * p.order * p.dim;
    T acc = 0;
    for (int64_t t = 0; t < p.order; ++t) {
      // A hash value out of range is refused by a device-side assertion that does not stop
      // this kernel: it reads nothing then.
      const int64_t h = p.hash_index[t * p.channels + k];
      if (h >= 0 && h < p.dim) acc += p.hash_sign[t * p.channels + k] * d[t * p.dim + h];
    }
    dx[i] = acc;
  }
}

// Launches kernel(args...) with a block per kBlockThreads of `work` grid-stride items, and
// nothing for no work: CUDA rejects a grid of 0 blocks (C = 0 has no sketch-adjoint work).
template <typename... Params, typename... Args>
cudaError_t launch_over(int64_t work, cudaStream_t stream, void (*kernel)(Params...),
                        Args... args) {
  if (work == 0) return cudaSuccess;
  kernel<<<grid_for(work), kBlockThreads, 0, stream>>>(args...);
  return cudaGetLastError();
}

// Launchers: one chunk of `rows` locations starting at flattened row first_row.
template <typename T>
cudaError_t launch_count_sketch(const SketchParams<T>& p, const T* x, int64_t rows, T* sketch,
                                cudaStream_t stream) {
  return launch_over(rows * p.order * p.dim, stream, count_sketch_kernel<T>, p, x, rows, sketch);
}

// Needs product_groups<T>(p.order) >= 1 (orders up to 97 in float64), checked by the caller.
template <typename T>
cudaError_t launch_accumulate_products(const SketchParams<T>& p, const T* spectra,
                                       int64_t first_row, int64_t rows, T* pooled,
                                       cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int64_t images = (first_row + rows - 1) / p.locations - first_row / p.locations + 1;
  const int64_t tiles = (p.bins + kProductBins - 1) / kProductBins;
  // No more groups than an image has locations (idle warps would only wait at the barrier).
  const int most = product_groups<T>(p.order);
  const int groups = p.locations < most ? static_cast<int>(p.locations) : most;
  const size_t shared = static_cast<size_t>(groups) * (p.order - 1) * kProductBins * 2 * sizeof(T);
  accumulate_products_kernel<T><<<static_cast<unsigned>(images * tiles), groups * kProductBins,
                                  shared, stream>>>(p, spectra, first_row, rows, pooled);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backprop_products(const SketchParams<T>& p, const T* spectra,
                                     int64_t first_row, int64_t rows, const T* grad, T* adjoint,
                                     cudaStream_t stream) {
  return launch_over(rows * p.bins, stream, backprop_products_kernel<T>, p, spectra, first_row,
                     rows, grad, adjoint);
}

template <typename T>
cudaError_t launch_sketch_adjoint(const SketchParams<T>& p, const T* dsketch, int64_t rows,
                                  T* dx, cudaStream_t stream) {
  return launch_over(rows * p.channels, stream, sketch_adjoint_kernel<T>, p, dsketch, rows, dx);
}

#ifdef FGO_CUDA_CHECK
// `make cuda-check` compiles this header alone: take the launchers' addresses so that every
// kernel is instantiated and compiled for both dtypes.
#define FGO_KP_LAUNCHERS(T)                                                       \
  reinterpret_cast<void*>(&launch_count_sketch<T>),                               \
      reinterpret_cast<void*>(&launch_accumulate_products<T>),                    \
      reinterpret_cast<void*>(&launch_backprop_products<T>),                      \
      reinterpret_cast<void*>(&launch_sketch_adjoint<T>)
inline void* const kInstantiated[] = {FGO_KP_LAUNCHERS(float), FGO_KP_LAUNCHERS(double)};
#undef FGO_KP_LAUNCHERS
#endif

}  // namespace cuda
}  // namespace kp
}  // namespace fgo
