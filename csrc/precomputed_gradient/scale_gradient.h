#pragma once
// The backward of the losses whose gradient the forward computes (precomputed_gradient.h):
// out = grad * grad_loss / norm, with grad_loss a 0-dim tensor or one value per row of grad.
// One pass, one launch on CUDA (where two ATen calls would take two).

#include <ATen/core/Tensor.h>

#include "common/device.h"

namespace fgo {

// grad (N, ...) floating; grad_loss 0-dim or (N,) floating; norm 0-dim floating, all on one
// device. Returns grad's shape and dtype, computed in float32 at least.
at::Tensor scale_gradient(const at::Tensor& grad, const at::Tensor& grad_loss,
                          const at::Tensor& norm);

// Device functions: `out` = `grad` * factor, factor = grad_loss[row or 0] / norm. Contiguous.
void scale_gradient_rows(Cpu, const at::Tensor& grad, const at::Tensor& grad_loss,
                         const at::Tensor& norm, const at::Tensor& out);
void scale_gradient_rows(Cuda, const at::Tensor& grad, const at::Tensor& grad_loss,
                         const at::Tensor& norm, const at::Tensor& out);

}  // namespace fgo
