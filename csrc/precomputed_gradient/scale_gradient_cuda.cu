// Torch-facing CUDA launcher of scale_gradient (built only in a CUDA build): one launch.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "precomputed_gradient/scale_gradient.h"
#include "precomputed_gradient/scale_gradient_kernels.cuh"

namespace fgo {

void scale_gradient_rows(Cuda, const at::Tensor& grad, const at::Tensor& grad_loss,
                         const at::Tensor& norm, const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(grad.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor g = grad_loss.to(norm.scalar_type());  // autograd gives the loss's dtype
  const int64_t rows = grad.size(0), numel = grad.numel();
  const int64_t width = rows > 0 ? numel / rows : 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "scale_gradient_cuda", [&] {
    using grad_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, norm.scalar_type(),
                                    "scale_gradient_cuda_loss", [&] {
      using loss_t = scalar_t;  // this dispatch's: the loss's dtype
      C10_CUDA_CHECK((scaled::cuda::launch_scale_gradient<grad_t, at::opmath_type<grad_t>,
                                                          loss_t>(
          grad.const_data_ptr<grad_t>(), g.const_data_ptr<loss_t>(), g.dim() == 1,
          norm.const_data_ptr<loss_t>(), numel, width, out.data_ptr<grad_t>(), stream)));
    });
  });
}

}  // namespace fgo
