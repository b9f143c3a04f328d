#include "class_balanced_loss/class_balanced_loss.h"

#include <ATen/ATen.h>

#include <cmath>

#include "class_balanced_loss/class_balanced_loss_args.h"
#include "common/device.h"
#include "common/value_check.h"

namespace fgo {
namespace {

// The values of the target, without a host sync on CUDA (common/value_check.h).
void check_target(const at::Tensor& target, int64_t num_classes, bool multi_hot,
                  int64_t ignore_index) {
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
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& class_weights,
    double gamma, const std::string& loss_type_name, const std::string& reduction_name,
    int64_t ignore_index, bool compute_grad) {
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
    TORCH_CHECK(loss_type != cb::kSoftmax,
                "class_balanced_loss: multi-hot targets need loss_type sigmoid or focal");
    TORCH_CHECK(target.sizes() == logits.sizes() && target.scalar_type() == logits.scalar_type(),
                "class_balanced_loss: a multi-hot target must match logits' shape and dtype, got ",
                target.sizes(), " ", target.scalar_type());
  } else {
    TORCH_CHECK(target.dim() == 1 && target.size(0) == n && target.scalar_type() == at::kLong,
                "class_balanced_loss: target must be int64 (N,) class indices with N=", n,
                ", got ", target.scalar_type(), " ", target.sizes());
  }
  TORCH_CHECK(class_weights.dim() == 1 && class_weights.size(0) == c &&
                  (class_weights.scalar_type() == at::kDouble ||
                   class_weights.scalar_type() == logits.scalar_type()),
              "class_balanced_loss: class_weights must be float64 or logits' dtype with one "
              "entry per class (", c, "), got ", class_weights.scalar_type(), " ",
              class_weights.sizes());
  TORCH_CHECK(target.device() == logits.device() && class_weights.device() == logits.device(),
              "class_balanced_loss: logits, target and class_weights must be on one device");
  check_target(target, c, multi_hot, ignore_index);

  ClassBalancedLossArgs args;
  args.logits = logits.contiguous();
  args.target = target.contiguous();
  args.class_weights = class_weights.to(logits.scalar_type()).contiguous();
  args.loss_type = (loss_type == cb::kFocal && gamma == 0.0) ? cb::kSigmoid : loss_type;
  args.ignore_index = ignore_index;
  args.gamma = gamma;
  args.multi_hot = multi_hot;
  args.row_loss = at::empty({n}, logits.options());
  args.row_positives = at::empty({n}, logits.options());
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
  const at::Tensor norm = args.row_positives.to(at::kDouble).sum().clamp_min(1.0);
  return {(total / norm).to(logits.scalar_type()), grad, norm.to(logits.scalar_type())};
}

}  // namespace fgo
