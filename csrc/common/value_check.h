#pragma once
// Value checks (labels in range, finite inputs, hash values) that must not stall a CUDA stream.
// `ok` is a 0-dim bool tensor computed on the inputs' device. On the CPU it is read at once and
// the message is completed by details() (extremes, counts), evaluated only on failure. On CUDA
// the check is a device-side assertion queued on the stream (torch._assert_async): no host
// sync, so a training step can be captured in a CUDA graph; a failing value stops the CUDA
// context at the next synchronisation, with `message` in the device-assert report. Kernels stay memory-safe on such values.
#include <ATen/ATen.h>

#include <string>

#include "common/device.h"

namespace fgo {

template <typename Details>
void check_value(Cpu, const at::Tensor& ok, const std::string& message, const Details& details) {
  TORCH_CHECK_VALUE(ok.item<bool>(), message, details());
}

// torch copies the message into the assert kernel's 256-byte buffer (older versions drop it).
template <typename Details>
void check_value(Cuda, const at::Tensor& ok, const std::string& message, const Details&) {
  at::_assert_async(ok, message.substr(0, 250));
}

// check_value on ok's device.
template <typename Details>
void check_value(const at::Tensor& ok, const std::string& message, const Details& details) {
  on_device(ok, [&](auto device) { check_value(device, ok, message, details); });
}

}  // namespace fgo
