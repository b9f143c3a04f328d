#pragma once
// How an op's device kernels reach the dispatcher. Each <op>_op.cpp declares its schemas and
// autograd once and writes one function that registers its device kernels on a torch::Library
// (the same kernels serve CPU and CUDA: each entry point picks its device with on_device), then
// hands that function to FGO_DEVICE_KERNELS:
//   - in the extension, it runs for the CPU key and, in a CUDA build, the CUDA key;
//   - in the CUDA emulation (tests/cuda_emulation), whose entry points run the CUDA path on CPU
//     tensors, it is only collected: the emulation registers every collected function for the
//     CPU key while a test asks for it (emulated_device_kernels), over the real CPU kernels.
// So the emulation overrides each op under its own schema, with no list of its own.
#include <torch/library.h>

#include <vector>

namespace fgo {

using DeviceKernels = void (*)(torch::Library&);

#if defined(FGO_CUDA_EMULATION)

inline std::vector<DeviceKernels>& emulated_device_kernels() {
  static std::vector<DeviceKernels> collected;
  return collected;
}

struct CollectDeviceKernels {
  explicit CollectDeviceKernels(DeviceKernels kernels) {
    emulated_device_kernels().push_back(kernels);
  }
};

#define FGO_DEVICE_KERNELS(kernels) \
  static const ::fgo::CollectDeviceKernels C10_ANONYMOUS_VARIABLE(fgo_device_kernels_)(kernels)
// The schemas, autograd and autocast kernels are the extension's: not registered twice.
#define FGO_OP_REGISTRATION 0

#else

#ifdef WITH_CUDA
#define FGO_DEVICE_KERNELS(kernels)                                      \
  TORCH_LIBRARY_IMPL(finegrained_ops, CPU, m) { kernels(m); }            \
  TORCH_LIBRARY_IMPL(finegrained_ops, CUDA, m) { kernels(m); }
#else
#define FGO_DEVICE_KERNELS(kernels) \
  TORCH_LIBRARY_IMPL(finegrained_ops, CPU, m) { kernels(m); }
#endif
#define FGO_OP_REGISTRATION 1

#endif

}  // namespace fgo
