// The fused triplet margin loss on CUDA (built only in a CUDA build): normalisation and the
// gradient's products by ATen on the current stream, the loss pass by the rows kernel
// (triplet_cuda.cu). The gradients are of the loss (the divisor folded in; norm = 1).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>

#include "triplet/triplet_args.h"
#include "triplet/triplet_problem.h"

namespace fgo {

void triplet_loss(Cuda, const TripletLossArgs& a) {
  const c10::cuda::CUDAGuard guard(a.emb.device());
  constexpr double kNormEps = 1e-12;  // F.normalize's
  const int64_t b = a.emb.size(0), e = a.extra.size(0);
  const at::Tensor raw = at::cat({a.emb, a.extra}).to(at::toOpMathType(a.emb.scalar_type()));
  const at::Tensor lengths = raw.norm(2, 1, /*keepdim=*/true);
  const at::Tensor x_all = a.normalize ? raw / lengths.clamp_min(kNormEps) : raw;
  const at::Tensor x = x_all.narrow(0, 0, b);

  TripletArgs rows;
  TripletCandidates& c = rows.candidates;
  c = build_candidates(x, a.labels, at::arange(b, a.labels.options()), x, a.labels,
                       x_all.narrow(0, b, e), a.extra_labels, a.positive_fraction, a.squared);
  rows.rule = a.rule;
  rows.margin = a.margin;
  rows.pass = triplet::kLoss;
  rows.row_loss = at::zeros({b}, x.options().dtype(at::kDouble));
  rows.row_nonzero = at::zeros({b}, a.labels.options());
  rows.row_mined = at::zeros({b}, a.labels.options());
  rows.weights = at::zeros_like(c.dist);
  if (b > 0) triplet_rows(Cuda{}, rows);

  at::Tensor divisor = a.reduction == TripletReduction::kMeanNonzero ? rows.row_nonzero.sum()
                       : a.reduction == TripletReduction::kMean      ? rows.row_mined.sum()
                                                                     : at::ones({}, a.labels.options());
  divisor = divisor.to(at::kDouble).clamp_min(1.0);
  a.loss.copy_(rows.row_loss.sum() / divisor);
  a.norm.fill_(1);
  if (!a.grad_emb.defined()) return;

  at::Tensor w = rows.weights;
  if (!a.squared) w = at::where(c.dist > 0, w / (2 * c.dist), at::zeros({}, w.options()));
  w = w / divisor.to(w.scalar_type());
  const at::Tensor w_batch = w.narrow(1, 0, b), w_extra = w.narrow(1, b, e);
  const at::Tensor own = at::cat({w.sum(1) + w_batch.sum(0), w_extra.sum(0)}).unsqueeze(1);
  const at::Tensor pulled = at::cat({at::mm(w, x_all) + at::mm(w_batch.t(), x),
                                     at::mm(w_extra.t(), x)});
  at::Tensor g = 2 * (own * x_all - pulled);  // w.r.t. the normalised rows y
  if (a.normalize) {  // y = x / max(|x|, eps): (g - y (y . g)) / |x|, or g / eps at the clamp
    const at::Tensor projected = g - x_all * (x_all * g).sum(1, true);
    g = at::where(lengths > kNormEps, projected, g) / lengths.clamp_min(kNormEps);
  }
  a.grad_emb.copy_(g.narrow(0, 0, b));
  a.grad_extra.copy_(g.narrow(0, b, e));
}

}  // namespace fgo
