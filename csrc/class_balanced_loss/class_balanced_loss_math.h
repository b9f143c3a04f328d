#pragma once
// Per-logit terms of the sigmoid and focal losses, shared by the CPU (SIMD vectors) and CUDA
// (scalars) kernels. `Ops` supplies exp, log1p, abs, relu and select_nonneg(z, a, b)
// (= z >= 0 ? a : b) for the value type V. Needs no torch or CUDA headers.
//
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
namespace cb {

enum LossType : int64_t { kSoftmax = 0, kSigmoid = 1, kFocal = 2 };
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

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

}  // namespace cb
}  // namespace fgo
