// The class-balanced weights of the effective number of samples (Cui et al., thesis eq. 5.6).
#include <ATen/ATen.h>

#include "class_loss/class_loss.h"
#include "common/value_check.h"

namespace fgo {

at::Tensor class_balanced_weights(const at::Tensor& samples_per_class, double beta) {
  TORCH_CHECK_VALUE(samples_per_class.dim() == 1 && samples_per_class.size(0) >= 1,
                    "class_balanced_weights: samples_per_class must be (C,) with C >= 1, got "
                    "shape ", samples_per_class.sizes());
  TORCH_CHECK_TYPE(!samples_per_class.is_complex() &&
                       samples_per_class.scalar_type() != at::kBool,
                   "class_balanced_weights: samples_per_class must hold numbers of samples, "
                   "got ", samples_per_class.scalar_type());
  TORCH_CHECK_VALUE(beta >= 0.0 && beta < 1.0,
                    "class_balanced_weights: beta must be in [0, 1), got ", beta);
  const at::Tensor n = samples_per_class.to(at::kDouble);
  check_value(((n > 0) & at::isfinite(n)).all(),
              "class_balanced_weights: samples_per_class must be finite and > 0 for every "
              "class (a class with no samples has no effective number)",
              [&] { return c10::str("; got ", n); });
  const at::Tensor w = (1.0 - beta) / (1.0 - at::pow(beta, n));
  return w * (static_cast<double>(n.numel()) / w.sum());
}

}  // namespace fgo
