// Torch-facing CUDA launchers of the triplet passes and the rows' preparation (built only in a
// CUDA build).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "triplet/triplet_args.h"
#include "triplet/triplet_problem.h"
#include "triplet/triplet_kernels.cuh"

namespace fgo {

PreparedRows prepare_rows(Cuda, at::ArrayRef<at::Tensor> parts, bool normalize) {
  const c10::cuda::CUDAGuard guard(parts[0].device());
  TORCH_CHECK(parts.size() <= 3, "triplet: at most three parts, got ", parts.size());
  int64_t rows = 0;
  for (const at::Tensor& part : parts) rows += part.size(0);
  const int64_t d = parts[0].size(1);
  PreparedRows out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, parts[0].scalar_type(),
                                  "triplet_prepare_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::TensorOptions options =
        parts[0].options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    out.y = at::empty({rows, d}, options);
    const at::Tensor norms = at::empty({2, rows}, options);
    out.lengths = norms[0];
    out.sq_norms = norms[1];
    triplet::cuda::PrepareParams<scalar_t, acc_t> p{};
    std::vector<at::Tensor> contiguous(parts.begin(), parts.end());
    int64_t end = 0;
    for (size_t i = 0; i < 3; ++i) {
      if (i < contiguous.size()) {
        contiguous[i] = contiguous[i].contiguous();
        p.parts[i] = contiguous[i].data_ptr<scalar_t>();
        end += contiguous[i].size(0);
      }
      p.part_end[i] = end;
    }
    p.d = d;
    p.normalize = normalize;
    p.y = out.y.data_ptr<acc_t>();
    p.lengths = norms.data_ptr<acc_t>();
    p.sq_norms = p.lengths + rows;
    C10_CUDA_CHECK(triplet::cuda::launch_prepare_rows(p, c10::cuda::getCurrentCUDAStream()));
  });
  return out;
}

void candidate_distances(Cuda, TripletCandidates& c, const at::Tensor& y_query,
                         const at::Tensor& y_candidates, int64_t first) {
  const c10::cuda::CUDAGuard guard(y_query.device());
  c.dist = at::mm(y_query, y_candidates.t());  // inner products; the first pass finishes them
  c.query_sq_norms = c.prepared.sq_norms.narrow(0, 0, y_query.size(0));
  c.candidate_sq_norms = c.prepared.sq_norms.narrow(0, first, y_candidates.size(0));
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
  // Room for any anchor's positives: the largest class when the count pass measured it.
  const int64_t capacity =
      std::max<int64_t>(rows.positive_counts.defined() ? rows.positive_counts.size(1) : r, 1);
  const at::Tensor scratch = at::empty({2, q, capacity}, c.labels.options().dtype(at::kInt));
  const at::Tensor sorted_dist = at::empty({q, capacity}, c.dist.options());
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_rows_cuda", [&] {
    triplet::cuda::AnchorRows<scalar_t> s{};
    s.dist = c.dist.data_ptr<scalar_t>();
    if (c.query_sq_norms.defined()) {
      s.query_sq_norms = c.query_sq_norms.data_ptr<scalar_t>();
      s.candidate_sq_norms = c.candidate_sq_norms.data_ptr<scalar_t>();
    }
    s.squared = c.squared;
    s.labels = c.labels.data_ptr<int64_t>();
    s.extra_labels = c.extra_labels.data_ptr<int64_t>();
    s.query_labels = c.query_labels.data_ptr<int64_t>();
    s.query_indices = c.query_indices.defined() ? c.query_indices.data_ptr<int64_t>() : nullptr;
    s.positive_list = scratch.data_ptr<int32_t>();
    s.sorted_index = s.positive_list + q * capacity;
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
