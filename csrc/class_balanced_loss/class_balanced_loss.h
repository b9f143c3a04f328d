#pragma once
// Class-balanced softmax / sigmoid / focal loss (docs/semantics.md §4), one fused pass that
// computes the per-row losses and d(loss)/d(logits) together.

#include <ATen/core/Tensor.h>

#include <string>
#include <tuple>

#include "class_balanced_loss/class_balanced_loss_math.h"
#include "common/choice.h"

namespace fgo {

inline constexpr Choices<cb::LossType, 3> kClassBalancedLossTypes = {{
    {"softmax", cb::kSoftmax}, {"sigmoid", cb::kSigmoid}, {"focal", cb::kFocal}}};
inline constexpr Choices<cb::Reduction, 3> kClassBalancedReductions = {{
    {"none", cb::kNone}, {"mean", cb::kMean}, {"sum", cb::kSum}}};

// Entry points bound in bindings.cpp.
//
// (C,) float64 weights w_c = (1 - beta) / (1 - beta^n_c) normalised to sum to C, from
// samples_per_class (C,) (any real dtype; finite and > 0, checked without a host sync on CUDA).
at::Tensor class_balanced_weights(const at::Tensor& samples_per_class, double beta);

// The loss with given class weights (C,) (float64 or logits' dtype). Validates the target's
// values (label range, multi-hot in [0, 1]) and dispatches.
//   logits (N, C) float32/float64; target int64 (N,) or, for sigmoid/focal, logits-typed
//   (N, C). Returns
//   loss: 0-dim (mean/sum) or (N,) (none), in logits' dtype;
//   grad: (N, C) d(sum over rows of the weighted loss)/d(logits), or empty if !compute_grad;
//   norm: 0-dim, the divisor of 'mean' (number of positive labels, at least 1), else 1.
std::tuple<at::Tensor, at::Tensor, at::Tensor> class_balanced_loss_forward(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& class_weights,
    double gamma, const std::string& loss_type, const std::string& reduction,
    int64_t ignore_index, bool compute_grad);

}  // namespace fgo
