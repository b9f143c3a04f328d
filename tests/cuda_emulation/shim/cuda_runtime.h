#pragma once
// CUDA emulation: the part of the CUDA runtime and of the device built-ins that the kernels in
// csrc/ use, on the host. Kernels are plain C++ functions here; emulator.h runs each CUDA
// thread of a block as a fiber (see docs/cuda_emulation.md).
#include <math.h>  // C++ overloads of ::exp, ::log1p, ... for float and double, as on the device

#include <cstddef>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// No __shared__ here: build.py rewrites every __shared__ declaration (emulator.h,
// shared_variable; a form it misses fails to compile rather than run unpoisoned).

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x = 1, unsigned y = 1, unsigned z = 1) : x(x), y(y), z(z) {}
};

using cudaStream_t = struct CUstream_st*;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorAssert = 710,
  cudaErrorLaunchFailure = 719,
};

#define CUDART_VERSION 0

#include "emulator.h"
