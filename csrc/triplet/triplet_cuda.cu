// Torch-facing CUDA launcher of the triplet passes (built only in a CUDA build).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "triplet/triplet_args.h"
#include "triplet/triplet_kernels.cuh"

namespace fgo {

// |q|^2 + |r|^2 - 2 q.r by one GEMM, clamped at 0 against cancellation.
at::Tensor squared_distances(Cuda, const at::Tensor& q, const at::Tensor& r) {
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor d = at::addmm(r.pow(2).sum(1).unsqueeze(0).expand({q.size(0), r.size(0)}), q, r.t(),
                           1, -2);
  return d.add_(q.pow(2).sum(1, true)).clamp_min_(0);
}

void triplet_rows(Cuda, const TripletArgs& rows) {
  const TripletCandidates& c = rows.candidates;
  const c10::cuda::CUDAGuard guard(c.dist.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t q = c.dist.size(0), r = c.num_labelled;
  TORCH_CHECK(r <= std::numeric_limits<int32_t>::max(),
              "triplet (CUDA): at most 2^31 - 1 bank rows, got ", r);
  TORCH_CHECK(rows.pass != triplet::kLoss || c.dist.scalar_type() != at::kFloat ||
                  c.dist.size(1) <= (int64_t(1) << 24),
              "triplet_margin_loss (CUDA, float32): at most 2^24 candidates per anchor, got ",
              c.dist.size(1), "; use float64");
  // The bank grouped by label: each anchor's positives are one range of label_order.
  // std::tie, not a structured binding: the lambda below captures label_order, which C++17
  // (torch 2.11's standard) does not allow for a binding.
  at::Tensor sorted_labels, label_order;
  std::tie(sorted_labels, label_order) =
      at::sort(c.labels.narrow(0, 0, r), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor label_begin =
      at::searchsorted(sorted_labels, c.query_labels, /*out_int32=*/false, /*right=*/false);
  const at::Tensor label_end =
      at::searchsorted(sorted_labels, c.query_labels, /*out_int32=*/false, /*right=*/true);
  // Room for any anchor's positives: the largest class when the count pass measured it.
  const int64_t capacity =
      std::max<int64_t>(rows.positive_counts.defined() ? rows.positive_counts.size(1) : r, 1);
  const at::Tensor sorted_index = at::empty({q, capacity}, c.labels.options().dtype(at::kInt));
  const at::Tensor sorted_dist = at::empty({q, capacity}, c.dist.options());
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_rows_cuda", [&] {
    triplet::cuda::AnchorRows<scalar_t> s;
    s.dist = c.dist.data_ptr<scalar_t>();
    s.labels = c.labels.data_ptr<int64_t>();
    s.query_labels = c.query_labels.data_ptr<int64_t>();
    s.query_indices = c.query_indices.data_ptr<int64_t>();
    s.label_order = label_order.data_ptr<int64_t>();
    s.label_begin = label_begin.data_ptr<int64_t>();
    s.label_end = label_end.data_ptr<int64_t>();
    s.sorted_index = sorted_index.data_ptr<int32_t>();
    s.sorted_dist = sorted_dist.data_ptr<scalar_t>();
    s.capacity = capacity;
    s.rows = q;
    s.stride = c.dist.size(1);
    s.num_labelled = r;
    s.positive_fraction = c.positive_fraction;
    C10_CUDA_CHECK(triplet::cuda::launch_triplet_rows(s, triplet_rows_params<scalar_t>(rows),
                                                      stream));
  });
}

}  // namespace fgo
