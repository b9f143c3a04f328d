// The entry point of scale_gradient: checks, then the device's pass.
#include "precomputed_gradient/scale_gradient.h"

#include <ATen/ATen.h>

namespace fgo {

at::Tensor scale_gradient(const at::Tensor& grad, const at::Tensor& grad_loss,
                          const at::Tensor& norm) {
  TORCH_CHECK_VALUE(grad.dim() >= 1, "scale_gradient: grad must have rows, got shape ",
                    grad.sizes());
  TORCH_CHECK_VALUE(grad_loss.dim() == 0 || grad_loss.sizes() == at::IntArrayRef{grad.size(0)},
                    "scale_gradient: grad_loss must be 0-dim or hold one value per row of "
                    "grad (", grad.size(0), "), got shape ", grad_loss.sizes());
  TORCH_CHECK_VALUE(norm.dim() == 0, "scale_gradient: norm must be 0-dim, got shape ",
                    norm.sizes());
  for (const at::Tensor* t : {&grad, &grad_loss, &norm}) {
    TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()),
                     "scale_gradient: grad, grad_loss and norm must be floating, got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == grad.device(), "scale_gradient: grad_loss and norm must be "
                      "on grad's device ", grad.device(), ", got ", t->device());
  }
  const at::Tensor in = grad.contiguous();
  at::Tensor out = at::empty_like(in);
  on_device(grad, [&](auto device) {
    scale_gradient_rows(device, in, grad_loss.contiguous(), norm, out);
  });
  return out;
}

}  // namespace fgo
