// The torch.library ops finegrained_ops::kernel_pooling and ::kernel_pooling_backward:
// schemas, device kernels and autograd. Fake (meta) kernels are registered from Python
// (finegrained_ops/ops/kernel_pooling.py). The CUDA emulation compiles this file
// too, for its device kernels only (common/device_kernels.h).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "common/below_autograd.h"
#include "common/device_kernels.h"
#include "kernel_pooling/kernel_pooling.h"

namespace fgo {
namespace {

class KernelPoolingFunction : public torch::autograd::Function<KernelPoolingFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& hash_index, const at::Tensor& hash_sign,
                            int64_t dim) {
    ctx->save_for_backward({x, hash_index, hash_sign});
    ctx->saved_data["dim"] = dim;
    static const auto op = find_op<decltype(kernel_pooling_forward)>(
        "finegrained_ops::kernel_pooling");
    return below_autograd(op, x, hash_index, hash_sign, dim);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    // Through the dispatcher with autograd, whose kernel for the backward op refuses a
    // derivative of its own (create_graph=True then raises when differentiated).
    static const auto backward_op = find_op<decltype(kernel_pooling_backward)>(
        "finegrained_ops::kernel_pooling_backward");
    at::Tensor grad_x = backward_op.call(grad_outputs[0], saved[0], saved[1], saved[2],
                                         ctx->saved_data["dim"].toInt());
    return {grad_x, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor kernel_pooling_autograd(const at::Tensor& x, const at::Tensor& hash_index,
                                   const at::Tensor& hash_sign, int64_t dim) {
  return KernelPoolingFunction::apply(x, hash_index, hash_sign, dim);
}

// The device kernels, the same for CPU and CUDA: each entry point picks its device's
// kernels itself (on_device, common/device.h).
void register_device_kernels(torch::Library& m) {
  m.impl("kernel_pooling", TORCH_FN(kernel_pooling_forward));
  m.impl("kernel_pooling_backward", TORCH_FN(kernel_pooling_backward));
}

}  // namespace

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_FRAGMENT(finegrained_ops, m) {
  m.def("kernel_pooling(Tensor x, Tensor hash_index, Tensor hash_sign, int dim) -> Tensor");
  m.def("kernel_pooling_backward(Tensor grad, Tensor x, Tensor hash_index, Tensor hash_sign, "
        "int dim) -> Tensor");
}
#endif  // FGO_OP_REGISTRATION

FGO_DEVICE_KERNELS(register_device_kernels);

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_IMPL(finegrained_ops, Autograd, m) {
  m.impl("kernel_pooling", TORCH_FN(kernel_pooling_autograd));
  m.impl("kernel_pooling_backward", torch::autograd::autogradNotImplementedFallback());
}
#endif  // FGO_OP_REGISTRATION

}  // namespace fgo
