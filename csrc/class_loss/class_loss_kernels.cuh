#pragma once
// CUDA kernels of the class loss family. Raw pointers, sizes and a stream only: this file
// needs no torch header, so `make cuda-check` compiles it on machines without a CUDA torch.
//
// Two launches a call. The rows kernel: a group of kThreadsPerRow threads owns one row (a warp
// when C is small, the whole block when C is large), reduces the row's loss with a fixed
// shuffle/shared-memory tree (no atomics, so results are bitwise reproducible) and writes
// d(loss)/d(logits) of the summed loss in the same pass. The finish kernel, one block, sums the
// rows' losses and divisors in float64 in a fixed order and writes the loss and the divisor.
// Values the kernels read are checked where they read them (FGO_KERNEL_CHECK: device-side
// assertions, no host sync). scalar_t is the logits' storage type (half types included), acc_t
// the type computed in (float for half types), loss_t the loss's.

#include <cuda_runtime.h>

#include <cstdint>

#include "class_loss/class_loss_math.h"
#include "common/host_device.h"
#include "common/reduce.cuh"

namespace fgo {
namespace cls {
namespace cuda {

struct ScalarOps {
  template <typename T> static __device__ __forceinline__ T exp(T x) { return ::exp(x); }
  template <typename T> static __device__ __forceinline__ T log(T x) { return ::log(x); }
  template <typename T> static __device__ __forceinline__ T log1p(T x) { return ::log1p(x); }
  template <typename T> static __device__ __forceinline__ T pow(T x, T y) { return ::pow(x, y); }
  template <typename T> static __device__ __forceinline__ T abs(T x) { return ::fabs(x); }
  template <typename T> static __device__ __forceinline__ T relu(T x) { return x > T(0) ? x : T(0); }
  template <typename T>
  static __device__ __forceinline__ T select_nonneg(T z, T a, T b) { return z >= T(0) ? a : b; }
};

template <typename scalar_t, typename acc_t>
struct RowsParams {
  const scalar_t* logits;          // (n, c)
  const int64_t* labels;           // (n,) class indices, or nullptr for a multi-hot target
  const acc_t* soft_target;        // (n, c) multi-hot / soft target, or nullptr
  const acc_t* class_weights;      // (c,), or nullptr: every class weighs 1
  const acc_t* logit_offsets;      // softmax: (c,) added to the logits, or nullptr
  const acc_t* target_margins;     // softmax: (c,) taken off the true class's logit, or nullptr
  int64_t n, c, ignore_index;
  acc_t scale;                     // softmax: multiplies the adjusted logits
  acc_t gamma;
  int64_t loss_type;               // cls::LossType
  int64_t reduction;               // cls::Reduction
  acc_t* row_loss;                 // (n,) weighted loss of each row
  acc_t* row_norm;                 // (n,) the row's share of the 'mean' divisor (0 if ignored)
  scalar_t* grad;                  // (n, c) weighted d(loss)/d(logits), or nullptr
};

template <typename acc_t>
__device__ __forceinline__ acc_t checked_weight(const acc_t* weights, int64_t k) {
  if (weights == nullptr) return acc_t(1);
  const acc_t w = weights[k];
  FGO_KERNEL_CHECK(::isfinite(w) && w >= acc_t(0),
                   "class_loss: class_weights must be finite and >= 0");
  return w;
}

// Row weight (sum of the positive classes' weights) and positives; false for an ignored row.
template <int kThreadsPerRow, typename scalar_t, typename acc_t>
__device__ __forceinline__ bool row_weight(const RowsParams<scalar_t, acc_t>& p, int64_t row,
                                           int lane, int64_t* y, acc_t* w, acc_t* positives) {
  if (p.soft_target == nullptr) {
    *y = p.labels[row];
    if (*y == p.ignore_index) return false;
    FGO_KERNEL_CHECK(*y >= 0 && *y < p.c,
                     "class_loss: target class indices must be in [0, C) or equal ignore_index");
    if (*y < 0 || *y >= p.c) return false;  // past the check: read nothing outside
    *w = checked_weight(p.class_weights, *y);
    *positives = acc_t(1);
    return true;
  }
  const acc_t* t = p.soft_target + row * p.c;
  acc_t ws = 0, ps = 0;
  for (int64_t j = lane; j < p.c; j += kThreadsPerRow) {
    FGO_KERNEL_CHECK(t[j] >= acc_t(0) && t[j] <= acc_t(1),
                     "class_loss: (N, C) target values must be in [0, 1] (and not NaN)");
    ws += checked_weight(p.class_weights, j) * t[j];
    ps += t[j];
  }
  *y = -1;
  *w = block_reduce<kThreadsPerRow>(ws, Sum());
  *positives = block_reduce<kThreadsPerRow>(ps, Sum());
  FGO_KERNEL_CHECK(p.loss_type != kSoftmax ||
                       ::fabs(double(*positives) - 1.0) <= kSoftTargetSumTolerance,
                   "class_loss: soft targets of a softmax loss must have every row summing to 1 "
                   "(within 1e-2)");
  return true;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void write_ignored_row(const RowsParams<scalar_t, acc_t>& p,
                                                  int64_t row, int lane, int threads_per_row) {
  if (p.grad != nullptr) {
    for (int64_t j = lane; j < p.c; j += threads_per_row) p.grad[row * p.c + j] = scalar_t(0);
  }
  if (lane == 0) {
    p.row_loss[row] = acc_t(0);
    p.row_norm[row] = acc_t(0);
  }
}

// One thread's view of its row.
template <typename acc_t>
struct Row {
  int64_t row;          // the row index
  int lane;             // this thread's place among the row's threads
  int64_t y;            // the class index, or -1 for a multi-hot / soft target
  acc_t w;              // the row's weight
  acc_t positives;      // the row's positive labels
};

// Fills this thread's row, lane, and the row's label, weight and positives. False when the
// thread has nothing more to do: past the last row (uniform over a row's threads), or an
// ignored row, which it has zeroed.
template <int kThreadsPerRow, typename scalar_t, typename acc_t>
__device__ __forceinline__ bool start_row(const RowsParams<scalar_t, acc_t>& p, Row<acc_t>* r) {
  // block_reduce<kThreadsPerRow> over a row's threads is right for these two only
  static_assert(kThreadsPerRow == 32 || kThreadsPerRow == kBlockThreads,
                "a row is one warp or the whole block");
  r->row = int64_t(blockIdx.x) * (kBlockThreads / kThreadsPerRow) + threadIdx.x / kThreadsPerRow;
  r->lane = threadIdx.x % kThreadsPerRow;
  if (r->row >= p.n) return false;
  if (!row_weight<kThreadsPerRow>(p, r->row, r->lane, &r->y, &r->w, &r->positives)) {
    write_ignored_row(p, r->row, r->lane, kThreadsPerRow);
    return false;
  }
  return true;
}

// The row's first thread writes its weighted loss and its share of the 'mean' divisor.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void finish_row(const RowsParams<scalar_t, acc_t>& p,
                                           const Row<acc_t>& r, acc_t loss) {
  if (r.lane == 0) {
    p.row_loss[r.row] = r.w * loss;
    p.row_norm[r.row] = p.reduction == kWeightedMean ? r.w : r.positives;
  }
}

constexpr int kUnroll = 4;

// Calls f(j, z[j]) for the row elements j = lane, lane + kThreadsPerRow, ... in that order,
// the loads of kUnroll iterations issued together (independent loads in flight, not one).
template <int kThreadsPerRow, typename acc_t, typename scalar_t, typename F>
__device__ __forceinline__ void for_each_logit(const scalar_t* __restrict__ z, int64_t c,
                                               int lane, const F& f) {
  for (int64_t base = lane; base < c; base += kUnroll * kThreadsPerRow) {
    acc_t v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kThreadsPerRow;
      v[u] = j < c ? static_cast<acc_t>(z[j]) : acc_t(0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kThreadsPerRow;
      if (j < c) f(j, v[u]);
    }
  }
}

template <typename scalar_t, typename acc_t, int kThreadsPerRow, bool kFocal>
__global__ void __launch_bounds__(kBlockThreads)
    sigmoid_rows_kernel(RowsParams<scalar_t, acc_t> p) {
  Row<acc_t> r;
  if (!start_row<kThreadsPerRow>(p, &r)) return;
  const acc_t* __restrict__ t = p.soft_target == nullptr ? nullptr : p.soft_target + r.row * p.c;
  scalar_t* __restrict__ grad = p.grad == nullptr ? nullptr : p.grad + r.row * p.c;
  acc_t acc = 0;
  for_each_logit<kThreadsPerRow, acc_t>(p.logits + r.row * p.c, p.c, r.lane,
                                        [&](int64_t j, acc_t z) {
    const acc_t tj = t != nullptr ? t[j] : acc_t(j == r.y ? 1 : 0);
    const auto terms = sigmoid_terms<acc_t, ScalarOps, kFocal>(z, tj, p.gamma);
    acc += terms.loss;
    if (grad != nullptr) grad[j] = static_cast<scalar_t>(r.w * terms.grad);
  });
  finish_row(p, r, block_reduce<kThreadsPerRow>(acc, Sum()));
}

// The adjusted logit v = z + b - margin onehot(y) of the softmax family, before the scale.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t adjusted_logit(const RowsParams<scalar_t, acc_t>& p,
                                                const Row<acc_t>& r, acc_t margin, int64_t j,
                                                acc_t z) {
  if (p.logit_offsets != nullptr) {
    const acc_t b = p.logit_offsets[j];
    FGO_KERNEL_CHECK(::isfinite(b), "class_loss: logit_offsets must be finite");
    z += b;
  }
  if (j == r.y) z -= margin;
  return z;
}

// d = s (v - m), exactly 0 at the row maximum m (class_loss_math.h).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t scaled_difference(const RowsParams<scalar_t, acc_t>& p,
                                                   const Row<acc_t>& r, acc_t margin, int64_t j,
                                                   acc_t z, acc_t m) {
  return (adjusted_logit(p, r, margin, j, z) - m) * p.scale;
}

// Softmax loss of a row (docs/semantics.md §4.2, class_loss_math.h).
template <typename scalar_t, typename acc_t, int kThreadsPerRow, bool kFocal>
__global__ void __launch_bounds__(kBlockThreads)
    softmax_rows_kernel(RowsParams<scalar_t, acc_t> p) {
  Row<acc_t> r;
  if (!start_row<kThreadsPerRow>(p, &r)) return;
  const scalar_t* __restrict__ z = p.logits + r.row * p.c;
  acc_t margin = acc_t(0);
  if (p.target_margins != nullptr && r.y >= 0) {
    margin = p.target_margins[r.y];
    FGO_KERNEL_CHECK(::isfinite(margin) && margin >= acc_t(0),
                     "class_loss: target_margins must be finite and >= 0");
  }
  acc_t m = -INFINITY;
  for_each_logit<kThreadsPerRow, acc_t>(z, p.c, r.lane, [&](int64_t j, acc_t zj) {
    m = Max()(m, adjusted_logit(p, r, margin, j, zj));
  });
  m = block_reduce<kThreadsPerRow>(m, Max());
  acc_t below = 0, ties = 0;  // exp(d) of the classes below m; classes at m
  for_each_logit<kThreadsPerRow, acc_t>(z, p.c, r.lane, [&](int64_t j, acc_t zj) {
    const acc_t d = scaled_difference(p, r, margin, j, zj, m);
    if (d < acc_t(0)) below += ::exp(d);
    else ties += acc_t(1);
  });
  const auto sums = SoftmaxRowSums<acc_t>::template from<ScalarOps>(
      block_reduce<kThreadsPerRow>(below, Sum()), block_reduce<kThreadsPerRow>(ties, Sum()));
  const acc_t sw = p.scale * r.w;  // d(loss)/dz = s d(loss)/du
  scalar_t* __restrict__ grad = p.grad == nullptr ? nullptr : p.grad + r.row * p.c;
  if (p.soft_target == nullptr) {
    // One target class: d(loss)/du_k = w (onehot_k a_y - p_k a_y).
    const acc_t d_y =
        scaled_difference(p, r, margin, r.y, static_cast<acc_t>(z[r.y]), m);
    const auto ty = softmax_terms<acc_t, ScalarOps, kFocal>(d_y, ::exp(d_y), sums, p.gamma);
    if (grad != nullptr) {
      const acc_t scale_e = -sw * ty.a * sums.inv_sum;
      for_each_logit<kThreadsPerRow, acc_t>(z, p.c, r.lane, [&](int64_t j, acc_t zj) {
        grad[j] = static_cast<scalar_t>(
            j == r.y ? sw * ty.a * ty.q
                     : scale_e * ::exp(scaled_difference(p, r, margin, j, zj, m)));
      });
    }
    finish_row(p, r, ty.loss);
    return;
  }
  // A target row: loss = w sum_c t_c l_c, d(loss)/du_k = w (t_k a_k - p_k A), A = sum_c t_c a_c.
  const acc_t* __restrict__ t = p.soft_target + r.row * p.c;
  acc_t loss = 0, a_sum = 0;
  for_each_logit<kThreadsPerRow, acc_t>(z, p.c, r.lane, [&](int64_t j, acc_t zj) {
    const acc_t d = scaled_difference(p, r, margin, j, zj, m);
    const auto terms = softmax_terms<acc_t, ScalarOps, kFocal>(d, ::exp(d), sums, p.gamma);
    loss += t[j] * terms.loss;
    a_sum += t[j] * terms.a;
  });
  loss = block_reduce<kThreadsPerRow>(loss, Sum());
  a_sum = block_reduce<kThreadsPerRow>(a_sum, Sum());
  if (grad != nullptr) {
    for_each_logit<kThreadsPerRow, acc_t>(z, p.c, r.lane, [&](int64_t j, acc_t zj) {
      const acc_t d = scaled_difference(p, r, margin, j, zj, m);
      const auto terms = softmax_terms<acc_t, ScalarOps, kFocal>(d, ::exp(d), sums, p.gamma);
      grad[j] = static_cast<scalar_t>(sw * (t[j] * terms.a - terms.p * a_sum));
    });
  }
  finish_row(p, r, loss);
}

// One block: loss = sum of row_loss / divisor (or the rows themselves for 'none') and the
// divisor, each thread summing a strided share in float64, then a fixed tree over the threads.
template <typename acc_t, typename loss_t>
__global__ void __launch_bounds__(kBlockThreads)
    finish_kernel(const acc_t* row_loss, const acc_t* row_norm, int64_t n, int64_t reduction,
                  loss_t* loss, loss_t* norm) {
  if (reduction == kNone) {
    for (int64_t i = threadIdx.x; i < n; i += kBlockThreads) {
      loss[i] = static_cast<loss_t>(row_loss[i]);
    }
    if (threadIdx.x == 0) *norm = loss_t(1);
    return;
  }
  double total = 0, divisor = 0;
  for (int64_t i = threadIdx.x; i < n; i += kBlockThreads) {
    total += double(row_loss[i]);
    divisor += double(row_norm[i]);
  }
  total = block_reduce<kBlockThreads>(total, Sum());
  divisor = block_reduce<kBlockThreads>(divisor, Sum());
  if (threadIdx.x == 0) {
    if (reduction == kMean) divisor = divisor > 1.0 ? divisor : 1.0;
    else if (reduction == kWeightedMean) divisor = divisor > 0.0 ? divisor : 1.0;
    else divisor = 1.0;
    *loss = static_cast<loss_t>(total / divisor);
    *norm = static_cast<loss_t>(divisor);
  }
}

template <typename scalar_t, typename acc_t, int kThreadsPerRow>
void launch_rows(const RowsParams<scalar_t, acc_t>& p, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kBlockThreads / kThreadsPerRow;
  const unsigned blocks = static_cast<unsigned>((p.n + kRowsPerBlock - 1) / kRowsPerBlock);
  constexpr int T = kThreadsPerRow;
  if (p.loss_type == kSoftmax && p.gamma > acc_t(0)) {
    softmax_rows_kernel<scalar_t, acc_t, T, true><<<blocks, kBlockThreads, 0, stream>>>(p);
  } else if (p.loss_type == kSoftmax) {
    softmax_rows_kernel<scalar_t, acc_t, T, false><<<blocks, kBlockThreads, 0, stream>>>(p);
  } else if (p.loss_type == kFocal) {
    sigmoid_rows_kernel<scalar_t, acc_t, T, true><<<blocks, kBlockThreads, 0, stream>>>(p);
  } else {
    sigmoid_rows_kernel<scalar_t, acc_t, T, false><<<blocks, kBlockThreads, 0, stream>>>(p);
  }
}

// Fills row_loss, row_norm and grad (a row is one warp below 512 classes, else a block), then
// loss and norm.
template <typename scalar_t, typename acc_t, typename loss_t>
cudaError_t launch_class_loss(const RowsParams<scalar_t, acc_t>& p, loss_t* loss, loss_t* norm,
                              cudaStream_t stream) {
  if (p.n > 0) {
    if (p.c >= 512) {
      launch_rows<scalar_t, acc_t, kBlockThreads>(p, stream);
    } else {
      launch_rows<scalar_t, acc_t, 32>(p, stream);
    }
  }
  finish_kernel<acc_t, loss_t><<<1, kBlockThreads, 0, stream>>>(p.row_loss, p.row_norm, p.n,
                                                                  p.reduction, loss, norm);
  return cudaGetLastError();
}

#ifdef FGO_CUDA_CHECK
// `make cuda-check` compiles this header alone: take the launchers' addresses so that every
// kernel is instantiated and compiled for both dtypes (the half types are instantiated by
// class_loss_cuda.cu, against torch's c10::Half and c10::BFloat16).
inline void* const kInstantiated[] = {
    reinterpret_cast<void*>(&launch_class_loss<float, float, float>),
    reinterpret_cast<void*>(&launch_class_loss<double, double, double>)};
#endif

}  // namespace cuda
}  // namespace cls
}  // namespace fgo
