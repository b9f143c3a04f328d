#pragma once
// The class-balanced loss family (docs/semantics.md §4): class-weighted sigmoid / focal loss
// and a softmax loss with per-class logit offsets, a true-class margin, a scale and a focal
// exponent (class-balanced softmax, logit adjustment, Balanced Softmax, LDAM, softmax focal),
// one fused pass that computes the per-row losses and d(loss)/d(logits) together.

#include <ATen/core/Tensor.h>

#include <c10/util/Optional.h>

#include <string>
#include <tuple>

#include "class_balanced_loss/class_balanced_loss_math.h"
#include "common/choice.h"

namespace fgo {

inline constexpr Choices<cb::LossType, 3> kClassBalancedLossTypes = {{
    {"softmax", cb::kSoftmax}, {"sigmoid", cb::kSigmoid}, {"focal", cb::kFocal}}};
inline constexpr Choices<cb::Reduction, 4> kClassBalancedReductions = {{
    {"none", cb::kNone}, {"mean", cb::kMean}, {"sum", cb::kSum},
    {"weighted_mean", cb::kWeightedMean}}};

// Entry points bound in bindings.cpp.
//
// (C,) float64 weights w_c = (1 - beta) / (1 - beta^n_c) normalised to sum to C, from
// samples_per_class (C,) (any real dtype; finite and > 0, checked without a host sync on CUDA).
at::Tensor class_balanced_weights(const at::Tensor& samples_per_class, double beta);

// The loss. Validates the arguments and the target's values (label range; multi-hot in
// [0, 1]; softmax target rows summing to 1) and dispatches.
//   logits (N, C) float32/float64; target int64 (N,) or logits-typed (N, C);
//   class_weights, logit_offsets, target_margins: (C,) float64 or logits' dtype, or none (the
//   last two, and scale != 1, for softmax only; margins for class-index targets only).
// Returns
//   loss: 0-dim (mean, weighted_mean, sum) or (N,) (none), in logits' dtype;
//   grad: (N, C) d(sum over rows of the weighted loss)/d(logits), or empty if !compute_grad;
//   norm: 0-dim, the divisor of 'mean' (number of positive labels, at least 1) or of
//   'weighted_mean' (sum of the rows' weights, 1 if 0), else 1.
std::tuple<at::Tensor, at::Tensor, at::Tensor> class_balanced_loss_forward(
    const at::Tensor& logits, const at::Tensor& target,
    const c10::optional<at::Tensor>& class_weights,
    const c10::optional<at::Tensor>& logit_offsets,
    const c10::optional<at::Tensor>& target_margins, double scale, double gamma,
    const std::string& loss_type, const std::string& reduction, int64_t ignore_index,
    bool compute_grad);

}  // namespace fgo
