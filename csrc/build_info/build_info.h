#pragma once

#include <string>

namespace fgo {

// Facts fixed when the extension was compiled, reported by `python -m finegrained_ops info`.
struct BuildInfo {
  std::string version;        // finegrained_ops version
  std::string torch_version;  // torch the extension was compiled against
  bool with_cuda;
  std::string cuda_version;   // "" for a CPU build
  std::string cuda_arch_list; // TORCH_CUDA_ARCH_LIST at build time, "" for a CPU build
  std::string cpu_capability;  // SIMD level the CPU kernels were compiled for
  bool with_openmp;
  int num_threads;            // at::get_num_threads() now
};

BuildInfo build_info();

}  // namespace fgo
