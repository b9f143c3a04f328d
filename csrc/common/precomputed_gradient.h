#pragma once
// The autograd convention of the losses whose gradient is computed in the forward
// (docs/semantics.md §1, autograd). Their op returns (loss, grad_1, ..., grad_k, norm): grad_i
// is the gradient of the summed (un-normalised) loss w.r.t. one input, computed in the same
// native pass as the loss, and loss = summed loss / norm. The backward is a scale,
// grad_i * grad_loss / norm, so no second kernel runs.
//
// The autograd functions live in C++ (as torchvision's ops): a Python autograd.Function and
// torch.library's Python layers cost several times the kernel's own host time per call
// (benchmarks/results/h100-2026-11-27/README.md).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>
#include <vector>

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

// grad * grad_loss / norm, rows scaled one by one when the loss is per sample ('none');
// tied to `inputs` through SecondDerivativeRefused when the backward itself is recorded.
inline at::Tensor scale_precomputed_gradient(const at::Tensor& grad, const at::Tensor& grad_loss,
                                             const at::Tensor& norm, bool per_sample,
                                             const std::string& op_name,
                                             at::TensorList inputs) {
  at::Tensor scale = grad_loss.div(norm);
  if (per_sample) scale = scale.unsqueeze(1);
  at::Tensor result = grad.mul(scale);
  if (at::GradMode::is_enabled()) {  // create_graph=True
    result = SecondDerivativeRefused::apply(result, op_name, inputs);
  }
  return result;
}

}  // namespace fgo
