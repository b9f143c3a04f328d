// The fused triplet margin loss on the CPU: the rows normalised into one float buffer, our
// fixed-order distances, the loss pass over the anchors (triplet_cpu.cpp), and the gradient
// from the weights W by two or three GEMMs and one pass that folds in the normalisation's
// backward and the loss's divisor (so the backward of loss.backward() makes no pass).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "triplet/triplet_args.h"
#include "triplet/triplet_problem.h"

namespace fgo {
namespace {

// A tensor over a vector's memory (no copy, no operator call).
template <typename T>
at::Tensor over(std::vector<T>& v, at::ScalarType type) {
  return at::from_blob(v.data(), {static_cast<int64_t>(v.size())}, at::TensorOptions(type));
}

// The loss in its dtype (loss_t: emb's or, under autocast, float32), and norm = 1: the divisor
// is folded into the gradients.
template <typename loss_t>
void write_loss(const TripletLossArgs& a, double loss) {
  *a.loss.data_ptr<loss_t>() = static_cast<loss_t>(loss);
  *a.norm.data_ptr<loss_t>() = loss_t(1);
}

template <typename scalar_t>
void loss_cpu(const TripletLossArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t b = a.emb.size(0), e = a.extra.size(0), d = a.emb.size(1), n = b + e;
  TripletArgs rows;
  TripletCandidates& c = rows.candidates;
  // In-batch, each anchor its own row of the bank (query_indices undefined).
  c = build_candidates(a.emb, a.labels, at::Tensor(), a.emb, a.labels, a.extra, a.extra_labels,
                       a.positive_fraction, a.squared, a.normalize);
  const PreparedRows& p = c.prepared;
  const at::Tensor x = p.y.narrow(0, 0, b);
  acc_t* dist = c.dist.template data_ptr<acc_t>();
  std::vector<int64_t> nonzero(b, 0), mined(b, 0);
  std::vector<double> row_loss(b, 0.0);
  rows.rule = a.rule;
  rows.margin = a.margin;
  rows.pass = triplet::kLoss;
  rows.row_loss = over(row_loss, at::kDouble);
  rows.row_nonzero = over(nonzero, at::kLong);
  rows.row_mined = over(mined, at::kLong);
  rows.weights = at::zeros_like(c.dist);
  if (b > 0) triplet_rows(Cpu{}, rows);

  // Fixed-order float64 reductions over anchors: deterministic whatever the thread count.
  double total = 0, count = 0;
  for (int64_t i = 0; i < b; ++i) {
    total += row_loss[i];
    count += a.reduction == TripletReduction::kMeanNonzero ? double(nonzero[i])
             : a.reduction == TripletReduction::kMean      ? double(mined[i])
                                                           : 0.0;
  }
  const double divisor = a.reduction == TripletReduction::kSum ? 1.0 : std::max(count, 1.0);
  if (a.loss.scalar_type() == a.emb.scalar_type()) {
    write_loss<scalar_t>(a, total / divisor);
  } else {
    write_loss<acc_t>(a, total / divisor);
  }
  if (!a.grad_emb.defined()) return;

  // loss_sum = sum_ij W_ij dist_ij, d(dist_ij)/d(x_i) = 2 (x_i - y_j) for squared distances.
  acc_t* w = rows.weights.template data_ptr<acc_t>();
  if (!a.squared) {
    for (int64_t i = 0; i < b * n; ++i) w[i] = dist[i] > 0 ? w[i] / (2 * dist[i]) : acc_t(0);
  }
  std::vector<acc_t> own(b, acc_t(0)), extra_own(e, acc_t(0));
  for (int64_t i = 0; i < b; ++i) {  // row sums, and the batch columns' sums, in order
    for (int64_t j = 0; j < n; ++j) {
      own[i] += w[i * n + j];
      if (j < b) own[j] += w[i * n + j];
      else extra_own[j - b] += w[i * n + j];
    }
  }
  const at::Tensor w_batch = rows.weights.narrow(1, 0, b);
  const at::Tensor pull = at::mm(rows.weights, p.y);        // W x_all: (B, D)
  const at::Tensor push = at::mm(w_batch.t(), x);           // W_bᵀ x:  (B, D)
  const at::Tensor extra_pull = e > 0 ? at::mm(rows.weights.narrow(1, b, e).t(), x)
                                      : at::Tensor();     // W_eᵀ x:  (E, D)
  const acc_t factor = acc_t(2.0 / divisor);
  const acc_t* xs = p.y.template data_ptr<acc_t>();
  const acc_t* lengths = p.lengths.template data_ptr<acc_t>();
  // Row r's gradient g w.r.t. its normalised row y, then back through y = x / max(|x|, eps):
  // (g - y (y . g)) / |x| where |x| > eps, g / eps where it was clamped.
  const auto finish = [&](int64_t r, const acc_t* y, acc_t scale, const acc_t* minus_a,
                          const acc_t* minus_b, scalar_t* out, std::vector<acc_t>& g) {
    acc_t dot = 0;
    for (int64_t k = 0; k < d; ++k) {
      g[k] = factor * (scale * y[k] - minus_a[k] - (minus_b ? minus_b[k] : acc_t(0)));
      dot += y[k] * g[k];
    }
    const bool project = a.normalize && lengths[r] > acc_t(triplet::kNormEps);
    const acc_t inverse = acc_t(1) / triplet::norm_divisor(lengths[r], a.normalize);
    for (int64_t k = 0; k < d; ++k) {
      out[k] = static_cast<scalar_t>(inverse * (project ? g[k] - y[k] * dot : g[k]));
    }
  };
  const acc_t* pull_data = pull.template data_ptr<acc_t>();
  const acc_t* push_data = push.template data_ptr<acc_t>();
  scalar_t* grad_emb = a.grad_emb.data_ptr<scalar_t>();
  at::parallel_for(0, b, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> g(d);
    for (int64_t i = begin; i < end; ++i) {
      finish(i, xs + i * d, own[i], pull_data + i * d, push_data + i * d, grad_emb + i * d, g);
    }
  });
  if (e > 0) {
    const acc_t* extra_pull_data = extra_pull.template data_ptr<acc_t>();
    scalar_t* grad_extra = a.grad_extra.data_ptr<scalar_t>();
    at::parallel_for(0, e, 16, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> g(d);
      for (int64_t j = begin; j < end; ++j) {
        finish(b + j, xs + (b + j) * d, extra_own[j], extra_pull_data + j * d, nullptr,
               grad_extra + j * d, g);
      }
    });
  }
}

}  // namespace

void triplet_loss(Cpu, const TripletLossArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.emb.scalar_type(),
                                  "triplet_loss_cpu", [&] { loss_cpu<scalar_t>(args); });
}

}  // namespace fgo
