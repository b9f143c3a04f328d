#pragma once
// The post-processing of the sketching heads (thesis 3.3.1): z = s(y) / max(||s(y)||, 1e-12),
// s the signed square root of sqrt_normalize_math.h, over each row of y; and its backward.
// One pass each way, where signed_sqrt and F.normalize take seven operators forward and ten
// backward.

#include <ATen/core/Tensor.h>

#include "common/device.h"

namespace fgo {

// y (N, D) float16/bfloat16/float32/float64, eps > 0 -> z (N, D) in y's dtype.
at::Tensor sqrt_normalize(const at::Tensor& y, double eps);
// d(loss)/dy from grad_z (N, D), y and z = sqrt_normalize(y, eps).
at::Tensor sqrt_normalize_backward(const at::Tensor& grad_z, const at::Tensor& y,
                                   const at::Tensor& z, double eps);

// Device functions over contiguous rows: forward fills z, backward grad_y.
void sqrt_normalize_rows(Cpu, const at::Tensor& y, double eps, const at::Tensor& z);
void sqrt_normalize_rows(Cuda, const at::Tensor& y, double eps, const at::Tensor& z);
void sqrt_normalize_backward_rows(Cpu, const at::Tensor& grad_z, const at::Tensor& y,
                                  const at::Tensor& z, double eps, const at::Tensor& grad_y);
void sqrt_normalize_backward_rows(Cuda, const at::Tensor& grad_z, const at::Tensor& y,
                                  const at::Tensor& z, double eps, const at::Tensor& grad_y);

}  // namespace fgo
