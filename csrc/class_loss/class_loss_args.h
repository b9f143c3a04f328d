#pragma once
// The checked inputs and the outputs of the class loss's device functions, and the functions.

#include <ATen/core/Tensor.h>

#include "class_loss/class_loss_math.h"
#include "common/device.h"

namespace fgo {

// Tensors are contiguous. logits and grad are in the storage dtype (half types included);
// the per-class tensors and a soft target in the compute dtype (float32 for half logits, else
// logits'); class indices int64.
struct ClassLossArgs {
  at::Tensor logits;          // (N, C)
  at::Tensor target;          // (N,) int64 class indices, or (N, C) multi-hot / soft rows
  at::Tensor class_weights;   // (C,) w, or undefined: every class weighs 1
  at::Tensor logit_offsets;   // softmax only: (C,) b added to the logits, or undefined
  at::Tensor target_margins;  // softmax only: (C,) margin taken off the true class, or undefined
  double scale = 1;           // softmax only: s in u = s (z + b - margin_y onehot(y))
  cls::LossType loss_type = cls::kSoftmax;
  cls::Reduction reduction = cls::kMean;
  int64_t ignore_index = -100;
  double gamma = 0;           // focal exponent (sigmoid focal, or softmax when > 0)
  bool multi_hot = false;     // target is (N, C)
  // Outputs, allocated by the entry point: loss 0-dim or (N,) ('none'); grad (N, C) or
  // undefined; norm 0-dim. d(loss)/d(logits) = grad / norm (class_loss.h).
  at::Tensor loss, grad, norm;
};

// Fill loss, grad and norm, and refuse the values the kernels read that are out of range: on
// the CPU with a ValueError before any output is written, on CUDA with device-side
// assertions (the kernels stay memory-safe on such values).
void class_loss_rows(Cpu, const ClassLossArgs& args);
void class_loss_rows(Cuda, const ClassLossArgs& args);

}  // namespace fgo
