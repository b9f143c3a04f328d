// Torch-facing CUDA launcher of the triplet passes (built only in a CUDA build).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "triplet/triplet.h"
#include "triplet/triplet_kernels.cuh"

namespace fgo {

void triplet_rows_cuda(const TripletRows& rows) {
  const TripletCandidates& c = rows.candidates;
  const c10::cuda::CUDAGuard guard(c.dist.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Non-candidates sort last as +inf (the embeddings were checked finite); a stable sort
  // keeps equal distances in index order.
  const at::Tensor inf = at::full({}, std::numeric_limits<double>::infinity(), c.dist.options());
  const auto [pos_dist, pos_index] =
      at::sort(at::where(c.positive, c.dist, inf), /*stable=*/true, /*dim=*/1, false);
  const auto [neg_dist, neg_index] =
      at::sort(at::where(c.negative, c.dist, inf), /*stable=*/true, /*dim=*/1, false);
  const at::Tensor keep = c.keep.contiguous(), num_neg = c.negative.sum(1);
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_rows_cuda", [&] {
    triplet::cuda::SortedRows<scalar_t> s;
    s.pos_dist = pos_dist.data_ptr<scalar_t>();
    s.pos_index = pos_index.data_ptr<int64_t>();
    s.keep = keep.data_ptr<int64_t>();
    s.neg_dist = neg_dist.data_ptr<scalar_t>();
    s.neg_index = neg_index.data_ptr<int64_t>();
    s.num_neg = num_neg.data_ptr<int64_t>();
    s.rows = c.dist.size(0);
    s.stride = c.dist.size(1);
    C10_CUDA_CHECK(triplet::cuda::launch_triplet_rows(s, triplet_rows_params<scalar_t>(rows),
                                                      stream));
  });
}

}  // namespace fgo
