// Torch-facing CUDA launchers of sqrt_normalize (built only in a CUDA build): one launch each.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "sqrt_normalize/sqrt_normalize.h"
#include "sqrt_normalize/sqrt_normalize_kernels.cuh"

namespace fgo {

void sqrt_normalize_rows(Cuda, const at::Tensor& y, double eps, const at::Tensor& z) {
  const c10::cuda::CUDAGuard guard(y.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "sqrt_norm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((sqrt_norm::cuda::launch_sqrt_normalize<scalar_t, acc_t>(
        y.const_data_ptr<scalar_t>(), y.size(0), y.size(1), acc_t(eps), z.data_ptr<scalar_t>(),
        c10::cuda::getCurrentCUDAStream())));
  });
}

void sqrt_normalize_backward_rows(Cuda, const at::Tensor& grad_z, const at::Tensor& y,
                                  const at::Tensor& z, double eps, const at::Tensor& grad_y) {
  const c10::cuda::CUDAGuard guard(y.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "sqrt_norm_bwd_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((sqrt_norm::cuda::launch_sqrt_normalize_backward<scalar_t, acc_t>(
        grad_z.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        z.const_data_ptr<scalar_t>(), y.size(0), y.size(1), acc_t(eps),
        grad_y.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream())));
  });
}

}  // namespace fgo
