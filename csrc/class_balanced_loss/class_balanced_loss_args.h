#pragma once
// The validated inputs of the class-balanced loss device functions, and the functions.

#include <ATen/core/Tensor.h>

#include "class_balanced_loss/class_balanced_loss_math.h"
#include "common/device.h"

namespace fgo {

// Device kernels, called with validated inputs. They fill row_loss (N,) with each row's
// weighted loss, row_positives (N,) with each row's number of positive labels (0 for an
// ignored row), and grad when it is defined.
struct ClassBalancedLossArgs {
  at::Tensor logits, target, class_weights;  // class_weights: (C,) in logits' dtype
  cb::LossType loss_type;
  int64_t ignore_index;
  double gamma;
  bool multi_hot;
  at::Tensor row_loss, row_positives, grad;  // outputs; grad undefined when not wanted
};

void class_balanced_loss_rows(Cpu, const ClassBalancedLossArgs& args);
void class_balanced_loss_rows(Cuda, const ClassBalancedLossArgs& args);

}  // namespace fgo
