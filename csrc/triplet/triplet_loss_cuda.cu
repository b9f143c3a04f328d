// The fused triplet margin loss on CUDA (built only in a CUDA build): four kernels of ours and
// two GEMMs on the current stream (triplet_loss_kernels.cuh lists them), no host sync. The
// gradients are of the loss (the divisor folded in; norm = 1).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>

#include "triplet/triplet_args.h"
#include "triplet/triplet_problem.h"
#include "triplet/triplet_loss_kernels.cuh"

namespace fgo {
namespace {

static_assert(static_cast<int>(TripletReduction::kMeanNonzero) == triplet::cuda::kMeanNonzero &&
              static_cast<int>(TripletReduction::kMean) == triplet::cuda::kMean &&
              static_cast<int>(TripletReduction::kSum) == triplet::cuda::kSum);

template <typename scalar_t>
void loss_cuda(const TripletLossArgs& a, cudaStream_t stream) {
  namespace k = triplet::cuda;
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t b = a.emb.size(0), e = a.extra.size(0), d = a.emb.size(1), n = b + e;
  const at::TensorOptions acc = a.emb.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const bool grad = a.grad_emb.defined();
  // One allocation for the small per-row and scalar values: own and factor.
  const at::Tensor small = at::empty({n + 1}, acc);
  acc_t* own = small.data_ptr<acc_t>();
  acc_t* factor = own + n;

  TripletArgs rows;
  TripletCandidates& c = rows.candidates;
  // In-batch, each anchor its own row of the bank (query_indices undefined).
  c = build_candidates(a.emb, a.labels, at::Tensor(), a.emb, a.labels, a.extra, a.extra_labels,
                       a.positive_fraction, a.squared, a.normalize);
  const at::Tensor& y = c.prepared.y;
  rows.rule = a.rule;
  rows.margin = a.margin;
  rows.pass = triplet::kLoss;
  const at::Tensor row_counts = at::empty({2, b}, a.labels.options());
  rows.row_nonzero = row_counts[0];
  rows.row_mined = row_counts[1];
  rows.row_loss = at::empty({b}, a.labels.options().dtype(at::kDouble));
  rows.weights = at::empty_like(c.dist);  // zeroed by the rows pass
  if (b > 0) triplet_rows(Cuda{}, rows);

  const at::Tensor s = grad ? at::empty({b * n + e * b}, acc) : at::Tensor();
  // The loss in emb's dtype or, under autocast, in float32 (loss_t).
  const auto finish = [&](auto* loss, auto* norm) {
    using loss_t = std::remove_pointer_t<decltype(loss)>;
    k::FinishParams<acc_t, loss_t> p{
        rows.row_loss.data_ptr<double>(), rows.row_nonzero.data_ptr<int64_t>(),
        rows.row_mined.data_ptr<int64_t>(), c.dist.data_ptr<acc_t>(),
        rows.weights.data_ptr<acc_t>(), b, e, static_cast<int>(a.reduction), a.squared, loss,
        norm, factor, grad ? s.data_ptr<acc_t>() : nullptr, grad ? own : nullptr};
    C10_CUDA_CHECK(k::launch_finish(p, stream));
  };
  if (a.loss.scalar_type() == a.emb.scalar_type()) {
    finish(a.loss.data_ptr<scalar_t>(), a.norm.data_ptr<scalar_t>());
  } else {
    finish(a.loss.data_ptr<acc_t>(), a.norm.data_ptr<acc_t>());
  }
  if (!grad) return;

  const at::Tensor pulled = at::empty({n, d}, acc);
  at::Tensor pulled_batch = pulled.narrow(0, 0, b), pulled_extra = pulled.narrow(0, b, e);
  at::mm_out(pulled_batch, s.narrow(0, 0, b * n).view({b, n}), y);
  if (e > 0) at::mm_out(pulled_extra, s.narrow(0, b * n, e * b).view({e, b}), y.narrow(0, 0, b));
  k::GradientParams<scalar_t, acc_t> gradient{
      y.data_ptr<acc_t>(), pulled.data_ptr<acc_t>(), own,
      c.prepared.lengths.data_ptr<acc_t>(), factor, b, d, a.normalize,
      a.grad_emb.data_ptr<scalar_t>(), a.grad_extra.data_ptr<scalar_t>()};
  C10_CUDA_CHECK(k::launch_gradient(gradient, n, stream));
}

}  // namespace

void triplet_loss(Cuda, const TripletLossArgs& a) {
  const c10::cuda::CUDAGuard guard(a.emb.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.emb.scalar_type(),
                                  "triplet_loss_cuda", [&] { loss_cuda<scalar_t>(a, stream); });
}

}  // namespace fgo
