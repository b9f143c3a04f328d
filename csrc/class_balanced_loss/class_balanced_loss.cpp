#include "class_balanced_loss/class_balanced_loss.h"

#include <ATen/ATen.h>

#include <cmath>

#include "class_balanced_loss/class_balanced_loss_args.h"
#include "common/device.h"
#include "common/value_check.h"

namespace fgo {
namespace {

// Rows of a softmax target may deviate from 1 by this much: mixup or label smoothing done in
// bfloat16 arrives with each entry rounded by up to 2^-9 of itself.
constexpr double kSoftTargetSumTolerance = 1e-2;

// The values of the target, without a host sync on CUDA (common/value_check.h).
void check_target(const at::Tensor& target, int64_t num_classes, bool multi_hot,
                  cb::LossType loss_type, int64_t ignore_index) {
  if (multi_hot && loss_type == cb::kSoftmax) {
    check_value(((target >= 0) & (target <= 1)).all() &
                    ((target.sum(1) - 1).abs() <= kSoftTargetSumTolerance).all(),
                "class_balanced_loss: soft targets of a softmax loss must be in [0, 1] with "
                "every row summing to 1 (within 1e-2)",
                [&] { return c10::str("; got row sums ", target.sum(1)); });
    return;
  }
  if (multi_hot) {
    check_value(((target >= 0) & (target <= 1)).all(),
                "class_balanced_loss: multi-hot target values must be in [0, 1] (and not NaN)",
                [] { return ""; });
    return;
  }
  check_value((((target >= 0) & (target < num_classes)) | (target == ignore_index)).all(),
              "class_balanced_loss: target class indices must be in [0, " +
                  std::to_string(num_classes) + ") or equal ignore_index=" +
                  std::to_string(ignore_index),
              [&] {
                return c10::str("; got min ", target.min().item<int64_t>(), ", max ",
                                target.max().item<int64_t>());
              });
}

// A per-class (C,) argument: float64 or logits' dtype, on logits' device; returned
// contiguous in logits' dtype, or undefined when absent.
at::Tensor per_class(const c10::optional<at::Tensor>& given, const char* name,
                     const at::Tensor& logits) {
  if (!given.has_value() || !given->defined()) return at::Tensor();
  const at::Tensor& t = *given;
  const int64_t c = logits.size(1);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == c &&
                  (t.scalar_type() == at::kDouble || t.scalar_type() == logits.scalar_type()),
              "class_balanced_loss: ", name, " must be float64 or logits' dtype with one entry "
              "per class (", c, "), got ", t.scalar_type(), " ", t.sizes());
  TORCH_CHECK(t.device() == logits.device(), "class_balanced_loss: ", name,
              " must be on logits' device ", logits.device(), ", got ", t.device());
  return t.to(logits.scalar_type()).contiguous();
}

}  // namespace

