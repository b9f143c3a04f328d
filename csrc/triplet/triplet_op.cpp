// The torch.library ops finegrained_ops::triplet_margin_loss, ::triplet_count and
// ::triplet_mine: schemas, device kernels and the loss's autograd and autocast. Fake (meta)
// kernels are registered from Python (finegrained_ops/ops/triplet.py). The CUDA emulation
// compiles this file too, for its device kernels only (common/device_kernels.h).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "common/below_autograd.h"
#include "common/device_kernels.h"
#include "common/op_kernels.h"
#include "precomputed_gradient/precomputed_gradient.h"
#include "triplet/triplet.h"

namespace fgo {
namespace {

const c10::TypedOperatorHandle<decltype(triplet_margin_loss)>& loss_op() {
  static const auto op =
      find_op<decltype(triplet_margin_loss)>("finegrained_ops::triplet_margin_loss");
  return op;
}

class TripletMarginLossFunction : public torch::autograd::Function<TripletMarginLossFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& emb, const at::Tensor& labels,
      const at::Tensor& extra_negatives, const at::Tensor& extra_negative_labels, double margin,
      c10::string_view negatives, double positive_fraction, c10::string_view reduction,
      bool squared, bool normalize, bool compute_grad, std::optional<at::ScalarType> loss_dtype) {
    auto [loss, grad_emb, grad_extra, norm] = below_autograd(
        loss_op(), emb, labels, extra_negatives, extra_negative_labels, margin, negatives,
        positive_fraction, reduction, squared, normalize, compute_grad, loss_dtype);
    ctx->mark_non_differentiable({grad_emb, grad_extra, norm});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward(
        {grad_emb, grad_extra, norm, emb, labels, extra_negatives, extra_negative_labels});
    ctx->saved_data["margin"] = margin;
    ctx->saved_data["negatives"] = std::string(negatives);
    ctx->saved_data["positive_fraction"] = positive_fraction;
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["squared"] = squared;
    ctx->saved_data["normalize"] = normalize;
    ctx->saved_data["compute_grad"] = compute_grad;
    return {loss, grad_emb, grad_extra, norm};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    torch::autograd::variable_list result(12);
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined()) return result;
    const auto saved = ctx->get_saved_variables();
    at::Tensor grad_emb = saved[0], grad_extra = saved[1], norm = saved[2];
    const at::Tensor &emb = saved[3], &labels = saved[4], &extra = saved[5],
                     &extra_labels = saved[6];
    if (!ctx->saved_data["compute_grad"].toBool()) {
      // Recorded where compute_grad was false (a graph traced under no_grad): compute it now.
      at::NoGradGuard no_grad;
      std::tie(std::ignore, grad_emb, grad_extra, norm) = below_autograd(
          loss_op(), emb.detach(), labels, extra.detach(), extra_labels,
          ctx->saved_data["margin"].toDouble(), ctx->saved_data["negatives"].toStringRef(),
          ctx->saved_data["positive_fraction"].toDouble(),
          ctx->saved_data["reduction"].toStringRef(), ctx->saved_data["squared"].toBool(),
          ctx->saved_data["normalize"].toBool(), /*compute_grad=*/true, std::nullopt);
    }
    // needs_input_grad counts the tensor arguments: emb is 0, extra_negatives 2.
    if (ctx->needs_input_grad(0)) {
      result[0] = scale_precomputed_gradient(grad_emb, grad_loss, norm, /*per_sample=*/false,
                                             "triplet_margin_loss", {emb, extra});
    }
    if (ctx->needs_input_grad(2)) {
      result[2] = scale_precomputed_gradient(grad_extra, grad_loss, norm, /*per_sample=*/false,
                                             "triplet_margin_loss", {emb, extra});
    }
    return result;
  }
};

using LossAutograd = AutogradKernel<TripletMarginLossFunction, decltype(triplet_margin_loss)>;
// Under autocast the loss is float32, as torch's triplet_margin_loss is.
using LossAutocast = AutocastLossKernel<decltype(triplet_margin_loss), loss_op>;

// The device kernels, the same for CPU and CUDA: each entry point picks its device's
// kernels itself (on_device, common/device.h).
void register_device_kernels(torch::Library& m) {
  m.impl("triplet_margin_loss", TORCH_FN(triplet_margin_loss));
  m.impl("triplet_count", TORCH_FN(triplet_count));
  m.impl("triplet_mine", TORCH_FN(triplet_mine));
}

}  // namespace

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_FRAGMENT(finegrained_ops, m) {
  m.def("triplet_margin_loss(Tensor embeddings, Tensor labels, Tensor extra_negatives, "
        "Tensor extra_negative_labels, float margin, str negatives, float positive_fraction, "
        "str reduction, bool squared, bool normalize, bool compute_grad, "
        "ScalarType? loss_dtype=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("triplet_count(Tensor query_embeddings, Tensor query_labels, Tensor? query_indices, "
        "Tensor bank_embeddings, Tensor bank_labels, Tensor extra_negatives, "
        "Tensor extra_negative_labels, float margin, str negatives, float positive_fraction, "
        "bool squared, bool normalize, int max_positives) -> Tensor");
  m.def("triplet_mine(Tensor query_embeddings, Tensor query_labels, Tensor? query_indices, "
        "Tensor bank_embeddings, Tensor bank_labels, Tensor extra_negatives, "
        "Tensor extra_negative_labels, float margin, str negatives, float positive_fraction, "
        "bool squared, bool normalize, int max_positives, int max_triplets, int per_anchor, "
        "int seed, int anchor_offset) "
        "-> (Tensor, Tensor, Tensor)");
}
#endif  // FGO_OP_REGISTRATION

FGO_DEVICE_KERNELS(register_device_kernels);

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_IMPL(finegrained_ops, Autograd, m) {
  m.impl("triplet_margin_loss", TORCH_FN(LossAutograd::call));
}

TORCH_LIBRARY_IMPL(finegrained_ops, AutocastCPU, m) {
  m.impl("triplet_margin_loss", TORCH_FN(LossAutocast::call));
}

TORCH_LIBRARY_IMPL(finegrained_ops, AutocastCUDA, m) {
  m.impl("triplet_margin_loss", TORCH_FN(LossAutocast::call));
}
#endif  // FGO_OP_REGISTRATION

}  // namespace fgo
