#pragma once
// Per-logit terms of the sigmoid, focal and softmax losses, shared by the CPU (SIMD vectors and
// scalars) and CUDA (scalars) kernels. `Ops` supplies exp, log, log1p, abs, relu, pow and
// select_nonneg(z, a, b) (= z >= 0 ? a : b) for the value type V. Needs no torch or CUDA
// headers.
//
// Sigmoid and focal:
// With A = softplus(z), B = softplus(-z) (both from one exp(-|z|) and one log1p, no
// cancellation) and p = sigmoid(z), q = 1 - p = sigmoid(-z) (exact, from the same exp):
//   BCE(z, t)     = (1 - t) A + t B                       d/dz = (1 - t) p - t q
//   focal(z, t)   = m * BCE,  m = exp(-gamma ((1 - t) B + t A)) = (1 - p_t)^gamma
//   d focal / dz  = m * [ (1 - t) p - t q - gamma (t p - (1 - t) q) BCE ]
// For binary t these are docs/semantics.md §4's stable forms; the official TF code reduces to
// them and the gradient never forms (1 - p)^(gamma - 1), so gamma in [0, 1) stays finite.
// Soft targets t in [0, 1] follow the official formula exp(-gamma t z - gamma log1p(e^-z)).

#include "common/host_device.h"

namespace fgo {
namespace cls {

enum LossType : int64_t { kSoftmax = 0, kSigmoid = 1, kFocal = 2 };
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2, kWeightedMean = 3 };

// Rows of a softmax target may deviate from 1 by this much: mixup or label smoothing done in
// bfloat16 arrives with each entry rounded by up to 2^-9 of itself.
constexpr double kSoftTargetSumTolerance = 1e-2;

template <typename V, typename Ops>
struct SigmoidTerms {
  V loss;  // BCE or focal term of one logit
  V grad;  // its derivative with respect to the logit
};

template <typename V, typename Ops, bool kFocalLoss>
FGO_HOST_DEVICE SigmoidTerms<V, Ops> sigmoid_terms(V z, V t, V gamma) {
  const V one(1);
  const V e = Ops::exp(-Ops::abs(z));
  const V log_term = Ops::log1p(e);
  const V a = Ops::relu(z) + log_term;   // softplus(z)
  const V b = Ops::relu(-z) + log_term;  // softplus(-z)
  const V r = one / (one + e);
  const V p = Ops::select_nonneg(z, r, e * r);  // sigmoid(z)
  const V q = Ops::select_nonneg(z, e * r, r);  // sigmoid(-z)
  const V u = one - t;
  const V bce = u * a + t * b;
  const V dbce = u * p - t * q;
  if constexpr (kFocalLoss) {
    const V m = Ops::exp(-gamma * (u * b + t * a));
    return {m * bce, m * (dbce - gamma * (t * p - u * q) * bce)};
  } else {
    return {bce, dbce};
  }
}

// Softmax (docs/semantics.md §4.2). A row's adjusted logits v = z + b - margin onehot(y) with
// maximum m and the scale s; per class d = s (v - m) <= 0 and e = exp(d). The scale multiplies
// the difference, so d is exactly 0 at the maximum: the scaled form s v - max(s v), once
// contracted into fma(s, v, -max), was not, and LDAM's loss came out negative or -inf. The
// row's sums: S = sum of e and
// Q = S - 1 = (sum of e over the classes strictly below m) + (ties at m - 1), the latter
// accumulated without the subtraction, so 1 - p for the top class keeps its precision when
// p -> 1. Per class:
//   -log p = d < 0 ? log S - d : log1p(Q)      q = 1 - p = d < 0 ? 1 - e / S : Q / S
//   loss term  l = q^gamma * (-log p)           (focal; gamma = 0 is cross-entropy)
//   a = p * dl/dp = q^gamma (gamma p log(p) / q - 1)
// and for a target row t and weight w, d(loss)/du_k = w (t_k a_k - p_k sum_c t_c a_c). Below m,
// p <= 1/2, so q >= 1/2 and log(p) / q is safe; at m, log(p) / q = -log1p(Q) S / Q -> -1 as
// Q -> 0, so a stays finite for gamma in [0, 1) where (1 - p)^(gamma - 1) would not.
template <typename V>
struct SoftmaxRowSums {
  V inv_sum;       // 1 / S
  V log_sum;       // log S
  V top_nll;       // -log p of a class at the maximum: log1p(Q)
  V top_q;         // 1 - p of a class at the maximum: Q / S
  V top_log_p_over_q;  // log(p) / q at the maximum, -1 in the limit Q = 0

  // below: sum of e over the classes strictly below the maximum; ties: classes at it (>= 1).
  // `Ops` on scalars.
  template <typename Ops>
  FGO_HOST_DEVICE static SoftmaxRowSums from(V below, V ties) {
    const V q = below + (ties - V(1));
    const V sum = below + ties;
    SoftmaxRowSums r;
    r.inv_sum = V(1) / sum;
    r.log_sum = Ops::log(sum);
    r.top_nll = Ops::log1p(q);
    r.top_q = q * r.inv_sum;
    r.top_log_p_over_q = q > V(0) ? -r.top_nll / r.top_q : V(-1);
    return r;
  }
};

template <typename V>
struct SoftmaxTerms {
  V p;     // probability
  V q;     // 1 - p
  V loss;  // q^gamma * (-log p)
  V a;     // p * d(loss)/dp
};

template <typename V, typename Ops, bool kFocal, typename S>
FGO_HOST_DEVICE SoftmaxTerms<V> softmax_terms(V d, V e, const SoftmaxRowSums<S>& r, V gamma) {
  const V p = e * V(r.inv_sum);
  const V nll = Ops::select_nonneg(d, V(r.top_nll), V(r.log_sum) - d);
  const V q = Ops::select_nonneg(d, V(r.top_q), V(1) - p);
  if constexpr (kFocal) {
    const V log_p_over_q = Ops::select_nonneg(d, V(r.top_log_p_over_q), -nll / q);
    const V m = Ops::pow(q, gamma);
    return {p, q, m * nll, m * (gamma * p * log_p_over_q - V(1))};
  } else {
    return {p, q, nll, V(-1)};
  }
}

}  // namespace cls
}  // namespace fgo
