#pragma once
// CUDA emulation: C10_CUDA_CHECK with the emulator's account of what failed.
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#define C10_CUDA_CHECK(EXPR)                                                               \
  do {                                                                                     \
    const cudaError_t fgo_emu_error = (EXPR);                                              \
    TORCH_CHECK(fgo_emu_error == cudaSuccess, "CUDA error (emulated): ",                   \
                cudaGetErrorString(fgo_emu_error), ": ", ::fgo::emu::last_error_detail()); \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
