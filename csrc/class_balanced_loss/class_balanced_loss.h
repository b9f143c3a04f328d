#pragma once
// Class-balanced softmax / sigmoid / focal loss (DESIGN section 5), one fused pass that
// computes the per-row losses and d(loss)/d(logits) together.

#include <ATen/core/Tensor.h>

#include <tuple>

#include "common/device.h"

namespace fgo {

// Entry point bound in bindings.cpp. Validates tensor values (label range, counts > 0,
// multi-hot targets in [0, 1]), computes the normalised class weights and dispatches.
//   logits (N, C) float32/float64; target int64 (N,) or, for sigmoid/focal, logits-typed
//   (N, C); samples_per_class (C,). Returns
//   loss: 0-dim (mean/sum) or (N,) (none), in logits' dtype;
//   grad: (N, C) d(sum over rows of the weighted loss)/d(logits), or empty if !compute_grad;
//   norm: 0-dim, the divisor of 'mean' (number of positive labels, at least 1), else 1.
std::tuple<at::Tensor, at::Tensor, at::Tensor> class_balanced_loss_forward(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& samples_per_class,
    double beta, double gamma, int64_t loss_type, int64_t reduction, int64_t ignore_index,
    bool compute_grad);

// Device kernels, called with validated inputs. They fill row_loss (N,) with each row's
// weighted loss, row_positives (N,) with each row's number of positive labels (0 for an
// ignored row), and grad when it is defined.
struct ClassBalancedLossArgs {
  at::Tensor logits, target, class_weights;  // class_weights: (C,) in logits' dtype
  int64_t loss_type, ignore_index;
  double gamma;
  bool multi_hot;
  at::Tensor row_loss, row_positives, grad;  // outputs; grad undefined when not wanted
};

void class_balanced_loss_rows(Cpu, const ClassBalancedLossArgs& args);
void class_balanced_loss_rows(Cuda, const ClassBalancedLossArgs& args);

}  // namespace fgo
