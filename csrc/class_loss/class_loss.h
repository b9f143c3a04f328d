#pragma once
// The class loss family (docs/semantics.md §4): one native loss over the classes of each row,
// a class-weighted sigmoid / focal loss or a softmax loss with per-class logit offsets, a
// true-class margin, a scale and a focal exponent. It is the class-balanced loss, logit
// adjustment, Balanced Softmax, LDAM and the softmax focal loss; one fused pass computes the
// reduced loss and d(loss)/d(logits) together.

#include <ATen/core/Tensor.h>

#include <optional>
#include <c10/util/string_view.h>
#include <tuple>

#include "class_loss/class_loss_math.h"
#include "common/choice.h"

namespace fgo {

inline constexpr Choices<cls::LossType, 3> kClassLossTypes = {{
    {"softmax", cls::kSoftmax}, {"sigmoid", cls::kSigmoid}, {"focal", cls::kFocal}}};
inline constexpr Choices<cls::Reduction, 4> kClassLossReductions = {{
    {"none", cls::kNone}, {"mean", cls::kMean}, {"sum", cls::kSum},
    {"weighted_mean", cls::kWeightedMean}}};

// (C,) float64 weights w_c = (1 - beta) / (1 - beta^n_c) normalised to sum to C, from
// samples_per_class (C,) (any real dtype; finite and > 0, checked without a host sync on CUDA).
at::Tensor class_balanced_weights(const at::Tensor& samples_per_class, double beta);

// The loss. Checks every argument (ValueError / TypeError naming it) and the values it reads
// (label range; multi-hot in [0, 1]; softmax target rows summing to 1; per-class tensors
// finite, weights and margins >= 0) inside its kernels: no extra pass, no host sync on CUDA.
//   logits (N, C) float16/bfloat16/float32/float64 (half types read as they are and computed
//     in float32); target (N,) int64 class indices or (N, C) rows in logits' or float32's
//     dtype; class_weights, logit_offsets, target_margins: (C,) float64 or the compute dtype,
//     or none (the last two, and scale != 1, for softmax only; margins need class indices).
//   loss_dtype: the loss's dtype (default logits'; float32 under autocast, as torch's losses).
// Returns
//   loss: 0-dim (mean, weighted_mean, sum) or (N,) (none);
//   grad: (N, C) in logits' dtype, or (0,) if !compute_grad; d(loss)/d(logits) = grad / norm;
//   norm: 0-dim, the divisor already folded into grad on the CPU (then 1), or on CUDA the
//     divisor of 'mean' (positive labels, at least 1) or of 'weighted_mean' (the rows'
//     weights, 1 if 0), else 1.
std::tuple<at::Tensor, at::Tensor, at::Tensor> class_loss(
    const at::Tensor& logits, const at::Tensor& target,
    const std::optional<at::Tensor>& class_weights,
    const std::optional<at::Tensor>& logit_offsets,
    const std::optional<at::Tensor>& target_margins, double scale, double gamma,
    c10::string_view loss_type, c10::string_view reduction, int64_t ignore_index,
    bool compute_grad, std::optional<at::ScalarType> loss_dtype);

}  // namespace fgo
