// The torch.library ops finegrained_ops::sketch_table, ::kernel_pooling and
// ::kernel_pooling_backward: schemas, device kernels and autograd. Fake (meta) kernels are
// registered from Python (finegrained_ops/ops/kernel_pooling.py). The CUDA emulation compiles
// this file too, for its device kernels only (common/device_kernels.h).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>

#include "common/below_autograd.h"
#include "common/device_kernels.h"
#include "common/op_kernels.h"
#include "kernel_pooling/kernel_pooling.h"

namespace fgo {
namespace {

class KernelPoolingFunction : public torch::autograd::Function<KernelPoolingFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, const at::Tensor& table,
                                                const std::optional<at::Tensor>& alpha,
                                                int64_t sketch_dim, bool normalize) {
    static const auto op = find_op<decltype(kernel_pooling)>("finegrained_ops::kernel_pooling");
    auto [out, blocks] = below_autograd(op, x, table, alpha, sketch_dim, normalize);
    ctx->mark_non_differentiable({blocks});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({x, table, alpha.value_or(at::Tensor()), blocks, out});
    ctx->saved_data["sketch_dim"] = sketch_dim;
    ctx->saved_data["normalize"] = normalize;
    return {out, blocks};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    torch::autograd::variable_list result(5);
    if (!grad_outputs[0].defined()) return result;
    const auto saved = ctx->get_saved_variables();
    const std::optional<at::Tensor> alpha =
        saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    // Through the dispatcher with autograd, whose kernel for the backward op refuses a
    // derivative of its own (create_graph=True then raises when differentiated).
    static const auto backward_op = find_op<decltype(kernel_pooling_backward)>(
        "finegrained_ops::kernel_pooling_backward");
    auto [grad_x, grad_alpha] = backward_op.call(
        grad_outputs[0], saved[0], saved[1], alpha, saved[3], saved[4],
        ctx->saved_data["sketch_dim"].toInt(), ctx->saved_data["normalize"].toBool());
    result[0] = grad_x;
    if (alpha) result[2] = grad_alpha;
    return result;
  }
};

using PoolingAutograd = AutogradKernel<KernelPoolingFunction, decltype(kernel_pooling)>;

// The device kernels, the same for CPU and CUDA: each entry point picks its device's
// kernels itself (on_device, common/device.h).
void register_device_kernels(torch::Library& m) {
  m.impl("sketch_table", TORCH_FN(sketch_table));
  m.impl("kernel_pooling", TORCH_FN(kernel_pooling));
  m.impl("kernel_pooling_backward", TORCH_FN(kernel_pooling_backward));
}

}  // namespace

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_FRAGMENT(finegrained_ops, m) {
  m.def("sketch_table(Tensor hash_index, Tensor hash_sign, int sketch_dim) -> Tensor");
  m.def("kernel_pooling(Tensor x, Tensor sketch_table, Tensor? alpha, int sketch_dim, "
        "bool normalize) -> (Tensor, Tensor)");
  m.def("kernel_pooling_backward(Tensor grad, Tensor x, Tensor sketch_table, Tensor? alpha, "
        "Tensor blocks, Tensor out, int sketch_dim, bool normalize) -> (Tensor, Tensor)");
}
#endif  // FGO_OP_REGISTRATION

FGO_DEVICE_KERNELS(register_device_kernels);

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_IMPL(finegrained_ops, Autograd, m) {
  m.impl("kernel_pooling", TORCH_FN(PoolingAutograd::call));
  m.impl("kernel_pooling_backward", torch::autograd::autogradNotImplementedFallback());
}
#endif  // FGO_OP_REGISTRATION

}  // namespace fgo
