// The torch.library ops finegrained_ops::sqrt_normalize and its backward: schemas, device
// kernels and autograd. Fake kernels are registered from Python
// (finegrained_ops/ops/kernel_pooling.py). The CUDA emulation compiles this file
// too, for its device kernels only (common/device_kernels.h).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/below_autograd.h"
#include "common/device_kernels.h"
#include "common/op_kernels.h"
#include "sqrt_normalize/sqrt_normalize.h"

namespace fgo {
namespace {

const c10::TypedOperatorHandle<decltype(sqrt_normalize)>& forward_op() {
  static const auto op = find_op<decltype(sqrt_normalize)>("finegrained_ops::sqrt_normalize");
  return op;
}

const c10::TypedOperatorHandle<decltype(sqrt_normalize_backward)>& backward_op() {
  static const auto op =
      find_op<decltype(sqrt_normalize_backward)>("finegrained_ops::sqrt_normalize_backward");
  return op;
}

// Differentiable once: the backward op has no derivative of its own (a second derivative
// through it raises: no autograd kernel is registered for it).
class SqrtNormalizeFunction : public torch::autograd::Function<SqrtNormalizeFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& y,
                            double eps) {
    at::Tensor z = below_autograd(forward_op(), y, eps);
    ctx->save_for_backward({y, z});
    ctx->saved_data["eps"] = eps;
    return z;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    TORCH_CHECK(!at::GradMode::is_enabled(), "sqrt_normalize is differentiable once (its "
                "backward has no derivative of its own)");
    return {backward_op().call(grad_outputs[0], saved[0], saved[1],
                               ctx->saved_data["eps"].toDouble()),
            at::Tensor()};
  }
};

using SqrtNormalizeAutograd = AutogradKernel<SqrtNormalizeFunction, decltype(sqrt_normalize)>;

void register_device_kernels(torch::Library& m) {
  m.impl("sqrt_normalize", TORCH_FN(sqrt_normalize));
  m.impl("sqrt_normalize_backward", TORCH_FN(sqrt_normalize_backward));
}

}  // namespace

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_FRAGMENT(finegrained_ops, m) {
  m.def("sqrt_normalize(Tensor y, float eps) -> Tensor");
  m.def("sqrt_normalize_backward(Tensor grad, Tensor y, Tensor z, float eps) -> Tensor");
}
#endif  // FGO_OP_REGISTRATION

FGO_DEVICE_KERNELS(register_device_kernels);

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_IMPL(finegrained_ops, Autograd, m) {
  m.impl("sqrt_normalize", TORCH_FN(SqrtNormalizeAutograd::call));
}
#endif  // FGO_OP_REGISTRATION

}  // namespace fgo
