#pragma once
// CUDA kernels of the fused triplet loss around the rows pass (triplet_kernels.cuh), a block
// per row, every sum in one fixed order (common/reduce.cuh): bitwise reproducible. With the
// two GEMMs of the launcher (triplet_loss_cuda.cu) a step is
//   prepare  the rows of (emb; extra) in the compute type, L2-normalised, and |y|^2
//            (triplet_kernels.cuh, as for mining);
//   GEMM     <y_a, y_c> for every anchor a and candidate c;
//   rows     distances from those in place, the loss pass (loss, counts, weights W);
//   finish   the loss and the reduction's divisor, and the matrix S of the gradient:
//            S_ij = V_ij + V_ji for V = W (squared distances) or W / (2 d) (plain ones), V's
//            rows past B zero, stored as its B rows over all B + E columns and its E extra
//            rows over the B batch columns (the E x E block is zero); own_i = sum_j S_ij;
//   GEMMs    S y: one for the batch rows, one for the extras' (when there are extras);
//   gradient g_i = 2 / divisor (own_i y_i - (S y)_i), back through the normalisation.
// Raw pointers, sizes and a stream only: no torch header (`make cuda-check` compiles it alone).
// scalar_t is the embeddings' storage type (half types included), acc_t the computed one.

#include <cuda_runtime.h>

#include <cstdint>

#include "common/reduce.cuh"
#include "triplet/triplet_kernels.cuh"

