// Torch-facing CUDA launcher of the class loss (built only in a CUDA build): two launches, the
// rows and the finish (class_loss_kernels.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "class_loss/class_loss_args.h"
#include "class_loss/class_loss_kernels.cuh"

namespace fgo {

void class_loss_rows(Cuda, const ClassLossArgs& a) {
  const c10::cuda::CUDAGuard guard(a.logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.logits.scalar_type(),
                                  "class_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t n = a.logits.size(0);
    const at::Tensor rows = at::empty({2, n}, a.logits.options().dtype(
                                                  c10::CppTypeToScalarType<acc_t>::value));
    cls::cuda::RowsParams<scalar_t, acc_t> p;
    p.logits = a.logits.data_ptr<scalar_t>();
    p.labels = a.multi_hot ? nullptr : a.target.data_ptr<int64_t>();
    p.soft_target = a.multi_hot ? a.target.data_ptr<acc_t>() : nullptr;
    p.class_weights = a.class_weights.defined() ? a.class_weights.data_ptr<acc_t>() : nullptr;
    p.logit_offsets = a.logit_offsets.defined() ? a.logit_offsets.data_ptr<acc_t>() : nullptr;
    p.target_margins = a.target_margins.defined() ? a.target_margins.data_ptr<acc_t>() : nullptr;
    p.n = n;
    p.c = a.logits.size(1);
    p.ignore_index = a.ignore_index;
    p.scale = static_cast<acc_t>(a.scale);
    p.gamma = static_cast<acc_t>(a.gamma);
    p.loss_type = a.loss_type;
    p.reduction = a.reduction;
    p.row_loss = rows.data_ptr<acc_t>();
    p.row_norm = p.row_loss + n;
    p.grad = a.grad.defined() ? a.grad.data_ptr<scalar_t>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.loss.scalar_type(),
                                    "class_loss_cuda_loss", [&] {
      using loss_t = scalar_t;  // this dispatch's: the loss's dtype
      C10_CUDA_CHECK(cls::cuda::launch_class_loss(p, a.loss.data_ptr<loss_t>(),
                                                 a.norm.data_ptr<loss_t>(), stream));
    });
  });
}

}  // namespace fgo
