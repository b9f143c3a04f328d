#pragma once
// CUDA kernels of the class-balanced loss family. Raw pointers, sizes and a stream only: this file
// needs no torch header, so `make cuda-check` compiles it on machines without a CUDA torch.
//
// A group of kThreadsPerRow threads owns one row (a warp when C is small, the whole block
// when C is large): it reduces the row's loss with a fixed shuffle/shared-memory tree (no
// atomics, so results are bitwise reproducible) and writes d(loss)/d(logits) in the same pass.

#include <cuda_runtime.h>

#include <cstdint>

#include "class_balanced_loss/class_balanced_loss_math.h"

namespace fgo {
namespace cb {
namespace cuda {

constexpr int kBlockThreads = 256;

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

struct Sum {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

// Reduces v over the kThreadsPerRow threads of a row; every one of them gets the result.
template <int kThreadsPerRow, typename T, typename Op>
__device__ __forceinline__ T row_reduce(T v, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  if constexpr (kThreadsPerRow == 32) {
    return v;
  } else {
    static_assert(kThreadsPerRow == kBlockThreads, "a row is one warp or the whole block");
    __shared__ T partial[kBlockThreads / 32];
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    T r = partial[0];
    for (int i = 1; i < kBlockThreads / 32; ++i) r = op(r, partial[i]);
    __syncthreads();  // `partial` is reused by the next reduction
    return r;
  }
}

template <typename scalar_t>
struct RowsParams {
  const scalar_t* logits;          // (n, c)
  const int64_t* labels;           // (n,) class indices, or nullptr for a multi-hot target
  const scalar_t* soft_target;     // (n, c) multi-hot / soft target, or nullptr
  const scalar_t* class_weights;   // (c,), or nullptr: every class weighs 1
  const scalar_t* logit_offsets;   // softmax: (c,) added to the logits, or nullptr
  const scalar_t* target_margins;  // softmax: (c,) taken off the true class's logit, or nullptr
  int64_t n, c, ignore_index;      // labels are in [0, c) or ignore_index (checked by the caller)
  scalar_t scale;                  // softmax: multiplies the adjusted logits
  scalar_t gamma;
  int64_t loss_type;               // cb::LossType
  bool norm_by_weight;             // row_norm holds the row's weight, else its positives
  scalar_t* row_loss;              // (n,) weighted loss of each row
  scalar_t* row_norm;              // (n,) the row's share of the 'mean' divisor (0 if ignored)
  scalar_t* grad;                  // (n, c) weighted d(loss)/d(logits), or nullptr
};

// Row weight (sum of the positive classes' weights) and positives; false for an ignored row.
template <int kThreadsPerRow, typename scalar_t>
__device__ __forceinline__ bool row_weight(const RowsParams<scalar_t>& p, int64_t row, int lane,
                                           int64_t* y, scalar_t* w, scalar_t* positives) {
  if (p.soft_target == nullptr) {
    *y = p.labels[row];
    // An index out of range is refused by a device-side assertion that does not stop this
    // kernel: such a row is skipped like an ignored one, so no memory outside is read.
    if (*y == p.ignore_index || *y < 0 || *y >= p.c) return false;
    *w = p.class_weights != nullptr ? p.class_weights[*y] : scalar_t(1);
    *positives = scalar_t(1);
    return true;
  }
  const scalar_t* t = p.soft_target + row * p.c;
  scalar_t ws = 0, ps = 0;
  for (int64_t j = lane; j < p.c; j += kThreadsPerRow) {
    ws += (p.class_weights != nullptr ? p.class_weights[j] : scalar_t(1)) * t[j];
    ps += t[j];
  }
  *y = -1;
  *w = row_reduce<kThreadsPerRow>(ws, Sum());
  *positives = row_reduce<kThreadsPerRow>(ps, Sum());
  return true;
}

template <typename scalar_t>
__device__ __forceinline__ void write_ignored_row(const RowsParams<scalar_t>& p, int64_t row,
                                                  int lane, int threads_per_row) {
  if (p.grad != nullptr) {
    for (int64_t j = lane; j < p.c; j += threads_per_row) p.grad[row * p.c + j] = scalar_t(0);
  }
  if (lane == 0) {
    p.row_loss[row] = scalar_t(0);
    p.row_norm[row] = scalar_t(0);
  }
}

// One thread's view of its row.
template <typename scalar_t>
struct Row {
  int64_t row;          // the row index
  int lane;             // this thread's place among the row's threads
  int64_t y;            // the class index, or -1 for a multi-hot / soft target
  scalar_t w;           // the row's weight
  scalar_t positives;   // the row's positive labels
};

// Fills this thread's row, lane, and the row's label, weight and positives. False when the
// thread has nothing more to do: past the last row (uniform over a row's threads), or an
// ignored row, which it has zeroed.
template <int kThreadsPerRow, typename scalar_t>
__device__ __forceinline__ bool start_row(const RowsParams<scalar_t>& p, Row<scalar_t>* r) {
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
template <typename scalar_t>
__device__ __forceinline__ void finish_row(const RowsParams<scalar_t>& p, const Row<scalar_t>& r,
                                           scalar_t loss) {
  if (r.lane == 0) {
    p.row_loss[r.row] = r.w * loss;
    p.row_norm[r.row] = p.norm_by_weight ? r.w : r.positives;
  }
}

constexpr int kUnroll = 4;

// Calls f(j, z[j]) for the row elements j = lane, lane + kThreadsPerRow, ... in that order,
// the loads of kUnroll iterations issued together (independent loads in flight, not one).
template <int kThreadsPerRow, typename scalar_t, typename F>
__device__ __forceinline__ void for_each_logit(const scalar_t* __restrict__ z, int64_t c,
                                               int lane, const F& f) {
  for (int64_t base = lane; base < c; base += kUnroll * kThreadsPerRow) {
    scalar_t v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kThreadsPerRow;
      v[u] = j < c ? z[j] : scalar_t(0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kThreadsPerRow;
      if (j < c) f(j, v[u]);
    }
  }
}

template <typename scalar_t, int kThreadsPerRow, bool kFocal>
__global__ void __launch_bounds__(kBlockThreads) sigmoid_rows_kernel(RowsParams<scalar_t> p) {
  Row<scalar_t> r;
  if (!start_row<kThreadsPerRow>(p, &r)) return;
  const scalar_t* __restrict__ t =
      p.soft_target == nullptr ? nullptr : p.soft_target + r.row * p.c;
  scalar_t* __restrict__ grad = p.grad == nullptr ? nullptr : p.grad + r.row * p.c;
  scalar_t acc = 0;
  for_each_logit<kThreadsPerRow>(p.logits + r.row * p.c, p.c, r.lane, [&](int64_t j, scalar_t z) {
    const scalar_t tj = t != nullptr ? t[j] : scalar_t(j == r.y ? 1 : 0);
    const auto terms = sigmoid_terms<scalar_t, ScalarOps, kFocal>(z, tj, p.gamma);
    acc += terms.loss;
    if (grad != nullptr) grad[j] = r.w * terms.grad;
  });
  finish_row<scalar_t>(p, r, row_reduce<kThreadsPerRow>(acc, Sum()));
}

// The adjusted logit v = z + b - margin onehot(y) of the softmax family, before the scale.
template <typename scalar_t>
__device__ __forceinline__ scalar_t adjusted_logit(const RowsParams<scalar_t>& p,
                                                   const Row<scalar_t>& r, scalar_t margin,
                                                   int64_t j, scalar_t z) {
  if (p.logit_offsets != nullptr) z += p.logit_offsets[j];
  if (j == r.y) z -= margin;
  return z;
}

// d = s (v - m), exactly 0 at the row maximum m (class_balanced_loss_math.h).
template <typename scalar_t>
__device__ __forceinline__ scalar_t scaled_difference(const RowsParams<scalar_t>& p,
                                                      const Row<scalar_t>& r, scalar_t margin,
                                                      int64_t j, scalar_t z, scalar_t m) {
  return (adjusted_logit(p, r, margin, j, z) - m) * p.scale;
}

// Softmax loss of a row (docs/semantics.md §4.2, class_balanced_loss_math.h).
template <typename scalar_t, int kThreadsPerRow, bool kFocal>
__global__ void __launch_bounds__(kBlockThreads) softmax_rows_kernel(RowsParams<scalar_t> p) {
  Row<scalar_t> r;
  if (!start_row<kThreadsPerRow>(p, &r)) return;
  const scalar_t* __restrict__ z = p.logits + r.row * p.c;
  const scalar_t margin =
      p.target_margins != nullptr && r.y >= 0 ? p.target_margins[r.y] : scalar_t(0);
  scalar_t m = -INFINITY;
  for_each_logit<kThreadsPerRow>(z, p.c, r.lane, [&](int64_t j, scalar_t zj) {
    m = Max()(m, adjusted_logit(p, r, margin, j, zj));
  });
  m = row_reduce<kThreadsPerRow>(m, Max());
  scalar_t below = 0, ties = 0;  // exp(d) of the classes below m; classes at m
  for_each_logit<kThreadsPerRow>(z, p.c, r.lane, [&](int64_t j, scalar_t zj) {
    const scalar_t d = scaled_difference(p, r, margin, j, zj, m);
    if (d < scalar_t(0)) below += ::exp(d);
    else ties += scalar_t(1);
  });
  const auto sums = SoftmaxRowSums<scalar_t>::template from<ScalarOps>(
      row_reduce<kThreadsPerRow>(below, Sum()), row_reduce<kThreadsPerRow>(ties, Sum()));
  const scalar_t sw = p.scale * r.w;  // d(loss)/dz = s d(loss)/du
  scalar_t* __restrict__ grad = p.grad == nullptr ? nullptr : p.grad + r.row * p.c;
  if (p.soft_target == nullptr) {
    // One target class: d(loss)/du_k = w (onehot_k a_y - p_k a_y).
    const scalar_t d_y = scaled_difference(p, r, margin, r.y, z[r.y], m);
    const auto ty = softmax_terms<scalar_t, ScalarOps, kFocal>(d_y, ::exp(d_y), sums, p.gamma);
    if (grad != nullptr) {
      const scalar_t scale_e = -sw * ty.a * sums.inv_sum;
      for_each_logit<kThreadsPerRow>(z, p.c, r.lane, [&](int64_t j, scalar_t zj) {
        grad[j] = j == r.y ? sw * ty.a * ty.q
                           : scale_e * ::exp(scaled_difference(p, r, margin, j, zj, m));
      });
    }
    finish_row<scalar_t>(p, r, ty.loss);
    return;
  }
  // A target row: loss = w sum_c t_c l_c, d(loss)/du_k = w (t_k a_k - p_k A), A = sum_c t_c a_c.
  const scalar_t* __restrict__ t = p.soft_target + r.row * p.c;
  scalar_t loss = 0, a_sum = 0;
  for_each_logit<kThreadsPerRow>(z, p.c, r.lane, [&](int64_t j, scalar_t zj) {
    const scalar_t d = scaled_difference(p, r, margin, j, zj, m);
    const auto terms = softmax_terms<scalar_t, ScalarOps, kFocal>(d, ::exp(d), sums, p.gamma);
    loss += t[j] * terms.loss;
    a_sum += t[j] * terms.a;
  });
  loss = row_reduce<kThreadsPerRow>(loss, Sum());
  a_sum = row_reduce<kThreadsPerRow>(a_sum, Sum());
  if (grad != nullptr) {
    for_each_logit<kThreadsPerRow>(z, p.c, r.lane, [&](int64_t j, scalar_t zj) {
      const scalar_t d = scaled_difference(p, r, margin, j, zj, m);
      const auto terms = softmax_terms<scalar_t, ScalarOps, kFocal>(d, ::exp(d), sums, p.gamma);
      grad[j] = sw * (t[j] * terms.a - terms.p * a_sum);
    });
  }
  finish_row<scalar_t>(p, r, loss);
}

template <typename scalar_t, int kThreadsPerRow>
void launch_rows(const RowsParams<scalar_t>& p, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kBlockThreads / kThreadsPerRow;
  const unsigned blocks = static_cast<unsigned>((p.n + kRowsPerBlock - 1) / kRowsPerBlock);
  if (p.loss_type == kSoftmax && p.gamma > scalar_t(0)) {
    softmax_rows_kernel<scalar_t, kThreadsPerRow, true><<<blocks, kBlockThreads, 0, stream>>>(p);
  } else if (p.loss_type == kSoftmax) {
    softmax_rows_kernel<scalar_t, kThreadsPerRow, false><<<blocks, kBlockThreads, 0, stream>>>(p);
  } else if (p.loss_type == kFocal) {
    sigmoid_rows_kernel<scalar_t, kThreadsPerRow, true><<<blocks, kBlockThreads, 0, stream>>>(p);
  } else {
    sigmoid_rows_kernel<scalar_t, kThreadsPerRow, false><<<blocks, kBlockThreads, 0, stream>>>(p);
  }
}

// Fills row_loss, row_norm and grad. A row is one warp below 512 classes, else a block.
template <typename scalar_t>
cudaError_t launch_class_balanced_loss_rows(const RowsParams<scalar_t>& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  if (p.c >= 512) {
    launch_rows<scalar_t, kBlockThreads>(p, stream);
  } else {
    launch_rows<scalar_t, 32>(p, stream);
  }
  return cudaGetLastError();
}

#ifdef FGO_CUDA_CHECK
// `make cuda-check` compiles this header alone: take the launchers' addresses so that every
// kernel is instantiated and compiled for both dtypes.
inline void* const kInstantiated[] = {
    reinterpret_cast<void*>(&launch_class_balanced_loss_rows<float>),
    reinterpret_cast<void*>(&launch_class_balanced_loss_rows<double>)};
#endif

}  // namespace cuda
}  // namespace cb
}  // namespace fgo
