// Torch-facing CUDA launcher of the class-balanced loss (built only in a CUDA build).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "class_balanced_loss/class_balanced_loss_args.h"
#include "class_balanced_loss/class_balanced_loss_kernels.cuh"

namespace fgo {

void class_balanced_loss_rows(Cuda, const ClassBalancedLossArgs& a) {
  const c10::cuda::CUDAGuard guard(a.logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.logits.scalar_type(), "class_balanced_loss_cuda", [&] {
    cb::cuda::RowsParams<scalar_t> p;
    p.logits = a.logits.data_ptr<scalar_t>();
    p.labels = a.multi_hot ? nullptr : a.target.data_ptr<int64_t>();
    p.soft_target = a.multi_hot ? a.target.data_ptr<scalar_t>() : nullptr;
    p.class_weights = a.class_weights.defined() ? a.class_weights.data_ptr<scalar_t>() : nullptr;
    p.logit_offsets = a.logit_offsets.defined() ? a.logit_offsets.data_ptr<scalar_t>() : nullptr;
    p.target_margins =
        a.target_margins.defined() ? a.target_margins.data_ptr<scalar_t>() : nullptr;
    p.n = a.logits.size(0);
    p.c = a.logits.size(1);
    p.ignore_index = a.ignore_index;
    p.scale = static_cast<scalar_t>(a.scale);
    p.gamma = static_cast<scalar_t>(a.gamma);
    p.loss_type = a.loss_type;
    p.norm_by_weight = a.norm_by_weight;
    p.row_loss = a.row_loss.data_ptr<scalar_t>();
    p.row_norm = a.row_norm.data_ptr<scalar_t>();
    p.grad = a.grad.defined() ? a.grad.data_ptr<scalar_t>() : nullptr;
    C10_CUDA_CHECK(cb::cuda::launch_class_balanced_loss_rows(p, stream));
  });
}

}  // namespace fgo
