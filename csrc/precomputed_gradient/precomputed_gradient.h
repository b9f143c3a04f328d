#pragma once
// The autograd convention of the losses whose gradient is computed in the forward
// (docs/semantics.md §1, autograd). Their op returns (loss, grad_1, ..., grad_k, norm): grad_i
// / norm is the gradient of the loss w.r.t. one input, computed in the same native pass as the
// loss (a kernel that knows the divisor up front folds it into grad_i and returns norm = 1).
// The backward is a scale, grad_i * grad_loss / norm: no second kernel of the loss runs, and
// for a unit scale no pass at all.
//
// The autograd functions live in C++ (as torchvision's ops): a Python autograd.Function and
// torch.library's Python layers cost several times the kernel's own host time per call
// (benchmarks/results/h100-2026-11-27/README.md).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/below_autograd.h"

namespace fgo {

// The identity on a precomputed gradient; its own derivative raises. Under create_graph=True
// the scaled gradients are tied through it to the differentiable inputs, so differentiating
// them raises, also when a layer in front (F.normalize, a linear head) would otherwise carry a
// silently incomplete second derivative back to its own inputs.
class SecondDerivativeRefused : public torch::autograd::Function<SecondDerivativeRefused> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& grad,
                            const std::string& op_name, at::TensorList inputs) {
    (void)inputs;  // only tied to the graph
    ctx->saved_data["op_name"] = op_name;
    return grad.view_as(grad);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list) {
    TORCH_CHECK(false, ctx->saved_data["op_name"].toStringRef(),
                ": double backward is not supported (the gradient is computed in the forward "
                "pass and has no derivative of its own)");
  }
};

// Whether grad_loss / norm is exactly 1, found without a device sync: only plain CPU tensors
// are read (not CUDA, nor the fake and functional tensors of tracing).
inline bool unit_scale(const at::Tensor& grad_loss, const at::Tensor& norm) {
  auto readable = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.numel() == 1 && t.layout() == at::kStrided &&
           !t.key_set().has_any(c10::python_ks) && !t.key_set().has(c10::DispatchKey::Functionalize);
  };
  auto value = [](const at::Tensor& t) {  // the element, read directly (item() dispatches)
    switch (t.scalar_type()) {
      case at::kFloat: return double(*t.const_data_ptr<float>());
      case at::kDouble: return *t.const_data_ptr<double>();
      case at::kHalf: return double(*t.const_data_ptr<at::Half>());
      case at::kBFloat16: return double(*t.const_data_ptr<at::BFloat16>());
      default: return std::nan("");
    }
  };
  return readable(grad_loss) && readable(norm) && value(grad_loss) == value(norm);
}

// grad * grad_loss / norm, rows scaled one by one when the loss is per sample ('none'). When
// the scale is 1 (loss.backward() of a loss whose divisor the CPU kernel folded into grad, the
// common case), grad itself: the step makes no pass over it after the forward. Otherwise one
// pass, the op scale_gradient (one launch on CUDA); when the backward itself is recorded
// (create_graph=True), ATen's, tied to `inputs` through SecondDerivativeRefused.
inline at::Tensor scale_precomputed_gradient(const at::Tensor& grad, const at::Tensor& grad_loss,
                                             const at::Tensor& norm, bool per_sample,
                                             const std::string& op_name,
                                             at::TensorList inputs) {
  if (!at::GradMode::is_enabled()) {
    if (!per_sample && unit_scale(grad_loss, norm)) return grad;
    static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&)>("finegrained_ops::scale_gradient");
    return op.call(grad, grad_loss, norm);
  }
  at::Tensor scale = grad_loss.div(norm);
  if (per_sample) scale = scale.unsqueeze(1);
  return SecondDerivativeRefused::apply(grad.mul(scale), op_name, inputs);
}

}  // namespace fgo
