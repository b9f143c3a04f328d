// The fused triplet margin loss's entry point: every argument checked once, here, then the
// device's loss (triplet_loss_cpu.cpp, triplet_loss_cuda.cu): normalisation, distances, one
// loss pass over the anchors filling the weights W of the (B, B + E) distance matrix, and the
// gradient as W's products with the embeddings, back through the normalisation.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "triplet/triplet_args.h"
#include "triplet/triplet_problem.h"

namespace fgo {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplet_margin_loss(
    const at::Tensor& embeddings, const at::Tensor& labels, const at::Tensor& extra_negatives,
    const at::Tensor& extra_negative_labels, double margin, c10::string_view negatives,
    double positive_fraction, c10::string_view reduction, bool squared, bool normalize,
    bool compute_grad, std::optional<at::ScalarType> loss_dtype) {
  constexpr const char* kOp = "triplet_margin_loss";
  TORCH_CHECK_VALUE(embeddings.dim() == 2, kOp, ": embeddings must be 2-D (B, D), got shape ",
                    embeddings.sizes());
  const at::ScalarType type = embeddings.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kDouble || type == at::kHalf ||
                       type == at::kBFloat16,
                   kOp, ": embeddings must have dtype in (float16, bfloat16, float32, "
                   "float64), got ", type);
  check_rows("extra_negatives", extra_negatives, embeddings.size(1));
  TORCH_CHECK_TYPE(extra_negatives.scalar_type() == type, kOp, ": extra_negatives must have "
                   "embeddings' dtype ", type, ", got ", extra_negatives.scalar_type());
  const at::ScalarType loss_type = loss_dtype.value_or(type);
  TORCH_CHECK_TYPE(loss_type == type || loss_type == at::toOpMathType(type), kOp,
                   ": loss_dtype must be embeddings' dtype ", type, " or the ",
                   at::toOpMathType(type), " it is computed in, got ", loss_type);
  check_labels("labels", labels, embeddings.size(0));
  check_labels("extra_negative_labels", extra_negative_labels, extra_negatives.size(0));
  check_one_device(embeddings, {&labels, &extra_negatives, &extra_negative_labels});
  TripletLossArgs args;
  args.reduction = parse_choice(kOp, "reduction", reduction, kTripletReductions);
  args.rule = check_hyperparameters(kOp, margin, negatives, positive_fraction);
  args.emb = embeddings.contiguous();
  args.labels = labels.contiguous();
  args.extra = extra_negatives.contiguous();
  args.extra_labels = extra_negative_labels.contiguous();
  args.margin = margin;
  args.positive_fraction = positive_fraction;
  args.squared = squared;
  args.normalize = normalize;
  args.loss = at::empty({}, embeddings.options().dtype(loss_type));
  args.norm = at::empty({}, embeddings.options().dtype(loss_type));
  if (compute_grad) {
    args.grad_emb = at::empty_like(args.emb);
    args.grad_extra = at::empty_like(args.extra);
  }
  on_device(embeddings, [&](auto device) { triplet_loss(device, args); });
  const at::Tensor none = at::empty({0}, embeddings.options());
  return {args.loss, compute_grad ? args.grad_emb : none,
          compute_grad ? args.grad_extra : none, args.norm};
}

}  // namespace fgo
