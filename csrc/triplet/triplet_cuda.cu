// Torch-facing CUDA launcher of the triplet passes (built only in a CUDA build).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

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
  const int64_t r = c.num_labelled;
  // Each row's positives first, in (distance, index) order: a stable sort by distance, then a
  // stable sort by "is not a positive". Positives are told by label, as on the CPU, never by
  // distance: a positive's own distance may be +inf (float32 overflow without normalising).
  const at::Tensor positive = at::cat(
      {(c.query_labels.unsqueeze(1) == c.labels.narrow(0, 0, r).unsqueeze(0)) &
           (at::arange(r, c.labels.options()).unsqueeze(0) != c.query_indices.unsqueeze(1)),
       at::zeros({c.dist.size(0), c.dist.size(1) - r}, c.labels.options().dtype(at::kBool))},
      1);
  const auto [by_distance, distance_order] =
      at::sort(c.dist, /*stable=*/true, /*dim=*/1, /*descending=*/false);
  const at::Tensor not_positive = at::logical_not(positive).gather(1, distance_order).to(at::kByte);
  const at::Tensor positives_first =
      std::get<1>(at::sort(not_positive, /*stable=*/true, /*dim=*/1, /*descending=*/false));
  const at::Tensor pos_index = distance_order.gather(1, positives_first);
  const at::Tensor pos_dist = by_distance.gather(1, positives_first);
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_rows_cuda", [&] {
    triplet::cuda::SortedRows<scalar_t> s;
    s.pos_dist = pos_dist.data_ptr<scalar_t>();
    s.pos_index = pos_index.data_ptr<int64_t>();
    s.dist = c.dist.data_ptr<scalar_t>();
    s.labels = c.labels.data_ptr<int64_t>();
    s.query_labels = c.query_labels.data_ptr<int64_t>();
    s.query_indices = c.query_indices.data_ptr<int64_t>();
    s.rows = c.dist.size(0);
    s.stride = c.dist.size(1);
    s.num_labelled = r;
    s.positive_fraction = c.positive_fraction;
    C10_CUDA_CHECK(triplet::cuda::launch_triplet_rows(s, triplet_rows_params<scalar_t>(rows),
                                                      stream));
  });
}

}  // namespace fgo
