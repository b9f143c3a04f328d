// The class loss's entry point: every argument checked once, here (ValueError / TypeError
// naming it; the values the kernels read are checked by the kernels), then the device's rows.
#include "class_loss/class_loss.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>

#include "class_loss/class_loss_args.h"
#include "common/device.h"

namespace fgo {
namespace {

bool is_floating(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// A per-class (C,) argument: float64 or the compute dtype, on logits' device; returned
// contiguous in the compute dtype (a no-op for the copies the modules keep), or undefined.
at::Tensor per_class(const std::optional<at::Tensor>& given, const char* name,
                     const at::Tensor& logits, at::ScalarType compute) {
  if (!given.has_value() || !given->defined()) return at::Tensor();
  const at::Tensor& t = *given;
  const int64_t c = logits.size(1);
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == c, "class_loss: ", name,
                    " must have C=", c, " entries (one per class), got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kDouble || t.scalar_type() == compute,
                   "class_loss: ", name, " must be float64 or ", compute, " (the logits' "
                   "compute dtype), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == logits.device(), "class_loss: ", name,
                    " must be on logits' device ", logits.device(), ", got ", t.device());
  return t.to(compute).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_loss(
    const at::Tensor& logits, const at::Tensor& target,
    const std::optional<at::Tensor>& class_weights,
    const std::optional<at::Tensor>& logit_offsets,
    const std::optional<at::Tensor>& target_margins, double scale, double gamma,
    c10::string_view loss_type_name, c10::string_view reduction_name, int64_t ignore_index,
    bool compute_grad, std::optional<at::ScalarType> loss_dtype) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "class_loss: logits must be 2-D (N, C), got shape ",
                    logits.sizes());
  TORCH_CHECK_TYPE(is_floating(logits.scalar_type()), "class_loss: logits must have dtype in "
                   "(float16, bfloat16, float32, float64), got ", logits.scalar_type());
  const int64_t n = logits.size(0), c = logits.size(1);
  TORCH_CHECK_VALUE(c >= 1, "class_loss: logits need at least one class, got shape ",
                    logits.sizes());
  const at::ScalarType compute = at::toOpMathType(logits.scalar_type());
  ClassLossArgs args;
  args.loss_type = parse_choice("class_loss", "loss_type", loss_type_name, kClassLossTypes);
  args.reduction = parse_choice("class_loss", "reduction", reduction_name, kClassLossReductions);
  TORCH_CHECK_VALUE(gamma >= 0.0 && std::isfinite(gamma),
                    "class_loss: gamma must be finite and >= 0, got ", gamma);
  TORCH_CHECK_VALUE(scale > 0.0 && std::isfinite(scale),
                    "class_loss: scale must be finite and > 0, got ", scale);
  TORCH_CHECK_VALUE(target.device() == logits.device(), "class_loss: target must be on "
                    "logits' device ", logits.device(), ", got ", target.device());
  args.multi_hot = target.dim() == 2;
  if (args.multi_hot) {
    TORCH_CHECK_VALUE(target.sizes() == logits.sizes(), "class_loss: a (N, C) target must have "
                      "logits' shape ", logits.sizes(), ", got ", target.sizes());
    TORCH_CHECK_TYPE(is_floating(target.scalar_type()), "class_loss: a (N, C) target must be "
                     "floating point, got ", target.scalar_type());
    args.target = target.to(compute).contiguous();
  } else {
    TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == n, "class_loss: target must be "
                      "(N,) class indices with N=", n, " (logits' rows) or (N, C) rows, got "
                      "shape ", target.sizes());
    TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "class_loss: class-index target must "
                     "be int64, got ", target.scalar_type());
    args.target = target.contiguous();
  }
  args.class_weights = per_class(class_weights, "class_weights", logits, compute);
  args.logit_offsets = per_class(logit_offsets, "logit_offsets", logits, compute);
  args.target_margins = per_class(target_margins, "target_margins", logits, compute);
  TORCH_CHECK_VALUE(args.loss_type == cls::kSoftmax ||
                        (!args.logit_offsets.defined() && !args.target_margins.defined() &&
                         scale == 1.0),
                    "class_loss: logit_offsets, target_margins and scale apply to the softmax "
                    "loss only, got loss_type '", loss_type_name, "'");
  TORCH_CHECK_VALUE(!args.multi_hot || !args.target_margins.defined(),
                    "class_loss: target_margins need (N,) class-index targets (a margin is "
                    "taken off the true class's logit), got a (N, C) target");
  args.logits = logits.contiguous();
  args.scale = scale;
  args.loss_type = (args.loss_type == cls::kFocal && gamma == 0.0) ? cls::kSigmoid
                                                                    : args.loss_type;
  args.ignore_index = ignore_index;
  args.gamma = gamma;
  const at::TensorOptions loss_options =
      logits.options().dtype(loss_dtype.value_or(logits.scalar_type()));
  args.loss = at::empty(args.reduction == cls::kNone ? at::IntArrayRef{n} : at::IntArrayRef{},
                        loss_options);
  args.norm = at::empty({}, loss_options);
  if (compute_grad) args.grad = at::empty_like(args.logits);
  on_device(logits, [&](auto device) { class_loss_rows(device, args); });
  return {args.loss, compute_grad ? args.grad : at::empty({0}, logits.options()), args.norm};
}

}  // namespace fgo
