#pragma once
// The validated inputs of the class-balanced loss device functions, and the functions.

#include <ATen/core/Tensor.h>

#include "class_balanced_loss/class_balanced_loss_math.h"
#include "common/device.h"

namespace fgo {

// Device kernels, called with validated inputs. They fill row_loss (N,) with each row's
// weighted loss, row_norm (N,) with each row's share of the 'mean' divisor (its number of
// positive labels, or its weight when norm_by_weight; 0 for an ignored row), and grad when it
// is defined. Tensors are contiguous and in logits' dtype except the int64 class indices.
struct ClassBalancedLossArgs {
  at::Tensor logits;          // (N, C)
  at::Tensor target;          // (N,) int64 class indices, or (N, C) multi-hot / soft rows
  at::Tensor class_weights;   // (C,) w, or undefined: every class weighs 1
  at::Tensor logit_offsets;   // softmax only: (C,) b added to the logits, or undefined
  at::Tensor target_margins;  // softmax only: (C,) margin taken off the true class, or undefined
  double scale = 1;           // softmax only: s in u = s (z + b - margin_y onehot(y))
  cb::LossType loss_type = cb::kSoftmax;
  int64_t ignore_index = -100;
  double gamma = 0;           // focal exponent (sigmoid focal, or softmax when > 0)
  bool multi_hot = false;     // target is (N, C)
  bool norm_by_weight = false;
  at::Tensor row_loss, row_norm, grad;  // outputs; grad undefined when not wanted
};

void class_balanced_loss_rows(Cpu, const ClassBalancedLossArgs& args);
void class_balanced_loss_rows(Cuda, const ClassBalancedLossArgs& args);

}  // namespace fgo