at::Tensor class_balanced_weights(const at::Tensor& samples_per_class, double beta) {
  TORCH_CHECK(samples_per_class.dim() == 1 && samples_per_class.size(0) >= 1,
              "class_balanced_weights: samples_per_class must be (C,) with C >= 1, got shape ",
              samples_per_class.sizes());
  TORCH_CHECK(!samples_per_class.is_complex() && samples_per_class.scalar_type() != at::kBool,
              "class_balanced_weights: samples_per_class must hold numbers of samples, got ",
              samples_per_class.scalar_type());
  TORCH_CHECK(beta >= 0.0 && beta < 1.0, "class_balanced_weights: beta must be in [0, 1), got ",
              beta);
  const at::Tensor n = samples_per_class.to(at::kDouble);
  check_value(((n > 0) & at::isfinite(n)).all(),
              "class_balanced_loss: samples_per_class must be finite and > 0 for every class (a "
              "class with no samples has no effective number)",
              [&] { return c10::str("; got ", n); });
  const at::Tensor w = (1.0 - beta) / (1.0 - at::pow(beta, n));
  return w * (static_cast<double>(n.numel()) / w.sum());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_balanced_loss_forward(
    const at::Tensor& logits, const at::Tensor& target,
    const c10::optional<at::Tensor>& class_weights,
    const c10::optional<at::Tensor>& logit_offsets,
    const c10::optional<at::Tensor>& target_margins, double scale, double gamma,
    const std::string& loss_type_name, const std::string& reduction_name, int64_t ignore_index,
    bool compute_grad) {
  TORCH_CHECK(logits.dim() == 2, "class_balanced_loss: logits must be (N, C), got ",
              logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
              "class_balanced_loss: native logits must be float32 or float64, got ",
              logits.scalar_type());
  const cb::LossType loss_type = parse_choice("class_balanced_loss", "loss_type", loss_type_name,
                                              kClassBalancedLossTypes);
  const cb::Reduction reduction = parse_choice("class_balanced_loss", "reduction",
                                               reduction_name, kClassBalancedReductions);
  TORCH_CHECK(gamma >= 0.0 && std::isfinite(gamma),
              "class_balanced_loss: gamma must be finite and >= 0, got ", gamma);
  const int64_t n = logits.size(0), c = logits.size(1);
  TORCH_CHECK(c >= 1, "class_balanced_loss: logits need at least one class");
  const bool multi_hot = target.dim() == 2;
  if (multi_hot) {
    TORCH_CHECK(target.sizes() == logits.sizes() && target.scalar_type() == logits.scalar_type(),
                "class_balanced_loss: a multi-hot target must match logits' shape and dtype, got ",
                target.sizes(), " ", target.scalar_type());
  } else {
    TORCH_CHECK(target.dim() == 1 && target.size(0) == n && target.scalar_type() == at::kLong,
                "class_balanced_loss: target must be int64 (N,) class indices with N=", n,
                ", got ", target.scalar_type(), " ", target.sizes());
  }
  TORCH_CHECK(target.device() == logits.device(),
              "class_balanced_loss: target must be on logits' device ", logits.device(),
              ", got ", target.device());
  TORCH_CHECK(scale > 0.0 && std::isfinite(scale),
              "class_balanced_loss: scale must be finite and > 0, got ", scale);
  ClassBalancedLossArgs args;
  args.class_weights = per_class(class_weights, "class_weights", logits);
  args.logit_offsets = per_class(logit_offsets, "logit_offsets", logits);
  args.target_margins = per_class(target_margins, "target_margins", logits);
  TORCH_CHECK(loss_type == cb::kSoftmax ||
                  (!args.logit_offsets.defined() && !args.target_margins.defined() && scale == 1.0),
              "class_balanced_loss: logit_offsets, target_margins and scale apply to the softmax "
              "loss only, got loss_type ", loss_type_name);
  TORCH_CHECK(!multi_hot || !args.target_margins.defined(),
              "class_balanced_loss: target_margins need class-index targets (a margin is taken "
              "off the true class's logit), got a (N, C) target");
  check_target(target, c, multi_hot, loss_type, ignore_index);
  if (args.class_weights.defined()) {
    check_value((at::isfinite(args.class_weights) & (args.class_weights >= 0)).all(),
                "class_balanced_loss: class_weights must be finite and >= 0",
                [&] { return c10::str("; got ", args.class_weights); });
  }
  if (args.logit_offsets.defined()) {
    check_value(at::isfinite(args.logit_offsets).all(),
                "class_balanced_loss: logit_offsets must be finite",
                [&] { return c10::str("; got ", args.logit_offsets); });
  }
  if (args.target_margins.defined()) {
    check_value((at::isfinite(args.target_margins) & (args.target_margins >= 0)).all(),
                "class_balanced_loss: target_margins must be finite and >= 0",
                [&] { return c10::str("; got ", args.target_margins); });
  }

  args.logits = logits.contiguous();
  args.target = target.contiguous();
  args.scale = scale;
  args.loss_type = (loss_type == cb::kFocal && gamma == 0.0) ? cb::kSigmoid : loss_type;
  args.ignore_index = ignore_index;
  args.gamma = gamma;
  args.multi_hot = multi_hot;
  args.norm_by_weight = reduction == cb::kWeightedMean;
  args.row_loss = at::empty({n}, logits.options());
  args.row_norm = at::empty({n}, logits.options());
  args.grad = compute_grad ? at::empty_like(args.logits) : at::Tensor();

  on_device(logits, [&](auto device) { class_balanced_loss_rows(device, args); });

  // Fixed-order float64 reductions over rows: deterministic whatever the thread count.
  const at::Tensor grad = compute_grad ? args.grad : at::empty({0}, logits.options());
  if (reduction == cb::kNone) {
    return {args.row_loss, grad, at::ones({}, logits.options())};
  }
  const at::Tensor total = args.row_loss.to(at::kDouble).sum();
  if (reduction == cb::kSum) {
    return {total.to(logits.scalar_type()), grad, at::ones({}, logits.options())};
  }
  // 'mean' divides by at least 1 positive label; 'weighted_mean' by the weights' sum, which
  // may lawfully be below 1, or by 1 when no row counts (a loss of 0, not NaN).
  at::Tensor norm = args.row_norm.to(at::kDouble).sum();
  norm = reduction == cb::kMean ? norm.clamp_min(1.0) : at::where(norm > 0, norm, 1.0);
  return {(total / norm).to(logits.scalar_type()), grad, norm.to(logits.scalar_type())};
}

}  // namespace fgo
