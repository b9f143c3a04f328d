#pragma once
// CUDA kernels of kernel pooling. Raw pointers, sizes and a stream only: this file needs no
// torch header, so `make cuda-check` compiles it on machines without a CUDA torch. The FFTs
// between these kernels are cuFFT calls made by the launcher (kernel_pooling_cuda.cu):
//   forward:  sketch -> rfft -> products (the Hermitian spectrum of each image's sums)
//             -> inverse complex FFT -> finish (mean block, alpha, normalisation);
//   backward: sketch + the rows' gradients (one launch) -> one rfft of both -> products'
//             adjoint -> irfft -> sketch adjoint (+ the mean's gradient and d(alpha)).
// In is x's storage type (half types included), T the computed one.
//
// Locations ("rows" of the flattened (N * L, C) input) are processed in chunks. Every output
// element has exactly one writing thread and each sum runs in a fixed order: no atomics, so
// results are bitwise reproducible.

#include <cuda_runtime.h>

#include <cstdint>

#include "common/reduce.cuh"
#include "common/host_device.h"
#include "kernel_pooling/kernel_pooling_math.h"

namespace fgo {
namespace kp {
namespace cuda {

constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

__device__ __forceinline__ int64_t grid_start() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

inline unsigned grid_for(int64_t work) {
  const int64_t blocks = (work + kBlockThreads - 1) / kBlockThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

template <typename In, typename T>
struct PoolingParams {
  int64_t images, locations, channels;  // N, L, C
  int64_t order, sketches;              // p; the sketches transformed (p, or 0 for p = 1)
  int64_t dim, bins;                    // d, d / 2 + 1
  const In* x;
  int64_t x_stride[3];                  // of (N, L, C), in elements
  SketchTable table;
  RowLayout layout;
  const T* alpha;                       // (p + 1,), or null: columns unscaled
  bool normalize;

  __device__ const In* location(int64_t row) const {
    return x + (row / locations) * x_stride[0] + (row % locations) * x_stride[1];
  }
  __device__ T scale(int64_t j) const { return alpha ? alpha[layout.block(j)] : T(1); }
};

// What the backward's first sketch launch also computes: the gradient of each image's row,
// a block per image (blocks [0, images) of the launch).
template <typename In, typename T>
struct RowGradients {
  int64_t images;         // 0: none in this launch
  const In* grad;         // (N, D), strides below (a broadcast gradient has stride 0)
  int64_t grad_stride[2];
  const In* out;          // (N, D), contiguous: the forward's output
  const T* blocks;        // (N, D): the forward's blocks
  T* sketch_grad;         // (N, p - 1, d): dU / (L d), rows the rfft transforms with the sketches
  T* mean_grad;           // (N, C): d(loss)/d(x[n, l, c]) of the mean block; null without alpha
  T* alpha_partial;       // (N, p + 1): each image's d(alpha); null without alpha
};

template <typename In, typename T>
__device__ void row_gradient(const PoolingParams<In, T>& p, const RowGradients<In, T>& g,
                             int64_t n) {
  const int64_t width = p.layout.width(), begin = p.layout.sketch_begin();
  const T* row = g.blocks + n * width;
  const In* grad = g.grad + n * g.grad_stride[0];
  const In* out = g.out + n * width;
  const T eps = T(kSqrtEps), root = sqrt(eps);
  T squares = 0, dot = 0;
  if (p.normalize) {
    for (int64_t j = threadIdx.x; j < width; j += kBlockThreads) {
      const T s = sqrt_norm::signed_sqrt(p.scale(j) * row[j], eps, root);
      squares += s * s;
      dot += static_cast<T>(out[j]) * static_cast<T>(grad[j * g.grad_stride[1]]);
    }
    squares = block_sum<kBlockThreads>(squares);
    dot = block_sum<kBlockThreads>(dot);
  }
  const T norm = sqrt(squares), per_sketch = T(1) / (T(p.locations) * T(p.dim));
  for (int64_t b = p.alpha ? 0 : 2; b <= p.order; ++b) {
    const int64_t last = b == p.order ? width : p.layout.begin(b + 1);
    T partial = 0;
    for (int64_t j = p.layout.begin(b) + threadIdx.x; j < last; j += kBlockThreads) {
      const T scale = p.scale(j), gz = static_cast<T>(grad[j * g.grad_stride[1]]);
      const T gy = p.normalize
                       ? normalized_grad(gz, static_cast<T>(out[j]), scale * row[j], dot, norm)
                       : gz;
      if (j >= begin) {
        g.sketch_grad[n * (width - begin) + j - begin] = scale * gy * per_sketch;
      } else if (j >= 1) {
        g.mean_grad[n * p.channels + j - 1] = scale * gy / T(p.locations);
      }
      partial += gy * row[j];
    }
    if (g.alpha_partial) {
      partial = block_sum<kBlockThreads>(partial);
      if (threadIdx.x == 0) g.alpha_partial[n * (p.order + 1) + b] = partial;
    }
  }
}

// sketch[r][t][j] = sum of s_t(k) x[r][k] over the channels k hashed to bin j by h_t, for the
// chunk's rows r; the launch's first `g.images` blocks compute the rows' gradients instead.
template <typename In, typename T>
__global__ void __launch_bounds__(kBlockThreads)
sketch_kernel(PoolingParams<In, T> p, int64_t first_row, int64_t rows, T* sketch,
              RowGradients<In, T> g) {
  if (blockIdx.x < g.images) {
    row_gradient(p, g, int64_t(blockIdx.x));
    return;
  }
  const int64_t total = rows * p.sketches * p.dim;
  const int64_t stride = int64_t(gridDim.x - g.images) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x - g.images) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t j = i % p.dim, t = (i / p.dim) % p.sketches, r = i / (p.dim * p.sketches);
    const int64_t *starts = p.table.starts(t), *entries = p.table.entries(t);
    const In* xr = p.location(first_row + r);
    const int64_t begin = starts[j], end = starts[j + 1];
    const bool in_range = 0 <= begin && begin <= end && end <= p.channels;
    FGO_KERNEL_CHECK(in_range, "kernel_pooling: sketch_table offsets out of range");
    T acc = 0;
    for (int64_t e = in_range ? begin : end; e < end; ++e) {
      const int64_t k = code_index(entries[e]);
      FGO_KERNEL_CHECK(entries[e] != 0 && k < p.channels,
                       "kernel_pooling: a sketch_table entry names no channel");
      if (entries[e] != 0 && k < p.channels) {
        acc += code_sign<T>(entries[e]) * static_cast<T>(xr[k * p.x_stride[2]]);
      }
    }
    sketch[i] = acc;
  }
}

// spectrum[n][i] = sum over image n's locations of (F_1 ... F_i), as the Hermitian spectrum of
// all d bins that the inverse complex FFT takes.
// A block owns kProductBins consecutive bins of one image (blockIdx.x = image * tiles + tile);
// its `groups` warps split the chunk's locations of the image (group g takes every groups-th
// one, in order), each lane one bin, running the product chain in registers and adding to its
// own partial sums in shared memory. The partial sums are then added in group order to the
// image's sum: written by the chunk holding the image's first location, added to by the
// others, and mirrored to bins d - k by the chunk holding its last. One writer per output and
// a fixed order, so no atomics and bitwise reproducible.
constexpr int kProductBins = 32;

template <typename In, typename T>
__global__ void __launch_bounds__(kBlockThreads)
accumulate_products_kernel(PoolingParams<In, T> p, const T* __restrict__ spectra,
                           int64_t first_row, int64_t rows, T* __restrict__ spectrum) {
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
  const int64_t image_begin = n * p.locations, image_end = image_begin + p.locations;
  const int64_t begin = image_begin > first_row ? image_begin : first_row;
  const int64_t end = image_end < first_row + rows ? image_end : first_row + rows;
  if (k < p.bins) {
    for (int64_t r = begin + group; r < end; r += groups) {
      const T* f = spectra + ((r - first_row) * p.order * p.bins + k) * 2;
      accumulate_products<ScalarBins<T>>(f, 2 * p.bins, p.order, mine, 2 * kProductBins);
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < products * kProductBins; i += blockDim.x) {
    const int64_t t = i / kProductBins;
    const int64_t bin = (blockIdx.x % tiles) * kProductBins + i % kProductBins;
    if (bin >= p.bins) continue;
    Complex<T> sum{T(0), T(0)};
    for (int g = 0; g < groups; ++g) {
      sum = sum + ScalarBins<T>::load(
                      partial + ((g * products + t) * kProductBins + i % kProductBins) * 2);
    }
    T* row = spectrum + (n * products + t) * p.dim * 2;
    if (begin != image_begin) sum = sum + ScalarBins<T>::load(row + bin * 2);
    if (end == image_end) {
      // irfft's view of the bins: DC's and Nyquist's imaginary parts are not used.
      if (bin == 0 || 2 * bin == p.dim) sum.im = T(0);
      if (bin > 0 && p.dim - bin >= p.bins) {
        ScalarBins<T>::store(row + (p.dim - bin) * 2, ScalarBins<T>::conj(sum));
      }
    }
    ScalarBins<T>::store(row + bin * 2, sum);
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

// blocks and out of image n (a block per image): U_i from the inverse transform's real parts
// (`inverse`, (N, p - 1, d) complex, d L times U), the mean block from x, then alpha and the
// normalisation.
template <typename In, typename T>
__global__ void __launch_bounds__(kBlockThreads)
finish_kernel(PoolingParams<In, T> p, const T* inverse, T* blocks, In* out) {
  const int64_t n = blockIdx.x, width = p.layout.width(), begin = p.layout.sketch_begin();
  T* row = blocks + n * width;
  const T per_sketch = T(1) / (T(p.locations) * T(p.dim)), eps = T(kSqrtEps), root = sqrt(eps);
  T squares = 0;
  for (int64_t j = threadIdx.x; j < width; j += kBlockThreads) {
    T value = T(1);
    if (j >= begin) {
      value = inverse[(n * (width - begin) + j - begin) * 2] * per_sketch;
    } else if (j >= 1) {
      const In* x = p.x + n * p.x_stride[0] + (j - 1) * p.x_stride[2];
      T sum = 0;
      for (int64_t l = 0; l < p.locations; ++l) sum += static_cast<T>(x[l * p.x_stride[1]]);
      value = sum / T(p.locations);
    }
    row[j] = value;
    const T s = sqrt_norm::signed_sqrt(p.scale(j) * value, eps, root);
    squares += s * s;
  }
  T inverse_norm = T(1);
  if (p.normalize) {
    const T norm = sqrt(block_sum<kBlockThreads>(squares));
    inverse_norm = T(1) / (norm > T(sqrt_norm::kNormEps) ? norm : T(sqrt_norm::kNormEps));
  }
  for (int64_t j = threadIdx.x; j < width; j += kBlockThreads) {
    const T y = p.scale(j) * row[j];
    out[n * width + j] = static_cast<In>(
        p.normalize ? sqrt_norm::signed_sqrt(y, eps, root) * inverse_norm : y);
  }
}

// adjoint = d(loss)/d(spectra) of every location and bin of the chunk, from grad (the
// per-image gradient w.r.t. the pooled spectra, (N, order - 1, bins)).
template <typename In, typename T>
__global__ void __launch_bounds__(kBlockThreads)
backprop_products_kernel(PoolingParams<In, T> p, const T* spectra, int64_t first_row,
                         int64_t rows, const T* grad, T* adjoint) {
  for (int64_t i = grid_start(); i < rows * p.bins; i += grid_stride()) {
    const int64_t k = i % p.bins, r = i / p.bins, n = (first_row + r) / p.locations;
    const int64_t offset = (r * p.order * p.bins + k) * 2;
    backprop_products<ScalarBins<T>>(spectra + offset, 2 * p.bins, p.order,
                                     grad + (n * (p.order - 1) * p.bins + k) * 2, 2 * p.bins,
                                     adjoint + offset);
  }
}

// dx[r][k] = sum_t s_t(k) dsketch[r][t][h_t(k)] (the count-sketch adjoint, a gather) plus the
// mean block's gradient, for the chunk's rows, written with dx's strides; with alpha_partial,
// block 0 first adds the images' d(alpha) in image order.
template <typename In, typename T>
__global__ void __launch_bounds__(kBlockThreads)
sketch_adjoint_kernel(PoolingParams<In, T> p, const T* dsketch, int64_t first_row, int64_t rows,
                      const T* mean_grad, const T* alpha_partial, T* alpha_grad, In* dx,
                      int64_t dx_stride0, int64_t dx_stride1, int64_t dx_stride2) {
  for (int64_t b = threadIdx.x; alpha_partial && blockIdx.x == 0 && b <= p.order;
       b += blockDim.x) {
    T sum = 0;
    for (int64_t n = 0; n < p.images; ++n) sum += alpha_partial[n * (p.order + 1) + b];
    alpha_grad[b] = sum;
  }
  for (int64_t i = grid_start(); i < rows * p.channels; i += grid_stride()) {
    const int64_t k = i % p.channels, r = i / p.channels, row = first_row + r;
    const int64_t n = row / p.locations, l = row % p.locations;
    const T* d = dsketch + r * p.sketches * p.dim;
    T acc = mean_grad ? mean_grad[n * p.channels + k] : T(0);
    for (int64_t t = 0; t < p.sketches; ++t) {
      const int64_t code = p.table.codes(t)[k], h = code_index(code);
      FGO_KERNEL_CHECK(h < p.dim, "kernel_pooling: a sketch_table code names no bin");
      if (code != 0 && h < p.dim) acc += code_sign<T>(code) * d[t * p.dim + h];
    }
    dx[n * dx_stride0 + l * dx_stride1 + k * dx_stride2] = static_cast<In>(acc);
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
template <typename In, typename T>
cudaError_t launch_sketch(const PoolingParams<In, T>& p, int64_t first_row, int64_t rows,
                          T* sketch, const RowGradients<In, T>& g, cudaStream_t stream) {
  const int64_t work = rows * p.sketches * p.dim;
  const int64_t blocks = g.images + (work ? grid_for(work) : 0);
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  sketch_kernel<In, T><<<static_cast<unsigned>(blocks), kBlockThreads, 0, stream>>>(
      p, first_row, rows, sketch, g);
  return cudaGetLastError();
}

// Needs product_groups<T>(p.order) >= 1 (orders up to 97 in float64), checked by the caller.
template <typename In, typename T>
cudaError_t launch_accumulate_products(const PoolingParams<In, T>& p, const T* spectra,
                                       int64_t first_row, int64_t rows, T* spectrum,
                                       cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int64_t images = (first_row + rows - 1) / p.locations - first_row / p.locations + 1;
  const int64_t tiles = (p.bins + kProductBins - 1) / kProductBins;
  // No more groups than an image has locations (idle warps would only wait at the barrier).
  const int most = product_groups<T>(p.order);
  const int groups = p.locations < most ? static_cast<int>(p.locations) : most;
  const size_t shared = static_cast<size_t>(groups) * (p.order - 1) * kProductBins * 2 * sizeof(T);
  accumulate_products_kernel<In, T><<<static_cast<unsigned>(images * tiles),
                                      groups * kProductBins, shared, stream>>>(
      p, spectra, first_row, rows, spectrum);
  return cudaGetLastError();
}

template <typename In, typename T>
cudaError_t launch_finish(const PoolingParams<In, T>& p, const T* inverse, T* blocks, In* out,
                          cudaStream_t stream) {
  if (p.images > 0x7fffffff) return cudaErrorInvalidConfiguration;
  finish_kernel<In, T><<<static_cast<unsigned>(p.images), kBlockThreads, 0, stream>>>(
      p, inverse, blocks, out);
  return cudaGetLastError();
}

template <typename In, typename T>
cudaError_t launch_backprop_products(const PoolingParams<In, T>& p, const T* spectra,
                                     int64_t first_row, int64_t rows, const T* grad, T* adjoint,
                                     cudaStream_t stream) {
  return launch_over(rows * p.bins, stream, backprop_products_kernel<In, T>, p, spectra,
                     first_row, rows, grad, adjoint);
}

// One block at least when d(alpha) is summed: with C = 0 there is no dx to write.
template <typename In, typename T>
cudaError_t launch_sketch_adjoint(const PoolingParams<In, T>& p, const T* dsketch,
                                  int64_t first_row, int64_t rows, const T* mean_grad,
                                  const T* alpha_partial, T* alpha_grad, In* dx,
                                  const int64_t* dx_stride, cudaStream_t stream) {
  return launch_over(alpha_partial ? (rows * p.channels > 0 ? rows * p.channels : 1)
                                   : rows * p.channels,
                     stream, sketch_adjoint_kernel<In, T>, p, dsketch, first_row, rows,
                     mean_grad, alpha_partial, alpha_grad, dx, dx_stride[0], dx_stride[1],
                     dx_stride[2]);
}

#ifdef FGO_CUDA_CHECK
// `make cuda-check` compiles this header alone: take the launchers' addresses so that every
// kernel is instantiated and compiled for both computed dtypes.
#define FGO_KP_LAUNCHERS(In, T)                                                   \
  reinterpret_cast<void*>(&launch_sketch<In, T>),                                 \
      reinterpret_cast<void*>(&launch_accumulate_products<In, T>),                \
      reinterpret_cast<void*>(&launch_finish<In, T>),                             \
      reinterpret_cast<void*>(&launch_backprop_products<In, T>),                  \
      reinterpret_cast<void*>(&launch_sketch_adjoint<In, T>)
inline void* const kInstantiated[] = {FGO_KP_LAUNCHERS(float, float),
                                      FGO_KP_LAUNCHERS(double, double)};
#undef FGO_KP_LAUNCHERS
#endif

}  // namespace cuda
}  // namespace kp
}  // namespace fgo