namespace fgo {
namespace triplet {
namespace cuda {

constexpr int kLossThreads = 128;

enum Reduction : int { kMeanNonzero = 0, kMean = 1, kSum = 2 };

template <typename acc_t, typename loss_t>
struct FinishParams {
  const double* row_loss;     // (b,) the rows pass's
  const int64_t* row_nonzero;  // (b,)
  const int64_t* row_mined;    // (b,)
  const acc_t* dist;           // (b, b + e) distances
  const acc_t* weights;        // (b, b + e) W
  int64_t b, e;
  int reduction;
  bool squared;
  loss_t* loss;                // 0-dim
  loss_t* norm;                // 0-dim, set to 1 (the divisor is folded into the gradient)
  acc_t* factor;               // 0-dim: 2 / divisor, for the gradient kernel
  acc_t* s;                    // (b, b + e) then (e, b)
  acc_t* own;                  // (b + e,), or nullptr without a gradient (then s is not used)
};

// V_ij of the gradient matrix: W_ij for squared distances, W_ij / (2 d_ij) for plain ones
// (0 at d = 0, where the subgradient of the root is taken as 0).
template <typename acc_t, typename loss_t>
__device__ __forceinline__ acc_t pull_weight(const FinishParams<acc_t, loss_t>& p, int64_t i,
                                             int64_t j) {
  if (i >= p.b) return acc_t(0);
  const int64_t at = i * (p.b + p.e) + j;
  if (p.squared) return p.weights[at];
  return p.dist[at] > acc_t(0) ? p.weights[at] / (2 * p.dist[at]) : acc_t(0);
}

// Block i: row i of S and own_i; block 0 also the loss, norm and factor.
template <typename acc_t, typename loss_t>
__global__ void __launch_bounds__(kLossThreads) finish_kernel(FinishParams<acc_t, loss_t> p) {
  const int64_t i = blockIdx.x;
  if (i == 0) {
    double total = 0;
    int64_t count = 0;
    for (int64_t a = threadIdx.x; a < p.b; a += kLossThreads) {
      total += p.row_loss[a];
      count += p.reduction == kMeanNonzero ? p.row_nonzero[a]
               : p.reduction == kMean      ? p.row_mined[a]
                                           : 0;
    }
    total = block_sum<kLossThreads>(total);
    count = block_sum<kLossThreads>(count);
    const double divisor = p.reduction == kSum || count < 1 ? 1.0 : static_cast<double>(count);
    if (threadIdx.x == 0) {
      *p.loss = static_cast<loss_t>(total / divisor);
      *p.norm = loss_t(1);
      *p.factor = static_cast<acc_t>(2.0 / divisor);
    }
  }
  const int64_t n = p.b + p.e;
  if (p.own == nullptr || i >= n) return;
  // A batch row spans every column; an extra row only the batch's (V's rows past B are zero).
  const int64_t columns = i < p.b ? n : p.b;
  acc_t* row = i < p.b ? p.s + i * n : p.s + p.b * n + (i - p.b) * p.b;
  acc_t own = 0;
  for (int64_t j = threadIdx.x; j < columns; j += kLossThreads) {
    const acc_t v = pull_weight(p, i, j) + pull_weight(p, j, i);
    row[j] = v;
    own += v;
  }
  own = block_sum<kLossThreads>(own);
  if (threadIdx.x == 0) p.own[i] = own;
}

template <typename scalar_t, typename acc_t>
struct GradientParams {
  const acc_t* y;        // (b + e, d) the prepared rows
  const acc_t* pulled;   // (b + e, d) S y
  const acc_t* own;      // (b + e,)
  const acc_t* lengths;  // (b + e,) ||x||
  const acc_t* factor;   // 0-dim
  int64_t b, d;
  bool normalize;
  scalar_t* grad_emb;    // (b, d)
  scalar_t* grad_extra;  // (e, d)
};

// Row r's gradient g w.r.t. its normalised row y, then back through y = x / max(||x||, eps):
// (g - y (y . g)) / ||x|| where ||x|| > eps, g / eps where it was clamped.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kLossThreads) gradient_kernel(GradientParams<scalar_t, acc_t> p) {
  const int64_t r = blockIdx.x;
  const acc_t* y = p.y + r * p.d;
  const acc_t* pulled = p.pulled + r * p.d;
  const acc_t factor = *p.factor, own = p.own[r];
  scalar_t* out = r < p.b ? p.grad_emb + r * p.d : p.grad_extra + (r - p.b) * p.d;
  const auto g = [&](int64_t k) { return factor * (own * y[k] - pulled[k]); };
  acc_t dot = 0;
  for (int64_t k = threadIdx.x; k < p.d; k += kLossThreads) dot += y[k] * g(k);
  dot = block_sum<kLossThreads>(dot);
  const acc_t length = p.lengths[r];
  const bool project = p.normalize && length > acc_t(kNormEps);
  const acc_t inverse = acc_t(1) / norm_divisor(length, p.normalize);
  for (int64_t k = threadIdx.x; k < p.d; k += kLossThreads) {
    out[k] = static_cast<scalar_t>(inverse * (project ? g(k) - y[k] * dot : g(k)));
  }
}

template <typename acc_t, typename loss_t>
cudaError_t launch_finish(const FinishParams<acc_t, loss_t>& p, cudaStream_t stream) {
  unsigned blocks = 0;
  const int64_t rows = p.own == nullptr ? 1 : (p.b + p.e > 0 ? p.b + p.e : 1);
  if (const cudaError_t error = blocks_for(rows, &blocks)) return error;
  finish_kernel<acc_t, loss_t><<<blocks, kLossThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_gradient(const GradientParams<scalar_t, acc_t>& p, int64_t rows,
                            cudaStream_t stream) {
  unsigned blocks = 0;
  if (rows == 0) return cudaSuccess;
  if (const cudaError_t error = blocks_for(rows, &blocks)) return error;
  gradient_kernel<scalar_t, acc_t><<<blocks, kLossThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

#ifdef FGO_CUDA_CHECK
inline void* const kLossInstantiated[] = {
    reinterpret_cast<void*>(&launch_finish<float, float>),
    reinterpret_cast<void*>(&launch_finish<double, double>),
    reinterpret_cast<void*>(&launch_gradient<float, float>),
    reinterpret_cast<void*>(&launch_gradient<double, double>),
};
#endif

}  // namespace cuda
}  // namespace triplet
}  // namespace fgo
