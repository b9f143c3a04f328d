#pragma once

// Marks math shared by the CPU kernels and the CUDA kernels.
#if defined(__CUDACC__)
#define FGO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FGO_HOST_DEVICE inline
#endif
