#pragma once
// CUDA emulation: there is one (host) device, so a device guard has nothing to do.
#include <c10/core/Device.h>

namespace c10::cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};

}  // namespace c10::cuda
