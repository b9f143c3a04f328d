#pragma once
// Which kernels an op runs. Every op overloads its device functions on the tags Cpu and Cuda
// (e.g. `pool(Cpu, args)` in <op>_cpu.cpp, `pool(Cuda, args)` in <op>_cuda.cu)
// and calls them through on_device with a generic lambda:
//
//   at::Tensor pooled = on_device(x, [&](auto device) { return pool(device, args); });
//
// The call inside the lambda depends on the tag's type, so a CPU-only build never names the
// CUDA overload and needs no #ifdef at the call site.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fgo {

struct Cpu {};
struct Cuda {};

template <typename Kernels>
decltype(auto) on_device(const at::Tensor& t, const Kernels& kernels) {
#if defined(FGO_CUDA_EMULATION)
  // The CUDA emulation (tests/cuda_emulation) runs the CUDA kernels on CPU tensors.
  (void)t;
  return kernels(Cuda{});
#else
  if (t.is_cuda()) {
#ifdef WITH_CUDA
    return kernels(Cuda{});
#else
    TORCH_CHECK(false, "finegrained_ops was built without CUDA kernels, so it cannot take the "
                "CUDA tensor it was given; rebuild with a CUDA torch and toolkit (CUDA_HOME)");
#endif
  }
  return kernels(Cpu{});
#endif
}

}  // namespace fgo
