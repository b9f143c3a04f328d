// The torch.library ops finegrained_ops::class_loss and ::class_balanced_weights: schemas,
// device kernels, autograd and autocast. Fake (meta) kernels are registered from Python
// (finegrained_ops/ops/class_loss.py). The CUDA emulation compiles this file
// too, for its device kernels only (common/device_kernels.h).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "class_loss/class_loss.h"
#include "common/below_autograd.h"
#include "common/device_kernels.h"
#include "common/op_kernels.h"
#include "precomputed_gradient/precomputed_gradient.h"

namespace fgo {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

const c10::TypedOperatorHandle<decltype(class_loss)>& loss_op() {
  static const auto op = find_op<decltype(class_loss)>("finegrained_ops::class_loss");
  return op;
}

// A saved optional argument: absent is saved as an undefined tensor.
OptionalTensor optional_of(const at::Tensor& saved) {
  return saved.defined() ? OptionalTensor(saved.detach()) : std::nullopt;
}

class ClassLossFunction : public torch::autograd::Function<ClassLossFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target,
      const OptionalTensor& class_weights, const OptionalTensor& logit_offsets,
      const OptionalTensor& target_margins, double scale, double gamma,
      c10::string_view loss_type, c10::string_view reduction, int64_t ignore_index,
      bool compute_grad, std::optional<at::ScalarType> loss_dtype) {
    auto [loss, grad, norm] = below_autograd(
        loss_op(), logits, target, class_weights, logit_offsets, target_margins, scale, gamma,
        loss_type, reduction, ignore_index, compute_grad, loss_dtype);
    ctx->mark_non_differentiable({grad, norm});
    ctx->set_materialize_grads(false);
    if (compute_grad) {  // logits: what a recorded backward is tied to (SecondDerivativeRefused)
      ctx->save_for_backward({grad, norm, logits});
    } else {  // recorded under no_grad (a traced graph): the backward recomputes, from these
      ctx->save_for_backward({grad, norm, logits, target, class_weights.value_or(at::Tensor()),
                              logit_offsets.value_or(at::Tensor()),
                              target_margins.value_or(at::Tensor())});
      ctx->saved_data["scale"] = scale;
      ctx->saved_data["gamma"] = gamma;
      ctx->saved_data["loss_type"] = std::string(loss_type);
      ctx->saved_data["ignore_index"] = ignore_index;
    }
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["compute_grad"] = compute_grad;
    return {loss, grad, norm};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    torch::autograd::variable_list result(12);
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined() || !ctx->needs_input_grad(0)) return result;
    const auto saved = ctx->get_saved_variables();
    at::Tensor grad = saved[0], norm = saved[1];
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    if (!ctx->saved_data["compute_grad"].toBool()) {
      at::NoGradGuard no_grad;
      std::tie(std::ignore, grad, norm) = below_autograd(
          loss_op(), saved[2].detach(), saved[3].detach(), optional_of(saved[4]),
          optional_of(saved[5]), optional_of(saved[6]), ctx->saved_data["scale"].toDouble(),
          ctx->saved_data["gamma"].toDouble(), ctx->saved_data["loss_type"].toStringRef(),
          reduction, ctx->saved_data["ignore_index"].toInt(), /*compute_grad=*/true,
          std::nullopt);
    }
    result[0] = scale_precomputed_gradient(grad, grad_loss, norm, reduction == "none",
                                           "class_loss", {saved[2]});
    return result;
  }
};

using LossAutograd = AutogradKernel<ClassLossFunction, decltype(class_loss)>;
// Under autocast the loss is float32, as torch's losses are.
using LossAutocast = AutocastLossKernel<decltype(class_loss), loss_op>;

// The device kernels, the same for CPU and CUDA: each entry point picks its device's
// kernels itself (on_device, common/device.h).
void register_device_kernels(torch::Library& m) {
  m.impl("class_balanced_weights", TORCH_FN(class_balanced_weights));
  m.impl("class_loss", TORCH_FN(class_loss));
}

}  // namespace

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_FRAGMENT(finegrained_ops, m) {
  m.def("class_balanced_weights(Tensor samples_per_class, float beta) -> Tensor");
  m.def("class_loss(Tensor logits, Tensor target, Tensor? class_weights, "
        "Tensor? logit_offsets, Tensor? target_margins, float scale, float gamma, "
        "str loss_type, str reduction, int ignore_index, bool compute_grad, "
        "ScalarType? loss_dtype=None) -> (Tensor, Tensor, Tensor)");
}
#endif  // FGO_OP_REGISTRATION

FGO_DEVICE_KERNELS(register_device_kernels);

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_IMPL(finegrained_ops, Autograd, m) {
  m.impl("class_loss", TORCH_FN(LossAutograd::call));
}

TORCH_LIBRARY_IMPL(finegrained_ops, AutocastCPU, m) {
  m.impl("class_loss", TORCH_FN(LossAutocast::call));
}

TORCH_LIBRARY_IMPL(finegrained_ops, AutocastCUDA, m) {
  m.impl("class_loss", TORCH_FN(LossAutocast::call));
}
#endif  // FGO_OP_REGISTRATION

}  // namespace fgo
