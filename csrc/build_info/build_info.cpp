#include "build_info/build_info.h"

#include <ATen/Parallel.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fgo {

BuildInfo build_info() {
  BuildInfo info;
  info.version = FGO_VERSION;
  info.torch_version = FGO_TORCH_VERSION;
#ifdef WITH_CUDA
  info.with_cuda = true;
  info.cuda_version = std::to_string(CUDART_VERSION / 1000) + "." +
                      std::to_string((CUDART_VERSION % 1000) / 10);
  info.cuda_arch_list = FGO_CUDA_ARCH_LIST;
#else
  info.with_cuda = false;
#endif
#ifdef CPU_CAPABILITY_AVX2
  info.cpu_capability = "AVX2";
#else
  info.cpu_capability = "DEFAULT";
#endif
#ifdef _OPENMP
  info.with_openmp = true;
#else
  info.with_openmp = false;
#endif
  info.num_threads = at::get_num_threads();
  return info;
}

}  // namespace fgo
