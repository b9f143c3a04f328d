// sqrt_normalize's entry points: checks, then the device's pass.
#include "sqrt_normalize/sqrt_normalize.h"

#include <ATen/ATen.h>

#include <cmath>

namespace fgo {
namespace {

void check_rows(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 2, op, ": ", name, " must be 2-D (N, D), got shape ", t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be floating point, got ", t.scalar_type());
}

}  // namespace

at::Tensor sqrt_normalize(const at::Tensor& y, double eps) {
  check_rows("sqrt_normalize", "y", y);
  TORCH_CHECK_VALUE(eps > 0 && std::isfinite(eps),
                    "sqrt_normalize: eps must be finite and > 0, got ", eps);
  const at::Tensor in = y.contiguous();
  at::Tensor z = at::empty_like(in);
  on_device(y, [&](auto device) { sqrt_normalize_rows(device, in, eps, z); });
  return z;
}

at::Tensor sqrt_normalize_backward(const at::Tensor& grad_z, const at::Tensor& y,
                                   const at::Tensor& z, double eps) {
  constexpr const char* kOp = "sqrt_normalize_backward";
  check_rows(kOp, "grad", grad_z);
  TORCH_CHECK_VALUE(grad_z.sizes() == y.sizes() && z.sizes() == y.sizes() &&
                        grad_z.scalar_type() == y.scalar_type() &&
                        z.scalar_type() == y.scalar_type() && grad_z.device() == y.device() &&
                        z.device() == y.device(),
                    kOp, ": grad, y and z must share a shape, dtype and device, got ",
                    grad_z.sizes(), " ", y.sizes(), " ", z.sizes());
  const at::Tensor g = grad_z.contiguous(), in = y.contiguous(), out = z.contiguous();
  at::Tensor grad_y = at::empty_like(in);
  on_device(y, [&](auto device) { sqrt_normalize_backward_rows(device, g, in, out, eps, grad_y); });
  return grad_y;
}

}  // namespace fgo
