// The fused triplet margin loss: one loss pass over the anchors fills the weights W of the
// (B, B + E) distance matrix; the gradient is W's product with the embeddings.
#include <ATen/ATen.h>

#include "triplet/triplet_problem.h"

namespace fgo {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplet_margin_loss_forward(
    const at::Tensor& emb, const at::Tensor& labels, const at::Tensor& extra_negatives,
    const at::Tensor& extra_negative_labels, double margin, const std::string& negatives,
    double positive_fraction, const std::string& reduction, bool squared, bool compute_grad) {
  constexpr const char* kOp = "triplet_margin_loss";
  TORCH_CHECK(emb.dim() == 2, kOp, ": emb must be (B, D), got shape ", emb.sizes());
  const TripletReduction reduce = parse_choice(kOp, "reduction", reduction, kTripletReductions);
  const int64_t b = emb.size(0);
  const at::Tensor self = at::arange(b, labels.options());
  const triplet::Rule rule =
      check_problem(kOp, emb, labels, self, emb, labels, extra_negatives, extra_negative_labels,
                    margin, negatives, positive_fraction);
  const at::Tensor x = emb.contiguous(), e = extra_negatives.contiguous();

  TripletArgs rows;
  rows.candidates = build_candidates(x, labels, self, x, labels, e, extra_negative_labels,
                                     positive_fraction, squared);
  rows.rule = rule;
  rows.margin = margin;
  rows.pass = triplet::kLoss;
  rows.row_loss = at::zeros({b}, x.options().dtype(at::kDouble));
  rows.row_nonzero = at::zeros({b}, labels.options());
  rows.row_mined = at::zeros({b}, labels.options());
  rows.weights = at::zeros_like(rows.candidates.dist);
  run_rows(rows);

  // Fixed-order float64 reductions over anchors: deterministic whatever the thread count.
  const TripletCandidates& c = rows.candidates;
  at::Tensor norm = reduce == TripletReduction::kMeanNonzero ? rows.row_nonzero.sum()
                    : reduce == TripletReduction::kMean      ? rows.row_mined.sum()
                                                             : at::ones({}, labels.options());
  norm = norm.to(at::kDouble).clamp_min(1.0);
  const at::Tensor loss = (rows.row_loss.sum() / norm).to(x.scalar_type());

  at::Tensor grad_emb = at::empty({0}, x.options()), grad_extra = at::empty({0}, x.options());
  if (compute_grad) {
    // loss_sum = sum_ij W_ij dist_ij; d(dist_ij) = 2 (x_i - y_j) for squared distances.
    at::Tensor w = rows.weights;
    if (!squared) {
      w = at::where(c.dist > 0, w / (2 * c.dist), at::zeros({}, w.options()));
    }
    const at::Tensor w_batch = w.narrow(1, 0, b), w_extra = w.narrow(1, b, e.size(0));
    const at::Tensor own = (w.sum(1) + w_batch.sum(0)).unsqueeze(1);
    grad_emb = 2 * (own * x - at::mm(w_batch + w_batch.t(), x) - at::mm(w_extra, e));
    grad_extra = 2 * (w_extra.sum(0).unsqueeze(1) * e - at::mm(w_extra.t(), x));
  }
  return {loss, grad_emb, grad_extra, norm.to(x.scalar_type())};
}

}  // namespace fgo
