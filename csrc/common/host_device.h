#pragma once

// Marks math shared by the CPU kernels and the CUDA kernels.
#if defined(__CUDACC__)
#define FGO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FGO_HOST_DEVICE inline
#endif

// A check of a value a CUDA kernel reads (a label, a per-class weight; docs/semantics.md §1):
// when it fails, a device-side assertion stops the CUDA context with `message` (a string
// literal), as torch's kernels do, without a host sync or a launch of its own. The kernel must
// stay memory-safe past it. In the CUDA emulation the launch fails with the message.
#if defined(FGO_CUDA_EMULATION)
#define FGO_KERNEL_CHECK(condition, message) \
  ((condition) ? (void)0 : ::fgo::emu::device_assert(message))
#elif defined(__CUDA_ARCH__)
#define FGO_KERNEL_CHECK(condition, message) \
  ((condition) ? (void)0 : __assert_fail(message, __FILE__, __LINE__, __func__))
#else
#define FGO_KERNEL_CHECK(condition, message) ((void)0)
#endif
