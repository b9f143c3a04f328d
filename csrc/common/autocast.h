#pragma once
// What the loss ops do under autocast (their AutocastCPU / AutocastCUDA kernels, <op>_op.cpp):
// read the input in its own dtype (no cast) and return a float32 loss, as torch's losses do.
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>

#include <optional>

namespace fgo {

// The loss dtype of a loss of `input` under autocast: float32 for the half types unless the
// caller asked for one.
inline std::optional<at::ScalarType> autocast_loss_dtype(const at::Tensor& input,
                                                         std::optional<at::ScalarType> asked) {
  const bool half = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  return asked.has_value() || !half ? asked : std::optional(at::kFloat);
}

}  // namespace fgo
